#!/usr/bin/python3
"""Writes the PyTorch reference for the training CLI (tests/test_train.cpp).

A tiny image folder (3 classes x 8 PNGs, 32x32), a micro ConvNeXt's initial weights, and what
the classic fine-tuning recipe does with them in PyTorch: 12 AdamW steps (batch 4, no shuffle,
no augmentation, no validation split, weight decay 0.05 on all but biases and norms, cosine with
no warmup stepped per iteration), recording each step's loss and learning rate and the final
weights. The C++ test runs `convnext train` with the same settings and compares.

With --family convnext_v2 the same recipe for a micro ConvNeXt V2 (GRN gamma and beta random, so
no GRN is the identity), writing tests/fixtures/v2/train_init.safetensors and
tests/fixtures/v2/train_reference.json (the losses and learning rates; the folder is V1's).

Run with Debian's python3-torch:  /usr/bin/python3 tools/gen_train_fixture.py [--family convnext_v2]
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_model_fixture import Block, BlockV2, ConvNeXt, write_safetensors  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
FOLDER = os.path.join(ROOT, "train_folder")
CLASSES = ["circles", "squares", "stripes"]
DEPTHS, DIMS = [1, 1, 1, 1], [8, 16, 32, 64]
DIMS_V2 = [8, 16, 24, 32]
BATCH, EPOCHS, LR, WD = 4, 2, 2e-3, 0.05


def make_image(cls, i, rng):
    y, x = np.mgrid[0:32, 0:32]
    base = rng.uniform(0, 60, size=(32, 32, 3))
    cx, cy, r = 16 + rng.integers(-4, 5), 16 + rng.integers(-4, 5), 6 + rng.integers(0, 6)
    if cls == "circles":
        mask = (x - cx) ** 2 + (y - cy) ** 2 < r * r
    elif cls == "squares":
        mask = (abs(x - cx) < r) & (abs(y - cy) < r)
    else:
        mask = ((x + i) // 3) % 2 == 0
    colour = rng.uniform(150, 255, size=3)
    img = np.where(mask[..., None], colour, base)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_folder(write=True):
    rng = np.random.default_rng(0)
    files = []
    for label, cls in enumerate(CLASSES):
        os.makedirs(os.path.join(FOLDER, cls), exist_ok=True)
        for i in range(8):
            path = os.path.join(FOLDER, cls, "img_%02d.png" % i)
            image = make_image(cls, i, rng)
            if write:
                Image.fromarray(image).save(path)
            files.append((path, label))
    return files


def load_batch(files):
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    xs = [((np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0 - mean) / std) for p, _ in files]
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([label for _, label in files])
    return x, y


def params_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # The official rule (V2's adds .gamma and .beta, which V1's 1-D gamma already meets).
        skip = p.ndim == 1 or name.endswith(".bias") or name.endswith(".gamma") or name.endswith(".beta")
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", choices=["convnext", "convnext_v2"], default="convnext")
    v2 = ap.parse_args().family == "convnext_v2"
    out = os.path.join(ROOT, "v2") if v2 else ROOT
    os.makedirs(out, exist_ok=True)
    files = write_folder(write=not v2)
    torch.manual_seed(0)
    dims = DIMS_V2 if v2 else DIMS
    model = ConvNeXt(3, len(CLASSES), DEPTHS, dims, BlockV2 if v2 else Block)
    with torch.no_grad():  # make every block matter
        for name, p in model.named_parameters():
            if name.endswith("grn.gamma"):
                p.normal_(0.0, 0.5)
            elif name.endswith("grn.beta"):
                p.normal_(0.0, 0.2)
            elif name.endswith("gamma"):
                p.uniform_(0.3, 0.8)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    write_safetensors(os.path.join(out, "train_init.safetensors"), list(init.items()), {})

    steps_per_epoch = len(files) // BATCH
    total = EPOCHS * steps_per_epoch
    opt = torch.optim.AdamW(params_groups(model, WD), lr=LR, weight_decay=WD)
    # create_lr_scheduler(warmup=False): cosine from factor 1 to end_factor 1e-6.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda x: ((1 + math.cos(x * math.pi / total)) / 2) * (1 - 1e-6) + 1e-6)
    losses, lrs = [], []
    model.train()
    for epoch in range(EPOCHS):
        for b in range(steps_per_epoch):
            x, y = load_batch(files[b * BATCH:(b + 1) * BATCH])
            loss = F.cross_entropy(model(x), y)
            losses.append(loss.item())
            lrs.append(opt.param_groups[0]["lr"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if not v2:  # V2 keeps its fixtures small: the losses are the check
        write_safetensors(os.path.join(out, "train_final.safetensors"), list(final.items()), {})
    with open(os.path.join(out, "train_reference.json"), "w") as f:
        json.dump({"classes": CLASSES, "depths": DEPTHS, "dims": dims, "batch_size": BATCH, "epochs": EPOCHS,
                   "lr": LR, "wd": WD, "losses": losses, "lrs": lrs}, f, indent=1)
    print("losses", ["%.4f" % v for v in losses])


if __name__ == "__main__":
    main()
