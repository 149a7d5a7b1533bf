//! The crate's L-BFGS against torch.optim.LBFGS where tests/lbfgs_golden.rs does not go
//! (tests/fixtures/lbfgs_edges.json, made by make_lbfgs_edges_fixture.py with Debian's PyTorch
//! 1.13), evaluation by evaluation: a learning rate other than 1, line searches that extrapolate
//! far, zoom, and meet cubics with no minimiser; and searches cut short by the evaluation budget,
//! while extrapolating and while zooming. Also: a budget of no evaluations.

use neural_style::optim::lbfgs::{LineSearch, Lbfgs};
use neural_style::CpuBackend;
use serde_json::Value;

/// f and its gradient at x, in float32 arithmetic like torch's (see the fixture script).
fn eval(function: &str, x: &[f32], g: &mut [f32]) -> f64 {
    let mut f = 0.0f32;
    for (i, (&xi, gi)) in x.iter().zip(g.iter_mut()).enumerate() {
        let a = 1.0 + i as f32;
        match function {
            "far" => {
                f += a * (xi - 20.0) * (xi - 20.0) / 1000.0;
                *gi = (1.0 / 1000.0 * a) * (2.0 * (xi - 20.0)); // autograd's order
            }
            "wavy" => {
                f += 0.1 * xi * xi + (3.0 * xi).sin();
                *gi = 0.2 * xi + 3.0 * (3.0 * xi).cos();
            }
            "cliff" => {
                f += (2.0 * xi).exp() - a * xi;
                *gi = 2.0 * (2.0 * xi).exp() - a;
            }
            _ => unreachable!(),
        }
    }
    f as f64
}

fn start(function: &str, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match function {
            "far" => 0.0,
            "wavy" => -2.0 + 0.7 * i as f32,
            _ => 0.5 + 0.1 * i as f32,
        })
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

/// |a - b| within `tol` relative to the larger, or 1e-9 absolutely (losses that reach 0).
fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()) || (a - b).abs() <= 1e-9
}

struct Ran {
    losses: Vec<f64>,
    x: Vec<f32>,
    evaluations: usize,
    f: f64,
}

/// With strong Wolfe x ends on an evaluated point: `final_evaluation` names it, `f` is its loss.
fn check_final_evaluation(function: &str, r: &Ran, final_evaluation: Option<usize>, what: &str) {
    let k = final_evaluation.unwrap_or_else(|| panic!("{what}: strong Wolfe ends on an evaluation"));
    let mut g = vec![0.0; r.x.len()];
    let at_x = eval(function, &r.x, &mut g);
    assert_eq!(r.losses[k], at_x, "{what}: final_evaluation {k} is not the evaluation at the final x");
    assert_eq!(r.f, at_x, "{what}: f is the loss at the final x");
}

fn minimize(function: &str, n: usize, history: usize, lr: f32, line_search: LineSearch, max_evals: usize) -> Ran {
    let (ran, final_evaluation) = minimize_with_final(function, n, history, lr, line_search, max_evals);
    if line_search == LineSearch::StrongWolfe && max_evals > 0 {
        check_final_evaluation(function, &ran, final_evaluation, &format!("{function} lr {lr} history {history} budget {max_evals}"));
    }
    ran
}

fn minimize_with_final(function: &str, n: usize, history: usize, lr: f32, line_search: LineSearch, max_evals: usize) -> (Ran, Option<usize>) {
    let be = CpuBackend::new();
    let mut x = start(function, n);
    let mut g = vec![0.0f32; n];
    let mut losses = Vec::new();
    let r = Lbfgs::new(&be, n, history, lr)
        .unwrap()
        .minimize(&be, line_search, &mut x, &mut g, max_evals, &mut |x: &Vec<f32>, g: &mut Vec<f32>| {
            let f = eval(function, x, g);
            losses.push(f);
            Ok(f)
        })
        .unwrap();
    assert_eq!(r.evaluations, losses.len());
    (Ran { losses, x, evaluations: r.evaluations, f: r.f }, r.final_evaluation)
}

fn cases(kind: &str) -> Vec<Value> {
    let golden: Value = serde_json::from_str(include_str!("fixtures/lbfgs_edges.json")).unwrap();
    golden["cases"].as_array().unwrap().iter().filter(|c| c["kind"] == kind).cloned().collect()
}

#[test]
fn lbfgs_with_lr_half_tracks_torch_on_far_wavy_and_steep_functions() {
    for case in cases("run") {
        let function = case["function"].as_str().unwrap();
        let n = case["n"].as_u64().unwrap() as usize;
        let history = case["history"].as_u64().unwrap() as usize;
        let evals = case["evals"].as_u64().unwrap() as usize;
        let lr = case["lr"].as_f64().unwrap() as f32;
        let line_search = if case["line_search"] == "none" { LineSearch::None } else { LineSearch::StrongWolfe };
        let want = floats(&case["losses"]);
        let what = format!("{function} {line_search:?} history {history} lr {lr}");
        let got = minimize(function, n, history, lr, line_search, evals);
        // torch may overshoot the budget inside its last search; the crate stops at it.
        assert_eq!(got.evaluations, evals.min(want.len()), "{what}: evaluations");
        for (i, (a, b)) in got.losses.iter().zip(&want).enumerate() {
            assert!(close(*a, *b, 1e-5), "{what}: evaluation {}: {a} vs torch {b}", i + 1);
        }
        if want.len() == got.evaluations {
            let want_x = floats(&case["x"]);
            let dx = got.x.iter().zip(&want_x).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            assert!(dx <= 1e-3, "{what}: final x differs from torch's by {dx}");
        }
    }
}

#[test]
fn a_search_cut_short_by_the_budget_ends_as_torchs_with_that_max_ls() {
    for case in cases("budget") {
        let function = case["function"].as_str().unwrap();
        let n = case["n"].as_u64().unwrap() as usize;
        let max_ls = case["max_ls"].as_u64().unwrap() as usize;
        let lr = case["lr"].as_f64().unwrap() as f32;
        let want = floats(&case["losses"]);
        let what = format!("{function} max_ls {max_ls}");
        // The start, the first trial, max_ls more: the first search has exactly torch's max_ls.
        let max_evals = max_ls + 2;
        let got = minimize(function, n, 100, lr, LineSearch::StrongWolfe, max_evals);
        assert!(got.evaluations >= want.len(), "{what}: {} evaluations, torch's search alone made {}", got.evaluations, want.len());
        for (i, (a, b)) in got.losses.iter().zip(&want).enumerate() {
            assert!(close(*a, *b, 1e-6), "{what}: evaluation {}: {a} vs torch {b}", i + 1);
        }
        if want.len() == max_evals {
            // The search spent the whole budget: the run ends where torch's search does.
            assert_eq!(got.evaluations, max_evals, "{what}");
            let f = case["f"].as_f64().unwrap();
            assert!(close(got.f, f, 1e-6), "{what}: f {} vs torch {f}", got.f);
            let want_x = floats(&case["x"]);
            let dx = got.x.iter().zip(&want_x).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            assert!(dx <= 1e-5, "{what}: final x differs from torch's by {dx}");
        }
    }
}

#[test]
fn a_budget_of_no_evaluations_evaluates_nothing() {
    let be = CpuBackend::new();
    for line_search in [LineSearch::None, LineSearch::StrongWolfe] {
        let mut x = vec![1.0f32, -2.0];
        let mut g = vec![0.0f32; 2];
        let mut calls = 0;
        let r = Lbfgs::new(&be, 2, 10, 1.0)
            .unwrap()
            .minimize(&be, line_search, &mut x, &mut g, 0, &mut |_: &Vec<f32>, g: &mut Vec<f32>| {
                calls += 1;
                g.copy_from_slice(&[1.0, 1.0]);
                Ok(1.0)
            })
            .unwrap();
        assert_eq!((calls, r.evaluations, r.final_evaluation, r.stopped), (0, 0, None, false), "{line_search:?}");
        assert!(r.f.is_nan(), "{line_search:?}: no loss was computed");
        assert_eq!(x, [1.0, -2.0], "{line_search:?}: x does not move");
    }
}
