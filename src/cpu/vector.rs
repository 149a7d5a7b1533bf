//! Vector ops for the optimisers.  Mirrors kernels/vector.cu.
//! Reductions sum fixed-size chunks in f64, then the chunk sums in order: deterministic.

use crate::backend::{AdamStep, PixelBox};
use rayon::prelude::*;

const CHUNK: usize = 16384;

fn chunked_sum(n: usize, f: impl Fn(std::ops::Range<usize>) -> f64 + Sync) -> f64 {
    let parts: Vec<f64> = (0..n.div_ceil(CHUNK)).into_par_iter().map(|k| f(k * CHUNK..((k + 1) * CHUNK).min(n))).collect();
    parts.iter().sum()
}

pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    chunked_sum(a.len(), |r| a[r.clone()].iter().zip(&b[r]).map(|(&x, &y)| x as f64 * y as f64).sum())
}

pub fn asum(x: &[f32]) -> f64 {
    chunked_sum(x.len(), |r| x[r].iter().map(|v| v.abs() as f64).sum())
}

pub fn amax(x: &[f32]) -> f64 {
    x.par_chunks(CHUNK).map(|c| c.iter().fold(0.0f32, |m, v| m.max(v.abs()))).reduce(|| 0.0, f32::max) as f64
}

pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += alpha * x;
        }
    });
}

/// y += alpha x, then Σ y_i z_i, in one pass: the values of axpy then dot, summed in dot's order
/// (chunk by chunk, in f64), so the result is the same to the bit.
pub fn axpy_dot(alpha: f32, x: &[f32], y: &mut [f32], z: &[f32]) -> f64 {
    assert!(x.len() == y.len() && z.len() == y.len());
    let parts: Vec<f64> = y
        .par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(z.par_chunks(CHUNK)))
        .map(|(y, (x, z))| {
            let mut sum = -0.0f64; // where f64's Sum starts (dot's .sum())
            for ((y, &x), &z) in y.iter_mut().zip(x).zip(z) {
                *y += alpha * x;
                sum += *y as f64 * z as f64;
            }
            sum
        })
        .collect();
    parts.iter().sum()
}

pub fn scale(alpha: f32, x: &mut [f32]) {
    x.par_chunks_mut(CHUNK).for_each(|x| x.iter_mut().for_each(|v| *v *= alpha));
}

/// torch.optim.Adam: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²;
/// p -= lr / (1-b1^t) * m / (sqrt(v / (1-b2^t)) + eps).
pub fn adam_step(s: AdamStep, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
    let crate::backend::scales::AdamFactors { step, bc2_sqrt } = s.factors();
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m = s.beta1 * *m + (1.0 - s.beta1) * g;
                *v = s.beta2 * *v + (1.0 - s.beta2) * g * g;
                *p -= step * *m / (v.sqrt() / bc2_sqrt + s.eps);
            }
        });
}

/// x = clamp(x, lo, hi) per channel (channels-last, 3 channels; chunks are a multiple of 3 so
/// that i % 3 is the channel within each). max then min, as the kernel's fmaxf then fminf: a
/// NaN becomes lo.
pub fn project_to_box(bx: &PixelBox, x: &mut [f32]) {
    x.par_chunks_mut(CHUNK3).for_each(|x| {
        for px in x.chunks_mut(3) {
            for (c, v) in px.iter_mut().enumerate() {
                *v = v.max(bx.lo[c]).min(bx.hi[c]);
            }
        }
    });
}

/// v_i = 0 where it points out of the box at x_i: x_i <= lo and v_i < 0, or x_i >= hi and v_i > 0.
pub fn zero_outward(bx: &PixelBox, x: &[f32], v: &mut [f32]) {
    assert_eq!(x.len(), v.len());
    v.par_chunks_mut(CHUNK3).zip(x.par_chunks(CHUNK3)).for_each(|(v, x)| {
        for (vp, xp) in v.chunks_mut(3).zip(x.chunks(3)) {
            for (c, (v, &x)) in vp.iter_mut().zip(xp).enumerate() {
                if (x <= bx.lo[c] && *v < 0.0) || (x >= bx.hi[c] && *v > 0.0) {
                    *v = 0.0;
                }
            }
        }
    });
}

/// v_i = 0 where g holds x_i at its bound: x_i <= lo and g_i > 0, or x_i >= hi and g_i < 0.
pub fn hold_at_bounds(bx: &PixelBox, x: &[f32], g: &[f32], v: &mut [f32]) {
    assert!(x.len() == v.len() && g.len() == v.len());
    v.par_chunks_mut(CHUNK3).zip(x.par_chunks(CHUNK3).zip(g.par_chunks(CHUNK3))).for_each(|(v, (x, g))| {
        for ((vp, xp), gp) in v.chunks_mut(3).zip(x.chunks(3)).zip(g.chunks(3)) {
            for (c, ((v, &x), &g)) in vp.iter_mut().zip(xp).zip(gp).enumerate() {
                if (x <= bx.lo[c] && g > 0.0) || (x >= bx.hi[c] && g < 0.0) {
                    *v = 0.0;
                }
            }
        }
    });
}

/// CHUNK rounded down to whole pixels, for the per-channel ops.
const CHUNK3: usize = CHUNK / 3 * 3;
