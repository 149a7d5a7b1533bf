#!/usr/bin/python3
"""Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/seed-*), small files that
reach deep into each reader: tiny random networks made here (no third-party weights), in every
dtype and serialisation variant the readers handle, plus truncated and refused variants. Run with
Debian's PyTorch (python3-torch 1.13) and PIL, nothing else:

    /usr/bin/python3 fuzz/make_corpus.py

Only seed-* files are (re)written; inputs that fuzzing found (crash-*, oom-*, timeout-*, kept
after their fix) stay. Deterministic except the legacy .pth, which names its storages by Python
object ids.
"""
import collections
import io
import json
import os
import struct
import zipfile

import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def out(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    assert len(data) <= 16384, (target, name, len(data))
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def net(indices=(0, 2), widths=(2, 2), dtype=torch.float32, classifier=False, ordered=True):
    """features.N.weight/bias for convs at `indices` (3 input channels first), random values."""
    g = torch.Generator().manual_seed(7)
    sd = collections.OrderedDict() if ordered else {}
    cin = 3
    for i, c in zip(indices, widths):
        sd[f"features.{i}.weight"] = (torch.randn(c, cin, 3, 3, generator=g) * 0.1).to(dtype)
        sd[f"features.{i}.bias"] = (torch.randn(c, generator=g) * 0.1).to(dtype)
        cin = c
    if classifier:
        sd["classifier.0.weight"] = torch.randn(2, 4, generator=g).to(dtype)
    return sd


def torch_bytes(sd, **kw):
    b = io.BytesIO()
    torch.save(sd, b, **kw)
    return b.getvalue()


def rezip(data, compression):
    """The same zip .pth with its entries stored another way (torch writes them stored)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", compression) as dst:
        for info in src.infolist():
            # A fixed date: the seeds do not change from run to run.
            dst.writestr(zipfile.ZipInfo(info.filename, FIXED_DATE), src.read(info.filename), compression)
    return b.getvalue()


def pth(target, zipped):
    kw = {} if zipped else {"_use_new_zipfile_serialization": False}
    base = torch_bytes(net(), **kw)
    out(target, "tiny_f32", base)
    out(target, "tiny_proto4", torch_bytes(net(), pickle_protocol=4, **kw))
    out(target, "tiny_f16_classifier", torch_bytes(net(dtype=torch.float16, classifier=True), **kw))
    out(target, "tiny_f64_plain_dict", torch_bytes(net(dtype=torch.float64, ordered=False), **kw))
    out(target, "tiny_bf16", torch_bytes(net(dtype=torch.bfloat16), **kw))
    out(target, "pool_gap", torch_bytes(net(indices=(0, 2, 5), widths=(2, 2, 3)), **kw))
    # A Parameter, and a bias that is a view at an offset into a larger storage.
    sd = net()
    sd["features.0.weight"] = torch.nn.Parameter(sd["features.0.weight"])
    sd["features.2.bias"] = torch.randn(6)[3:5]
    out(target, "parameter_and_view", torch_bytes(sd, **kw))
    # Refused: channels that do not chain, a non-finite weight.
    out(target, "unchained", torch_bytes(_unchained(), **kw))
    sd = net()
    sd["features.2.bias"][1] = float("nan")
    out(target, "nan", torch_bytes(sd, **kw))
    out(target, "truncated", base[: len(base) * 2 // 3])
    # A state dict that holds itself, with a list of 300 references to itself beside it: refused
    # (fuzzing found that such reference cycles were never freed, a few MB per load).
    cyclic = b"\x80\x02}q\x00(X\x01\x00\x00\x00ah\x00X\x01\x00\x00\x00b]q\x01(" + b"h\x01" * 300 + b"eu."
    if zipped:
        b = io.BytesIO()
        with zipfile.ZipFile(b, "w") as z:
            z.writestr(zipfile.ZipInfo("archive/data.pkl", FIXED_DATE), cyclic)
        out(target, "self_reference", b.getvalue())
    else:
        magic = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."
        out(target, "self_reference", magic + b"\x80\x02M\xe9\x03.\x80\x02}." + cyclic + b"\x80\x02].")
    if zipped:
        out(target, "deflated", rezip(base, zipfile.ZIP_DEFLATED))
        out(target, "stored_by_zipfile", rezip(base, zipfile.ZIP_STORED))


def _unchained():
    sd = net()
    sd["features.2.weight"] = torch.randn(2, 5, 3, 3)
    return sd


def safetensors_bytes(tensors, metadata=None):
    """tensors: [(name, dtype string, shape, raw bytes)], in file order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dt, shape, raw in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def st_tensors(dtype, st_name, classifier=False):
    out_ = []
    for k, v in net(dtype=dtype, classifier=classifier).items():
        out_.append((k, st_name, v.shape, v.contiguous().view(torch.uint8).numpy().tobytes()))
    return out_


def safetensors():
    t = "model_safetensors"
    base = safetensors_bytes(st_tensors(torch.float32, "F32"))
    out(t, "tiny_f32", base)
    out(t, "tiny_f16_metadata", safetensors_bytes(st_tensors(torch.float16, "F16"), {"format": "pt"}))
    out(t, "tiny_bf16_classifier", safetensors_bytes(st_tensors(torch.bfloat16, "BF16", classifier=True)))
    out(t, "tiny_f64", safetensors_bytes(st_tensors(torch.float64, "F64")))
    # Data not in key order: the reader sorts by offset.
    out(t, "reversed", safetensors_bytes(st_tensors(torch.float32, "F32")[::-1]))
    ints = [(k, "I32", s, r) for k, _, s, r in st_tensors(torch.float32, "F32")]
    out(t, "i32_refused", safetensors_bytes(ints))
    out(t, "truncated", base[: len(base) * 2 // 3])
    out(t, "empty_header", safetensors_bytes([]))


def images():
    t = "image"
    w, h = 12, 9
    rgb = Image.new("RGB", (w, h))
    rgb.putdata([((x * 21) % 256, (y * 28) % 256, (x * y * 5) % 256) for y in range(h) for x in range(w)])

    def save(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        return b.getvalue()

    out(t, "rgb.png", save(rgb, "PNG"))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((w, h)))
    out(t, "rgba.png", save(rgba, "PNG"))
    out(t, "gray.png", save(rgb.convert("L"), "PNG"))
    out(t, "gray_alpha.png", save(rgba.convert("LA"), "PNG"))
    out(t, "palette.png", save(rgb.convert("P"), "PNG"))
    out(t, "gray32i.png", save(rgb.convert("L").convert("I"), "PNG"))
    g16 = Image.new("I;16", (w, h))
    g16.putdata([(x * 5000 + y * 300) % 65536 for y in range(h) for x in range(w)])
    out(t, "gray16.png", save(g16, "PNG"))
    out(t, "bilevel.png", save(rgb.convert("1"), "PNG"))
    base_jpeg = save(rgb, "JPEG", quality=80)
    out(t, "baseline.jpg", base_jpeg)
    out(t, "progressive.jpg", save(rgb, "JPEG", quality=80, progressive=True))
    out(t, "gray.jpg", save(rgb.convert("L"), "JPEG"))
    out(t, "cmyk.jpg", save(rgb.convert("CMYK"), "JPEG"))
    out(t, "subsampled_420.jpg", save(rgb, "JPEG", subsampling=2))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    out(t, "exif_rotated.jpg", save(rgb, "JPEG", exif=exif.tobytes()))
    out(t, "exif_rotated.png", save(rgb, "PNG", exif=exif.tobytes()))
    out(t, "truncated.jpg", base_jpeg[: len(base_jpeg) * 2 // 3])
    out(t, "truncated.png", save(rgb, "PNG")[:60])


if __name__ == "__main__":
    torch.manual_seed(0)
    pth("model_pth_zip", zipped=True)
    pth("model_pth_legacy", zipped=False)
    safetensors()
    images()
    for d in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, d))
        print(f"{d}: {len(files)} files, {sum(os.path.getsize(os.path.join(CORPUS, d, f)) for f in files)} bytes")
