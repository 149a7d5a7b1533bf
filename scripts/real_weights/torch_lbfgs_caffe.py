#!/usr/bin/python3
"""torch.optim.LBFGS reference for neural-style's objective with Caffe-convention VGG weights
(e.g. real-vgg16.sh's vgg16-caffe.safetensors), plus a single evaluator for 8-bit PNGs.

Adapted from shared/peer/gatys_ref.py (torchvision-convention VGG-19). Objective, exactly as
neural-style computes it (docs/algorithm.md; src/objective.rs, src/cpu/loss.rs):
  preprocess (Caffe): BGR, 0..255, minus mean pixel (103.939, 116.779, 123.68) (BGR order)
  F_l     = relu output of layer l; layer table read off the file as neural-style does
            (features.N: conv+relu; an index gap of 3 = a 2x2 max pool between); names reluB_K
  content = w_c * mean((F_l(x) - F_l(p))^2)                      l in content layers
  G_l     = F F^T / (C*H*W)
  style   = w_s * mean((G_l(x) - G_l(a))^2)   (mean over C^2)  l in style layers
  tv      = w_tv * sum over c,i,j of (x[i+1,j]-x[i,j])^2 + (x[i,j+1]-x[i,j])^2  (preprocessed x)
Defaults (neural-style's Caffe defaults): relu4_2; relu1_1,relu2_1,relu3_1,relu4_1,relu5_1; 5/100/1e-3.

Images: neural-style resizes content and style so the longer side is --image-size (Lanczos3)
and leaves an image already that size untouched. `prep` writes such pre-sized PNGs (PIL
Lanczos, neural-style's fit_size rounding) so that both programs read identical pixels.

Subcommands:
  prep     --size N --in IMG --out OUT.png
  optimize --weights W --content C --style S --iters N --out O.png [--init image|random]
           torch.optim.LBFGS(lr=1, max_iter=N, history_size=100, line_search_fn=None,
           tolerance_grad=-1, tolerance_change=-1): N evaluations, N steps (x ends one step past
           the last evaluation, as neural-style). Saves clamp+round to 8 bits. Prints JSON.
  eval     --weights W --content C --style S --image X.png    objective of an 8-bit PNG (float64)
"""
import argparse, json, math, os, struct, sys, time
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CAFFE_MEAN_BGR = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        blob = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", (k, v["dtype"])
        a, b = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(blob[a:b], dtype="<f4").copy().reshape(v["shape"]))
    return out


class Net:
    """Layer table read off the file exactly as neural-style's Vgg::from_features."""

    def __init__(self, weights, dtype=torch.float32):
        sd = load_safetensors(weights) if weights.endswith(".safetensors") else torch.load(weights, map_location="cpu")
        idx = sorted(int(k.split(".")[1]) for k in sd if k.startswith("features.") and k.endswith(".weight"))
        self.layers, block, k, prev = [], 1, 0, None
        for i in idx:
            if prev is not None:
                gap = i - prev
                if gap == 3:
                    self.layers.append(("P", None, None)); block += 1; k = 0
                else:
                    assert gap == 2, gap
            k += 1
            self.layers.append((f"relu{block}_{k}", sd[f"features.{i}.weight"].to(dtype), sd[f"features.{i}.bias"].to(dtype)))
            prev = i

    def __call__(self, x, want):
        out = {}
        for name, w, b in self.layers:
            if name == "P":
                x = F.max_pool2d(x, 2, 2)
            else:
                x = F.relu(F.conv2d(x, w, b, padding=1))
                if name in want:
                    out[name] = x
                if all(n in out for n in want):
                    break
        return out


def fit_size(w, h, n):
    # neural-style's image_io::fit_size (f64 round = half away from zero)
    if w >= h:
        return n, max(1, int(math.floor(h * n / w + 0.5)))
    return max(1, int(math.floor(w * n / h + 0.5))), n


def load_rgb8(path):
    im = Image.open(path)
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def to_input(rgb8, dtype=torch.float32):
    t = torch.from_numpy(rgb8.astype(np.float32)).permute(2, 0, 1).unsqueeze(0)  # RGB 0..255
    t = t[:, [2, 1, 0]] - CAFFE_MEAN_BGR  # BGR minus mean
    return t.to(dtype).contiguous()


def to_rgb8(x):
    t = (x.detach().float().cpu() + CAFFE_MEAN_BGR)[:, [2, 1, 0]]  # RGB 0..255
    # neural-style: (v / 255).clamp(0, 1) * 255, rounded half away from zero (values >= 0)
    t = ((t / 255.0).clamp(0, 1) * 255.0)
    return torch.floor(t + 0.5)[0].permute(1, 2, 0).numpy().astype(np.uint8)


def gram(f):
    _, c, h, w = f.shape
    f = f.reshape(c, h * w)
    return f @ f.t() / (c * h * w)


class Objective:
    def __init__(self, net, content, style, a):
        self.net, self.a = net, a
        self.cl, self.sl = a.content_layers.split(","), a.style_layers.split(",")
        with torch.no_grad():
            self.P = net(content, self.cl)
            self.A = {k: gram(v) for k, v in net(style, self.sl).items()}

    def __call__(self, x):
        fe = self.net(x, self.cl + self.sl)
        c = sum(self.a.content_weight * ((fe[l] - self.P[l]) ** 2).mean() for l in self.cl)
        s = sum(self.a.style_weight * ((gram(fe[l]) - self.A[l]) ** 2).mean() for l in self.sl)
        tv = self.a.tv_weight * (((x[:, :, 1:, :] - x[:, :, :-1, :]) ** 2).sum() + ((x[:, :, :, 1:] - x[:, :, :, :-1]) ** 2).sum())
        return c + s + tv, dict(content=float(c), style=float(s), tv=float(tv))


def evaluate(a, image_rgb8, content8, style8):
    """Objective of an 8-bit image, in float64 (the single evaluator)."""
    d = torch.float64
    net = Net(a.weights, d)
    obj = Objective(net, to_input(content8, d), to_input(style8, d), a)
    with torch.no_grad():
        v, parts = obj(to_input(image_rgb8, d))
    return dict(total=float(v), **parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["prep", "optimize", "eval"])
    ap.add_argument("--size", type=int); ap.add_argument("--in", dest="inp")
    ap.add_argument("--out"); ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights"); ap.add_argument("--content"); ap.add_argument("--style"); ap.add_argument("--image")
    ap.add_argument("--iters", type=int, default=100); ap.add_argument("--init", default="image")
    ap.add_argument("--content-weight", type=float, default=5.0); ap.add_argument("--style-weight", type=float, default=100.0)
    ap.add_argument("--tv-weight", type=float, default=1e-3)
    ap.add_argument("--content-layers", default="relu4_2")
    ap.add_argument("--style-layers", default="relu1_1,relu2_1,relu3_1,relu4_1,relu5_1")
    ap.add_argument("--history", type=int, default=100)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.cmd == "prep":
        im = Image.fromarray(load_rgb8(a.inp))
        size = fit_size(im.width, im.height, a.size)
        if im.size != size:
            im = im.resize(size, Image.LANCZOS)
        im.save(a.out)
        print(json.dumps(dict(out=a.out, width=size[0], height=size[1])))
        return
    content8, style8 = load_rgb8(a.content), load_rgb8(a.style)
    if a.cmd == "eval":
        img8 = load_rgb8(a.image)
        if img8.shape != content8.shape:
            print(json.dumps(dict(error=f"shape {img8.shape} != content {content8.shape}"))); sys.exit(1)
        print(json.dumps(evaluate(a, img8, content8, style8)))
        return
    torch.manual_seed(a.seed)
    net = Net(a.weights)
    content = to_input(content8)
    obj = Objective(net, content, to_input(style8), a)
    x = (content.clone() if a.init == "image" else torch.randn_like(content) * 0.001).contiguous()
    x.requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1, max_iter=a.iters, max_eval=int(a.iters * 1.25), history_size=a.history,
                            tolerance_grad=-1, tolerance_change=-1, line_search_fn=None)
    last, losses = {}, []

    def closure():
        opt.zero_grad()
        v, parts = obj(x)
        v.backward()
        last.update(n=last.get("n", 0) + 1, total=float(v), **parts)
        losses.append(float(v))
        return v

    t0 = time.perf_counter()
    opt.step(closure)
    dt = time.perf_counter() - t0
    with torch.no_grad():
        v_end, parts_end = obj(x)  # float loss at the final (unclamped) x, one step past the last evaluation
        xd = x.detach()
        outside = float((((xd + CAFFE_MEAN_BGR) < 0) | ((xd + CAFFE_MEAN_BGR) > 255)).float().mean())
    img8 = to_rgb8(x)
    Image.fromarray(img8).save(a.out)
    saved = evaluate(a, img8, content8, style8)
    n = last.pop("n")
    print(json.dumps(dict(final=saved, final_optimizer=last, float_at_final_x=dict(total=float(v_end), **parts_end),
                          fraction_outside_box=outside, evaluations=n, seconds=round(dt, 2),
                          ms_per_evaluation=round(dt * 1000 / n, 1), output=a.out, losses=losses)))


if __name__ == "__main__":
    main()
