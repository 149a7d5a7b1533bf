//! Bounded optimisation (issue 20): L-BFGS (fixed step and strong Wolfe) and Adam never evaluate
//! a point outside the box, and reach the box-constrained optimum of problems whose unbounded
//! optimum lies outside it; a whole stylize run's images all lie in the model's pixel box, where
//! the same run unbounded leaves it.

use neural_style::backend::PixelBox;
use crate::common::nets::{pattern_pixels, tiny_spec, tiny_vgg};
use neural_style::optim::lbfgs::{Lbfgs, LineSearch};
use neural_style::optim::Adam;
use neural_style::preprocess::Convention;
use neural_style::rng::Rng;
use neural_style::{stylize, CpuBackend, Image, Init, Job, Optimizer, Progress};

const BOX: PixelBox = PixelBox { lo: [0.0, -1.0, -0.5], hi: [1.0, 0.5, 2.0] };

/// f(x) = ½ (x - c)ᵀ A (x - c) over 3 * pixels values: A symmetric, strictly diagonally dominant
/// (so positive definite) with couplings between neighbours and between channels, so that the
/// constrained optimum is not simply c clamped; c spans ±3, far outside the box in places.
struct Quadratic {
    a: Vec<Vec<f64>>,
    c: Vec<f64>,
}

impl Quadratic {
    fn new(pixels: usize, seed: u64) -> Quadratic {
        let n = 3 * pixels;
        let mut rng = Rng::new(seed);
        let mut a = vec![vec![0.0; n]; n];
        for i in 0..n {
            for j in [i + 1, i + 3] {
                if j < n {
                    let v = (rng.uniform() as f64 - 0.5) * 1.2;
                    a[i][j] = v;
                    a[j][i] = v;
                }
            }
        }
        for i in 0..n {
            let off: f64 = (0..n).filter(|&j| j != i).map(|j| a[i][j].abs()).sum();
            a[i][i] = off + 0.3 + rng.uniform() as f64;
        }
        let c = (0..n).map(|_| rng.uniform() as f64 * 6.0 - 3.0).collect();
        Quadratic { a, c }
    }

    fn n(&self) -> usize {
        self.c.len()
    }

    fn gradient64(&self, x: &[f64]) -> Vec<f64> {
        (0..self.n()).map(|i| (0..self.n()).map(|j| self.a[i][j] * (x[j] - self.c[j])).sum()).collect()
    }

    /// Loss, and its gradient into g (f32, as the optimisers take it).
    fn evaluate(&self, x: &[f32], g: &mut [f32]) -> f64 {
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let grad = self.gradient64(&x64);
        for (g, v) in g.iter_mut().zip(&grad) {
            *g = *v as f32;
        }
        self.value64(&x64)
    }

    fn value64(&self, x: &[f64]) -> f64 {
        let d: Vec<f64> = x.iter().zip(&self.c).map(|(x, c)| x - c).collect();
        0.5 * (0..self.n()).map(|i| d[i] * (0..self.n()).map(|j| self.a[i][j] * d[j]).sum::<f64>()).sum::<f64>()
    }

    /// The constrained minimiser over BOX, by projected gradient in f64 run to a fixed point:
    /// the reference the optimisers must reach.
    fn box_optimum(&self) -> Vec<f64> {
        let step = 1.0 / (0..self.n()).map(|i| self.a[i].iter().map(|v| v.abs()).sum::<f64>()).fold(0.0, f64::max);
        let project = |k: usize, v: f64| v.max(BOX.lo[k % 3] as f64).min(BOX.hi[k % 3] as f64);
        let mut x: Vec<f64> = (0..self.n()).map(|k| project(k, 0.0)).collect();
        for _ in 0..200_000 {
            let g = self.gradient64(&x);
            let next: Vec<f64> = (0..self.n()).map(|k| project(k, x[k] - step * g[k])).collect();
            let moved = next.iter().zip(&x).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            x = next;
            if moved < 1e-15 {
                break;
            }
        }
        x
    }
}

fn max_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(&a, b)| (a as f64 - b).abs()).fold(0.0, f64::max)
}

/// A start inside the box, from the seed.
fn start(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|k| BOX.lo[k % 3] + rng.uniform() * (BOX.hi[k % 3] - BOX.lo[k % 3])).collect()
}

#[test]
fn lbfgs_reaches_the_box_constrained_optimum_evaluating_only_inside_the_box() {
    let be = CpuBackend::new();
    for seed in 1..=4 {
        let q = Quadratic::new(6, seed);
        let n = q.n();
        let optimum = q.box_optimum();
        // The problem tests what it should: the unbounded optimum c lies outside the box, the
        // constrained one has values on the faces and values inside, and differs from c clamped.
        let clamped: Vec<f64> = q.c.iter().enumerate().map(|(k, c)| c.max(BOX.lo[k % 3] as f64).min(BOX.hi[k % 3] as f64)).collect();
        let on_faces = optimum.iter().enumerate().filter(|&(k, &v)| v == BOX.lo[k % 3] as f64 || v == BOX.hi[k % 3] as f64).count();
        assert!(on_faces > 0 && on_faces < n, "seed {seed}: {on_faces} of {n} on the faces");
        assert!(optimum.iter().zip(&clamped).any(|(a, b)| (a - b).abs() > 0.05), "seed {seed}: the couplings do not matter");
        for line_search in [LineSearch::None, LineSearch::StrongWolfe] {
            let mut x = start(n, seed + 10);
            let mut g = vec![0.0; n];
            let mut evaluations = 0;
            let mut lbfgs = Lbfgs::new(&be, n, 10, 1.0, Some(BOX)).unwrap();
            lbfgs
                .minimize(&be, line_search, &mut x, &mut g, 300, &mut |x, g| {
                    evaluations += 1;
                    assert!(BOX.contains(x), "{line_search:?}, seed {seed}: evaluation {evaluations} outside the box: {x:?}");
                    Ok(q.evaluate(x, g))
                })
                .unwrap();
            assert!(BOX.contains(&x), "{line_search:?}, seed {seed}: the final point");
            let err = max_diff(&x, &optimum);
            assert!(err < 1e-4, "{line_search:?}, seed {seed}: {err:e} from the constrained optimum");
            // Unbounded, the same run leaves the box for c.
            let mut x = start(n, seed + 10);
            let mut free = Lbfgs::new(&be, n, 10, 1.0, None).unwrap();
            free.minimize(&be, line_search, &mut x, &mut g, 300, &mut |x, g| Ok(q.evaluate(x, g))).unwrap();
            assert!(!BOX.contains(&x) && max_diff(&x, &q.c) < 1e-3, "{line_search:?}, seed {seed}: unbounded ends at c");
        }
    }
}

#[test]
fn adam_projected_reaches_the_box_constrained_optimum() {
    let be = CpuBackend::new();
    let q = Quadratic::new(5, 7);
    let n = q.n();
    let optimum = q.box_optimum();
    let mut x = start(n, 8);
    let mut g = vec![0.0; n];
    let mut adam = Adam::new(&be, n, 0.01, Some(BOX)).unwrap();
    for step in 0..4000 {
        assert!(BOX.contains(&x), "step {step}: outside the box");
        q.evaluate(&x, &mut g);
        adam.step(&be, &mut x, &g).unwrap();
    }
    assert!(BOX.contains(&x));
    let err = max_diff(&x, &optimum);
    assert!(err < 5e-3, "{err:e} from the constrained optimum");
}

/// On a non-convex function with many curvature pairs refused and many values pressed against
/// the faces, no evaluation of either line search leaves the box, and the loss falls.
#[test]
fn no_evaluation_leaves_the_box_on_a_non_convex_problem() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(21);
    for run in 0..12 {
        let n = 30;
        let a: Vec<f64> = (0..n).map(|_| rng.uniform() as f64 * 2.0 - 0.5).collect();
        let b: Vec<f64> = (0..n).map(|_| rng.uniform() as f64 * 3.0).collect();
        let f = |x: &[f32], g: &mut [f32]| -> f64 {
            let mut total = 0.0;
            for i in 0..n {
                let xi = x[i] as f64;
                let coupling = if i + 3 < n { 0.4 * x[i + 3] as f64 } else { 0.0 };
                total += a[i] * xi * xi + b[i] * (3.0 * xi).sin() + coupling * xi;
                let mut gi = 2.0 * a[i] * xi + 3.0 * b[i] * (3.0 * xi).cos() + coupling;
                if i >= 3 {
                    gi += 0.4 * x[i - 3] as f64;
                }
                g[i] = gi as f32;
            }
            total
        };
        for line_search in [LineSearch::None, LineSearch::StrongWolfe] {
            let mut x = start(n, 100 + run);
            let mut g = vec![0.0; n];
            let first = f(&x, &mut g);
            let mut lbfgs = Lbfgs::new(&be, n, 5, 0.5, Some(BOX)).unwrap();
            let r = lbfgs
                .minimize(&be, line_search, &mut x, &mut g, 120, &mut |x, g| {
                    assert!(BOX.contains(x), "run {run} {line_search:?}: an evaluation outside the box: {x:?}");
                    Ok(f(x, g))
                })
                .unwrap();
            assert!(BOX.contains(&x), "run {run} {line_search:?}");
            if line_search == LineSearch::StrongWolfe {
                assert!(r.f < first, "run {run}: the loss did not fall ({first} -> {})", r.f);
            }
        }
    }
}

/// A stylize run with the Caffe convention's box (values 0..255 minus the mean pixel) and
/// optimisers that push far past it: every image evaluated (each iteration's snapshot) and the
/// result lie inside, with values on its faces; unbounded, the same runs leave it.
#[test]
fn a_stylize_run_never_leaves_the_pixel_box() {
    let vgg = tiny_vgg();
    let conv = Convention::Caffe;
    let spec = tiny_spec();
    let pixel_box = conv.pixel_box();
    for optimizer in [Optimizer::Adam { learning_rate: 100.0 }, Optimizer::lbfgs(10), Optimizer::Lbfgs { history: 10, line_search: LineSearch::StrongWolfe, round: 0 }] {
        let job = Job {
            content: Image { w: 20, h: 16, data: conv.preprocess(&pattern_pixels(20, 16, 1)) },
            styles: vec![(Image { w: 16, h: 16, data: conv.preprocess(&pattern_pixels(16, 16, 2)) }, 1.0)],
            spec: spec.clone(),
            init: Init::Image(conv.preprocess(&pattern_pixels(20, 16, 1))),
            optimizer,
            iterations: 15,
            seed: 1,
            snapshot_every: 1,
            snapshot_gate: None,
            bounds: Some(pixel_box),
        };
        let mut seen = 0;
        let out = stylize(&CpuBackend::new(), &vgg, &job, &mut |_: &Progress, x: Option<&[f32]>| {
            if let Some(x) = x {
                seen += 1;
                assert!(pixel_box.contains(x), "{optimizer:?}: an evaluated image left the pixel box");
            }
            Ok(())
        })
        .unwrap();
        assert!(seen >= 10, "{optimizer:?}: {seen} snapshots");
        assert!(pixel_box.contains(&out.image), "{optimizer:?}: the result");
        assert!(out.image.iter().enumerate().any(|(k, &v)| v == pixel_box.lo[k % 3] || v == pixel_box.hi[k % 3]), "{optimizer:?}: nothing pressed on the box");
        let free = stylize(&CpuBackend::new(), &vgg, &Job { bounds: None, snapshot_every: 0, ..job }, &mut |_, _| Ok(())).unwrap();
        assert!(!pixel_box.contains(&free.image), "{optimizer:?}: unbounded, the run should leave the box");
    }
}

