#pragma once
// Everything in cnx::nn: Module, the layers and the initialisers.
#include "nn/grn.h"
#include "nn/init.h"
#include "nn/layers.h"
#include "nn/module.h"
