//! 3x3 convolution on the CPU, channels-last.  Mirrors kernels/conv3x3.cu.
//!
//! `*_naive` are the algorithmic references (one output pixel at a time); the fast paths are
//! checked against them in tests before they are timed.

use crate::backend::ConvShape;
use rayon::prelude::*;

/// y = relu(conv3x3(x, w) + b).  x (h, w, c_in), w (3, 3, c_in, c_out), b (c_out), y (h, w, c_out).
pub fn conv3x3_fwd_naive(s: ConvShape, x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], relu: bool) {
    let ConvShape { h, w: wd, c_in, c_out } = s;
    y.par_chunks_mut(wd * c_out).enumerate().for_each(|(oy, y_row)| {
        for ox in 0..wd {
            let out = &mut y_row[ox * c_out..(ox + 1) * c_out];
            out.copy_from_slice(b);
            for ky in 0..3 {
                let iy = oy as isize + ky as isize - 1;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for kx in 0..3 {
                    let ix = ox as isize + kx as isize - 1;
                    if ix < 0 || ix >= wd as isize {
                        continue;
                    }
                    let xin = &x[(iy as usize * wd + ix as usize) * c_in..][..c_in];
                    let wtap = &w[(ky * 3 + kx) * c_in * c_out..][..c_in * c_out];
                    for (ci, &xv) in xin.iter().enumerate() {
                        let wrow = &wtap[ci * c_out..(ci + 1) * c_out];
                        for (o, &wv) in out.iter_mut().zip(wrow) {
                            *o += xv * wv;
                        }
                    }
                }
            }
            if relu {
                for o in out.iter_mut() {
                    *o = o.max(0.0);
                }
            }
        }
    });
}

/// dx = conv3x3(dy, w_flip) with no bias and no ReLU: the input gradient of a 3x3 conv.
pub fn conv3x3_bwd_input_naive(s: ConvShape, dy: &[f32], w_flip: &[f32], dx: &mut [f32]) {
    let swapped = ConvShape { h: s.h, w: s.w, c_in: s.c_out, c_out: s.c_in };
    let zero_bias = vec![0.0; s.c_in];
    conv3x3_fwd_naive(swapped, dy, w_flip, &zero_bias, dx, false);
}

/// Torch layout (c_out, c_in, 3, 3) -> forward layout (3, 3, c_in, c_out).
pub fn weights_to_fwd_layout(c_out: usize, c_in: usize, w_oihw: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; w_oihw.len()];
    for co in 0..c_out {
        for ci in 0..c_in {
            for k in 0..9 {
                out[(k * c_in + ci) * c_out + co] = w_oihw[(co * c_in + ci) * 9 + k];
            }
        }
    }
    out
}

/// Torch layout (c_out, c_in, 3, 3) -> backward layout (3, 3, c_out, c_in), taps flipped:
/// w_flip[ky][kx][co][ci] = w[co][ci][2-ky][2-kx].
pub fn weights_to_bwd_layout(c_out: usize, c_in: usize, w_oihw: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; w_oihw.len()];
    for co in 0..c_out {
        for ci in 0..c_in {
            for k in 0..9 {
                out[((8 - k) * c_out + co) * c_in + ci] = w_oihw[(co * c_in + ci) * 9 + k];
            }
        }
    }
    out
}

/// Forward layout (3, 3, c_in, c_out) -> backward layout (3, 3, c_out, c_in), taps flipped:
/// w_flip[ky][kx][co][ci] = w[2-ky][2-kx][ci][co].
pub fn fwd_layout_to_bwd_layout(c_in: usize, c_out: usize, w: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; 9 * c_in * c_out];
    for k in 0..9 {
        for ci in 0..c_in {
            for co in 0..c_out {
                out[((8 - k) * c_out + co) * c_in + ci] = w[(k * c_in + ci) * c_out + co];
            }
        }
    }
    out
}

// ---- fast paths: implicit GEMM ------------------------------------------------------------------
//
// y[p, :] = Σ_tap x[p + offset(tap), :] · W[tap]: a GEMM with M = h*w, N = c_out, K = 9*c_in, and
// W (3, 3, c_in, c_out) is already the K x N row-major matrix. The image is cut into bands of
// whole rows (one rayon task each, a single-threaded AVX-512 GEMM from the `gemm` crate inside),
// so every output's reduction order depends only on the shape and the thread count:
// deterministic. conv3x3_bwd_input is the same conv with the flipped weights.

use super::matmul::{self, Strided};
use std::cell::RefCell;

/// Band size target, in bytes of a 9-tap im2col block (the row buffer is a third of it): ~L2/2.
const BAND_BYTES: usize = 1 << 20;
/// Minimum rows per band: the weights are re-packed per band, so a band must amortise them.
const MIN_BAND_ROWS: usize = 256;

thread_local! {
    /// Per-thread row-buffer scratch, reused across calls (no page faults in the hot loop).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Splits m rows into bands: as many as needed to keep a band's `row_bytes * rows` near
/// BAND_BYTES, rounded up to a multiple of the thread count so both cores stay busy.
fn bands(m: usize, row_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let threads = rayon::current_num_threads().max(1);
    let by_cache = (m * row_bytes).div_ceil(BAND_BYTES).max(1);
    let n = by_cache.div_ceil(threads) * threads;
    // Weight packing is paid per band: keep bands at least MIN_BAND_ROWS tall, but one per thread.
    let n = n.min(m.div_ceil(MIN_BAND_ROWS)).max(threads.min(m.div_ceil(16))).max(1);
    let rows = m.div_ceil(n);
    (0..m.div_ceil(rows)).map(|k| k * rows..((k + 1) * rows).min(m)).collect()
}

/// dst (m, n) = a (m, k) · b (k, n), all row-major and contiguous, single-threaded.
pub(crate) fn gemm_rm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], dst: &mut [f32], accumulate: bool) {
    assert!(a.len() >= m * k && b.len() >= k * n && dst.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above bound every access gemm makes through these strides.
    unsafe { matmul::gemm(m, n, k, dst.as_mut_ptr(), n, accumulate, Strided::rows(a.as_ptr(), k), Strided::rows(b.as_ptr(), n), 1.0) }
}

/// y = conv3x3(x, w) (+ b, relu if given).  x (h, w, c_in), w (3, 3, c_in, c_out), b (c_out), y (h, w, c_out).
fn conv3x3_gemm(s: ConvShape, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) {
    let ConvShape { h, w: wd, c_in, c_out } = s;
    assert!(x.len() >= h * wd * c_in && w.len() >= 9 * c_in * c_out && y.len() >= h * wd * c_out && b.is_none_or(|b| b.len() >= c_out));
    if h * wd == 0 || c_out == 0 {
        return;
    }
    if c_out < NARROW_C_OUT {
        conv3x3_narrow(s, x, w, b, y)
    } else {
        conv3x3_rows(s, x, w, b, y)
    }
}

/// y = conv3x3(x, w) (+ b, relu if given) over bands of whole image rows: hcol holds, for the
/// band's rows and one halo row above and below, each pixel's 3 horizontal neighbours
/// (hcol[r][ox] = x[r][ox-1..=ox+1], zero outside), so the ky-th tap row is the GEMM
/// hcol[ky*w..] · w[ky] with K = 3*c_in: 3 GEMMs into the band, and 3x fewer copies than im2col.
/// x (h, w, c_in), w (3, 3, c_in, c_out), b (c_out), y (h, w, c_out).
fn conv3x3_rows(s: ConvShape, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) {
    let ConvShape { h, w: wd, c_in, c_out } = s;
    let (m, k3) = (h * wd, 3 * c_in);
    let band_rows = bands(m, 9 * c_in * 4)[0].len().div_ceil(wd).max(1);
    y[..m * c_out].par_chunks_mut(band_rows * wd * c_out).enumerate().for_each(|(band, y_band)| {
        let (r0, nr) = (band * band_rows, y_band.len() / (wd * c_out));
        SCRATCH.with_borrow_mut(|hcol| {
            let len = (nr + 2) * wd * k3;
            if hcol.len() < len {
                hcol.resize(len, 0.0);
            }
            for j in 0..nr + 2 {
                let row = &mut hcol[j * wd * k3..(j + 1) * wd * k3];
                let iy = (r0 + j) as isize - 1;
                if iy < 0 || iy >= h as isize {
                    row.fill(0.0);
                    continue;
                }
                let x_row = &x[iy as usize * wd * c_in..][..wd * c_in];
                for ox in 0..wd {
                    for kx in 0..3 {
                        let dst = &mut row[(ox * 3 + kx) * c_in..][..c_in];
                        let ix = ox as isize + kx as isize - 1;
                        if ix < 0 || ix >= wd as isize {
                            dst.fill(0.0);
                        } else {
                            dst.copy_from_slice(&x_row[ix as usize * c_in..][..c_in]);
                        }
                    }
                }
            }
            for ky in 0..3 {
                gemm_rm(nr * wd, c_out, k3, &hcol[ky * wd * k3..len], &w[ky * k3 * c_out..(ky + 1) * k3 * c_out], y_band, ky > 0);
            }
        });
        if let Some(b) = b {
            for out in y_band.chunks_exact_mut(c_out) {
                for (o, &bv) in out.iter_mut().zip(b) {
                    *o = (*o + bv).max(0.0);
                }
            }
        }
    });
}

/// Below this c_out a GEMM with N = c_out wastes most SIMD lanes (the image layer's backward has
/// N = 3); conv3x3_narrow uses N = 9 * c_out instead.
const NARROW_C_OUT: usize = 16;

/// Narrow outputs: z = x · wcat with wcat (c_in, 9 * c_out), wcat[ci][tap][co] = w[tap][ci][co],
/// then y[p] = Σ_tap z[p + offset(tap)][tap]: no im2col, and a GEMM 9x wider.
/// x (h, w, c_in), w (3, 3, c_in, c_out), b (c_out), y (h, w, c_out).
fn conv3x3_narrow(s: ConvShape, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) {
    let ConvShape { h, w: wd, c_in, c_out } = s;
    let (m, n9) = (h * wd, 9 * c_out);
    let mut wcat = vec![0.0f32; c_in * n9];
    for tap in 0..9 {
        for ci in 0..c_in {
            wcat[ci * n9 + tap * c_out..][..c_out].copy_from_slice(&w[(tap * c_in + ci) * c_out..][..c_out]);
        }
    }
    let mut z = vec![0.0f32; m * n9];
    let rows = bands(m, c_in * 4)[0].len();
    z.par_chunks_mut(rows * n9).zip(x[..m * c_in].par_chunks(rows * c_in)).for_each(|(zb, xb)| {
        gemm_rm(xb.len() / c_in, n9, c_in, xb, &wcat, zb, false);
    });
    y[..m * c_out].par_chunks_mut(wd * c_out).enumerate().for_each(|(oy, y_row)| {
        for ox in 0..wd {
            let out = &mut y_row[ox * c_out..(ox + 1) * c_out];
            match b {
                Some(b) => out.copy_from_slice(b),
                None => out.fill(0.0),
            }
            for ky in 0..3 {
                let iy = oy as isize + ky as isize - 1;
                for kx in 0..3 {
                    let ix = ox as isize + kx as isize - 1;
                    if iy < 0 || iy >= h as isize || ix < 0 || ix >= wd as isize {
                        continue;
                    }
                    let zt = &z[(iy as usize * wd + ix as usize) * n9 + (ky * 3 + kx) * c_out..][..c_out];
                    for (o, &v) in out.iter_mut().zip(zt) {
                        *o += v;
                    }
                }
            }
            if b.is_some() {
                for o in out.iter_mut() {
                    *o = o.max(0.0);
                }
            }
        }
    });
}

/// y = relu(conv3x3(x, w) + b).  x (h, w, c_in), w (3, 3, c_in, c_out), b (c_out), y (h, w, c_out).
pub fn conv3x3_fwd(s: ConvShape, x: &[f32], w: &[f32], b: &[f32], y: &mut [f32]) {
    conv3x3_gemm(s, x, w, Some(b), y);
}

/// dx = conv3x3(dy, w_flip).  dy (h, w, c_out), w_flip (3, 3, c_out, c_in), dx (h, w, c_in).
pub fn conv3x3_bwd_input(s: ConvShape, dy: &[f32], w_flip: &[f32], dx: &mut [f32]) {
    let swapped = ConvShape { h: s.h, w: s.w, c_in: s.c_out, c_out: s.c_in };
    conv3x3_gemm(swapped, dy, w_flip, None, dx);
}
