#pragma once
// ConvNeXt V2's FCMAE pre-training checkpoints (the official repository's fcmae models), made
// loadable for fine-tuning the way its fine-tuning script remaps them.
//
// Such a file holds the sparse encoder under "encoder." — MinkowskiEngine layers, so convolution
// weights are "kernel" tensors laid out [k*k, in, out] (depthwise: [k*k, C]), their biases [1, out],
// LayerNorms and Linears wrapped as ".ln." / ".linear.", GRN parameters [1, C] — plus the
// pre-training decoder ("decoder.*", "proj.*", "pred.*", "mask_token"), which fine-tuning drops.
// The encoder has no final norm and no head: those start from their initialisation.
//
//   downsample_layers.i.1.kernel [4, Cin, Cout]   ->  downsample_layers.i.1.weight [Cout, Cin, 2, 2]
//   stages.i.j.dwconv.kernel [49, C]              ->  stages.i.j.dwconv.weight [C, 1, 7, 7]
//   stages.i.j.dwconv.bias [1, C]                 ->  stages.i.j.dwconv.bias [C]
//   stages.i.j.norm.ln.weight                     ->  stages.i.j.norm.weight
//   stages.i.j.pwconv1.linear.weight              ->  stages.i.j.pwconv1.weight
//   stages.i.j.grn.gamma [1, 4C]                  ->  stages.i.j.grn.gamma [1, 1, 1, 4C]
// A kernel's spatial index is kw * k + kh (the official remap's permute, reshape and transpose).
#include <string>
#include <vector>

#include "core/tensor.h"

namespace cnx::io {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// The names are an FCMAE pre-training checkpoint's: some start with "encoder." and some end in
// ".kernel" or are the decoder's mask_token.
bool is_fcmae_checkpoint(const std::vector<std::string>& names);

struct FcmaeRemap {
    NamedTensors tensors;              // the encoder, in the dense model's official names and shapes
    std::vector<std::string> dropped;  // the pre-training decoder's entries
};
// Throws naming the tensor when a kernel's shape is not [k*k, in, out] or [k*k, C].
FcmaeRemap remap_fcmae(const NamedTensors& tensors);

}  // namespace cnx::io
