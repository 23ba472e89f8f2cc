#!/usr/bin/python3
"""Writes the torchvision fixtures for tests/test_model.cpp: the names torchvision gives ConvNeXt
parameters, which this project derives from the aliases its modules declare.

Run with Debian's python3-torch and python3-torchvision:
    /usr/bin/python3 tools/gen_torchvision_fixture.py

tests/fixtures/torchvision/
  names.json            {"convnext_tiny": [[name, shape], ...], "small": {"depths", "dims", "num_classes"}}
                        (state_dict order of torchvision.models.convnext_tiny, and a small config)
  small.pth             torch.save(state_dict) of torchvision's ConvNeXt built with the small
                        config, random weights (layer scales around 1, so every block matters)
  small.safetensors     "input" (NHWC [2, 32, 32, 3]) and torchvision's "logits" for it (eval mode)
"""
import collections
import json
import os
import sys

import torch
import torchvision
from torchvision.models.convnext import CNBlockConfig, ConvNeXt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_pth_fixtures import write_safetensors  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "torchvision")

DEPTHS, DIMS, CLASSES = [1, 1, 2, 1], [8, 16, 24, 32], 5


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    tiny = torchvision.models.convnext_tiny()
    names = [[k, list(v.shape)] for k, v in tiny.state_dict().items()]

    setting = [CNBlockConfig(DIMS[i], DIMS[i + 1] if i < 3 else None, DEPTHS[i]) for i in range(4)]
    model = ConvNeXt(setting, num_classes=CLASSES).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k.endswith("layer_scale") or (p.dim() == 1 and k.endswith("weight")):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    x = torch.randn(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        logits = model(x)

    torch.save(collections.OrderedDict(model.state_dict()), os.path.join(OUT, "small.pth"))
    write_safetensors(os.path.join(OUT, "small.safetensors"),
                      collections.OrderedDict([("input", x.permute(0, 2, 3, 1)), ("logits", logits)]))
    with open(os.path.join(OUT, "names.json"), "w") as f:
        json.dump({"torchvision": torchvision.__version__, "convnext_tiny": names,
                   "small": {"depths": DEPTHS, "dims": DIMS, "num_classes": CLASSES}}, f)
        f.write("\n")
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
