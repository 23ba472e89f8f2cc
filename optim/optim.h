#pragma once
// Everything in cnx::optim: optimisers, parameter groups, schedules, clipping, EMA.
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/ema.h"
#include "optim/optimizer.h"
#include "optim/param_groups.h"
#include "optim/schedule.h"
#include "optim/sgd.h"
