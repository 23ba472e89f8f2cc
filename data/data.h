#pragma once
// Everything in cnx::data: decoding, image folders, IDX / Fashion-MNIST, transforms, loader.
#include "data/dataset.h"
#include "data/idx.h"
#include "data/image.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "data/transforms.h"
