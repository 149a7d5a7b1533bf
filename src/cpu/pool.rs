//! 2x2 stride-2 pooling, channels-last.  Mirrors kernels/pool.cu.

use crate::backend::{PoolKind, PoolShape};
use rayon::prelude::*;

/// y (h/2, w/2, c) = pool of x (h, w, c).
pub fn pool_fwd(kind: PoolKind, s: PoolShape, x: &[f32], y: &mut [f32]) {
    let PoolShape { w, c, .. } = s;
    let ow = s.out_w();
    y.par_chunks_mut(ow * c).enumerate().for_each(|(oy, y_row)| {
        for ox in 0..ow {
            for ch in 0..c {
                let at = |dy: usize, dx: usize| x[((2 * oy + dy) * w + 2 * ox + dx) * c + ch];
                let (a, b, cc, d) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
                y_row[ox * c + ch] = match kind {
                    PoolKind::Max => a.max(b).max(cc).max(d),
                    PoolKind::Avg => 0.25 * (a + b + cc + d),
                };
            }
        }
    });
}

/// dx (h, w, c) = gradient of the pool; max: the first maximum in row-major window order takes it.
pub fn pool_bwd(kind: PoolKind, s: PoolShape, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let PoolShape { h, w, c } = s;
    let (oh, ow) = (s.out_h(), s.out_w());
    // Each output row oy owns input rows 2oy and 2oy+1; a dropped odd last row gets zeros.
    dx.par_chunks_mut(2 * w * c).enumerate().for_each(|(oy, dx_rows)| {
        dx_rows.fill(0.0);
        if oy >= oh || dx_rows.len() < 2 * w * c {
            return;
        }
        let base = 2 * oy * w * c;
        for ox in 0..ow {
            for ch in 0..c {
                let g = dy[(oy * ow + ox) * c + ch];
                let idx = |dy_: usize, dx_: usize| (dy_ * w + 2 * ox + dx_) * c + ch;
                match kind {
                    PoolKind::Avg => {
                        for (a, b) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            dx_rows[idx(a, b)] = 0.25 * g;
                        }
                    }
                    PoolKind::Max => {
                        let mut best = (0, 0);
                        let mut best_v = x[base + idx(0, 0)];
                        for (a, b) in [(0, 1), (1, 0), (1, 1)] {
                            let v = x[base + idx(a, b)];
                            if v > best_v {
                                best_v = v;
                                best = (a, b);
                            }
                        }
                        dx_rows[idx(best.0, best.1)] = g;
                    }
                }
            }
        }
    });
    let _ = h;
}
