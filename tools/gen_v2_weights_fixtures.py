#!/usr/bin/python3
"""Writes the ConvNeXt V2 weight-file fixtures under tests/fixtures/v2/ (tests/test_convnext_v2.cpp).

A micro ConvNeXt V2 (the official architecture, tools/gen_model_fixture.py's BlockV2) with random
weights -- GRN gamma and beta included, so no GRN is the identity -- saved the ways V2 weights
are found, and PyTorch's probabilities for one image, which `convnext predict` must reproduce:

  official.pt         torch.save({"model": state_dict, "epoch": ...}), the official fine-tuned
                      checkpoints' layout and names (stages.i.j.grn.gamma [1,1,1,4C], ...)
  timm.safetensors    the same weights under timm's names: stem.*, stages.i.downsample.*,
                      stages.i.blocks.j.conv_dw, mlp.fc1/fc2 kept as 1x1 convolutions [4C,C,1,1]
                      (timm's small V2 variants), mlp.grn.weight/bias stored [4C], head.norm, head.fc
  image.png           32x32 RGB, fed at --resize 32 --crop 32 (no resampling)
  probs.json          {"depths", "dims", "num_classes", "probs"}: softmax of the logits (eval mode)

and an FCMAE pre-training checkpoint, as the official pre-training writes it (the sparse encoder
under "encoder.": MinkowskiEngine kernels [k*k, in, out] / depthwise [k*k, C], biases [1, C],
.ln./.linear. wrappers, GRN [1, C]; then the decoder, proj, pred and mask_token):

  fcmae.pt                   torch.save({"model": ..., "epoch": ...})
  fcmae_expected.safetensors the dense encoder it must remap to (official names, no norm or head)

The script checks its own FCMAE writer against the official fine-tuning remap (written out here
from its description: drop "encoder.", kernel -> weight with permute/reshape/transpose, drop the
wrappers, biases to 1-D, GRN parameters unsqueezed) before it writes anything.

Run with Debian's python3-torch:  /usr/bin/python3 tools/gen_v2_weights_fixtures.py
"""
import collections
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_model_fixture import BlockV2, ConvNeXt, write_safetensors  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "v2")
DEPTHS, DIMS, CLASSES = [1, 1, 2, 1], [8, 16, 24, 32], 4
FCMAE_DEPTHS, FCMAE_DIMS, DECODER_DIM = [1, 1, 1, 1], [8, 8, 16, 16], 16
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def random_v2(depths, dims, classes, gen):
    model = ConvNeXt(3, classes, depths, dims, BlockV2).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=gen)
            if p.dim() == 1 and name.endswith("weight"):  # LayerNorm scales
                p.copy_(1.0 + 0.2 * r)
            elif ".grn." in name:
                p.copy_(0.5 * r)
            elif name.startswith("head."):  # probabilities well spread
                p.copy_(0.1 * r)
            elif p.dim() == 1:  # biases
                p.copy_(0.1 * r)
            else:  # conv and linear weights: unit-scale outputs
                p.copy_(r / math.sqrt(p[0].numel()))
    return model


def timm_name(name):
    """Official V2 name -> timm's (timm.models.convnext with use_grn)."""
    parts = name.split(".")
    if parts[0] == "downsample_layers":
        i = int(parts[1])
        return ("stem." if i == 0 else f"stages.{i}.downsample.") + ".".join(parts[2:])
    if parts[0] == "stages":
        rest = ".".join(parts[3:])
        for old, new in [("dwconv.", "conv_dw."), ("pwconv1.", "mlp.fc1."), ("pwconv2.", "mlp.fc2."),
                         ("grn.gamma", "mlp.grn.weight"), ("grn.beta", "mlp.grn.bias")]:
            if rest.startswith(old):
                rest = new + rest[len(old):]
        return f"stages.{parts[1]}.blocks.{parts[2]}.{rest}"
    return {"norm.weight": "head.norm.weight", "norm.bias": "head.norm.bias",
            "head.weight": "head.fc.weight", "head.bias": "head.fc.bias"}[name]


def timm_tensor(name, t):
    if ".grn." in name:
        return t.reshape(-1)
    if ".pwconv" in name and name.endswith("weight"):  # conv_mlp: 1x1 convolutions
        return t.reshape(t.shape[0], t.shape[1], 1, 1)
    return t


def write_predict_fixtures():
    gen = torch.Generator().manual_seed(5)
    model = random_v2(DEPTHS, DIMS, CLASSES, gen)
    sd = collections.OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
    torch.save({"model": sd, "epoch": 7, "max_accuracy": 12.5}, os.path.join(OUT, "official.pt"))
    write_safetensors(os.path.join(OUT, "timm.safetensors"), [(timm_name(k), timm_tensor(k, v)) for k, v in sd.items()],
                      {"format": "pt"})

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(os.path.join(OUT, "image.png"))
    x = torch.from_numpy(pixels.astype(np.float32) / 255.0)
    x = ((x - torch.tensor(MEAN)) / torch.tensor(STD)).permute(2, 0, 1).unsqueeze(0)
    with torch.no_grad():
        probs = F.softmax(model(x), dim=-1)[0]
    with open(os.path.join(OUT, "probs.json"), "w") as f:
        json.dump({"depths": DEPTHS, "dims": DIMS, "num_classes": CLASSES, "probs": probs.tolist()}, f)
        f.write("\n")
    print("probs", [round(v, 4) for v in probs.tolist()])


# ---- FCMAE ----

def to_fcmae(dense):
    """The dense encoder (official names) in the sparse encoder's names and layouts."""
    sparse = collections.OrderedDict()
    for k, v in dense.items():
        parts = k.split(".")
        if parts[0] == "downsample_layers" and parts[1] == "0":  # the stem stays dense
            sparse["encoder." + k] = v
            continue
        is_conv = k.endswith("weight") and v.dim() == 4
        if is_conv:
            kernel = v.transpose(3, 2).reshape(v.shape[0], v.shape[1], -1).permute(2, 1, 0)
            if ".dwconv." in k:
                kernel = kernel[:, 0, :]  # depthwise: [k*k, C]
            sparse["encoder." + k[:-len("weight")] + "kernel"] = kernel.contiguous()
        elif k.endswith("bias") and (".dwconv." in k or (parts[0] == "downsample_layers" and parts[2] == "1")):
            sparse["encoder." + k] = v.reshape(1, -1)  # MinkowskiConvolution bias
        elif ".grn." in k:
            sparse["encoder." + k] = v.reshape(1, -1)
        elif ".norm." in k or (parts[0] == "downsample_layers" and parts[2] == "0"):
            sparse["encoder." + ".".join(parts[:-1] + ["ln", parts[-1]])] = v
        elif ".pwconv" in k:
            sparse["encoder." + ".".join(parts[:-1] + ["linear", parts[-1]])] = v
        else:
            raise ValueError(k)
    return sparse


def official_remap(ckpt):
    """The official fine-tuning script's key remapping, restated."""
    out = collections.OrderedDict()
    for k, v in ckpt.items():
        if k.startswith("encoder"):
            k = k.split(".", 1)[1]
        if k.endswith("kernel"):
            k = k[:-len("kernel")] + "weight"
            side = int(math.sqrt(v.shape[0]))
            if v.dim() == 3:
                out[k] = v.permute(2, 1, 0).reshape(v.shape[2], v.shape[1], side, side).transpose(3, 2)
            else:
                out[k] = v.permute(1, 0).reshape(v.shape[1], 1, side, side).transpose(3, 2)
            continue
        if "ln" in k or "linear" in k:
            parts = k.split(".")
            del parts[-2]
            k = ".".join(parts)
        out[k] = v
    for k, v in list(out.items()):
        if k.endswith("bias") and v.dim() != 1:
            out[k] = v.reshape(-1)
        elif "grn" in k:
            out[k] = v.unsqueeze(0).unsqueeze(1)
    return out


def write_fcmae_fixtures():
    gen = torch.Generator().manual_seed(9)
    model = random_v2(FCMAE_DEPTHS, FCMAE_DIMS, 1, gen)
    dense = collections.OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items()
                                    if not k.startswith("norm.") and not k.startswith("head."))
    encoder = to_fcmae(dense)
    remapped = official_remap(encoder)
    assert list(remapped) == list(dense), (list(remapped), list(dense))
    for k in dense:
        assert remapped[k].shape == dense[k].shape and torch.equal(remapped[k], dense[k]), k
    # The pre-training decoder: proj, mask_token, one dense V2 block, pred.
    ckpt = collections.OrderedDict(encoder)
    ckpt["mask_token"] = torch.zeros(1, DECODER_DIM, 1, 1)
    ckpt["proj.weight"] = torch.randn(DECODER_DIM, FCMAE_DIMS[-1], 1, 1, generator=gen)
    ckpt["proj.bias"] = torch.zeros(DECODER_DIM)
    for k, v in BlockV2(DECODER_DIM).state_dict().items():
        ckpt["decoder.0." + k] = v
    ckpt["pred.weight"] = torch.randn(48, DECODER_DIM, 1, 1, generator=gen)  # patch 4: 4 * 4 * 3 outputs
    ckpt["pred.bias"] = torch.zeros(48)
    torch.save({"model": ckpt, "epoch": 799}, os.path.join(OUT, "fcmae.pt"))
    write_safetensors(os.path.join(OUT, "fcmae_expected.safetensors"), list(dense.items()),
                      {"depths": json.dumps(FCMAE_DEPTHS), "dims": json.dumps(FCMAE_DIMS)})
    print("fcmae: %d encoder tensors, %d decoder tensors" % (len(encoder), len(ckpt) - len(encoder)))


def main():
    os.makedirs(OUT, exist_ok=True)
    write_predict_fixtures()
    write_fcmae_fixtures()
    for name in sorted(os.listdir(OUT)):
        print("  %-28s %7d bytes" % (name, os.path.getsize(os.path.join(OUT, name))))


if __name__ == "__main__":
    main()
