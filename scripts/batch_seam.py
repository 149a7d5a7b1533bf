#!/usr/bin/env python3
"""The seam between batch shards with --temporal-init, with and without --temporal-overlap.

Makes slowly changing frames (a smooth pattern drifting one pixel per frame), stylises them
as SHARDS shards (`--shard i/SHARDS`, one process each, as array tasks would) once without and
once with `--temporal-overlap K`, and once unsharded, then prints the mean absolute difference
(0-255 levels, over all pixels and channels) between consecutive results: at the seams (the last
frame of shard i against the first of shard i+1) and, for scale, between the same frames of the
unsharded run and between consecutive frames inside the shards.

    scripts/batch_seam.py [--bin target/release/neural-style] [--frames 16] [--shards 4]
                          [--overlap 2] [--size 32] [--iterations 100]
                          [--options "--content-layers relu2_2 --style-layers relu1_1,relu2_1,relu3_1"]

--options are more options for every run (the default: cheap layers). Standard library only
(PNG read and write included); CPU; about 2 minutes on 2 busy cores with the defaults.
docs/commands.md records its figures.
"""
import argparse, os, struct, subprocess, sys, tempfile, zlib, math

def write_png(path, w, h, pixel):
    rows = b"".join(b"\0" + bytes(c for x in range(w) for c in pixel(x, y)) for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))

def read_png(path):
    """8-bit RGB or RGBA, not interlaced (what neural-style writes): flat channel values."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, t = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if t == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, f"{path}: unsupported PNG"
            bpp = 3 if color == 2 else 4
        elif t == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, out, prev = zlib.decompress(idat), w * bpp, bytearray(), bytearray(w * bpp)
    for y in range(h):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if kind == 1: line[i] = (line[i] + a) & 255
            elif kind == 2: line[i] = (line[i] + b) & 255
            elif kind == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line if bpp == 3 else bytes(v for k, v in enumerate(line) if k % 4 != 3)
        prev = line
    return out

def mad(p, q):
    a, b = read_png(p), read_png(q)
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/neural-style")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--overlap", type=int, default=2)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--options", default="--content-layers relu2_2 --style-layers relu1_1,relu2_1,relu3_1")
    o = ap.parse_args()
    binary = os.path.abspath(o.bin)
    style = os.path.abspath("examples/style.png")
    work = tempfile.mkdtemp(prefix="batch-seam-")
    frames = os.path.join(work, "frames")
    os.mkdir(frames)
    w, h = o.size, o.size * 3 // 4
    for i in range(o.frames):
        def px(x, y, i=i):
            u = (x + i) / w  # drifts one pixel per frame
            return (int(127 + 120 * math.sin(6.3 * u)), int(127 + 120 * math.cos(4.1 * y / h + 2 * u)), int(255 * ((x + i + y) % w) / w))
        write_png(os.path.join(frames, f"f{i + 1}.png"), w, h, px)
    common = ["batch", frames, "--style-image", style, "--image-size", str(o.size), "--num-iterations", str(o.iterations),
              "--temporal-init", "--device", "cpu"] + o.options.split()
    def run(out, shard, overlap):
        r = subprocess.run([binary] + common + ["--output", out, "--shard", shard, "--temporal-overlap", str(overlap)], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"neural-style failed: {r.stderr}")
    outs = {}
    for name, overlap, shards in [("unsharded", 0, 1), ("no overlap", 0, o.shards), (f"--temporal-overlap {o.overlap}", o.overlap, o.shards)]:
        out = os.path.join(work, name.replace(" ", "_").replace("-", ""))
        for i in range(shards):
            run(out, f"{i}/{shards}", overlap)
        outs[name] = out
    f = lambda out, k: os.path.join(out, f"f{k + 1}.png")
    starts = [i * o.frames // o.shards for i in range(1, o.shards)]  # first frame of shards 1..
    inside = [k for k in range(1, o.frames) if k not in starts]
    print(f"{o.frames} frames {w}x{h} drifting 1 px per frame, {o.shards} shards, {o.iterations} iterations, --temporal-init, CPU, {o.options}")
    print(f"mean absolute difference between consecutive results (0-255 levels):")
    print(f"| run | at the {len(starts)} seams (mean; each) | inside the shards (mean) |")
    print("|---|---|---|")
    for name, out in outs.items():
        seams = [mad(f(out, k - 1), f(out, k)) for k in starts]
        within = [mad(f(out, k - 1), f(out, k)) for k in inside]
        print(f"| {name} | {sum(seams) / len(seams):.2f}; {', '.join(f'{s:.2f}' for s in seams)} | {sum(within) / len(within):.2f} |")
    print(f"(work folder {work})")

main()
