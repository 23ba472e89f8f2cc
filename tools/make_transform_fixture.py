#!/usr/bin/env python3
"""Writes tests/fixtures/transforms.json: bilinear resizes computed by PyTorch.

Each case: an input [H, W, C] (float, or uint8 scaled by 1/255 like ToTensor), an optional crop
box applied first (torchvision resized_crop), the output size, and the expected [h, w, C] output
of torch.nn.functional.interpolate(mode='bilinear', align_corners=False, antialias=False).
Run with Debian's python3-torch: /usr/bin/python3 tools/make_transform_fixture.py
"""
import json
import os

import torch
import torch.nn.functional as F

torch.manual_seed(0)
cases = []


def add(name, img_hwc, out_h, out_w, box=None, uint8=False):
    x = img_hwc.float() / 255.0 if uint8 else img_hwc.float()
    if box is not None:
        t, l, h, w = box
        x = x[t:t + h, l:l + w, :]
    y = F.interpolate(x.permute(2, 0, 1)[None], size=(out_h, out_w), mode="bilinear", align_corners=False,
                      antialias=False)[0].permute(1, 2, 0)
    cases.append({
        "name": name,
        "shape": list(img_hwc.shape),
        "uint8": uint8,
        "input": [int(v) for v in img_hwc.flatten().tolist()] if uint8 else img_hwc.flatten().tolist(),
        "box": list(box) if box is not None else None,
        "out": [out_h, out_w],
        "expected": y.contiguous().flatten().tolist(),
    })


ramp = torch.arange(16, dtype=torch.float32).reshape(4, 4, 1)
add("ramp 4x4 -> 2x2", ramp, 2, 2)
add("ramp 4x4 -> 3x3", ramp, 3, 3)
add("ramp 4x4 -> 6x6", ramp, 6, 6)
add("ramp 4x4 -> 3x7", ramp, 3, 7)
rnd = torch.rand(5, 7, 3)
add("random 5x7x3 -> 4x3", rnd, 4, 3)
add("random 5x7x3 -> 9x11", rnd, 9, 11)
add("random 5x7x3 crop (1,2,3,4) -> 5x5", rnd, 5, 5, box=(1, 2, 3, 4))
u8 = torch.randint(0, 256, (6, 5, 3), dtype=torch.uint8)
add("uint8 6x5x3 -> 4x4", u8, 4, 4, uint8=True)
add("uint8 6x5x3 crop (2,1,4,3) -> 7x2", u8, 7, 2, box=(2, 1, 4, 3), uint8=True)

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
os.makedirs(root, exist_ok=True)
with open(os.path.join(root, "transforms.json"), "w") as f:
    json.dump({"torch": torch.__version__, "cases": cases}, f)
print("wrote", len(cases), "cases")
