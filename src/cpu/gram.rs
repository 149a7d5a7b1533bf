//! Gram matrix and its backward pass.  Mirrors kernels/gram.cu.

use rayon::prelude::*;

/// g (c, c) = fᵀ f / (c * hw), f (hw, c).  Naive reference: rows of g in parallel.
pub fn gram_naive(hw: usize, c: usize, f: &[f32], g: &mut [f32]) {
    let scale = 1.0 / (c * hw) as f64;
    g.par_chunks_mut(c).enumerate().for_each(|(i, g_row)| {
        for (j, gv) in g_row.iter_mut().enumerate() {
            let mut acc = 0.0f64;
            for p in 0..hw {
                acc += f[p * c + i] as f64 * f[p * c + j] as f64;
            }
            *gv = (acc * scale) as f32;
        }
    });
}

/// df (hw, c) += f (dg + dgᵀ) / (c * hw).  Naive reference: pixels in parallel.
pub fn gram_bwd_acc_naive(hw: usize, c: usize, f: &[f32], dg: &[f32], df: &mut [f32]) {
    let scale = 1.0 / (c * hw) as f32;
    let sym: Vec<f32> = (0..c * c).map(|k| (dg[k] + dg[(k % c) * c + k / c]) * scale).collect();
    df.par_chunks_mut(c).enumerate().for_each(|(p, df_row)| {
        let f_row = &f[p * c..(p + 1) * c];
        for (k, &fv) in f_row.iter().enumerate() {
            let s_row = &sym[k * c..(k + 1) * c];
            for (d, &sv) in df_row.iter_mut().zip(s_row) {
                *d += fv * sv;
            }
        }
    });
    let _ = hw;
}

pub fn gram(hw: usize, c: usize, f: &[f32], g: &mut [f32]) {
    gram_naive(hw, c, f, g);
}

pub fn gram_bwd_acc(hw: usize, c: usize, f: &[f32], dg: &[f32], df: &mut [f32]) {
    gram_bwd_acc_naive(hw, c, f, dg, df);
}
