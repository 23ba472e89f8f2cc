#!/usr/bin/python3
"""Writes the .pth fixtures for tests/test_pth.cpp and the fuzzers' seed corpora.

Run with Debian's python3-torch (torch 1.13):   /usr/bin/python3 tools/gen_pth_fixtures.py

tests/fixtures/pth/
  <name>.pth                 written by torch.save (or repacked from one), loadable
  <name>.expected.safetensors  the float32 values the loader must return, in state_dict order
  bad_*.pth                  malformed or hostile files; each must end in a clean error
tests/fuzz/corpus/{fuzz_pth,fuzz_unpickler,fuzz_safetensors}/   seeds

The hostile pickles (bad_system_*) are built by pickling an object whose __reduce__ names
os.system. They are never loaded here; torch.load on them would run the command.
"""
import collections
import io
import json
import os
import pickle
import struct
import zipfile
import zlib

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "pth")
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def path(name):
    return os.path.join(OUT, name)


# ---- writers that need no extra packages ----

def write_safetensors(fname, tensors):
    """Minimal safetensors writer (F32 only): 8-byte header length, JSON header, data."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(fname, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_zip(fname, entries, zip64_fields=False):
    """A stored-only zip writer. zip64_fields=True saturates every 32-bit size/offset and puts the
    real values in ZIP64 extra fields, the layout files over 4 GiB use."""
    out, central = bytearray(), bytearray()
    for name, data in entries:
        n = name.encode()
        crc = zlib.crc32(data) & 0xFFFFFFFF
        offset = len(out)
        sz = 0xFFFFFFFF if zip64_fields else len(data)
        lextra = struct.pack("<HHQQ", 1, 16, len(data), len(data)) if zip64_fields else b""
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, crc, sz, sz, len(n), len(lextra))
        out += n + lextra + data
        cextra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), offset) if zip64_fields else b""
        off32 = 0xFFFFFFFF if zip64_fields else offset
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, crc, sz, sz, len(n),
                               len(cextra), 0, 0, 0, 0, off32)
        central += n + cextra
    cd_off = len(out)
    out += central
    z64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(entries), len(entries), len(central), cd_off)
    out += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(fname, "wb") as f:
        f.write(out)
    zipfile.ZipFile(fname).testzip()  # our reader must not be the only one that accepts it


def zip_entries(fname):
    with zipfile.ZipFile(fname) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def rezip(src, dst, rename=None, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(dst, "w", compression) as z:
        for name, data in zip_entries(src):
            z.writestr(rename(name) if rename else name, data)


# ---- crafted pickles: arbitrary tensor descriptions and hostile globals ----

class FakeStorage:
    def __init__(self, key, numel, cls=torch.FloatStorage):
        self.key, self.numel, self.cls = key, numel, cls


class FakeTensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/pwned",))


class StoragePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def crafted(fname, obj, storages, protocol=2, prefix="archive"):
    buf = io.BytesIO()
    StoragePickler(buf, protocol=protocol).dump(obj)
    raw(fname, buf.getvalue(), storages, prefix)


def raw(fname, pkl, storages=None, prefix="archive"):
    entries = [(prefix + "/data.pkl", pkl)]
    entries += [(prefix + "/data/" + k, v) for k, v in (storages or {}).items()]
    entries.append((prefix + "/version", b"3\n"))
    write_zip(fname, entries)


def f32(*vals):
    return struct.pack("<%df" % len(vals), *vals)


# ---- fixtures ----

def state_dict(seed):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    return collections.OrderedDict([
        ("downsample_layers.0.0.weight", r(8, 3, 4, 4)),
        ("downsample_layers.0.0.bias", r(8)),
        ("downsample_layers.0.1.weight", 1 + 0.1 * r(8)),
        ("downsample_layers.0.1.bias", r(8)),
        ("stages.0.0.dwconv.weight", r(8, 1, 7, 7)),
        ("stages.0.0.gamma", 1e-6 * torch.ones(8)),
        ("head.weight", r(5, 8)),
        ("head.bias", r(5)),
    ])


def script_checkpoint_fixtures(sd, opt):
    """A checkpoint as training scripts write it: the options as an argparse.Namespace and numpy
    scalars and arrays beside the model. The reader must take "model" and never touch the rest.
    And a whole module pickled by torch.save(model), which cannot be read without running code."""
    import argparse
    import numpy
    torch.save({"model": sd, "optimizer": opt.state_dict(), "epoch": 7,
                "args": argparse.Namespace(model="convnext_tiny", lr=4e-3, drop_path=0.1),
                "max_accuracy": numpy.float64(0.8125), "steps": numpy.arange(3),
                "scaler": {"scale": 65536.0}}, path("checkpoint_args.pth"))
    torch.save(torch.nn.Linear(2, 2), path("bad_whole_module.pth"))
    for name in ("checkpoint_args.pth", "bad_whole_module.pth"):
        data = open(path(name), "rb").read()
        open(os.path.join(CORPUS, "fuzz_pth", name[:-4]), "wb").write(data)


def good_fixtures():
    sd = state_dict(0)
    ema = state_dict(1)
    write_safetensors(path("model.expected.safetensors"), sd)
    write_safetensors(path("model_ema.expected.safetensors"), ema)

    torch.save({"model": sd}, path("model.pth"))
    torch.save(sd, path("bare.pth"))
    torch.save({"model": sd}, path("proto4.pth"), pickle_protocol=4)

    # Official names -> timm names (the mapping the C++ side must undo).
    timm = {
        "downsample_layers.0.0": "stem.0", "downsample_layers.0.1": "stem.1",
        "stages.0.0.dwconv": "stages.0.blocks.0.conv_dw", "stages.0.0.gamma": "stages.0.blocks.0.gamma",
        "head.weight": "head.fc.weight", "head.bias": "head.fc.bias",
    }
    tsd = collections.OrderedDict()
    for k, v in sd.items():
        for a, b in timm.items():
            if k.startswith(a):
                k = b + k[len(a):]
                break
        tsd[k] = v
    torch.save(tsd, path("timm.pth"))

    base = torch.arange(40, dtype=torch.float32).reshape(8, 5) / 7
    cube = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(2))
    nc = collections.OrderedDict([
        ("transposed", base.t()),
        ("strided", base[1:, ::2]),
        ("permuted", cube.permute(2, 0, 1)),
        ("expanded", torch.tensor([1.5, -2.0]).reshape(2, 1).expand(2, 3)),  # stride 0
    ])
    torch.save(nc, path("noncontig.pth"))
    write_safetensors(path("noncontig.expected.safetensors"), nc)

    flat = torch.arange(24, dtype=torch.float32) * 0.5
    sh = collections.OrderedDict([
        ("a", flat[:6].view(2, 3)),
        ("b", flat[6:]),
        ("c", flat.view(4, 6)),
        ("d", flat[::5]),
    ])
    torch.save(sh, path("shared.pth"))
    write_safetensors(path("shared.expected.safetensors"), sh)

    dt = collections.OrderedDict([
        ("half", torch.tensor([[1.0, -2.5, 65504.0, 6e-8], [0.1, -0.0, 3.14159, 1e-4]], dtype=torch.float16)),
        ("bfloat16", torch.tensor([1.0, -3.5, 1e30, 0.1], dtype=torch.bfloat16)),
        ("double", torch.tensor([1.0 / 3, -2e-3], dtype=torch.float64)),
        ("num_batches_tracked", torch.tensor(12345, dtype=torch.int64)),
        ("int32", torch.tensor([-7, 0, 2**20], dtype=torch.int32)),
        ("int16", torch.tensor([-300, 300], dtype=torch.int16)),
        ("int8", torch.tensor([-128, 127], dtype=torch.int8)),
        ("uint8", torch.tensor([0, 255], dtype=torch.uint8)),
        ("bool", torch.tensor([True, False, True])),
    ])
    torch.save(dt, path("dtypes.pth"))
    write_safetensors(path("dtypes.expected.safetensors"), dt)

    # A training checkpoint: model, EMA, a real AdamW state, scalars.
    params = [torch.nn.Parameter(v.clone()) for v in list(sd.values())[:2]]
    opt = torch.optim.AdamW(params, lr=1e-3)
    sum((p * p).sum() for p in params).backward()
    opt.step()
    torch.save({"model": sd, "model_ema": ema, "optimizer": opt.state_dict(), "epoch": 7, "best": 0.875,
                "name": "run-1", "note": None}, path("checkpoint.pth"))
    torch.save({"model_ema": ema, "epoch": 3}, path("ema_only.pth"))
    script_checkpoint_fixtures(sd, opt)

    # Same archive, other containers: the "archive/" prefix of older PyTorch, deflate, ZIP64 fields.
    rezip(path("model.pth"), path("archive_prefix.pth"), rename=lambda n: "archive" + n[n.index("/"):])
    rezip(path("model.pth"), path("deflate.pth"), compression=zipfile.ZIP_DEFLATED)
    write_zip(path("zip64.pth"), zip_entries(path("model.pth")), zip64_fields=True)
    # PyTorch >= 2.1 adds <prefix>/byteorder; "little" is the only order accepted.
    write_zip(path("byteorder.pth"), zip_entries(path("model.pth")) + [("model/byteorder", b"little")])

    # A parameter pickled as such (torch._utils._rebuild_parameter).
    torch.save({"w": torch.nn.Parameter(sd["head.weight"].clone())}, path("parameter.pth"))
    write_safetensors(path("parameter.expected.safetensors"), {"w": sd["head.weight"]})


def bad_fixtures():
    good = open(path("model.pth"), "rb").read()
    open(path("bad_truncated.pth"), "wb").write(good[: len(good) // 2])
    open(path("bad_truncated_tail.pth"), "wb").write(good[:-30])

    # Central directory points the first entry's local header 7 bytes off.
    entries = zip_entries(path("model.pth"))
    write_zip(path("bad_offsets.pth"), entries)
    b = bytearray(open(path("bad_offsets.pth"), "rb").read())
    cd = b.find(b"PK\x01\x02")
    struct.pack_into("<I", b, cd + 42, struct.unpack_from("<I", b, cd + 42)[0] + 7)
    open(path("bad_offsets.pth"), "wb").write(b)

    # A flipped byte in a storage: only the CRC can tell.
    b = bytearray(open(path("zip64.pth"), "rb").read())
    i = b.find(b"model/data/0") + len("model/data/0") + 20 + 5  # inside the data (after the ZIP64 extra)
    b[i] ^= 0x40
    open(path("bad_crc.pth"), "wb").write(b)

    st = FakeStorage("0", 4)
    four = f32(1, 2, 3, 4)
    crafted(path("bad_numel.pth"), {"w": FakeTensor(st, 0, (10,), (1,))}, {"0": four})
    crafted(path("bad_offset_beyond.pth"), {"w": FakeTensor(st, 3, (2, 2), (2, 1))}, {"0": four})
    crafted(path("bad_storage_size.pth"), {"w": FakeTensor(st, 0, (4,), (1,))}, {"0": four[:12]})
    crafted(path("bad_missing_storage.pth"), {"w": FakeTensor(FakeStorage("7", 4), 0, (4,), (1,))}, {"0": four})
    crafted(path("bad_stride0_bomb.pth"), {"w": FakeTensor(st, 0, (1 << 40,), (0,))}, {"0": four})
    # 2^62 elements x 4 bytes wraps a 64-bit byte count to zero: must still be refused.
    crafted(path("bad_stride0_wrap.pth"), {"w": FakeTensor(st, 0, (1 << 62,), (0,))}, {"0": four})
    crafted(path("bad_overflow.pth"), {"w": FakeTensor(st, 0, (1 << 62, 1 << 62), (1, 1))}, {"0": four})
    crafted(path("bad_nontensor.pth"), {"model": {"w": FakeTensor(st, 0, (4,), (1,)), "step": 3}}, {"0": four})
    crafted(path("bad_toplist.pth"), [FakeTensor(st, 0, (4,), (1,))], {"0": four})
    crafted(path("bad_system_p2.pth"), {"model": {"w": Evil()}}, {}, protocol=2)
    crafted(path("bad_system_p4.pth"), {"model": {"w": Evil()}}, {}, protocol=4)

    write_zip(path("bad_bigendian.pth"), zip_entries(path("model.pth")) + [("model/byteorder", b"big")])

    raw(path("bad_opcode.pth"), b"\x80\x02}q\x00\xff.")
    raw(path("bad_memo.pth"), b"\x80\x02}q\x00h\x05.")
    raw(path("bad_deep_marks.pth"), b"\x80\x02" + b"(" * 5000 + b".")
    raw(path("bad_deep_lists.pth"), b"\x80\x02" + b"]" * 3000 + b"a" * 2999 + b".")
    raw(path("bad_underflow.pth"), b"\x80\x02s.")
    raw(path("bad_no_stop.pth"), b"\x80\x02}q\x00")
    torch.save({"w": torch.ones(2)}, path("bad_legacy.pth"), _use_new_zipfile_serialization=False)

    # bad_storage_call: rewrite the pickle so that it *calls* torch.FloatStorage (allowed as a
    # storage type, never as a function).
    pkl = b"\x80\x02}q\x00X\x01\x00\x00\x00wctorch\nFloatStorage\n)R\x85."
    raw(path("bad_storage_call.pth"), pkl)


def corpora():
    for sub in ("fuzz_pth", "fuzz_unpickler", "fuzz_safetensors"):
        os.makedirs(os.path.join(CORPUS, sub), exist_ok=True)
    for name in sorted(os.listdir(OUT)):
        data = open(path(name), "rb").read()
        stem = name.split(".")[0]
        if name.endswith(".pth"):
            open(os.path.join(CORPUS, "fuzz_pth", stem), "wb").write(data)
            try:
                for n, d in zip_entries(path(name)):
                    if n.endswith("data.pkl"):
                        open(os.path.join(CORPUS, "fuzz_unpickler", stem), "wb").write(d)
            except zipfile.BadZipFile:
                pass
        elif name.endswith(".safetensors"):
            open(os.path.join(CORPUS, "fuzz_safetensors", stem), "wb").write(data)
            open(os.path.join(CORPUS, "fuzz_safetensors", stem + "_truncated"), "wb").write(data[: len(data) // 2])


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    good_fixtures()
    bad_fixtures()
    corpora()
    total = 0
    for name in sorted(os.listdir(OUT)):
        size = os.path.getsize(path(name))
        total += size
        assert size < 100_000, name
    print("wrote %d files to %s (%d bytes)" % (len(os.listdir(OUT)), OUT, total))
