#!/usr/bin/python3
"""Writes tests/fixtures/vis/ for tests/test_vis.cpp: PyTorch references for Grad-CAM and for
other libraries' ConvNeXt files run through the `convnext` command line.

Run with Debian's python3-torch, python3-torchvision and python3-pil:
    /usr/bin/python3 tools/gen_vis_fixtures.py

tests/fixtures/vis/
  gradcam_model.safetensors  a small ConvNeXt (official names, random weights, layer scales
                             around 1 so every block matters): depths/dims/classes in reference.json
  gradcam.png                a 128x128 RGB image (a bright disc on noise): the crop size
  tv_image.png               a 32x32 RGB image for the torchvision model of ../torchvision/small.pth
  timm_atto.pth              timm's ConvNeXt layout with conv_mlp=True (as convnext_atto, femto,
  timm_atto.safetensors      pico and nano): stem.*, stages.i.downsample.*, stages.i.blocks.j.conv_dw,
                             .norm, .mlp.fc1/.mlp.fc2 stored as 1x1 convolutions [4C, C, 1, 1] and
                             [C, 4C, 1, 1], .gamma, head.norm, head.fc; small dims, 3 classes
  reference.json             {"gradcam": [...cases...], "torchvision": {...}, "timm": {...}}

Grad-CAM is computed the pytorch-grad-cam way (the package itself is not in Debian): a forward
hook on the target layer keeps its activation and a tensor hook its gradient; weights = spatial
mean of the gradient of the target class's logit; cam = ReLU(sum_c w_c A_c), then
(cam - min) / (1e-7 + max) as its scale_cam_image does.
"""
import collections
import glob
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gen_model_fixture import ChannelsFirstLayerNorm, ConvNeXt, write_safetensors  # noqa: E402

ROOT = os.path.join(HERE, "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "vis")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def image_input(path):
    """What `convnext predict --resize S --crop S` feeds an SxS image: /255, ImageNet-normalised."""
    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    x = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0) / 255.0
    return (x - MEAN) / STD


def randomise(model, g):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma") or name.endswith("layer_scale") or (p.dim() == 1 and name.endswith("weight")):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def grad_cam(model, x, layer, target_class):
    store = {}

    def forward_hook(module, inputs, output):
        store["activation"] = output
        output.register_hook(lambda grad: store.__setitem__("gradient", grad))

    handle = model.get_submodule(layer).register_forward_hook(forward_hook)
    logits = model(x)
    handle.remove()
    probs = torch.softmax(logits, -1)[0]
    cls = int(logits.argmax(-1)) if target_class is None else target_class
    model.zero_grad()
    logits[0, cls].backward()
    a = store["activation"].detach().numpy()[0]    # C, h, w
    grads = store["gradient"].detach().numpy()[0]  # C, h, w
    weights = grads.mean(axis=(1, 2))
    cam = np.maximum((weights[:, None, None] * a).sum(axis=0), 0)
    cam = cam - cam.min()
    cam = cam / (1e-7 + cam.max())
    return {"layer": layer, "class": cls, "prob": float(probs[cls]), "cam": cam.tolist(),
            "requested_class": target_class}


def gradcam_fixture(g):
    depths, dims, classes = [1, 1, 2, 1], [8, 16, 24, 32], 5
    model = ConvNeXt(3, classes, depths, dims)
    randomise(model, g)
    model.eval()
    write_safetensors(os.path.join(OUT, "gradcam_model.safetensors"),
                      [(k, v.detach().contiguous()) for k, v in model.state_dict().items()], {})
    size = 128
    yy, xx = np.mgrid[0:size, 0:size]
    disc = ((yy - 40) ** 2 + (xx - 80) ** 2 < 24 ** 2)[..., None]
    noise = np.random.default_rng(3).integers(0, 90, (size, size, 3))
    pixels = np.where(disc, np.array([250, 220, 40]), noise).astype(np.uint8)
    path = os.path.join(OUT, "gradcam.png")
    Image.fromarray(pixels).save(path)
    x = image_input(path)
    with torch.no_grad():
        probs = torch.softmax(model(x), -1)[0]
    lowest = int(probs.argmin())
    cases = [grad_cam(model, x, "stages.3", None), grad_cam(model, x, "stages.2.1", None),
             grad_cam(model, x, "stages.2", lowest)]
    return {"depths": depths, "dims": dims, "num_classes": classes, "size": size,
            "probs": probs.tolist(), "cases": cases}


def torchvision_fixture(g):
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt as TvConvNeXt
    cfg = json.load(open(os.path.join(ROOT, "tests", "fixtures", "torchvision", "names.json")))["small"]
    setting = [CNBlockConfig(cfg["dims"][i], cfg["dims"][i + 1] if i < 3 else None, cfg["depths"][i]) for i in range(4)]
    model = TvConvNeXt(setting, num_classes=cfg["num_classes"]).eval()
    model.load_state_dict(torch.load(os.path.join(ROOT, "tests", "fixtures", "torchvision", "small.pth")))
    pixels = torch.randint(0, 256, (32, 32, 3), generator=g, dtype=torch.uint8).numpy()
    path = os.path.join(OUT, "tv_image.png")
    Image.fromarray(pixels).save(path)
    with torch.no_grad():
        probs = torch.softmax(model(image_input(path)), -1)[0]
    return dict(cfg, probs=probs.tolist())


class LayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: LayerNorm over the channels of NCHW."""

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class ConvMlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, 4 * dim, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(4 * dim, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TimmBlock(nn.Module):
    """timm.models.convnext.ConvNeXtBlock with conv_mlp=True."""

    def __init__(self, dim):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.mlp = ConvMlp(dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x + self.mlp(self.norm(self.conv_dw(x))) * self.gamma.reshape(1, -1, 1, 1)


class TimmStage(nn.Module):
    def __init__(self, in_dim, dim, depth):
        super().__init__()
        self.downsample = (nn.Sequential(LayerNorm2d(in_dim, eps=1e-6), nn.Conv2d(in_dim, dim, 2, stride=2))
                           if in_dim != dim else nn.Identity())
        self.blocks = nn.Sequential(*[TimmBlock(dim) for _ in range(depth)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class TimmHead(nn.Module):
    def __init__(self, dim, classes):
        super().__init__()
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.fc = nn.Linear(dim, classes)

    def forward(self, x):
        return self.fc(self.norm(x.mean((2, 3), keepdim=True)).flatten(1))


class TimmConvNeXt(nn.Module):
    def __init__(self, depths, dims, classes):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        self.stages = nn.Sequential(*[TimmStage(dims[max(i - 1, 0)], dims[i], depths[i]) for i in range(4)])
        self.head = TimmHead(dims[-1], classes)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


def timm_fixture(g):
    depths, dims, classes = [1, 1, 2, 1], [8, 16, 24, 32], 3
    model = TimmConvNeXt(depths, dims, classes)
    randomise(model, g)
    model.eval()
    sd = collections.OrderedDict(model.state_dict())
    torch.save(sd, os.path.join(OUT, "timm_atto.pth"))
    write_safetensors(os.path.join(OUT, "timm_atto.safetensors"), [(k, v.contiguous()) for k, v in sd.items()], {})
    folder = os.path.join(ROOT, "tests", "fixtures", "train_folder")
    files = sorted(glob.glob(os.path.join(folder, "*", "*.png")))
    classes_of = sorted(os.listdir(folder))
    with torch.no_grad():
        logits = torch.cat([model(image_input(f)) for f in files])
    labels = torch.tensor([classes_of.index(os.path.basename(os.path.dirname(f))) for f in files])
    probs = torch.softmax(logits, -1)
    images = {os.path.relpath(f, folder): p.tolist() for f, p in zip(files[::8], probs[::8])}
    return {"depths": depths, "dims": dims, "num_classes": classes,
            "fc1_shape": list(sd["stages.0.blocks.0.mlp.fc1.weight"].shape),
            "probs": images,
            "eval_loss": float(F.cross_entropy(logits, labels)),
            "eval_top1": float((logits.argmax(-1) == labels).float().mean())}


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(16)
    ref = {"gradcam": gradcam_fixture(g), "torchvision": torchvision_fixture(g), "timm": timm_fixture(g)}
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
