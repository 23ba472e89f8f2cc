#!/usr/bin/python3
"""Seed corpora for the data-side fuzz harnesses (tests/fuzz/corpus/<harness>/).

Small valid inputs of every format and variant each parser accepts, plus a few near misses, so
libFuzzer starts from deep inside the decoders. Needs Pillow (Debian: python3-pil).

    /usr/bin/python3 tools/make_fuzz_corpus.py
"""
import gzip
import io
import json
import os
import struct
import zlib

from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fuzz", "corpus")


def out(harness, name, data):
    d = os.path.join(ROOT, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def picture(w, h, mode):
    img = Image.new("RGB", (w, h))
    img.putdata([((x * 37) % 256, (y * 61) % 256, ((x + y) * 23) % 256) for y in range(h) for x in range(w)])
    return img.convert(mode)


def encode(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def png_adam7(w, h):
    """An interlaced (Adam7) RGB PNG; Pillow does not write interlaced files."""
    img = picture(w, h, "RGB")
    raw = b""
    for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)]:
        if x0 >= w or y0 >= h:
            continue
        for y in range(y0, h, dy):
            raw += b"\x00" + b"".join(bytes(img.getpixel((x, y))) for x in range(x0, w, dx))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def images():
    h = "fuzz_image"
    out(h, "png_rgb", encode(picture(7, 5, "RGB"), "PNG"))
    out(h, "png_rgba", encode(picture(6, 4, "RGBA"), "PNG"))
    out(h, "png_grey", encode(picture(5, 3, "L"), "PNG"))
    out(h, "png_grey_alpha", encode(picture(4, 4, "LA"), "PNG"))
    out(h, "png_palette", encode(picture(6, 5, "P"), "PNG"))
    out(h, "png_1bit", encode(picture(9, 3, "1"), "PNG"))
    out(h, "png_interlaced", png_adam7(9, 7))
    out(h, "png_16bit", encode(picture(5, 4, "L").point(lambda v: v * 257).convert("I;16"), "PNG"))
    out(h, "jpeg_baseline", encode(picture(17, 13, "RGB"), "JPEG", quality=80))
    out(h, "jpeg_444", encode(picture(9, 7, "RGB"), "JPEG", quality=90, subsampling=0))
    out(h, "jpeg_progressive", encode(picture(17, 13, "RGB"), "JPEG", quality=75, progressive=True))
    out(h, "jpeg_grey", encode(picture(8, 8, "L"), "JPEG", quality=70))
    out(h, "jpeg_restart", encode(picture(24, 16, "RGB"), "JPEG", quality=60, restart_marker_blocks=1))
    out(h, "bmp_24", encode(picture(5, 3, "RGB"), "BMP"))
    out(h, "bmp_8", encode(picture(5, 3, "P"), "BMP"))
    out(h, "bmp_32", encode(picture(3, 3, "RGBA"), "BMP"))
    out(h, "bmp_1", encode(picture(11, 2, "1"), "BMP"))
    out(h, "gif", encode(picture(6, 6, "P"), "GIF"))
    out(h, "gif_interlaced", encode(picture(6, 9, "P"), "GIF", interlace=True))
    out(h, "tga", encode(picture(4, 3, "RGB"), "TGA"))
    out(h, "tga_rle", encode(picture(8, 2, "RGB"), "TGA", compression="tga_rle"))
    out(h, "tga_grey", encode(picture(4, 4, "L"), "TGA"))
    # Near misses: a PNG declaring 100000 x 100000 pixels (the limit), a truncated JPEG.
    png = bytearray(encode(picture(4, 4, "RGB"), "PNG"))
    png[16:24] = struct.pack(">II", 100000, 100000)
    out(h, "png_huge_header", bytes(png))
    out(h, "jpeg_truncated", encode(picture(16, 16, "RGB"), "JPEG")[:200])


def idx_bytes(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def idx():
    h = "fuzz_idx"
    pix = [(i * 7) % 256 for i in range(3 * 4 * 5)]
    out(h, "images_plain", idx_bytes([3, 4, 5], pix))
    out(h, "images_gz", gzip.compress(idx_bytes([3, 4, 5], pix), mtime=0))
    out(h, "labels_gz", gzip.compress(idx_bytes([6], [0, 9, 3, 1, 2, 7]), mtime=0))
    out(h, "labels_plain", idx_bytes([4], [1, 2, 3, 4]))
    out(h, "four_dims_gz", gzip.compress(idx_bytes([1, 2, 2, 2], range(8)), mtime=0))
    out(h, "truncated_gz", gzip.compress(idx_bytes([3, 4, 5], pix), mtime=0)[:-9])
    out(h, "trailing_plain", idx_bytes([2], [1, 2]) + b"\x00")
    out(h, "two_members_gz", gzip.compress(idx_bytes([2], [5, 6])[:5], mtime=0) +
        gzip.compress(idx_bytes([2], [5, 6])[5:], mtime=0))


def class_indices():
    h = "fuzz_class_indices"

    def dump(d, **kw):
        return json.dumps(d, **kw).encode()

    out(h, "flowers", dump({"0": "daisy", "1": "dandelion", "2": "roses", "3": "sunflowers", "4": "tulips"}, indent=4))
    out(h, "twelve", dump({str(i): "class_%d" % i for i in range(12)}, indent=4))
    out(h, "unicode", dump({"0": "caf\u00e9", "1": "\u00fcber", "2": "\U0001f33c"}))
    out(h, "unordered", b'{"1": "b", "0": "a"}')
    out(h, "not_index", b'{"0": "a", "x": "b"}')
    out(h, "repeat", b'{"0": "a", "0": "b"}')
    out(h, "nested", b'{"0": ["a"], "1": {"b": 1}}')


if __name__ == "__main__":
    images()
    idx()
    class_indices()
