#pragma once
// convnext.cpp in one include, for projects built against the installed package:
//
//   find_package(convnext REQUIRED)
//   target_link_libraries(app PRIVATE convnext::convnext)
//   #include <convnext/convnext.h>
//
// The package puts both <prefix>/include and <prefix>/include/convnext on the include path, so
// the library's own headers (which include each other as "core/tensor.h", "ops/ops.h", ...) and
// the component headers a user picks by hand resolve the same way as inside the source tree.
#include "core/autograd.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/gradcheck.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "ops/ops.h"
#include "nn/nn.h"
#include "optim/optim.h"
#include "models/convnext.h"
#include "models/convnext_v2.h"
#include "models/registry.h"
#include "data/data.h"
#include "io/atomic_file.h"
#include "io/curves.h"
#include "io/key_names.h"
#include "io/png_writer.h"
#include "io/pth.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "dist/dist.h"
#include "train/train.h"
#include "viz/gradcam.h"
#include "viz/plots.h"
