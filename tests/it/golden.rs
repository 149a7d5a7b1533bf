//! The CPU objective against PyTorch's numbers for the same network and images
//! (tests/fixtures/make_fixtures.py computed them in float64; the crate computes in f32).
//!
//! Tolerances: activations, Grams and the image gradient must match to 1e-4 of the largest
//! reference entry (max abs error / max |ref|); each loss term to 1e-4 relative; the loss of each
//! of 20 L-BFGS evaluations to 2e-6 relative before the first curvature pair, then 2e-5 (max
//! pooling) or, with average pooling, 5e-4 up to the 10th evaluation and 4e-3 after: that run
//! amplifies f32 round-off so much that other, equally valid f32 summation orders land as far
//! from float64 (see `loss_tolerance` and `lbfgs_avg_spread_over_f32_summation_orders`).
//! Measured on x86-64 (AVX-512): activations and Grams within 6e-7, loss terms 3e-7, gradients
//! 1.3e-6, L-BFGS losses 3.3e-7 before the first curvature pair, then 1.7e-6 (max pooling), and
//! 2.8e-4 up to the 10th, 1.7e-3 after (average pooling).
//! The tests print their errors (`cargo test --test it golden:: -- --nocapture`).

use neural_style::backend::{AdamStep, PixelBox, Backend, ConvShape, PoolKind, PoolShape};
use neural_style::cpu::conv;
use neural_style::network::{layer_shapes, Network};
use neural_style::{model, stylize, Convention, CpuBackend, Image, Init, Job, Objective, ObjectiveSpec, Optimizer, Vgg};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn load_png(name: &str) -> Image {
    let rgb = image::open(fixture(name)).unwrap().to_rgb8();
    let (w, h) = rgb.dimensions();
    Image { h: h as usize, w: w as usize, data: Convention::Torchvision.preprocess(rgb.as_raw()) }
}

struct Golden {
    bytes: Vec<u8>,
    json: serde_json::Value,
}

impl Golden {
    fn load() -> Golden {
        Golden {
            bytes: std::fs::read(fixture("golden.safetensors")).unwrap(),
            json: serde_json::from_slice(&std::fs::read(fixture("golden.json")).unwrap()).unwrap(),
        }
    }

    /// An f32 array and its shape.
    fn array(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        (t.shape().to_vec(), t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    fn num(&self, path: &[&str]) -> f64 {
        let mut v = &self.json;
        for p in path {
            v = &v[*p];
        }
        v.as_f64().unwrap_or_else(|| panic!("golden.json has no number at {path:?}"))
    }

    fn list(&self, path: &[&str]) -> Vec<f64> {
        let mut v = &self.json;
        for p in path {
            v = &v[*p];
        }
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
    }
}

const POOLINGS: [(PoolKind, &str); 2] = [(PoolKind::Max, "max"), (PoolKind::Avg, "avg")];
const ACT_LAYERS: [&str; 5] = ["relu1_1", "relu2_1", "relu3_1", "relu4_2", "relu5_1"];
const STYLE_LAYERS: [&str; 5] = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"];

fn vgg() -> Vgg {
    model::load_file(&fixture("narrow_vgg19_zip.pth")).unwrap()
}

fn spec(g: &Golden, pooling: PoolKind) -> ObjectiveSpec {
    assert_eq!(g.json["content_layers"], serde_json::json!(["relu4_2"]));
    assert_eq!(g.json["style_layers"], serde_json::json!(STYLE_LAYERS));
    ObjectiveSpec {
        content_layers: vec!["relu4_2".into()],
        style_layers: STYLE_LAYERS.map(String::from).to_vec(),
        content_weight: g.num(&["weights", "content"]) as f32,
        style_weight: g.num(&["weights", "style"]) as f32,
        tv_weight: g.num(&["weights", "tv"]) as f32,
        pooling,
        ..Default::default()
    }
}

/// max |a - b| / max |b|.
fn rel_max_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    assert!(scale > 0.0);
    a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, f64::max) / scale
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// Runs the network on an image and returns each wanted layer's (h, w, c) output.
fn activations(be: &CpuBackend, vgg: &Vgg, pooling: PoolKind, img: &Image, layers: &[&str]) -> Vec<((usize, usize, usize), Vec<f32>)> {
    let needed: Vec<String> = layers.iter().map(|s| s.to_string()).collect();
    let net = Network::new(be, vgg, pooling, &needed).unwrap();
    let mut acts = net.alloc_activations(be, img.h, img.w).unwrap();
    net.forward(be, &img.data, img.h, img.w, &mut acts).unwrap();
    let shapes = layer_shapes(&net.layers, img.h, img.w);
    layers
        .iter()
        .map(|l| {
            let i = net.index_of(l).unwrap();
            (shapes[i], acts[i].clone())
        })
        .collect()
}

#[test]
fn activations_match_pytorch() {
    let (be, g, vgg, content) = (CpuBackend::new(), Golden::load(), vgg(), load_png("content.png"));
    assert_eq!((content.h, content.w), (40, 48));
    for (pooling, p) in POOLINGS {
        for (l, ((h, w, c), act)) in ACT_LAYERS.iter().zip(activations(&be, &vgg, pooling, &content, &ACT_LAYERS)) {
            let (shape, reference) = g.array(&format!("act_{p}_{l}"));
            assert_eq!(shape, [h, w, c], "{p} {l}");
            let err = rel_max_err(&act, &reference);
            eprintln!("{p} {l}: activation error {err:.1e}");
            assert!(err < 1e-4, "{p} {l}: activation error {err:e}");
        }
    }
}

#[test]
fn grams_match_pytorch() {
    let (be, g, vgg, style) = (CpuBackend::new(), Golden::load(), vgg(), load_png("style.png"));
    assert_eq!((style.h, style.w), (36, 44));
    for (pooling, p) in POOLINGS {
        for (l, ((h, w, c), act)) in STYLE_LAYERS.iter().zip(activations(&be, &vgg, pooling, &style, &STYLE_LAYERS)) {
            let mut gram = be.zeros(c * c).unwrap();
            be.gram(h * w, c, &act, &mut gram).unwrap();
            let (shape, reference) = g.array(&format!("gram_{p}_{l}"));
            assert_eq!(shape, [c, c]);
            let err = rel_max_err(&gram, &reference);
            eprintln!("{p} {l}: Gram error {err:.1e}");
            assert!(err < 1e-4, "{p} {l}: Gram error {err:e}");
        }
    }
}

#[test]
fn loss_terms_and_gradient_match_pytorch() {
    let (be, g, vgg) = (CpuBackend::new(), Golden::load(), vgg());
    let (content, style, x) = (load_png("content.png"), load_png("style.png"), load_png("eval.png"));
    for (pooling, p) in POOLINGS {
        let mut obj = Objective::new(&be, &vgg, spec(&g, pooling), &content, &[(style.clone(), 1.0)]).unwrap();
        let mut grad = vec![0.0; x.data.len()];
        let parts = obj.evaluate(&x.data, &mut grad).unwrap();
        let key = format!("eval_{p}");
        for (name, got) in [("content", parts.content), ("style", parts.style), ("tv", parts.tv), ("total", parts.total)] {
            let want = g.num(&[&key, name]);
            // Each term must matter, or a wrong factor in it could hide.
            assert!(want > 0.05 * g.num(&[&key, "total"]), "{p} {name} = {want} is too small to test");
            eprintln!("{p} {name}: {got} vs PyTorch {want} (rel {:.1e})", rel(got, want));
            assert!(rel(got, want) < 1e-4, "{p} {name}: {got} vs PyTorch {want} (rel {:e})", rel(got, want));
        }
        let (shape, reference) = g.array(&format!("grad_{p}"));
        assert_eq!(shape, [x.h, x.w, 3]);
        let err = rel_max_err(&grad, &reference);
        eprintln!("{p}: gradient error {err:.1e}");
        assert!(err < 1e-4, "{p}: gradient error {err:e}");
        // Each term's gradient alone (the others weighted 0).
        for term in ["content", "style", "tv"] {
            let mut s = spec(&g, pooling);
            s.content_weight *= (term == "content") as u8 as f32;
            s.style_weight *= (term == "style") as u8 as f32;
            s.tv_weight *= (term == "tv") as u8 as f32;
            let mut obj = Objective::new(&be, &vgg, s, &content, &[(style.clone(), 1.0)]).unwrap();
            let mut grad = vec![0.0; x.data.len()];
            obj.evaluate(&x.data, &mut grad).unwrap();
            let err = rel_max_err(&grad, &g.array(&format!("grad_{p}_{term}")).1);
            eprintln!("{p} {term}: gradient error {err:.1e}");
            assert!(err < 1e-4, "{p} {term}: gradient error {err:e}");
        }
    }
}

/// Relative tolerance on the loss of evaluation i (0-based) of the L-BFGS run (i = 20: the loss
/// at the final image).
///
/// The first two evaluations (the start, and one step of min(1, 1/|g|₁)·lr along -g) come
/// before any curvature pair: they test the objective and the first step, to 2e-6 (measured
/// 4e-7 at most, under every summation order below). With max pooling the rest of the run is
/// well conditioned: PyTorch's float32 run stays within 4e-6 of float64, ours within 3.4e-6
/// under each summation order tried, hence 2e-5.
///
/// Average pooling (issue 12 item 6) cannot be held to PyTorch's own float32 drift (3.8e-5 at
/// the 3rd evaluation, at most 3.8e-5 up to the 10th, 8e-4 after): that drift is one sample of
/// f32 round-off amplified by the run, not a bound that other f32 summation orders keep.
/// - The amplifier: the first step is tiny (t = 1/|g₀|₁ = 0.0105, |s| = 0.0215), so the first
///   curvature pair has yᵀs = 6.3e-5 = t|g₀|² / 700. An error δ·|g₀|² in g₁ − g₀ along g₀
///   moves yᵀs, yᵀy and h_diag by ~700δ (relative) and the 3rd loss by ~400δ. (Max pooling:
///   t|g₀|² / yᵀs = 90, and a better conditioned run after.)
/// - What it amplifies is round-off that is coherent across pixels: an entry of a small Gram
///   (8 x 8 at relu1_1) or of the content-layer difference F(x₁) − F(p) (2.8e-4 of F, so its
///   f32 error is 1e-3 of it) moves the gradient at every pixel the same way. That is why
///   multiplying our gradient by 1 + ε·U(-1, 1) per element (ε = 6e-8, 1e-6) hardly moved the
///   3rd loss, while another summation order moves it. Measured in the crate: at the start
///   point, the relu1_1 style term's gradient is off by 3.2e-7·|g₀|² along g₀ (PyTorch float32:
///   2.6e-8), because the crate's relu1_1 Gram (K = 1920, summed in f32 by the gemm crate) is
///   off by 5.6e-7 where PyTorch's, from the same activations, is off by 9e-8; at x₁ the
///   content term's by 9e-8·|g₀|² (PyTorch: 9e-9, though our relu4_2 activations are the more
///   accurate, 2.3e-7 vs 3.7e-7). Together: 1.6e-4 at the 3rd evaluation.
/// - A more accurate Gram is no fix: summed in f64, the 3rd evaluation is still 7.5e-5 off (the
///   convolutions' round-off remains). `lbfgs_avg_spread_over_f32_summation_orders` runs the job
///   under other, equally valid orders (the Gram in f64, or in f32 runs of 64 to 1920 pixels;
///   the convolutions as naive loops): the 3rd evaluation lands from 6e-7 to 1.9e-4 from
///   float64, evaluations 3-10 up to 3.3e-4, 11-20 up to 2.2e-3, the final image up to 3.2e-2
///   of its range. PyTorch varied the same way (channels-last convolutions; the Gram summed in
///   256-pixel chunks) lands at 1e-5 and 1.6e-6 at the 3rd evaluation.
/// Hence 5e-4 for evaluations 3-10 and 4e-3 after (the crate measures 1.6e-4 and 2.8e-4 at the
/// 3rd and 10th, 1.7e-3 at most after), and the avg final image to 5% of its range.
fn loss_tolerance(pooling: PoolKind, i: usize) -> f64 {
    match pooling {
        _ if i < 2 => 2e-6,
        PoolKind::Max => 2e-5,
        PoolKind::Avg if i < 10 => 5e-4,
        PoolKind::Avg => 4e-3,
    }
}

/// The golden L-BFGS job (20 evaluations from content.png) on `be`: each evaluation's loss, the
/// image after the 20th step, and that image's loss.
fn lbfgs_run<B: Backend<Buf = Vec<f32>>>(be: &B, g: &Golden, vgg: &Vgg, pooling: PoolKind) -> (Vec<f64>, Vec<f32>, f64) {
    let (content, style) = (load_png("content.png"), load_png("style.png"));
    assert_eq!(g.num(&["lbfgs_evaluations"]), 20.0);
    let job = Job {
        content: content.clone(),
        styles: vec![(style.clone(), 1.0)],
        spec: spec(g, pooling),
        init: Init::Image(content.data.clone()),
        optimizer: Optimizer::lbfgs(100),
        iterations: 20,
        seed: 0,
        snapshot_every: 0,
        snapshot_gate: None,
        bounds: None,
    };
    let mut losses = Vec::new();
    let out = stylize(be, vgg, &job, &mut |pr, _| {
        losses.push(pr.loss.total);
        Ok(())
    })
    .unwrap();
    assert_eq!((losses.len(), out.evaluations), (20, 20));
    assert_eq!(out.loss.total, *losses.last().unwrap());
    // The image after the 20th step (not evaluated by the loop).
    let mut obj = Objective::new(be, vgg, spec(g, pooling), &content, &[(style, 1.0)]).unwrap();
    let mut grad = vec![0.0; out.image.len()];
    let final_total = obj.evaluate(&out.image, &mut grad).unwrap().total;
    (losses, out.image, final_total)
}

/// Checks a run against PyTorch's float64 trajectory; returns the per-evaluation errors.
fn check_lbfgs(g: &Golden, pooling: PoolKind, what: &str, losses: &[f64], image: &[f32], final_total: f64) -> Vec<f64> {
    let p = if pooling == PoolKind::Max { "max" } else { "avg" };
    let want = g.list(&[&format!("lbfgs_{p}"), "losses"]);
    assert_eq!(losses.len(), want.len());
    let errs: Vec<f64> = losses.iter().zip(&want).map(|(a, b)| rel(*a, *b)).collect();
    eprintln!("{p} ({what}): relative loss error per evaluation {:?}", errs.iter().map(|e| format!("{e:.1e}")).collect::<Vec<_>>());
    for (i, e) in errs.iter().enumerate() {
        let tol = loss_tolerance(pooling, i);
        assert!(*e < tol, "{p} ({what}): evaluation {}: {} vs PyTorch {} (rel {e:e}, tolerance {tol:e})", i + 1, losses[i], want[i]);
    }
    let want_final = g.num(&[&format!("lbfgs_{p}"), "final_total"]);
    let (_, x_ref) = g.array(&format!("lbfgs_x_{p}"));
    let err = rel_max_err(image, &x_ref);
    eprintln!("{p} ({what}): final loss rel error {:.1e}, final image error {err:.1e}", rel(final_total, want_final));
    assert!(rel(final_total, want_final) < loss_tolerance(pooling, 20), "{p} ({what}): final loss {final_total} vs PyTorch {want_final}");
    let image_tolerance = if pooling == PoolKind::Max { 1e-4 } else { 5e-2 };
    assert!(err < image_tolerance, "{p} ({what}): final image differs by {err:e} of its range");
    errs
}

#[test]
fn lbfgs_20_evaluations_match_pytorch() {
    let (be, g, vgg) = (CpuBackend::new(), Golden::load(), vgg());
    for (pooling, _) in POOLINGS {
        let (losses, image, final_total) = lbfgs_run(&be, &g, &vgg, pooling);
        check_lbfgs(&g, pooling, "crate", &losses, &image, final_total);
    }
}

/// How the Gram's entries are summed.
#[derive(Clone, Copy, Debug)]
enum GramSum {
    /// In f64, rounded once.
    F64,
    /// In f32 over runs of this many pixels, the runs' sums added in f32.
    F32Runs(usize),
    /// The crate's.
    Crate,
}

/// The CPU backend with other (equally valid) f32 summation orders: the Gram summed as `gram`
/// says; with `naive_conv`, the convolutions (forward and input gradient) as the naive loops of
/// cpu::conv (bias first, then taps and input channels in order) instead of the blocked GEMM.
struct OtherOrder {
    cpu: CpuBackend,
    gram: GramSum,
    naive_conv: bool,
}

type Buf = Vec<f32>;
#[rustfmt::skip]
impl Backend for OtherOrder {
    type Buf = Buf;
    fn name(&self) -> String { format!("Gram {:?}, naive convs {}", self.gram, self.naive_conv) }
    fn zeros(&self, len: usize) -> anyhow::Result<Buf> { self.cpu.zeros(len) }
    fn upload(&self, host: &[f32]) -> anyhow::Result<Buf> { self.cpu.upload(host) }
    fn download(&self, buf: &Buf) -> anyhow::Result<Vec<f32>> { self.cpu.download(buf) }
    fn len(&self, buf: &Buf) -> usize { self.cpu.len(buf) }
    fn synchronize(&self) -> anyhow::Result<()> { self.cpu.synchronize() }
    // The trait's default upload (no Winograd transform appended), which the naive loops read.
    fn conv3x3_fwd(&self, s: ConvShape, x: &Buf, w: &Buf, b: &Buf, y: &mut Buf) -> anyhow::Result<()> {
        if !self.naive_conv { return self.cpu.conv3x3_fwd(s, x, w, b, y); }
        conv::conv3x3_fwd_naive(s, x, w, b, y, true);
        Ok(())
    }
    fn conv3x3_bwd_input(&self, s: ConvShape, dy: &Buf, w: &Buf, w_flip: &Buf, dx: &mut Buf) -> anyhow::Result<()> {
        if !self.naive_conv { return self.cpu.conv3x3_bwd_input(s, dy, w, w_flip, dx); }
        conv::conv3x3_bwd_input_naive(s, dy, w_flip, dx);
        Ok(())
    }
    fn relu_bwd(&self, y: &Buf, dy: &mut Buf) -> anyhow::Result<()> { self.cpu.relu_bwd(y, dy) }
    fn pool_fwd(&self, k: PoolKind, s: PoolShape, x: &Buf, y: &mut Buf) -> anyhow::Result<()> { self.cpu.pool_fwd(k, s, x, y) }
    fn pool_bwd(&self, k: PoolKind, s: PoolShape, x: &Buf, dy: &Buf, dx: &mut Buf) -> anyhow::Result<()> { self.cpu.pool_bwd(k, s, x, dy, dx) }
    fn gram(&self, hw: usize, c: usize, f: &Buf, g: &mut Buf) -> anyhow::Result<()> {
        let run = match self.gram {
            GramSum::Crate => return self.cpu.gram(hw, c, f, g),
            GramSum::F64 => 0,
            GramSum::F32Runs(run) => run,
        };
        for i in 0..c {
            for j in 0..c {
                let (mut total, mut total64) = (0.0f32, 0.0f64);
                for k0 in (0..hw).step_by(run.max(1)) {
                    let mut part = 0.0f32;
                    for p in k0..(k0 + run.max(1)).min(hw) {
                        part += f[p * c + i] * f[p * c + j];
                        total64 += f[p * c + i] as f64 * f[p * c + j] as f64;
                    }
                    total += part;
                }
                let sum = if run == 0 { total64 } else { total as f64 };
                g[i * c + j] = (sum / (c * hw) as f64) as f32;
            }
        }
        Ok(())
    }
    fn gram_bwd_acc(&self, hw: usize, c: usize, f: &Buf, dg: &Buf, df: &mut Buf) -> anyhow::Result<()> { self.cpu.gram_bwd_acc(hw, c, f, dg, df) }
    fn content_loss_acc(&self, w: f32, f: &Buf, p: &Buf, df: &mut Buf) -> anyhow::Result<f64> { self.cpu.content_loss_acc(w, f, p, df) }
    fn style_loss(&self, w: f32, g: &Buf, a: &Buf, dg: &mut Buf) -> anyhow::Result<f64> { self.cpu.style_loss(w, g, a, dg) }
    fn tv_loss_acc(&self, w: f32, h: usize, wd: usize, c: usize, x: &Buf, dx: &mut Buf) -> anyhow::Result<f64> { self.cpu.tv_loss_acc(w, h, wd, c, x, dx) }
    fn tv_pow_loss_acc(&self, w: f32, p: f32, h: usize, wd: usize, c: usize, x: &Buf, dx: &mut Buf) -> anyhow::Result<f64> { self.cpu.tv_pow_loss_acc(w, p, h, wd, c, x, dx) }
    fn fill(&self, x: &mut Buf, v: f32) -> anyhow::Result<()> { self.cpu.fill(x, v) }
    fn copy(&self, src: &Buf, dst: &mut Buf) -> anyhow::Result<()> { self.cpu.copy(src, dst) }
    fn dot(&self, a: &Buf, b: &Buf) -> anyhow::Result<f64> { self.cpu.dot(a, b) }
    fn asum(&self, x: &Buf) -> anyhow::Result<f64> { self.cpu.asum(x) }
    fn amax(&self, x: &Buf) -> anyhow::Result<f64> { self.cpu.amax(x) }
    fn axpy(&self, a: f32, x: &Buf, y: &mut Buf) -> anyhow::Result<()> { self.cpu.axpy(a, x, y) }
    fn scale(&self, a: f32, x: &mut Buf) -> anyhow::Result<()> { self.cpu.scale(a, x) }
    fn adam_step(&self, s: AdamStep, p: &mut Buf, g: &Buf, m: &mut Buf, v: &mut Buf) -> anyhow::Result<()> { self.cpu.adam_step(s, p, g, m, v) }
    fn project_to_box(&self, b: &PixelBox, x: &mut Buf) -> anyhow::Result<()> { self.cpu.project_to_box(b, x) }
    fn zero_outward(&self, b: &PixelBox, x: &Buf, v: &mut Buf) -> anyhow::Result<()> { self.cpu.zero_outward(b, x, v) }
    fn hold_at_bounds(&self, b: &PixelBox, x: &Buf, g: &Buf, v: &mut Buf) -> anyhow::Result<()> { self.cpu.hold_at_bounds(b, x, g, v) }
}

/// Why `loss_tolerance` holds average pooling's evaluations 3-10 to 5e-4 and not to PyTorch's
/// own float32 drift: the golden avg job under other f32 summation orders of the Gram and the
/// convolutions, each as accurate as the crate's (or more: one sums the Gram in f64). Each must
/// pass the golden checks, and their 3rd evaluations must spread beyond twice PyTorch's drift
/// there. If that spread ever falls below it (a better conditioned objective or optimiser, new
/// fixtures), the tolerance can be tightened: do so, and update this test and its doc comment.
#[test]
fn lbfgs_avg_spread_over_f32_summation_orders() {
    let (g, vgg) = (Golden::load(), vgg());
    let want = g.list(&["lbfgs_avg", "losses"]);
    let pytorch_drift = rel(g.list(&["lbfgs_avg", "losses_float32"])[2], want[2]);
    let orders = [
        (GramSum::F64, false),
        (GramSum::F32Runs(64), false),
        (GramSum::F32Runs(1000), false),
        (GramSum::F32Runs(1920), false), // one run at every layer
        (GramSum::Crate, true),
        (GramSum::F64, true),
        (GramSum::F32Runs(1000), true),
    ];
    let mut third = Vec::new();
    for (gram, naive_conv) in orders {
        let be = OtherOrder { cpu: CpuBackend::new(), gram, naive_conv };
        let (losses, image, final_total) = lbfgs_run(&be, &g, &vgg, PoolKind::Avg);
        third.push(check_lbfgs(&g, PoolKind::Avg, &be.name(), &losses, &image, final_total)[2]);
    }
    let (lo, hi) = third.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &e| (lo.min(e), hi.max(e)));
    eprintln!("avg: 3rd evaluation {lo:.1e} to {hi:.1e} from float64 over the orders; PyTorch float32 {pytorch_drift:.1e}");
    assert!(
        hi > 2.0 * pytorch_drift,
        "the 3rd evaluation spreads only to {hi:e} over f32 summation orders (PyTorch float32: {pytorch_drift:e}): tighten loss_tolerance"
    );
}
