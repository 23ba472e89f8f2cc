#!/usr/bin/python3
"""Checks `convnext predict` against PyTorch on a full-size ConvNeXt-T (too big to commit).

Builds a ConvNeXt-T with random weights (layer scale and head made non-trivial so every block
and class matters), saves it as: official-name safetensors, timm-name safetensors, and torch.save
.pth files in several layouts (state_dict under "model", bare, protocol 4, "archive/" prefix,
with model_ema + optimizer + epoch entries); makes a 224x224 image; computes PyTorch's softmax;
runs `convnext predict --resize 224 --crop 224 --topk 10 --json` on each file and reports the
largest probability difference.

    /usr/bin/python3 tools/verify_convnext_t.py build/bin/convnext [workdir]
"""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_model_fixture import ConvNeXt, write_safetensors  # noqa: E402



def timm_name(n):
    if n.startswith("downsample_layers.0."):
        return "stem." + n[len("downsample_layers.0."):]
    if n.startswith("downsample_layers."):
        i, rest = n[len("downsample_layers."):].split(".", 1)
        return "stages.%s.downsample.%s" % (i, rest)
    if n.startswith("stages."):
        _, i, j, rest = n.split(".", 3)
        rest = rest.replace("dwconv", "conv_dw").replace("pwconv1", "mlp.fc1").replace("pwconv2", "mlp.fc2")
        return "stages.%s.blocks.%s.%s" % (i, j, rest)
    if n.startswith("norm."):
        return "head.norm." + n[5:]
    if n.startswith("head."):
        return "head.fc." + n[5:]
    return n


def main():
    cli = sys.argv[1]
    work = sys.argv[2] if len(sys.argv) > 2 else "/tmp/convnext_verify"
    os.makedirs(work, exist_ok=True)
    torch.manual_seed(0)
    model = ConvNeXt(3, 1000, [3, 3, 9, 3], [96, 192, 384, 768])
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("gamma"):
                p.uniform_(0.1, 0.5)
            if n == "head.weight":
                p.mul_(40)
    model.eval()
    sd = model.state_dict()
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:224, 0:224]
    img = np.stack([(x * 1.1) % 256, (y * 0.9) % 256, ((x + y) * 0.5) % 256], -1) + rng.uniform(0, 40, (224, 224, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    Image.fromarray(img).save(os.path.join(work, "image.png"))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    xin = torch.from_numpy(((img / 255.0 - mean) / std).astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        prob = F.softmax(model(xin), -1)[0]
    top = torch.topk(prob, 10)
    ref = {int(i): float(p) for p, i in zip(top.values, top.indices)}

    files = {}
    files["official.safetensors"] = lambda f: write_safetensors(f, list(sd.items()), {})
    files["timm.safetensors"] = lambda f: write_safetensors(f, [(timm_name(k), v) for k, v in sd.items()], {})
    files["model.pth"] = lambda f: torch.save({"model": sd}, f)
    files["bare.pth"] = lambda f: torch.save(sd, f)
    files["proto4.pth"] = lambda f: torch.save({"model": sd}, f, pickle_protocol=4)
    files["full_checkpoint.pth"] = lambda f: torch.save(
        {"model": sd, "model_ema": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}, "epoch": 3}, f)

    def archive(f):
        tmp = f + ".tmp"
        torch.save({"model": sd}, tmp)
        with zipfile.ZipFile(tmp) as zin, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zout:
            for info in zin.infolist():
                zout.writestr("archive/" + info.filename.split("/", 1)[1], zin.read(info.filename))
        os.remove(tmp)
    files["archive_prefix.pth"] = archive

    worst = 0.0
    for name, write in files.items():
        path = os.path.join(work, name)
        write(path)
        out = subprocess.run([cli, "predict", "--model", "convnext_tiny", "--weights", path, "--image",
                              os.path.join(work, "image.png"), "--resize", "224", "--crop", "224", "--topk", "10",
                              "--json"], capture_output=True, text=True)
        if out.returncode != 0:
            print("%-22s FAILED: %s" % (name, out.stderr.strip()))
            worst = float("inf")
            continue
        got = {e["index"]: e["prob"] for e in json.loads(out.stdout.strip().splitlines()[-1])["top"]}
        diff = max(abs(got.get(i, 0.0) - p) for i, p in ref.items())
        same_order = list(got.keys()) == list(ref.keys())
        worst = max(worst, diff)
        print("%-22s max |p - p_torch| over the top 10 = %.2e, same ranking: %s" % (name, diff, same_order))
    print("top-1 prob %.4f (class %d); worst difference %.2e -> %s" % (top.values[0], top.indices[0], worst,
                                                                      "PASS" if worst <= 1e-4 else "FAIL"))
    sys.exit(0 if worst <= 1e-4 else 1)


if __name__ == "__main__":
    main()
