//! 2x2 stride-2 pooling and the ReLU's backward, channels-last.  Mirrors kernels/pool.cu.
//! Memory-bound: whole rows or fixed chunks per rayon task, inner loops over contiguous channel
//! slices so they vectorise.

use crate::backend::{PoolKind, PoolShape};
use rayon::prelude::*;

/// Elements per rayon task of the elementwise ops.
const CHUNK: usize = 16384;

/// dy *= (y > 0).  y (n), dy (n): y is the ReLU's output.
pub fn relu_bwd(y: &[f32], dy: &mut [f32]) {
    dy.par_chunks_mut(CHUNK).zip(y.par_chunks(CHUNK)).for_each(|(d, y)| {
        for (d, &y) in d.iter_mut().zip(y) {
            // A select, not a branch: vectorises.
            *d = if y <= 0.0 { 0.0 } else { *d };
        }
    });
}

/// y (h/2, w/2, c) = pool of x (h, w, c).
pub fn pool_fwd(kind: PoolKind, s: PoolShape, x: &[f32], y: &mut [f32]) {
    let PoolShape { w, c, .. } = s;
    let (oh, ow) = (s.out_h(), s.out_w());
    if ow == 0 || c == 0 {
        return;
    }
    y[..oh * ow * c].par_chunks_mut(ow * c).enumerate().for_each(|(oy, y_row)| {
        let r0 = &x[2 * oy * w * c..][..w * c];
        let r1 = &x[(2 * oy + 1) * w * c..][..w * c];
        for (ox, out) in y_row.chunks_exact_mut(c).enumerate() {
            let (a, b) = r0[2 * ox * c..][..2 * c].split_at(c);
            let (cc, d) = r1[2 * ox * c..][..2 * c].split_at(c);
            match kind {
                PoolKind::Max => {
                    for ((((o, &a), &b), &cc), &d) in out.iter_mut().zip(a).zip(b).zip(cc).zip(d) {
                        *o = a.max(b).max(cc).max(d);
                    }
                }
                PoolKind::Avg => {
                    for ((((o, &a), &b), &cc), &d) in out.iter_mut().zip(a).zip(b).zip(cc).zip(d) {
                        *o = 0.25 * (a + b + cc + d);
                    }
                }
            }
        }
    });
}

/// dx (h, w, c) = gradient of the pool; max: the first maximum in row-major window order takes it.
pub fn pool_bwd(kind: PoolKind, s: PoolShape, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let PoolShape { h, w, c } = s;
    let (oh, ow) = (s.out_h(), s.out_w());
    // Each output row oy owns input rows 2oy and 2oy+1; a dropped odd last row gets zeros.
    dx[..h * w * c].par_chunks_mut(2 * w * c).enumerate().for_each(|(oy, dx_rows)| {
        if oy >= oh || dx_rows.len() < 2 * w * c {
            dx_rows.fill(0.0);
            return;
        }
        let (d0, d1) = dx_rows.split_at_mut(w * c);
        // A dropped odd last column gets zeros.
        d0[2 * ow * c..].fill(0.0);
        d1[2 * ow * c..].fill(0.0);
        let r0 = &x[2 * oy * w * c..][..w * c];
        let r1 = &x[(2 * oy + 1) * w * c..][..w * c];
        let dy_row = &dy[oy * ow * c..][..ow * c];
        for (ox, g) in dy_row.chunks_exact(c).enumerate() {
            let (da, db) = d0[2 * ox * c..][..2 * c].split_at_mut(c);
            let (dc, dd) = d1[2 * ox * c..][..2 * c].split_at_mut(c);
            match kind {
                PoolKind::Avg => {
                    for i in 0..c {
                        let v = 0.25 * g[i];
                        (da[i], db[i], dc[i], dd[i]) = (v, v, v, v);
                    }
                }
                PoolKind::Max => {
                    let (a, b) = r0[2 * ox * c..][..2 * c].split_at(c);
                    let (cc, d) = r1[2 * ox * c..][..2 * c].split_at(c);
                    let (a, b, cc, d, g) = (&a[..c], &b[..c], &cc[..c], &d[..c], &g[..c]);
                    let (da, db, dc, dd) = (&mut da[..c], &mut db[..c], &mut dc[..c], &mut dd[..c]);
                    for i in 0..c {
                        // Strict > in row-major order: the first maximum wins ties. Masks, not
                        // branches, so the loop vectorises.
                        let at_b = b[i] > a[i];
                        let m_ab = if at_b { b[i] } else { a[i] };
                        let at_c = cc[i] > m_ab;
                        let m_abc = if at_c { cc[i] } else { m_ab };
                        let at_d = d[i] > m_abc;
                        let gv = g[i];
                        dd[i] = if at_d { gv } else { 0.0 };
                        dc[i] = if at_c & !at_d { gv } else { 0.0 };
                        db[i] = if at_b & !at_c & !at_d { gv } else { 0.0 };
                        da[i] = if !at_b & !at_c & !at_d { gv } else { 0.0 };
                    }
                }
            }
        }
    });
}
