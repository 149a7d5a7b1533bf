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

/// Fast path used by the backend (to be replaced by the blocked GEMM; the naive loop for now).
pub fn conv3x3_fwd(s: ConvShape, x: &[f32], w: &[f32], b: &[f32], y: &mut [f32]) {
    conv3x3_fwd_naive(s, x, w, b, y, true);
}

pub fn conv3x3_bwd_input(s: ConvShape, dy: &[f32], w_flip: &[f32], dx: &mut [f32]) {
    conv3x3_bwd_input_naive(s, dy, w_flip, dx);
}
