//! The crate's L-BFGS against torch.optim.LBFGS where tests/it/lbfgs_golden.rs does not go
//! (tests/fixtures/lbfgs_edges.json, made by make_lbfgs_edges_fixture.py with Debian's PyTorch
//! 1.13), evaluation by evaluation: a learning rate other than 1, line searches that extrapolate
//! far, zoom, and meet cubics with no minimiser; searches cut short by the evaluation budget,
//! while extrapolating and while zooming; and first searches on one-dimensional functions shaped
//! to send strong Wolfe through each of its branches (a kink, a flat shelf, a loss float32 cannot
//! see change, sums of sines). Also: a budget of no evaluations.

use neural_style::optim::lbfgs::{Lbfgs, LineSearch};
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

/// The one-dimensional functions of make_lbfgs_edges_fixture.py, f and f' at x with the
/// parameters p, op by op as there (float32 throughout, so both sides get the same values).
fn line(function: &str, p: &[f32], x: f32) -> (f32, f32) {
    match function {
        "vee" => {
            let (a, b, c) = (p[0], p[1], p[2]);
            if x < c {
                (a * (c - x), -a)
            } else {
                (b * (x - c), b)
            }
        }
        "shelf" => {
            let (a, w, l, k) = (p[0], p[1], p[2], p[3]);
            if x < w {
                (-a * x, -a)
            } else if x < l {
                (-a * w, 0.0)
            } else {
                let u = x - l;
                (-a * w + k * (u * u), k * (2.0 * u))
            }
        }
        "level" => (p[0] * x + 1.0, p[0]),
        "sines" => {
            let (q, a1, w1, b1, a2, w2, b2) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6]);
            let (u1, u2) = (w1 * x + b1, w2 * x + b2);
            let f = q * (x * x) + a1 * u1.sin() + a2 * u2.sin();
            let g = 2.0 * q * x + a1 * w1 * u1.cos() + a2 * w2 * u2.cos();
            (f, g)
        }
        _ => unreachable!("{function}"),
    }
}

/// A fixture's function: the autograd ones of n entries, or a one-dimensional one with its
/// parameters.
struct Function {
    name: String,
    params: Vec<f32>,
}

impl Function {
    fn of(case: &Value) -> Function {
        let params = floats(&case["params"]).into_iter().map(|v| v as f32).collect();
        Function { name: case["function"].as_str().unwrap().to_string(), params }
    }

    fn eval(&self, x: &[f32], g: &mut [f32]) -> f64 {
        if self.params.is_empty() {
            return eval(&self.name, x, g);
        }
        let (f, d) = line(&self.name, &self.params, x[0]);
        g[0] = d;
        f as f64
    }
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
    /// x and the gradient at each evaluation.
    points: Vec<(Vec<f32>, Vec<f32>)>,
    x: Vec<f32>,
    evaluations: usize,
    f: f64,
}

/// With strong Wolfe x ends on an evaluated point: `final_evaluation` names it, `f` is its loss.
fn check_final_evaluation(function: &Function, r: &Ran, final_evaluation: Option<usize>, what: &str) {
    let k = final_evaluation.unwrap_or_else(|| panic!("{what}: strong Wolfe ends on an evaluation"));
    let mut g = vec![0.0; r.x.len()];
    let at_x = function.eval(&r.x, &mut g);
    assert_eq!(r.losses[k], at_x, "{what}: final_evaluation {k} is not the evaluation at the final x");
    assert_eq!(r.f, at_x, "{what}: f is the loss at the final x");
}

fn minimize(function: &str, n: usize, history: usize, lr: f32, line_search: LineSearch, max_evals: usize) -> Ran {
    let function = Function { name: function.to_string(), params: vec![] };
    let (ran, final_evaluation) = minimize_with_final(&function, start(&function.name, n), history, lr, line_search, max_evals, usize::MAX);
    if line_search == LineSearch::StrongWolfe && max_evals > 0 {
        let what = format!("{} lr {lr} history {history} budget {max_evals}", function.name);
        check_final_evaluation(&function, &ran, final_evaluation, &what);
    }
    ran
}

/// The crate's L-BFGS from x, stopped (through `minimize_from`'s `stop`) before its iteration
/// `iterations + 1`.
fn minimize_with_final(
    function: &Function,
    mut x: Vec<f32>,
    history: usize,
    lr: f32,
    line_search: LineSearch,
    max_evals: usize,
    iterations: usize,
) -> (Ran, Option<usize>) {
    let be = CpuBackend::new();
    let n = x.len();
    let mut g = vec![0.0f32; n];
    let mut losses = Vec::new();
    let mut points = Vec::new();
    let mut polls = 0;
    let r = Lbfgs::new(&be, n, history, lr, None)
        .unwrap()
        .minimize_from(
            &be,
            line_search,
            &mut x,
            &mut g,
            max_evals,
            None,
            &mut || {
                polls += 1;
                polls > iterations
            },
            &mut |x: &Vec<f32>, g: &mut Vec<f32>| {
                let f = function.eval(x, g);
                losses.push(f);
                points.push((x.clone(), g.clone()));
                Ok(f)
            },
        )
        .unwrap();
    assert_eq!(r.evaluations, losses.len());
    (Ran { losses, points, x, evaluations: r.evaluations, f: r.f }, r.final_evaluation)
}

/// A "search" case: torch's first iteration with _strong_wolfe's max_ls = `max_ls`, against the
/// crate's first iteration with max_evals = max_ls + 2 (the start, the first trial, max_ls
/// more: exactly that max_ls), stopped after it. The same evaluations, the same f and x at the
/// end, and `final_evaluation` naming the evaluation there.
fn check_first_search(case: &Value) {
    let function = Function::of(case);
    let x0: Vec<f32> = match case.get("x0") {
        Some(x0) => floats(x0).into_iter().map(|v| v as f32).collect(),
        None => start(&function.name, case["n"].as_u64().unwrap() as usize),
    };
    let max_ls = case["max_ls"].as_u64().unwrap() as usize;
    let lr = case["lr"].as_f64().unwrap() as f32;
    let want = floats(&case["losses"]);
    let what = format!("{} {:?} max_ls {max_ls} lr {lr}", function.name, function.params);
    let (got, final_evaluation) = minimize_with_final(&function, x0.clone(), 100, lr, LineSearch::StrongWolfe, max_ls + 2, 1);
    assert_eq!(got.losses.len(), want.len(), "{what}: evaluations {:?} vs torch {want:?}", got.losses);
    // torch interpolates the trial steps in float32 (its gᵀd are float32 tensors), the crate in
    // f64: a trial step t differs by round-off of itself, which moves the loss by about
    // gᵀ(x - x0) times that (seen up to 2.4e-7 times it). Else within 1e-6 of the larger loss or
    // of the start's (near a kink's minimum the loss is a difference of nearly equal numbers).
    let near = |a: f64, b: f64, (x, g): &(Vec<f32>, Vec<f32>)| {
        let slope_step: f64 = g.iter().zip(x.iter().zip(&x0)).map(|(g, (x, x0))| *g as f64 * (*x as f64 - *x0 as f64)).sum();
        (a - b).abs() <= 1e-6 * (a.abs().max(b.abs()).max(want[0].abs()) + slope_step.abs()) || (a - b).abs() <= 1e-9
    };
    for (i, (a, b)) in got.losses.iter().zip(&want).enumerate() {
        assert!(near(*a, *b, &got.points[i]), "{what}: evaluation {}: {a} vs torch {b}", i + 1);
    }
    let f = case["f"].as_f64().unwrap();
    let k = final_evaluation.unwrap_or_else(|| panic!("{what}: strong Wolfe ends on an evaluation"));
    assert!(near(got.f, f, &got.points[k]), "{what}: f {} vs torch {f}", got.f);
    // x to 1e-5 of the step torch took (the start itself when the search returns it).
    let want_x = floats(&case["x"]);
    let step = want_x.iter().zip(&x0).map(|(b, x0)| (b - *x0 as f64).abs()).fold(0.0, f64::max);
    let dx = got.x.iter().zip(&want_x).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(dx <= 1e-5 * step, "{what}: final x {:?} differs from torch's {want_x:?} by {dx} (step {step})", got.x);
    check_final_evaluation(&function, &got, final_evaluation, &what);
}

fn cases(kind: &str) -> Vec<Value> {
    let golden: Value = serde_json::from_str(include_str!("../fixtures/lbfgs_edges.json")).unwrap();
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
    let cases: Vec<Value> = cases("search").into_iter().filter(|c| c["params"].as_array().unwrap().is_empty()).collect();
    assert!(!cases.is_empty());
    for case in &cases {
        check_first_search(case);
    }
}

/// Each case drives strong Wolfe through branches the smooth functions miss; the comments in
/// make_lbfgs_edges_fixture.py (LINE_CASES) say which.
#[test]
fn first_searches_on_a_kink_a_shelf_a_level_loss_and_sines_match_torch() {
    let cases: Vec<Value> = cases("search").into_iter().filter(|c| !c["params"].as_array().unwrap().is_empty()).collect();
    assert!(!cases.is_empty());
    for case in &cases {
        check_first_search(case);
    }
}

/// `final_evaluation` names the evaluation at the final x for every budget. On the kink of
/// vee(1, 0.5, 0.001) (near 0, where float32 resolves the trials finely) the first search zooms
/// in on the kink and ends on a rejected trial; the searches after it find nothing lower and
/// return their start, so the evaluation just before such a search is not x's.
#[test]
fn final_evaluation_names_the_evaluation_at_x_for_every_budget() {
    let vee = Function { name: "vee".to_string(), params: vec![1.0, 0.5, 1e-3] };
    let mut stuck = 0;
    for budget in 1..=40 {
        let (ran, final_evaluation) = minimize_with_final(&vee, vec![0.0], 100, 1.0, LineSearch::StrongWolfe, budget, usize::MAX);
        check_final_evaluation(&vee, &ran, final_evaluation, &format!("vee budget {budget}"));
        // The last two evaluations both rejected: the run ends in a search that returned its start.
        stuck += (final_evaluation.unwrap() + 2 < ran.evaluations) as usize;
    }
    assert!(stuck > 0, "no budget ends in a search that returns its start");
}

#[test]
fn a_budget_of_no_evaluations_evaluates_nothing() {
    let be = CpuBackend::new();
    for line_search in [LineSearch::None, LineSearch::StrongWolfe] {
        let mut x = vec![1.0f32, -2.0];
        let mut g = vec![0.0f32; 2];
        let mut calls = 0;
        let r = Lbfgs::new(&be, 2, 10, 1.0, None)
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
