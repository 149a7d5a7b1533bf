//! The logic of `neural-style bench`: time loss-and-gradient evaluations on a backend, the same
//! work as `torch_gatys.py` (VGG-19 to relu5_1, content + style + TV, then one L-BFGS step).

use crate::backend::Backend;
use crate::model::Vgg;
use crate::objective::{Image, Objective, ObjectiveSpec};
use crate::optim::Lbfgs;
use crate::preprocess::Convention;
use crate::rng::Rng;
use anyhow::{ensure, Result};
use serde::Serialize;
use std::time::Instant;

/// Timings of `evals` evaluations (each followed by its L-BFGS step) after `warmup` untimed ones.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub backend: String,
    pub size: usize,
    pub warmup: usize,
    pub evals: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    /// 2 x forward conv FLOPs (forward + input gradient), as `torch_gatys.py` counts them.
    pub flops_per_eval: u64,
    /// flops_per_eval / median time.
    pub gflops_effective: f64,
    /// Every timed evaluation, in order.
    pub times_ms: Vec<f64>,
    pub final_loss: f64,
    /// Peak bytes the backend held, where it tracks them.
    pub peak_bytes: Option<u64>,
}

/// A seeded procedural 8-bit RGB image: smooth waves plus a little noise (content), or
/// diagonal stripes (style), so the losses are neither zero nor degenerate.
pub fn procedural_image(size: usize, seed: u64, striped: bool) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let phase: Vec<f32> = (0..3).map(|_| rng.uniform() * std::f32::consts::TAU).collect();
    let mut out = Vec::with_capacity(size * size * 3);
    for y in 0..size {
        for x in 0..size {
            let (u, v) = (x as f32 / size as f32, y as f32 / size as f32);
            for (c, ph) in phase.iter().enumerate() {
                let s = if striped {
                    ((u + v) * 24.0 + ph).sin() * ((u - v) * (6.0 + c as f32)).cos()
                } else {
                    (u * 7.0 + ph).sin() * (v * 5.0 + c as f32).cos()
                };
                let n = rng.uniform() - 0.5;
                out.push((127.5 + 110.0 * s + 20.0 * n).clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

/// The default objective: content relu4_2; style relu1_1..relu5_1; weights 5 / 100 / 1e-3.
pub fn default_spec() -> ObjectiveSpec {
    ObjectiveSpec::default()
}

/// Runs `warmup` then `evals` evaluations at size x size, each followed by an L-BFGS step
/// (history 100, lr 1), and reports the time per evaluation.
pub fn run_evaluations<B: Backend>(backend: &B, vgg: &Vgg, size: usize, warmup: usize, evals: usize) -> Result<BenchResult> {
    ensure!(evals > 0, "at least one timed evaluation is needed");
    let conv = Convention::Torchvision;
    let content = Image { h: size, w: size, data: conv.preprocess(&procedural_image(size, 1, false)) };
    let style = Image { h: size, w: size, data: conv.preprocess(&procedural_image(size, 2, true)) };
    let mut objective = Objective::new(backend, vgg, default_spec(), &content, &[(style, 1.0)])?;
    let n = size * size * 3;
    let mut x = backend.upload(&Rng::new(3).normal_vec(n, 0.001))?;
    let mut g = backend.zeros(n)?;
    // Unbounded: the same work as torch.optim.LBFGS, which the benchmark is compared with.
    let mut lbfgs = Lbfgs::new(backend, n, 100, 1.0, None)?;
    let mut times_ms = Vec::new();
    let mut final_loss = 0.0;
    for k in 0..warmup + evals {
        let t = Instant::now();
        final_loss = objective.evaluate(&x, &mut g)?.total;
        lbfgs.step(backend, &mut x, &g)?;
        backend.synchronize()?;
        if k >= warmup {
            times_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut sorted = times_ms.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median_ms = if sorted.len() % 2 == 1 { sorted[sorted.len() / 2] } else { 0.5 * (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) };
    let flops_per_eval = objective.flops_per_evaluation();
    Ok(BenchResult {
        backend: backend.name(),
        size,
        warmup,
        evals,
        median_ms,
        min_ms: sorted[0],
        flops_per_eval,
        gflops_effective: flops_per_eval as f64 / (median_ms * 1e-3) / 1e9,
        times_ms,
        final_loss,
        peak_bytes: backend.peak_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_a_narrow_network() {
        let vgg = crate::model::random::random_vgg(&[4, 4, 0, 6, 6, 0, 8, 8, 8, 8, 0, 8, 8, 8, 8, 0, 8], 1, "narrow".into());
        let r = run_evaluations(&crate::CpuBackend::new(), &vgg, 32, 1, 3).unwrap();
        assert_eq!(r.times_ms.len(), 3);
        assert!(r.min_ms > 0.0 && r.min_ms <= r.median_ms && r.flops_per_eval > 0 && r.final_loss.is_finite());
        // Deterministic: the same run gives the same loss.
        let again = run_evaluations(&crate::CpuBackend::new(), &vgg, 32, 1, 3).unwrap();
        assert_eq!(r.final_loss, again.final_loss);
    }
}
