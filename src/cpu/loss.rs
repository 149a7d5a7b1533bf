//! Content, style and total-variation losses with their gradients.  Mirrors kernels/loss.cu.
//! Sums are taken in f64 over fixed chunks, so results do not depend on the thread count.

use crate::backend::scales;
use rayon::prelude::*;

const CHUNK: usize = 4096;

/// Returns weight * mean((f - p)²); df += 2 weight (f - p) / n.
pub fn content_loss_acc(weight: f32, f: &[f32], p: &[f32], df: &mut [f32]) -> f64 {
    let n = f.len();
    let g = scales::mean_sq_grad_scale(weight, n);
    let sum: f64 = df
        .par_chunks_mut(CHUNK)
        .zip(f.par_chunks(CHUNK).zip(p.par_chunks(CHUNK)))
        .map(|(d, (f, p))| {
            let mut acc = 0.0f64;
            for ((d, &f), &p) in d.iter_mut().zip(f).zip(p) {
                let diff = f - p;
                acc += (diff * diff) as f64;
                *d += g * diff;
            }
            acc
        })
        .collect::<Vec<_>>()
        .iter()
        .sum();
    scales::mean_sq_loss(weight, sum, n)
}

/// Returns weight * mean((g - a)²) over c² entries; dg = 2 weight (g - a) / c².
pub fn style_loss(weight: f32, g: &[f32], a: &[f32], dg: &mut [f32]) -> f64 {
    let n = g.len();
    let k = scales::mean_sq_grad_scale(weight, n);
    let mut sum = 0.0f64;
    for ((d, &g), &a) in dg.iter_mut().zip(g).zip(a) {
        let diff = g - a;
        sum += (diff * diff) as f64;
        *d = k * diff;
    }
    scales::mean_sq_loss(weight, sum, n)
}

/// Returns weight * Σ (x[i+1,j]-x[i,j])² + (x[i,j+1]-x[i,j])² over x (h, w, c); adds the gradient.
pub fn tv_loss_acc(weight: f32, h: usize, w: usize, c: usize, x: &[f32], dx: &mut [f32]) -> f64 {
    let row = w * c;
    let k = scales::tv_grad_scale(weight);
    // Gradient at (i, j): each difference it takes part in, as the later or the earlier term.
    let sum = sum_over_rows(dx, row, |i, d_row| {
        let mut acc = 0.0f64;
        for j in 0..w {
            for ch in 0..c {
                let at = |ii: usize, jj: usize| x[(ii * w + jj) * c + ch];
                let v = at(i, j);
                let mut gsum = 0.0f32;
                if i + 1 < h {
                    let dv = at(i + 1, j) - v;
                    acc += (dv * dv) as f64;
                    gsum -= dv;
                }
                if j + 1 < w {
                    let dh = at(i, j + 1) - v;
                    acc += (dh * dh) as f64;
                    gsum -= dh;
                }
                if i > 0 {
                    gsum += v - at(i - 1, j);
                }
                if j > 0 {
                    gsum += v - at(i, j - 1);
                }
                d_row[j * c + ch] += k * gsum;
            }
        }
        acc
    });
    scales::weighted_sum(weight, sum)
}

/// d(s^p)/ds for the powered TV: p s^(p-1), with the limit at s = 0 (1 for p = 1, else 0 for p > 1).
#[inline]
fn pow_slope(s: f32, power: f32) -> f32 {
    if s > 0.0 {
        power * s.powf(power - 1.0)
    } else if power == 1.0 {
        1.0
    } else {
        0.0
    }
}

/// The Keras example's total variation: returns weight * Σ_{i<h-1, j<w-1, ch} s^power with
/// s = (x[i,j]-x[i+1,j])² + (x[i,j]-x[i,j+1])² over x (h, w, c); adds its gradient into dx.
/// The gradient at (i, j) gathers the terms it takes part in: its own (as the anchor), the one
/// above (as the lower neighbour), the one to the left (as the right neighbour).
pub fn tv_pow_loss_acc(weight: f32, power: f32, h: usize, w: usize, c: usize, x: &[f32], dx: &mut [f32]) -> f64 {
    let row = w * c;
    let at = |i: usize, j: usize, ch: usize| x[(i * w + j) * c + ch];
    // s and its slope at anchor (i, j): (u, v, s) with u = x[i,j]-x[i+1,j], v = x[i,j]-x[i,j+1].
    let term = |i: usize, j: usize, ch: usize| {
        let u = at(i, j, ch) - at(i + 1, j, ch);
        let v = at(i, j, ch) - at(i, j + 1, ch);
        (u, v, u * u + v * v)
    };
    let sum = sum_over_rows(dx, row, |i, d_row| {
        let mut acc = 0.0f64;
        for j in 0..w {
            for ch in 0..c {
                let mut gsum = 0.0f32;
                if i + 1 < h && j + 1 < w {
                    let (u, v, s) = term(i, j, ch);
                    acc += (s as f64).powf(power as f64);
                    gsum += pow_slope(s, power) * 2.0 * (u + v);
                }
                if i > 0 && j + 1 < w {
                    let (u, _, s) = term(i - 1, j, ch);
                    gsum -= pow_slope(s, power) * 2.0 * u;
                }
                if j > 0 && i + 1 < h {
                    let (_, v, s) = term(i, j - 1, ch);
                    gsum -= pow_slope(s, power) * 2.0 * v;
                }
                d_row[j * c + ch] += weight * gsum;
            }
        }
        acc
    });
    scales::weighted_sum(weight, sum)
}

/// Runs `f(i, row i of dx)` over the rows in parallel and adds what each returns, in row order
/// (so the sum does not depend on the thread count).
fn sum_over_rows(dx: &mut [f32], row: usize, f: impl Fn(usize, &mut [f32]) -> f64 + Sync) -> f64 {
    dx.par_chunks_mut(row).enumerate().map(|(i, d_row)| f(i, d_row)).collect::<Vec<_>>().iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With power 1 the Keras TV is a plain sum of squares, so its gradient is linear in x: at
    /// 1e-30 x it is 1e-30 times the gradient at x, also where the squares underflow to 0 in
    /// float32 (s = 0 with nonzero differences: the slope's own branch for s = 0).
    #[test]
    fn tv_pow_1_gradient_is_linear_down_to_underflow() {
        let (h, w, c) = (3, 4, 2);
        let x: Vec<f32> = (0..h * w * c).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect();
        let grad = |x: &[f32]| {
            let mut dx = vec![0.0f32; x.len()];
            tv_pow_loss_acc(0.5, 1.0, h, w, c, x, &mut dx);
            dx
        };
        let (g, tiny) = (grad(&x), 1e-30f32);
        let g_tiny = grad(&x.iter().map(|v| v * tiny).collect::<Vec<_>>());
        assert!(g.iter().any(|&v| v != 0.0));
        for (k, (a, b)) in g_tiny.iter().zip(&g).enumerate() {
            let want = b * tiny;
            assert!((a - want).abs() <= 1e-5 * want.abs().max(1e-35), "dx[{k}]: {a} vs {want}");
        }
    }
}
