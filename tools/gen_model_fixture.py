#!/usr/bin/python3
"""Writes tests/fixtures/model_small.safetensors: a PyTorch reference for tests/test_model.cpp.

A small ConvNeXt with the official parameter names (the architecture of Liu et al. 2022,
written out here), one forward and backward pass of cross-entropy on a fixed batch. The file
holds every parameter, the input (NHWC), targets, logits, loss, and the gradient of every
parameter ("grad.<name>") and of the input ("grad.input", NHWC).

With --family convnext_v2 the same for ConvNeXt V2 (Woo et al. 2023: GRN in the block, no layer
scale; written out here as the official repository defines it) into model_small_v2.safetensors,
GRN's gamma and beta random so that no GRN is the identity.

Run with Debian's python3-torch:  /usr/bin/python3 tools/gen_model_fixture.py [--family convnext_v2]
Only CI-free maintenance needs torch; the C++ test reads the committed file.
"""
import argparse
import json
import os
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over dim 1 of NCHW, computed as the official model does."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class Block(nn.Module):
    def __init__(self, dim, layer_scale_init_value=1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)  # NCHW -> NHWC
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class GRN(nn.Module):
    """Global Response Normalization on NHWC input, as the official ConvNeXt V2 code."""

    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x):
        Gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        Nx = Gx / (Gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * Nx) + self.beta + x


class BlockV2(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)  # NCHW -> NHWC
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, in_chans, num_classes, depths, dims, block=Block):
        super().__init__()
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(
            nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), ChannelsFirstLayerNorm(dims[0])))
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(ChannelsFirstLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)))
        self.stages = nn.ModuleList(nn.Sequential(*[block(dims[i]) for _ in range(depths[i])]) for i in range(4))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
        return self.head(self.norm(x.mean([-2, -1])))


DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, t in tensors:
        data = t.detach().contiguous().cpu().numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def nhwc(t):
    return t.permute(0, 2, 3, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", choices=["convnext", "convnext_v2"], default="convnext")
    ap.add_argument("--out")
    ap.add_argument("--depths", default="1,1,2,1")
    # [16,32,64,128] would be 2.2 MB (parameters + gradients in F32); half the widths keeps the
    # file well under 1 MiB and exercises exactly the same code. V2: narrower still (~250 KB).
    ap.add_argument("--dims")
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=32)
    args = ap.parse_args()
    v2 = args.family == "convnext_v2"
    if args.out is None:
        args.out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                "model_small_v2.safetensors" if v2 else "model_small.safetensors")
    if args.dims is None:
        args.dims = "8,16,24,32" if v2 else "8,16,32,64"
    depths = [int(v) for v in args.depths.split(",")]
    dims = [int(v) for v in args.dims.split(",")]

    torch.manual_seed(0)
    model = ConvNeXt(3, args.num_classes, depths, dims, BlockV2 if v2 else Block)
    # PyTorch's default conv/linear init keeps every block's contribution O(1); layer scale,
    # LayerNorm affine and biases get random values so no branch is an identity or a zero.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.LayerNorm, ChannelsFirstLayerNorm)):
                m.weight.copy_(1.0 + 0.3 * torch.randn_like(m.weight))
                m.bias.copy_(0.3 * torch.randn_like(m.bias))
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.copy_(0.1 * torch.randn_like(m.bias))
            elif isinstance(m, Block):
                m.gamma.copy_(0.5 + torch.rand_like(m.gamma))
            elif isinstance(m, GRN):
                m.gamma.copy_(0.5 * torch.randn_like(m.gamma))
                m.beta.copy_(0.3 * torch.randn_like(m.beta))

    x = torch.randn(args.batch, 3, args.image_size, args.image_size, requires_grad=True)
    targets = torch.tensor([(3 * i + 1) % args.num_classes for i in range(args.batch)], dtype=torch.int64)
    logits = model(x)
    loss = F.cross_entropy(logits, targets)
    loss.backward()

    tensors = [(n, p) for n, p in model.state_dict().items()]
    tensors += [("input", nhwc(x)), ("targets", targets), ("logits", logits), ("loss", loss)]
    tensors += [("grad." + n, p.grad) for n, p in model.named_parameters()]
    tensors += [("grad.input", nhwc(x.grad))]
    metadata = {
        "depths": json.dumps(depths), "dims": json.dumps(dims), "num_classes": str(args.num_classes),
        "in_chans": "3", "torch": torch.__version__, "family": args.family,
        "note": "input and grad.input are NHWC; parameters and their grads use PyTorch's layouts",
    }
    write_safetensors(args.out, tensors, metadata)
    size = os.path.getsize(args.out)
    print(f"wrote {args.out}: {len(tensors)} tensors, {size} bytes, loss {loss.item():.6f}")
    for n, p in model.named_parameters():
        print(f"  grad.{n:40s} max|g| {p.grad.abs().max().item():.3e}")


if __name__ == "__main__":
    main()
