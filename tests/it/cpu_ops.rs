//! Every CPU op: (a) the fast path against its naive reference on random shapes (odd sizes,
//! c_in = 3), (b) each backward against central differences of its forward, along random
//! directions of a random projection <r, op(x)>. Small shapes: the whole file runs in seconds.

use neural_style::backend::{AdamStep, Backend, ConvShape, PoolKind, PoolShape};
use neural_style::cpu::{conv, gram, loss, pool, vector};
use neural_style::rng::Rng;
use neural_style::CpuBackend;

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    rng.normal_vec(n, 1.0)
}

fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// max |a - b| / max |b|: both paths sum the same products in a different order.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    d / max_abs(b).max(1e-30)
}

fn axpy_new(x: &[f32], h: f32, v: &[f32]) -> Vec<f32> {
    x.iter().zip(v).map(|(a, b)| a + h * b).collect()
}

/// Central difference of `f` at x along v, against the analytic directional derivative.
fn check_fd(name: &str, x: &[f32], v: &[f32], h: f32, grad: &[f32], tol: f64, f: impl Fn(&[f32]) -> f64) {
    let fd = (f(&axpy_new(x, h, v)) - f(&axpy_new(x, -h, v))) / (2.0 * h as f64);
    let an = dot64(grad, v);
    let err = (fd - an).abs() / fd.abs().max(an.abs()).max(1e-12);
    assert!(err < tol, "{name}: analytic {an} vs finite difference {fd} (relative error {err})");
}

// (h, w, c_in, c_out): odd sizes, 1-pixel grids, c_in = 3 and c_out = 3 (the image layer both ways).
const CONV_SHAPES: [(usize, usize, usize, usize); 7] =
    [(5, 7, 3, 8), (9, 6, 16, 5), (1, 1, 4, 3), (13, 11, 32, 48), (2, 17, 7, 33), (8, 8, 64, 3), (3, 5, 130, 17)];

#[test]
fn conv_fwd_fast_matches_naive() {
    let mut rng = Rng::new(1);
    for (h, w, c_in, c_out) in CONV_SHAPES {
        let s = ConvShape { h, w, c_in, c_out };
        let x = randn(&mut rng, h * w * c_in);
        let wt = randn(&mut rng, 9 * c_in * c_out);
        let b = randn(&mut rng, c_out);
        let (mut y, mut y_ref) = (vec![f32::NAN; h * w * c_out], vec![0.0; h * w * c_out]);
        conv::conv3x3_fwd(s, &x, &wt, &b, &mut y);
        conv::conv3x3_fwd_naive(s, &x, &wt, &b, &mut y_ref, true);
        let e = rel_diff(&y, &y_ref);
        assert!(e < 1e-5, "{s:?}: relative difference {e}");
        assert!((y.contains(&0.0) && y.iter().any(|&v| v > 0.0)) || h * w * c_out < 8, "{s:?}: ReLU not exercised");
    }
}

#[test]
fn conv_bwd_input_fast_matches_naive() {
    let mut rng = Rng::new(2);
    for (h, w, c_in, c_out) in CONV_SHAPES {
        let s = ConvShape { h, w, c_in, c_out };
        let dy = randn(&mut rng, h * w * c_out);
        let w_flip = randn(&mut rng, 9 * c_in * c_out);
        let (mut dx, mut dx_ref) = (vec![f32::NAN; h * w * c_in], vec![0.0; h * w * c_in]);
        conv::conv3x3_bwd_input(s, &dy, &w_flip, &mut dx);
        conv::conv3x3_bwd_input_naive(s, &dy, &w_flip, &mut dx_ref);
        let e = rel_diff(&dx, &dx_ref);
        assert!(e < 1e-5, "{s:?}: relative difference {e}");
    }
}

#[test]
fn conv_is_deterministic() {
    let mut rng = Rng::new(3);
    let s = ConvShape { h: 33, w: 31, c_in: 40, c_out: 24 };
    let x = randn(&mut rng, 33 * 31 * 40);
    let wt = randn(&mut rng, 9 * 40 * 24);
    let b = randn(&mut rng, 24);
    let mut y1 = vec![0.0; 33 * 31 * 24];
    let mut y2 = y1.clone();
    conv::conv3x3_fwd(s, &x, &wt, &b, &mut y1);
    conv::conv3x3_fwd(s, &x, &wt, &b, &mut y2);
    assert!(y1.iter().zip(&y2).all(|(a, b)| a.to_bits() == b.to_bits()));
}

/// The conv's backward (ReLU mask then conv3x3_bwd_input with the flipped weights, as the
/// network runs it) against central differences of conv3x3_fwd. A large bias keeps every
/// pre-activation positive, so the map is affine and the difference is exact for a large step;
/// the ReLU's own kink is checked in relu_bwd_matches_finite_differences.
#[test]
fn conv_bwd_matches_finite_differences() {
    let mut rng = Rng::new(4);
    for (h, w, c_in, c_out) in CONV_SHAPES {
        let s = ConvShape { h, w, c_in, c_out };
        let w_oihw = randn(&mut rng, c_out * c_in * 9);
        let wt = conv::weights_to_fwd_layout(c_out, c_in, &w_oihw);
        let w_flip = conv::weights_to_bwd_layout(c_out, c_in, &w_oihw);
        let b = vec![1000.0f32; c_out];
        let x = randn(&mut rng, h * w * c_in);
        let r = randn(&mut rng, h * w * c_out);
        let v = randn(&mut rng, h * w * c_in);
        let fwd = |x: &[f32]| {
            let mut y = vec![0.0; h * w * c_out];
            conv::conv3x3_fwd(s, x, &wt, &b, &mut y);
            y
        };
        let y0 = fwd(&x);
        let mut d = r.clone();
        CpuBackend::new().relu_bwd(&y0, &mut d).unwrap();
        let mut dx = vec![0.0; h * w * c_in];
        conv::conv3x3_bwd_input(s, &d, &w_flip, &mut dx);
        // Difference elementwise before projecting, so the bias cancels exactly.
        let (yp, ym) = (fwd(&axpy_new(&x, 0.5, &v)), fwd(&axpy_new(&x, -0.5, &v)));
        let diff: Vec<f32> = yp.iter().zip(&ym).map(|(a, b)| a - b).collect();
        let fd = dot64(&r, &diff);
        let an = dot64(&dx, &v);
        let err = (fd - an).abs() / fd.abs().max(an.abs());
        assert!(err < 1e-4, "{s:?}: analytic {an} vs finite difference {fd}");
    }
}

#[test]
fn relu_bwd_matches_finite_differences() {
    let mut rng = Rng::new(5);
    // Inputs at least 0.1 from the kink; steps of 1e-2 never cross it.
    let x: Vec<f32> = randn(&mut rng, 1001).into_iter().map(|v| if v.abs() < 0.1 { v.signum() * 0.1 + v } else { v }).collect();
    let r = randn(&mut rng, x.len());
    let v = randn(&mut rng, x.len());
    let relu = |x: &[f32]| x.iter().map(|v| v.max(0.0)).collect::<Vec<f32>>();
    let mut d = r.clone();
    CpuBackend::new().relu_bwd(&relu(&x), &mut d).unwrap();
    check_fd("relu", &x, &v, 1e-2, &d, 1e-4, |x| dot64(&r, &relu(x)));
}

/// Distinct values at least 0.01 apart, shuffled: no ties inside a max-pool window.
fn distinct_values(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 0.01).collect();
    for i in (1..n).rev() {
        v.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    v
}

#[test]
fn pool_bwd_matches_finite_differences() {
    let mut rng = Rng::new(6);
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for (h, w, c) in [(4, 6, 3), (7, 9, 5), (1, 3, 2), (10, 11, 16)] {
            let s = PoolShape { h, w, c };
            let x = distinct_values(&mut rng, h * w * c);
            let n_out = s.out_h() * s.out_w() * c;
            let r = randn(&mut rng, n_out);
            let v = randn(&mut rng, h * w * c);
            let fwd = |x: &[f32]| {
                let mut y = vec![0.0; n_out];
                pool::pool_fwd(kind, s, x, &mut y);
                y
            };
            let mut dx = vec![f32::NAN; h * w * c];
            pool::pool_bwd(kind, s, &x, &r, &mut dx);
            assert!(dx.iter().all(|v| v.is_finite()), "{kind:?} {s:?}: dx not fully written");
            if n_out == 0 {
                assert!(dx.iter().all(|&v| v == 0.0));
                continue;
            }
            check_fd(&format!("{kind:?} pool {s:?}"), &x, &v, 1e-3, &dx, 1e-3, |x| dot64(&r, &fwd(x)));
        }
    }
}

#[test]
fn max_pool_ties_go_to_the_first_maximum() {
    let s = PoolShape { h: 4, w: 5, c: 3 };
    let x = vec![1.0f32; 4 * 5 * 3];
    let dy: Vec<f32> = (0..2 * 2 * 3).map(|i| i as f32 + 1.0).collect();
    let mut dx = vec![f32::NAN; x.len()];
    pool::pool_bwd(PoolKind::Max, s, &x, &dy, &mut dx);
    for y in 0..4 {
        for xx in 0..5 {
            for ch in 0..3 {
                let want = if y % 2 == 0 && xx % 2 == 0 && xx < 4 { dy[((y / 2) * 2 + xx / 2) * 3 + ch] } else { 0.0 };
                assert_eq!(dx[(y * 5 + xx) * 3 + ch], want, "({y}, {xx}, {ch})");
            }
        }
    }
}

#[test]
fn pool_fwd_matches_naive() {
    let mut rng = Rng::new(7);
    for (h, w, c) in [(7, 9, 5), (8, 8, 64)] {
        let s = PoolShape { h, w, c };
        let x = randn(&mut rng, h * w * c);
        for kind in [PoolKind::Max, PoolKind::Avg] {
            let mut y = vec![0.0; (h / 2) * (w / 2) * c];
            pool::pool_fwd(kind, s, &x, &mut y);
            for oy in 0..h / 2 {
                for ox in 0..w / 2 {
                    for ch in 0..c {
                        let at = |a: usize, b: usize| x[((2 * oy + a) * w + 2 * ox + b) * c + ch];
                        let want = match kind {
                            PoolKind::Max => at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1)),
                            PoolKind::Avg => 0.25 * (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)),
                        };
                        assert_eq!(y[(oy * (w / 2) + ox) * c + ch], want);
                    }
                }
            }
        }
    }
}

// (hw, c): long and short K, c below and above one row block.
const GRAM_SHAPES: [(usize, usize); 6] = [(1, 1), (37, 5), (5000, 3), (4097, 70), (300, 130), (9000, 64)];

#[test]
fn gram_fast_matches_naive() {
    let mut rng = Rng::new(8);
    for (hw, c) in GRAM_SHAPES {
        let f: Vec<f32> = randn(&mut rng, hw * c).into_iter().map(|v| v.max(0.0)).collect();
        let (mut g, mut g_ref) = (vec![f32::NAN; c * c], vec![0.0; c * c]);
        gram::gram(hw, c, &f, &mut g);
        gram::gram_naive(hw, c, &f, &mut g_ref);
        let e = rel_diff(&g, &g_ref);
        assert!(e < 1e-5, "gram ({hw}, {c}): relative difference {e}");
    }
}

#[test]
fn gram_bwd_fast_matches_naive() {
    let mut rng = Rng::new(9);
    for (hw, c) in GRAM_SHAPES {
        let f = randn(&mut rng, hw * c);
        // dg scaled by c*hw so the added part is as large as df0 (no cancellation in the check).
        let dg: Vec<f32> = randn(&mut rng, c * c).into_iter().map(|v| v * (c * hw) as f32).collect();
        let df0 = randn(&mut rng, hw * c);
        let (mut df, mut df_ref) = (df0.clone(), df0.clone());
        gram::gram_bwd_acc(hw, c, &f, &dg, &mut df);
        gram::gram_bwd_acc_naive(hw, c, &f, &dg, &mut df_ref);
        // Compare the added parts, so the accumulated df0 does not mask an error.
        let add: Vec<f32> = df.iter().zip(&df0).map(|(a, b)| a - b).collect();
        let add_ref: Vec<f32> = df_ref.iter().zip(&df0).map(|(a, b)| a - b).collect();
        let e = rel_diff(&add, &add_ref);
        assert!(e < 1e-4, "gram_bwd ({hw}, {c}): relative difference {e}");
    }
}

#[test]
fn gram_is_independent_of_thread_count() {
    let mut rng = Rng::new(10);
    let (hw, c) = (9000, 70);
    let f = randn(&mut rng, hw * c);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut g = vec![0.0; c * c];
        pool.install(|| gram::gram(hw, c, &f, &mut g));
        g
    };
    let (a, b) = (run(1), run(3));
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
}

/// The Gram is quadratic: the central difference is exact up to rounding for any step.
#[test]
fn gram_bwd_matches_finite_differences() {
    let mut rng = Rng::new(11);
    for (hw, c) in GRAM_SHAPES {
        let f = randn(&mut rng, hw * c);
        let r = randn(&mut rng, c * c);
        let v = randn(&mut rng, hw * c);
        let mut df = vec![0.0; hw * c];
        gram::gram_bwd_acc(hw, c, &f, &r, &mut df);
        check_fd(&format!("gram ({hw}, {c})"), &f, &v, 0.25, &df, 1e-4, |f| {
            let mut g = vec![0.0; c * c];
            gram::gram(hw, c, f, &mut g);
            dot64(&r, &g)
        });
    }
}

#[test]
fn content_loss_value_and_gradient() {
    let mut rng = Rng::new(12);
    let n = 777;
    let (f, p, v) = (randn(&mut rng, n), randn(&mut rng, n), randn(&mut rng, n));
    let wgt = 3.5f32;
    let want: f64 = wgt as f64 * f.iter().zip(&p).map(|(&a, &b)| ((a - b) as f64).powi(2)).sum::<f64>() / n as f64;
    let df0 = randn(&mut rng, n);
    let mut df = df0.clone();
    let got = loss::content_loss_acc(wgt, &f, &p, &mut df);
    assert!((got - want).abs() < 1e-6 * want, "content loss {got} vs {want}");
    let grad: Vec<f32> = df.iter().zip(&df0).map(|(a, b)| a - b).collect();
    check_fd("content", &f, &v, 0.1, &grad, 1e-4, |f| {
        let mut scratch = vec![0.0; n];
        loss::content_loss_acc(wgt, f, &p, &mut scratch)
    });
}

#[test]
fn style_loss_value_and_gradient() {
    let mut rng = Rng::new(13);
    let c = 19;
    let (g, a, v) = (randn(&mut rng, c * c), randn(&mut rng, c * c), randn(&mut rng, c * c));
    let wgt = 100.0f32;
    let want: f64 = wgt as f64 * g.iter().zip(&a).map(|(&x, &y)| ((x - y) as f64).powi(2)).sum::<f64>() / (c * c) as f64;
    let mut dg = vec![f32::NAN; c * c];
    let got = loss::style_loss(wgt, &g, &a, &mut dg);
    assert!((got - want).abs() < 1e-6 * want, "style loss {got} vs {want}");
    check_fd("style", &g, &v, 0.1, &dg, 1e-4, |g| {
        let mut scratch = vec![0.0; c * c];
        loss::style_loss(wgt, g, &a, &mut scratch)
    });
}

#[test]
fn tv_loss_value_and_gradient() {
    let mut rng = Rng::new(14);
    for (h, w, c) in [(5, 7, 3), (1, 4, 3), (6, 1, 2), (9, 8, 3)] {
        let x = randn(&mut rng, h * w * c);
        let v = randn(&mut rng, h * w * c);
        let wgt = 0.3f32;
        let at = |i: usize, j: usize, ch: usize| x[(i * w + j) * c + ch] as f64;
        let mut want = 0.0;
        for i in 0..h {
            for j in 0..w {
                for ch in 0..c {
                    if i + 1 < h {
                        want += (at(i + 1, j, ch) - at(i, j, ch)).powi(2);
                    }
                    if j + 1 < w {
                        want += (at(i, j + 1, ch) - at(i, j, ch)).powi(2);
                    }
                }
            }
        }
        want *= wgt as f64;
        let mut dx = vec![0.0; h * w * c];
        let got = loss::tv_loss_acc(wgt, h, w, c, &x, &mut dx);
        assert!((got - want).abs() < 1e-6 * want.max(1e-9), "tv ({h}, {w}, {c}) {got} vs {want}");
        check_fd(&format!("tv ({h}, {w}, {c})"), &x, &v, 0.1, &dx, 1e-4, |x| {
            let mut scratch = vec![0.0; h * w * c];
            loss::tv_loss_acc(wgt, h, w, c, x, &mut scratch)
        });
    }
}

#[test]
fn tv_pow_loss_value_and_gradient() {
    let mut rng = Rng::new(15);
    for (h, w, c) in [(5, 7, 3), (1, 4, 3), (6, 1, 2), (9, 8, 3)] {
        for power in [1.0f32, 1.25] {
            let x = randn(&mut rng, h * w * c);
            let v = randn(&mut rng, h * w * c);
            let wgt = 0.3f32;
            let at = |i: usize, j: usize, ch: usize| x[(i * w + j) * c + ch] as f64;
            // The Keras example's formula, term by term (interior anchors only).
            let mut want = 0.0;
            for i in 0..h.saturating_sub(1) {
                for j in 0..w.saturating_sub(1) {
                    for ch in 0..c {
                        let s = (at(i, j, ch) - at(i + 1, j, ch)).powi(2) + (at(i, j, ch) - at(i, j + 1, ch)).powi(2);
                        want += s.powf(power as f64);
                    }
                }
            }
            want *= wgt as f64;
            let dx0 = randn(&mut rng, h * w * c);
            let mut dx = dx0.clone();
            let got = loss::tv_pow_loss_acc(wgt, power, h, w, c, &x, &mut dx);
            assert!((got - want).abs() <= 1e-6 * want.max(1e-9), "tv^{power} ({h}, {w}, {c}) {got} vs {want}");
            if h == 1 || w == 1 {
                assert_eq!(got, 0.0, "no interior anchor, no term");
            }
            // It accumulates: the gradient is what was added to dx0.
            let grad: Vec<f32> = dx.iter().zip(&dx0).map(|(a, b)| a - b).collect();
            check_fd(&format!("tv^{power} ({h}, {w}, {c})"), &x, &v, 1e-2, &grad, 1e-3, |x| {
                let mut scratch = vec![0.0; h * w * c];
                loss::tv_pow_loss_acc(wgt, power, h, w, c, x, &mut scratch)
            });
        }
    }
}

#[test]
fn vector_ops_match_serial_references() {
    let mut rng = Rng::new(15);
    for n in [1, 17, 16384, 40001] {
        let (a, b) = (randn(&mut rng, n), randn(&mut rng, n));
        let close = |got: f64, want: f64, what: &str| assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{what} n={n}: {got} vs {want}");
        close(vector::dot(&a, &b), dot64(&a, &b), "dot");
        close(vector::asum(&a), a.iter().map(|v| v.abs() as f64).sum(), "asum");
        assert_eq!(vector::amax(&a), max_abs(&a) as f64, "amax n={n}");
        let mut y = b.clone();
        vector::axpy(-0.75, &a, &mut y);
        assert!(y.iter().zip(a.iter().zip(&b)).all(|(&y, (&a, &b))| y == b + -0.75 * a), "axpy n={n}");
        // The fused pass: axpy then dot, to the bit.
        let mut y_fused = b.clone();
        let fused = vector::axpy_dot(-0.75, &a, &mut y_fused, &a);
        assert_eq!(y_fused, y, "axpy_dot's axpy n={n}");
        assert_eq!(fused.to_bits(), vector::dot(&y, &a).to_bits(), "axpy_dot's dot n={n}");
        let mut s = a.clone();
        vector::scale(1.5, &mut s);
        assert!(s.iter().zip(&a).all(|(&s, &a)| s == 1.5 * a), "scale n={n}");
    }
}

#[test]
fn adam_matches_torch_formula() {
    let mut rng = Rng::new(16);
    let n = 1000;
    let mut p = randn(&mut rng, n);
    let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
    let (mut p64, mut m64, mut v64): (Vec<f64>, Vec<f64>, Vec<f64>) = (p.iter().map(|&x| x as f64).collect(), vec![0.0; n], vec![0.0; n]);
    for t in 1..=5u32 {
        let g = randn(&mut rng, n);
        let step = AdamStep { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, t };
        vector::adam_step(step, &mut p, &g, &mut m, &mut v);
        for i in 0..n {
            let gi = g[i] as f64;
            m64[i] = 0.9 * m64[i] + 0.1 * gi;
            v64[i] = 0.999 * v64[i] + 0.001 * gi * gi;
            let mhat = m64[i] / (1.0 - 0.9f64.powi(t as i32));
            let vhat = v64[i] / (1.0 - 0.999f64.powi(t as i32));
            p64[i] -= 0.1 * mhat / (vhat.sqrt() + 1e-8);
        }
    }
    let worst = p.iter().zip(&p64).fold(0.0f64, |w, (&a, &b)| w.max((a as f64 - b).abs()));
    assert!(worst < 1e-5, "adam drifts {worst} from the f64 reference");
}

/// An allocation the system refuses is an error the caller can report, not an abort.
#[test]
fn an_allocation_too_large_is_an_error() {
    let be = CpuBackend::new();
    for len in [usize::MAX / 8, 1 << 45] {
        let err = be.zeros(len).unwrap_err().to_string();
        assert!(err.contains("out of memory allocating"), "{err}");
    }
    assert_eq!(be.zeros(3).unwrap(), vec![0.0; 3]);
    assert_eq!(be.upload(&[1.0, 2.0]).unwrap(), vec![1.0, 2.0]);
}
