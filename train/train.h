#pragma once
// The training and evaluation library: train::fit (the loop, its checkpoints and files),
// train::evaluate, the pieces they are made of, and the classic workflow's data sets and
// pretrained-weights loading. The training page under docs/ describes it.
#include "train/checkpoint.h"
#include "train/data_sets.h"
#include "train/evaluate.h"
#include "train/loss.h"
#include "train/mixup.h"
#include "train/output_dir.h"
#include "train/pretrained.h"
#include "train/trainer.h"
