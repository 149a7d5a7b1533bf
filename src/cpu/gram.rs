//! Gram matrix and its backward pass.  Mirrors kernels/gram.cu.

use super::bf16;
use super::matmul::{self, Strided};
use crate::backend::scales;
use rayon::prelude::*;

/// g (c, c) = fᵀ f / (c * hw), f (hw, c).  Naive reference: rows of g in parallel.
pub fn gram_naive(hw: usize, c: usize, f: &[f32], g: &mut [f32]) {
    let scale = scales::gram_scale_f64(hw, c);
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
    let scale = scales::gram_scale_f32(hw, c);
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

// ---- fast paths: GEMM -------------------------------------------------------------------------
//
// gram: K = hw is long and c small, so the work is cut into fixed K chunks x fixed row blocks of g
// (independent of the thread count), each a single-threaded GEMM into its own partial; the
// partials are summed in chunk order. gram_bwd_acc: df += f · S, S = (dg + dgᵀ) / (c·hw), cut
// into bands of pixels (each output sums over the same c products in the same order).

/// Rows of f per partial Gram.
const GRAM_K_CHUNK: usize = 4096; // even: gram_bf16 packs pairs of rows
/// Rows of g per task.
const GRAM_ROW_BLOCK: usize = 64;

/// g (c, c) = fᵀ f / (c * hw), f (hw, c).
pub fn gram(hw: usize, c: usize, f: &[f32], g: &mut [f32]) {
    assert!(f.len() >= hw * c && g.len() >= c * c);
    let scale = scales::gram_scale_f32(hw, c);
    sum_of_partials(hw, c, g, |(k0, k1), (i0, i1), dst| {
        // SAFETY: lhs reads f[(k0..k1) * c + (i0..i1)], rhs f[(k0..k1) * c + (0..c)], dst (i1-i0, c).
        unsafe { matmul::gemm(i1 - i0, c, k1 - k0, dst.as_mut_ptr(), c, false, Strided::rows(f.as_ptr().add(k0 * c + i0), c).t(), Strided::rows(f.as_ptr().add(k0 * c), c), scale) }
    });
}

/// g (c, c) = the sum, in chunk order, of one partial Gram per GRAM_K_CHUNK rows of f: one task
/// per (chunk, row block) writes `partial(rows k0..k1 of f, rows i0..i1 of g, dst (i1-i0, c))`
/// (never called with k1 <= k0; dst starts zeroed).
fn sum_of_partials(hw: usize, c: usize, g: &mut [f32], partial: impl Fn((usize, usize), (usize, usize), &mut [f32]) + Sync) {
    let chunks = hw.div_ceil(GRAM_K_CHUNK).max(1);
    let blocks = c.div_ceil(GRAM_ROW_BLOCK);
    let mut partials = vec![0.0f32; chunks * c * c];
    let tasks: Vec<(usize, &mut [f32])> = partials
        .chunks_mut(c * c)
        .enumerate()
        .flat_map(|(chunk, slab)| slab.chunks_mut(GRAM_ROW_BLOCK * c).enumerate().map(move |(blk, d)| (chunk * blocks + blk, d)))
        .collect();
    tasks.into_par_iter().for_each(|(t, dst)| {
        let (chunk, block) = (t / blocks, t % blocks);
        let (k0, k1) = (chunk * GRAM_K_CHUNK, ((chunk + 1) * GRAM_K_CHUNK).min(hw));
        if k1 > k0 {
            partial((k0, k1), (block * GRAM_ROW_BLOCK, ((block + 1) * GRAM_ROW_BLOCK).min(c)), dst);
        }
    });
    let g = &mut g[..c * c];
    g.copy_from_slice(&partials[..c * c]);
    for p in partials.chunks_exact(c * c).skip(1) {
        for (gv, &pv) in g.iter_mut().zip(p) {
            *gv += pv;
        }
    }
}

/// Pixels of df per task.
const GRAM_BWD_BAND: usize = 512;

/// df (hw, c) += f (dg + dgᵀ) / (c * hw).  f (hw, c), dg (c, c), df (hw, c).
pub fn gram_bwd_acc(hw: usize, c: usize, f: &[f32], dg: &[f32], df: &mut [f32]) {
    assert!(f.len() >= hw * c && dg.len() >= c * c && df.len() >= hw * c);
    let scale = scales::gram_scale_f32(hw, c);
    let mut sym = vec![0.0f32; c * c];
    for i in 0..c {
        for j in 0..c {
            sym[i * c + j] = (dg[i * c + j] + dg[j * c + i]) * scale;
        }
    }
    df[..hw * c].par_chunks_mut(GRAM_BWD_BAND * c).zip(f[..hw * c].par_chunks(GRAM_BWD_BAND * c)).for_each(|(d, fb)| {
        crate::cpu::conv::gemm_rm(d.len() / c, c, c, fb, &sym, d, true);
    });
}

/// gram in bf16 (`--precision bf16`, needs bf16::available()): f rounded once to bf16 pairs of
/// pixels, P (pairs(hw), c), which is both operands of fᵀf (its A read down the columns); the
/// same chunks and row blocks as `gram`, f32 accumulation and partial sums.
pub fn gram_bf16(hw: usize, c: usize, f: &[f32], g: &mut [f32]) {
    assert!(f.len() >= hw * c && g.len() >= c * c);
    if c == 0 {
        return;
    }
    let scale = scales::gram_scale_f32(hw, c);
    // GRAM_K_CHUNK is even: every chunk of rows starts on a pair.
    bf16::with_packed_features(bf16::pairs(hw) * c, |packed| {
        // Every word is written: each chunk packs all of its rows' pairs.
        packed.par_chunks_mut(GRAM_K_CHUNK / 2 * c).zip(f[..hw * c].par_chunks(GRAM_K_CHUNK * c)).for_each(|(dst, src)| bf16::pack_pairs(src.len() / c, c, src, c, 1, dst));
        let packed = &packed[..];
        // The Gram is symmetric: each row block computes only the columns from its own first
        // row on, and the rest is copied across the diagonal below. (Bit for bit the same as
        // computing it: element (j, i) sums the same products in the same order as (i, j).)
        sum_of_partials(hw, c, g, |(k0, k1), (i0, i1), dst| {
            let (q0, q1) = (k0 / 2, bf16::pairs(k1));
            let a = bf16::PackedA { data: &packed[q0 * c + i0..], row: 1, pair: c };
            let b = bf16::PackedB::rows(&packed[q0 * c + i0..], c);
            bf16::gemm(i1 - i0, c - i0, q1 - q0, a, b, &mut dst[i0..], c, false, scale);
        });
    });
    for i in GRAM_ROW_BLOCK..c {
        for j in 0..i / GRAM_ROW_BLOCK * GRAM_ROW_BLOCK {
            g[i * c + j] = g[j * c + i];
        }
    }
}

/// gram_bwd_acc in bf16 (needs bf16::available()): S = (dg + dgᵀ) / (c·hw) rounded once to
/// bf16 pairs, each band of f rounded as it is used; the same bands, f32 accumulation into df.
pub fn gram_bwd_acc_bf16(hw: usize, c: usize, f: &[f32], dg: &[f32], df: &mut [f32]) {
    assert!(f.len() >= hw * c && dg.len() >= c * c && df.len() >= hw * c);
    if c == 0 {
        return;
    }
    let scale = scales::gram_scale_f32(hw, c);
    let mut sym = vec![0.0f32; c * c];
    for i in 0..c {
        for j in 0..c {
            sym[i * c + j] = (dg[i * c + j] + dg[j * c + i]) * scale;
        }
    }
    let k2 = bf16::pairs(c);
    let mut sym_packed = vec![0u32; k2 * c];
    bf16::pack_pairs(c, c, &sym, c, 1, &mut sym_packed);
    let b = bf16::PackedB::rows(&sym_packed, c);
    df[..hw * c].par_chunks_mut(GRAM_BWD_BAND * c).zip(f[..hw * c].par_chunks(GRAM_BWD_BAND * c)).for_each(|(d, fb)| {
        let rows = d.len() / c;
        bf16::with_packed_lhs(rows * k2, |a| {
            bf16::pack_rows(rows, c, fb, c, a);
            bf16::gemm(rows, c, k2, bf16::PackedA { data: a, row: k2, pair: 1 }, b, d, c, true, 1.0);
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f (hw = 3, c = 2), pixels (1, 0), (2, 3), (0, 4): fᵀf = [[5, 6], [6, 25]], over c·hw = 6.
    const F: [f32; 6] = [1.0, 0.0, 2.0, 3.0, 0.0, 4.0];
    const G: [f32; 4] = [5.0 / 6.0, 1.0, 1.0, 25.0 / 6.0];

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (k, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{what}[{k}]: {a} vs {b}");
        }
    }

    #[test]
    fn gram_of_a_hand_example() {
        for (name, op) in [("gram", gram as fn(usize, usize, &[f32], &mut [f32])), ("gram_naive", gram_naive)] {
            let mut g = vec![f32::NAN; 4];
            op(3, 2, &F, &mut g);
            assert_close(&g, &G, name);
        }
    }

    #[test]
    fn gram_bwd_of_a_hand_example() {
        // dg = [[1, 2], [0, -1]]: dg + dgᵀ = [[2, 2], [2, -2]], over 6; df += f (dg + dgᵀ) / 6.
        let dg = [1.0, 2.0, 0.0, -1.0];
        let added = [2.0, 2.0, 10.0, -2.0, 8.0, -8.0].map(|v: f32| v / 6.0);
        let df0 = [1.0, -1.0, 0.5, 0.25, -2.0, 3.0];
        let want: Vec<f32> = df0.iter().zip(&added).map(|(a, b)| a + b).collect();
        for (name, op) in [("gram_bwd_acc", gram_bwd_acc as fn(usize, usize, &[f32], &[f32], &mut [f32])), ("gram_bwd_acc_naive", gram_bwd_acc_naive)] {
            let mut df = df0.to_vec();
            op(3, 2, &F, &dg, &mut df);
            assert_close(&df, &want, name);
        }
    }

    /// The fast Gram against the naive one where ReLU zeros are common, with every value finite
    /// (a NaN in either must fail, not pass unseen), over several K chunks and row blocks.
    #[test]
    fn fast_and_naive_grams_agree_and_are_finite_on_relu_features() {
        let mut rng = crate::rng::Rng::new(3);
        for (hw, c) in [(37, 5), (5000, 3), (4097, 70), (300, 130)] {
            let f: Vec<f32> = rng.normal_vec(hw * c, 1.0).into_iter().map(|v| v.max(0.0)).collect();
            let (mut g, mut g_ref) = (vec![f32::NAN; c * c], vec![f32::NAN; c * c]);
            gram(hw, c, &f, &mut g);
            gram_naive(hw, c, &f, &mut g_ref);
            assert!(g.iter().chain(&g_ref).all(|v| v.is_finite()), "({hw}, {c})");
            let scale = g_ref.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (a, b) in g.iter().zip(&g_ref) {
                assert!((a - b).abs() <= 1e-5 * scale, "({hw}, {c}): {a} vs {b}");
            }
        }
    }
}
