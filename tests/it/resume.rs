//! Stopping a run between iterations and resuming it from its saved state ends on exactly the
//! bits of the uninterrupted run: L-BFGS with the fixed step, L-BFGS with strong Wolfe and
//! rounds (stops inside a round and on a round boundary), and Adam; the state goes through its
//! file format (resume::to_bytes / from_bytes) between the sessions.

use crate::common;

use common::state_file::RawState;
use crate::common::nets::{pattern_pixels, tiny_spec, tiny_vgg};
use neural_style::backend::PixelBox;
use neural_style::optim::lbfgs::LineSearch;
use neural_style::resume::{self, Header, OptimizerState, RunState};
use neural_style::{stylize_from, CpuBackend, Image, Init, Job, Optimizer, Output, Progress, Run, Vgg};
use std::cell::Cell;

fn image(w: usize, h: usize, k: usize) -> Image {
    Image { w, h, data: pattern_pixels(w, h, k).into_iter().map(|v| v as f32 / 64.0 - 2.0).collect() }
}

fn setup() -> (Vgg, Job) {
    let vgg = tiny_vgg();
    let spec = tiny_spec();
    let job = Job {
        content: image(24, 18, 1),
        styles: vec![(image(20, 20, 2), 1.0)],
        spec,
        init: Init::Random,
        optimizer: Optimizer::lbfgs(5),
        iterations: 0,
        seed: 3,
        snapshot_every: 0,
        snapshot_gate: None,
        bounds: None,
    };
    (vgg, job)
}

fn header(iterations: usize) -> Header {
    Header { fingerprint: "test".into(), settings: serde_json::json!({}), width: 24, height: 18, iterations }
}

/// Runs `job` from `from`, asking to stop once `stop_at` evaluations have been made (None: never).
fn session(vgg: &Vgg, job: &Job, from: Option<&RunState>, stop_at: Option<usize>) -> (Run, Vec<f64>) {
    let made = Cell::new(from.map_or(0, |s| s.history.len()));
    let mut seen = Vec::new();
    let mut observer = |p: &Progress, _: Option<&[f32]>| {
        assert_eq!(p.iteration, made.get() + 1, "the observer sees the iterations in order, numbered over the whole run");
        made.set(p.iteration);
        seen.push(p.loss.total);
        Ok(())
    };
    let mut stop = || stop_at.is_some_and(|k| made.get() >= k);
    let run = stylize_from(&CpuBackend::new(), vgg, job, from, &mut stop, &mut observer).unwrap();
    (run, seen)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The uninterrupted run, then for each list of stop points a run stopped at each and resumed
/// (through the state file's bytes) to the end: the same image bits, loss and evaluations.
fn check_resume_is_exact(optimizer: Optimizer, iterations: usize, stop_lists: &[&[usize]]) -> Vec<RunState> {
    check_resume_is_exact_within(None, optimizer, iterations, stop_lists)
}

/// A box tight enough that the test job's runs press against it from their first steps.
const TIGHT: PixelBox = PixelBox { lo: [-0.004, -0.01, -0.002], hi: [0.005, 0.01, 0.003] };

/// `check_resume_is_exact` for a run kept inside `bounds`.
fn check_resume_is_exact_within(bounds: Option<PixelBox>, optimizer: Optimizer, iterations: usize, stop_lists: &[&[usize]]) -> Vec<RunState> {
    let (vgg, mut job) = setup();
    job.optimizer = optimizer;
    job.iterations = iterations;
    job.bounds = bounds;
    let (Run::Finished(whole), whole_losses) = session(&vgg, &job, None, None) else { panic!("never asked to stop") };
    assert_eq!(whole.evaluations, iterations, "{optimizer:?}: the test wants a run that spends its budget");
    let mut states = Vec::new();
    for stops in stop_lists {
        let mut from: Option<RunState> = None;
        let mut losses = Vec::new();
        let mut out: Option<Output> = None;
        let sessions: Vec<Option<usize>> = stops.iter().map(|&k| Some(k)).chain([None]).collect();
        for k in sessions {
            let (run, seen) = session(&vgg, &job, from.as_ref(), k);
            losses.extend(seen);
            match run {
                Run::Stopped(state) => {
                    let k = k.expect("stopped only when asked");
                    let made = state.history.len();
                    // Stopped at the first iteration boundary at or after k.
                    assert!(made >= k && made < iterations, "{optimizer:?}: stopped after {made} evaluations, asked at {k}");
                    let bytes = resume::to_bytes(&header(iterations), &state).unwrap();
                    let (h, back) = resume::from_bytes(&bytes).unwrap();
                    assert_eq!(h, header(iterations));
                    assert_eq!(back, state, "the state survives its file format");
                    // Every state a run saves passes the checks --resume makes with its settings.
                    back.validate(&h, Some(&optimizer)).unwrap_or_else(|e| panic!("{optimizer:?}, stopped at {made}: {e:#}"));
                    back.validate_bounds(bounds.as_ref()).unwrap_or_else(|e| panic!("{optimizer:?}, stopped at {made}: {e:#}"));
                    states.push(back.clone());
                    from = Some(back);
                }
                Run::Finished(o) => {
                    out = Some(o);
                    break; // the last iteration ended before the stop was asked for
                }
            }
        }
        let out = out.expect("the last session finishes");
        assert_eq!(losses, whole_losses, "{optimizer:?}, stops at {stops:?}: every evaluation's loss");
        assert_eq!(bits(&out.image), bits(&whole.image), "{optimizer:?}, stops at {stops:?}: the final image");
        assert_eq!(out.loss, whole.loss, "{optimizer:?}, stops at {stops:?}");
        assert_eq!(out.evaluations, whole.evaluations);
    }
    states
}

#[test]
fn lbfgs_fixed_step_resumes_bit_for_bit() {
    let states = check_resume_is_exact(Optimizer::lbfgs(5), 14, &[&[1], &[3, 9], &[7, 8, 13]]);
    // Stops inside the one round carry its history (more pairs than none by then).
    assert!(states.iter().any(|s| matches!(&s.optimizer, OptimizerState::Lbfgs { within: Some(r), .. } if r.optimizer.pairs.len() >= 3)));
}

#[test]
fn lbfgs_strong_wolfe_with_rounds_resumes_bit_for_bit() {
    let opt = Optimizer::Lbfgs { history: 4, line_search: LineSearch::StrongWolfe, round: 7 };
    // 7 and 14: round boundaries; the others fall inside rounds, mid line search.
    let states = check_resume_is_exact(opt, 20, &[&[7], &[2, 14], &[4, 9, 16], &[1, 2, 3, 5, 8, 11, 13, 17, 19]]);
    assert!(states.iter().any(|s| matches!(&s.optimizer, OptimizerState::Lbfgs { within: None, .. })), "a stop between rounds");
    assert!(states.iter().any(|s| matches!(&s.optimizer, OptimizerState::Lbfgs { within: Some(r), .. } if !r.optimizer.pairs.is_empty())), "a stop inside a round");
}

#[test]
fn lbfgs_fixed_step_with_rounds_resumes_bit_for_bit() {
    check_resume_is_exact(Optimizer::Lbfgs { history: 3, line_search: LineSearch::None, round: 5 }, 12, &[&[5], &[4, 6, 10]]);
}

#[test]
fn adam_resumes_bit_for_bit() {
    let states = check_resume_is_exact(Optimizer::Adam { learning_rate: 0.05 }, 12, &[&[1], &[4, 5, 11]]);
    assert!(states.iter().all(|s| matches!(&s.optimizer, OptimizerState::Adam(a) if a.t as usize == s.history.len())));
}

#[test]
fn bounded_runs_resume_bit_for_bit() {
    let fixed = check_resume_is_exact_within(Some(TIGHT), Optimizer::lbfgs(5), 14, &[&[1], &[3, 9]]);
    let wolfe = Optimizer::Lbfgs { history: 4, line_search: LineSearch::StrongWolfe, round: 7 };
    let wolfe = check_resume_is_exact_within(Some(TIGHT), wolfe, 16, &[&[2, 7], &[4, 9, 15]]);
    let adam = check_resume_is_exact_within(Some(TIGHT), Optimizer::Adam { learning_rate: 0.05 }, 10, &[&[4, 5]]);
    // The box held the runs: none past it, and by the last stop of each optimiser values sit on
    // its faces (else this would test nothing).
    let on_faces = |s: &RunState| s.x.iter().enumerate().filter(|&(k, &v)| v == TIGHT.lo[k % 3] || v == TIGHT.hi[k % 3]).count();
    for states in [&fixed, &wolfe, &adam] {
        let last = states.iter().max_by_key(|s| s.history.len()).unwrap();
        assert!(on_faces(last) > 0, "no value at the box's faces after {} evaluations", last.history.len());
    }
    for s in fixed.iter().chain(&wolfe).chain(&adam) {
        assert!(TIGHT.contains(&s.x));
        if let OptimizerState::Lbfgs { within: Some(r), .. } = &s.optimizer {
            assert_eq!(r.optimizer.prev_x.len(), s.x.len(), "a bounded state carries prev_x");
        }
    }
}

#[test]
fn a_bounded_state_and_an_unbounded_run_refuse_each_other() {
    let (vgg, mut job) = setup();
    job.iterations = 8;
    job.bounds = Some(TIGHT);
    let (Run::Stopped(bounded), _) = session(&vgg, &job, None, Some(3)) else { panic!("asked to stop") };
    let err = bounded.validate_bounds(None).unwrap_err().to_string();
    assert!(err.contains("bounded run's") && err.contains("--unbounded"), "{err}");
    let mut never = || false;
    let err = stylize_from(&CpuBackend::new(), &vgg, &Job { bounds: None, ..job.clone() }, Some(&bounded), &mut never, &mut |_, _| Ok(())).err().expect("refused");
    assert!(err.to_string().contains("bounded run's"), "{err}");
    // An unbounded state has no prev_x, and its image may lie outside the box.
    let (Run::Stopped(unbounded), _) = session(&vgg, &Job { bounds: None, ..job.clone() }, None, Some(3)) else { panic!("asked to stop") };
    let err = unbounded.validate_bounds(Some(&TIGHT)).unwrap_err().to_string();
    assert!(err.contains("outside the pixel box") || err.contains("unbounded run's"), "{err}");
    let err = stylize_from(&CpuBackend::new(), &vgg, &job, Some(&unbounded), &mut never, &mut |_, _| Ok(())).err().expect("refused");
    assert!(err.to_string().contains("unbounded run's"), "{err}");
    // A bounded state whose image was moved outside the box.
    let mut outside = bounded.clone();
    outside.x[4] = TIGHT.hi[1] + 1e-3;
    let err = outside.validate_bounds(Some(&TIGHT)).unwrap_err().to_string();
    assert!(err.contains("x (the image)[4]") && err.contains("outside the pixel box"), "{err}");
    let mut nan_prev = bounded.clone();
    if let OptimizerState::Lbfgs { within: Some(r), .. } = &mut nan_prev.optimizer {
        r.optimizer.prev_x[0] = f32::NAN;
    }
    assert!(refusal(&header(8), &nan_prev).contains("lbfgs.prev_x[0]"), "{}", refusal(&header(8), &nan_prev));
}

#[test]
fn a_state_for_another_optimizer_or_size_is_refused() {
    let (vgg, mut job) = setup();
    job.iterations = 6;
    job.optimizer = Optimizer::Adam { learning_rate: 0.05 };
    let (Run::Stopped(state), _) = session(&vgg, &job, None, Some(2)) else { panic!("asked to stop") };
    job.optimizer = Optimizer::lbfgs(5);
    let mut never = || false;
    let err = stylize_from(&CpuBackend::new(), &vgg, &job, Some(&state), &mut never, &mut |_, _| Ok(())).err().expect("refused");
    assert!(err.to_string().contains("Adam"), "{err}");
    job.content = image(20, 18, 1);
    job.optimizer = Optimizer::Adam { learning_rate: 0.05 };
    let err = stylize_from(&CpuBackend::new(), &vgg, &job, Some(&state), &mut never, &mut |_, _| Ok(())).err().expect("refused");
    assert!(err.to_string().contains("values"), "{err}");
}

#[test]
fn state_files_are_written_atomically_and_headers_name_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let (vgg, mut job) = setup();
    job.iterations = 6;
    let (Run::Stopped(state), _) = session(&vgg, &job, None, Some(3)) else { panic!("asked to stop") };
    let path = resume::state_path(&dir.path().join("out.png"));
    assert_eq!(path.file_name().unwrap(), "out.png.resume");
    let mine = Header { fingerprint: "a".into(), settings: serde_json::json!({"args": {"seed": 1, "num_iterations": 6}, "version": "1"}), width: 24, height: 18, iterations: 6 };
    resume::save(&path, &mine, &state).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["out.png.resume"], "no temp file is left");
    let (h, back) = resume::load(&path).unwrap();
    assert_eq!((h, back), (mine.clone(), state));
    let theirs = Header { fingerprint: "b".into(), settings: serde_json::json!({"args": {"seed": 2, "num_iterations": 6}, "version": "1"}), ..mine.clone() };
    let err = mine.check(&theirs).unwrap_err().to_string();
    assert!(err.contains("--seed 1 there, 2 here") && !err.contains('\n'), "{err}");
    assert!(mine.check(&mine).is_ok());
    std::fs::write(&path, b"not a state").unwrap();
    assert!(resume::load(&path).is_err());
}

// ---- hostile state files (issue 19, items 1-4) ----------------------------------------------

/// A stopped state of the test job (`iterations` in all) from a run with `optimizer`, stopped
/// after `at` evaluations.
fn stopped(optimizer: Optimizer, iterations: usize, at: usize) -> RunState {
    let (vgg, mut job) = setup();
    job.optimizer = optimizer;
    job.iterations = iterations;
    let (Run::Stopped(state), _) = session(&vgg, &job, None, Some(at)) else { panic!("asked to stop") };
    state
}

/// `from_bytes` of `state` written with `header`, as the one-line error it gives (Ok: "").
fn refusal(header: &Header, state: &RunState) -> String {
    match resume::from_bytes(&resume::to_bytes(header, state).unwrap()) {
        Ok(_) => String::new(),
        Err(e) => format!("{e:#}"),
    }
}

fn within(state: &mut RunState) -> &mut resume::LbfgsRound {
    match &mut state.optimizer {
        OptimizerState::Lbfgs { within: Some(r), .. } => r,
        _ => panic!("not inside an L-BFGS round"),
    }
}

fn adam(state: &mut RunState) -> &mut neural_style::optim::adam::AdamState {
    match &mut state.optimizer {
        OptimizerState::Adam(a) => a,
        _ => panic!("not Adam's"),
    }
}

/// Each damaged field of an L-BFGS or Adam state, written through `to_bytes`, is refused by
/// `from_bytes` with one line naming it (the old reader took every one of these).
#[test]
fn a_state_with_a_damaged_value_or_counter_is_refused_naming_the_field() {
    let h = header(12);
    let lbfgs = stopped(Optimizer::lbfgs(5), 12, 6);
    let adam_state = stopped(Optimizer::Adam { learning_rate: 0.05 }, 12, 5);
    assert_eq!(refusal(&h, &lbfgs), "", "the undamaged L-BFGS state");
    assert_eq!(refusal(&h, &adam_state), "", "the undamaged Adam state");
    type Damage = Box<dyn Fn(&mut RunState, &mut Header)>;
    let cases: Vec<(&str, RunState, Damage, &str)> = vec![
        ("nan x", lbfgs.clone(), Box::new(|s, _| s.x[5] = f32::NAN), "x (the image)[5] is NaN"),
        ("inf x", lbfgs.clone(), Box::new(|s, _| s.x[0] = f32::NEG_INFINITY), "x (the image)[0] is -inf"),
        ("1e30 x", lbfgs.clone(), Box::new(|s, _| s.x[7] = 1e30), "x (the image)[7] is 1e30, outside ±1e4"),
        ("size", lbfgs.clone(), Box::new(|_, h| h.width = 25), "x (the image) has 1296 values, not the 1350 of the recorded 25x18 image"),
        ("nan g", lbfgs.clone(), Box::new(|s, _| within(s).g[3] = f32::NAN), "g (the gradient)[3] is NaN"),
        ("inf d", lbfgs.clone(), Box::new(|s, _| within(s).optimizer.d[1] = f32::INFINITY), "lbfgs.d[1] is inf"),
        ("nan prev_g", lbfgs.clone(), Box::new(|s, _| within(s).optimizer.prev_g[2] = f32::NAN), "lbfgs.prev_g[2] is NaN"),
        ("nan y", lbfgs.clone(), Box::new(|s, _| within(s).optimizer.pairs[0].0[4] = f32::NAN), "lbfgs.y.0000[4] is NaN"),
        ("inf s", lbfgs.clone(), Box::new(|s, _| within(s).optimizer.pairs[1].1[4] = f32::INFINITY), "lbfgs.s.0001[4] is inf"),
        ("rho 0", lbfgs.clone(), Box::new(|s, _| within(s).optimizer.pairs[0].2 = 0.0), "lbfgs.rho[0] is 0"),
        ("rho nan", lbfgs.clone(), Box::new(|s, _| within(s).optimizer.pairs[0].2 = f64::NAN), "lbfgs.rho[0] is NaN"),
        ("rho 1e300", lbfgs.clone(), Box::new(|s, _| within(s).optimizer.pairs[0].2 = 1e300), "lbfgs.rho[0] is 1e300"),
        ("h_diag nan", lbfgs.clone(), Box::new(|s, _| within(s).optimizer.h_diag = f64::NAN), "h_diag is NaN"),
        ("h_diag -1", lbfgs.clone(), Box::new(|s, _| within(s).optimizer.h_diag = -1.0), "h_diag is -1"),
        ("t nan", lbfgs.clone(), Box::new(|s, _| within(s).optimizer.t = f64::NAN), "t (the step length) is NaN"),
        ("t -inf", lbfgs.clone(), Box::new(|s, _| within(s).optimizer.t = f64::NEG_INFINITY), "t (the step length) is -inf"),
        ("f nan", lbfgs.clone(), Box::new(|s, _| within(s).minimized.f = f64::NAN), "f (NaN) is not the loss of evaluation 6"),
        ("f other", lbfgs.clone(), Box::new(|s, _| within(s).minimized.f += 1.0), "is not the loss of evaluation 6"),
        ("final_evaluation", lbfgs.clone(), Box::new(|s, _| within(s).minimized.final_evaluation = Some(6)), "final_evaluation 6 is not one of the round's 6 evaluations"),
        ("iteration", lbfgs.clone(), Box::new(|s, _| within(s).optimizer.iteration = 7), "iteration 7 (directions computed) is more than the round's 6 evaluations"),
        ("pairs", lbfgs.clone(), Box::new(|s, _| within(s).optimizer.iteration = 2), "curvature pairs after 2 directions"),
        (
            "round_start",
            lbfgs.clone(),
            Box::new(|s, _| {
                if let OptimizerState::Lbfgs { round_start, .. } = &mut s.optimizer {
                    *round_start = usize::MAX;
                }
            }),
            "round_start 18446744073709551615 and the round's 6 evaluations do not add up to the history's 6",
        ),
        ("finished", lbfgs.clone(), Box::new(|_, h| h.iterations = 6), "the state holds 6 evaluations of a 6-iteration run"),
        ("more than the run", lbfgs.clone(), Box::new(|_, h| h.iterations = 3), "the state holds 6 evaluations of a 3-iteration run"),
        ("nan loss", lbfgs.clone(), Box::new(|s, _| s.history[2].0.style = f64::NAN), "history[2] (evaluation 3) has a style loss of NaN"),
        ("inf loss", lbfgs.clone(), Box::new(|s, _| s.history[5].0.total = f64::INFINITY), "history[5] (evaluation 6) has a total loss of inf"),
        (
            "time backwards",
            lbfgs.clone(),
            Box::new(|s, _| s.history[1].1 = s.history[2].1 + std::time::Duration::from_secs(1)),
            "history[2]'s time (of evaluation 3) is",
        ),
        ("elapsed before the last", lbfgs.clone(), Box::new(|s, _| s.elapsed = std::time::Duration::ZERO), "elapsed (the run time so far) is 0 s, less than the last evaluation's time"),
        ("adam t", adam_state.clone(), Box::new(|s, _| adam(s).t = 9), "adam t (steps taken) is 9, not the history's 5 evaluations"),
        ("adam m inf", adam_state.clone(), Box::new(|s, _| adam(s).m[0] = f32::INFINITY), "adam.m[0] is inf"),
        ("adam v nan", adam_state.clone(), Box::new(|s, _| adam(s).v[9] = f32::NAN), "adam.v[9] is NaN"),
        ("adam v negative", adam_state.clone(), Box::new(|s, _| adam(s).v[0] = -1.0), "adam.v[0] is -1"),
        ("adam x nan", adam_state.clone(), Box::new(|s, _| s.x[1] = f32::NAN), "x (the image)[1] is NaN"),
    ];
    let mut wrong = Vec::new();
    for (name, mut state, damage, needle) in cases {
        let mut h = h.clone();
        damage(&mut state, &mut h);
        let err = refusal(&h, &state);
        if !err.contains(needle) || err.contains('\n') {
            wrong.push(format!("{name}: {err:?} lacks {needle:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// What only the run's settings tell: a state is checked against L-BFGS's history size, the
/// round length, the line search and Adam's learning rate (`--resume` passes the run's).
#[test]
fn a_state_inconsistent_with_the_optimiser_settings_is_refused() {
    let h = header(20);
    let fixed = Optimizer::lbfgs(5);
    let state = stopped(fixed, 20, 8);
    state.validate(&h, Some(&fixed)).unwrap();
    let refused = |s: &RunState, o: Optimizer| s.validate(&h, Some(&o)).err().map(|e| e.to_string()).unwrap_or_default();
    let pairs = within(&mut state.clone()).optimizer.pairs.len();
    assert!(pairs >= 3, "{pairs} pairs");
    assert!(refused(&state, Optimizer::lbfgs(2)).contains(&format!("{pairs} curvature pairs, more than --lbfgs-num-correction 2")));
    let wolfe = Optimizer::Lbfgs { history: 5, line_search: LineSearch::StrongWolfe, round: 0 };
    assert!(refused(&state, wolfe).contains("final_evaluation is missing"));
    // A round of 5 evaluations cannot have made 8, nor start after 3.
    let rounds = Optimizer::Lbfgs { history: 5, line_search: LineSearch::None, round: 5 };
    assert!(refused(&state, rounds).contains("made 8 evaluations, not fewer than its 5"), "{}", refused(&state, rounds));
    let mut later = state.clone();
    if let OptimizerState::Lbfgs { round_start, within: Some(r) } = &mut later.optimizer {
        *round_start = 2;
        r.minimized.evaluations = 6;
        r.optimizer.iteration = 6;
    }
    assert!(refused(&later, rounds).contains("round_start 2 is not a multiple of the round length 5"), "{}", refused(&later, rounds));
    assert!(refused(&state, Optimizer::Adam { learning_rate: 1.0 }).contains("the state is L-BFGS's; this run uses Adam"));
    // Adam: x within 1e4 + 10 lr t.
    let adam_opt = Optimizer::Adam { learning_rate: 0.05 };
    let mut a = stopped(adam_opt, 20, 4);
    a.validate(&h, Some(&adam_opt)).unwrap();
    a.x[0] = 2e4;
    assert!(refused(&a, adam_opt).contains("x (the image)[0] is 2e4, outside ±1.0002e4"), "{}", refused(&a, adam_opt));
    assert_eq!(refused(&a, Optimizer::Adam { learning_rate: 1e3 }), "", "10 lr t = 4e4 allows it");
    assert!(refused(&a, fixed).contains("the state is Adam's; this run uses L-BFGS"));
}

/// A state whose L-BFGS round has made its whole budget, given to the library directly (not
/// through the file, which refuses it): the run refuses it instead of evaluating for ever.
#[test]
fn a_round_that_made_its_budget_cannot_run_past_it() {
    let (vgg, mut job) = setup();
    job.iterations = 6;
    let mut state = stopped(Optimizer::lbfgs(5), 6, 3);
    // Three more evaluations' worth of history: the round has made all 6.
    let last = *state.history.last().unwrap();
    state.history.extend([last; 3]);
    within(&mut state).minimized.evaluations = 6;
    within(&mut state).optimizer.iteration = 6;
    let made = std::cell::Cell::new(0);
    let mut observer = |_: &Progress, _: Option<&[f32]>| {
        made.set(made.get() + 1);
        assert!(made.get() < 100, "the run went on past its budget");
        Ok(())
    };
    let err = stylize_from(&CpuBackend::new(), &vgg, &job, Some(&state), &mut || false, &mut observer).err().expect("refused");
    assert!(err.to_string().contains("not fewer than its 6"), "{err}");
    assert_eq!(made.get(), 0);
}

/// Times that `Duration` cannot hold (inf, 1e300, NaN) or that no run takes (negative, over 100
/// years) are refused, naming the field: the old reader panicked in `Duration::from_secs_f64`
/// (inf, 1e300, NaN) or took them as 0 (negative).
#[test]
fn a_state_with_an_impossible_time_is_refused_not_a_panic() {
    let state = stopped(Optimizer::lbfgs(5), 12, 4);
    let bytes = resume::to_bytes(&header(12), &state).unwrap();
    for (field, value, needle) in [
        ("elapsed", f64::INFINITY, "elapsed (the run time so far) is inf s"),
        ("elapsed", 1e300, "elapsed (the run time so far) is 1e300 s"),
        ("elapsed", f64::NAN, "elapsed (the run time so far) is NaN s"),
        ("elapsed", -1.0, "elapsed (the run time so far) is -1 s"),
        ("elapsed", 4e9, "elapsed (the run time so far) is 4e9 s"),
        ("history", f64::INFINITY, "history[0]'s time (of evaluation 1) is inf s"),
        ("history", 1e300, "history[0]'s time (of evaluation 1) is 1e300 s"),
        ("history", -5.0, "history[0]'s time (of evaluation 1) is -5 s"),
    ] {
        let mut raw = RawState::parse(&bytes);
        let mut v = raw.f64s(field);
        v[if field == "history" { 4 } else { 0 }] = value;
        raw.set_f64s(field, &v);
        let r = std::panic::catch_unwind(|| resume::from_bytes(&raw.bytes()).err().map(|e| format!("{e:#}")));
        let err = r.unwrap_or_else(|_| panic!("{field} = {value}: panicked")).unwrap_or_default();
        assert!(err.contains(needle) && err.contains("not a time a run took"), "{field} = {value}: {err:?}");
    }
}

/// Tensors the layout has no place for, counters that do not match the tensors, and truncated
/// files are refused.
#[test]
fn a_state_whose_tensors_do_not_match_its_record_is_refused() {
    let state = stopped(Optimizer::lbfgs(5), 12, 4);
    let bytes = resume::to_bytes(&header(12), &state).unwrap();
    let mut raw = RawState::parse(&bytes);
    raw.put_f32s("adam.m", &vec![0.0; state.x.len()]);
    let err = format!("{:#}", resume::from_bytes(&raw.bytes()).unwrap_err());
    assert!(err.contains("it holds a tensor \"adam.m\" that this state has no place for"), "{err}");
    let mut raw = RawState::parse(&bytes);
    raw.record["evaluations"] = serde_json::json!(usize::MAX / 2);
    let err = format!("{:#}", resume::from_bytes(&raw.bytes()).unwrap_err());
    assert!(err.contains("the loss history does not hold"), "{err}");
    for cut in [0, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        assert!(resume::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

// ---- the same through the binary ------------------------------------------------------------

mod binary {
    use super::RawState;
    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    const BIN: &str = env!("CARGO_BIN_EXE_neural-style");

    /// The tiny run of these tests in `dir`, writing `output`, with `extra` flags.
    fn command(dir: &Path, output: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(dir)
            .env_remove("NEURAL_STYLE_MODEL")
            .env_remove("NEURAL_STYLE_MODEL_URL")
            .env("TORCH_HOME", dir.join("torch-home"))
            .args(["--content-image", "content.png", "--style-image", "style.png", "--num-iterations", "300"])
            .args(["--image-size", "32", "--device", "cpu", "--print-iter", "1", "--save-iter", "0"])
            .args(["--content-layers", "relu2_2", "--style-layers", "relu1_1,relu2_1,relu3_1"])
            .args(["--output-image", output])
            .args(extra);
        c
    }

    /// A folder with the inputs and `state.resume`, the state of a run with `extra` flags
    /// stopped by SIGINT after `after` iterations.
    fn stopped_run(extra: &[&str], after: usize) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for (name, w, h) in [("content.png", 32, 24), ("style.png", 20, 28)] {
            image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, ((x * y) % 251) as u8])).save(dir.join(name)).unwrap();
        }
        let mut child = command(dir, "stopped.png", extra).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let (mut line, mut text, mut sent) = (String::new(), String::new(), false);
        while err.read_line(&mut line).unwrap() > 0 {
            if !sent && line.starts_with(&format!("iteration {after} / ")) {
                assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
                sent = true;
            }
            text.push_str(&line);
            line.clear();
        }
        assert_eq!(child.wait().unwrap().code(), Some(130), "{text}");
        std::fs::rename(dir.join("stopped.png.resume"), dir.join("state.resume")).unwrap();
        tmp
    }

    /// An L-BFGS run (history 2: it is full by then) stopped inside its round after 5 or more
    /// iterations, and an Adam run stopped after 3.
    const LBFGS: &[&str] = &["--lbfgs-num-correction", "2"];
    const ADAM: &[&str] = &["--optimizer", "adam", "--learning-rate", "0.05"];

    /// Resumes the run of `dir` from `state` (written as `<case>.resume`), killing it after
    /// 60 s; returns (exit code (None: killed), stderr).
    fn resume_with(dir: &Path, extra: &[&str], case: &str, state: &[u8]) -> (Option<i32>, String) {
        let path = dir.join(format!("{case}.resume"));
        std::fs::write(&path, state).unwrap();
        let out = format!("{case}.png");
        let mut child = command(dir, &out, extra).args(["--resume", path.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut BufReader::new(err), &mut s).unwrap();
            s
        });
        let start = Instant::now();
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if start.elapsed() > Duration::from_secs(60) {
                child.kill().unwrap();
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let text = reader.join().unwrap();
        let _ = std::fs::remove_file(&path);
        (code, text)
    }

    /// The refusal every damaged state must get: a non-zero exit before the run starts, one
    /// `error:` line naming --resume, the file and `needle`, no panic, no output written.
    fn assert_refused(dir: &Path, extra: &[&str], case: &str, state: &[u8], needle: &str) -> Result<(), String> {
        let (code, err) = resume_with(dir, extra, case, state);
        let name = format!("{case}.resume");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        let ok = matches!(code, Some(c) if c != 0 && c != 130)
            && !err.contains("panicked")
            && !err.contains("stylising")
            && errors.len() == 1
            && errors[0].contains("--resume")
            && errors[0].contains(&name)
            && errors[0].contains(needle)
            && !dir.join(format!("{case}.png")).exists();
        if ok {
            Ok(())
        } else {
            Err(format!("{case}: exit {code:?} (None: still running after 60 s), wanted one error naming {name} and {needle:?}; stderr ends:\n{}", tail(&err)))
        }
    }

    fn tail(s: &str) -> String {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(6)..].join("\n")
    }

    fn raw(dir: &Path) -> RawState {
        RawState::parse(&std::fs::read(dir.join("state.resume")).unwrap())
    }

    /// The L-BFGS state damaged field by field, each resumed through the binary. On the old
    /// reader: inf / 1e300 times panicked, a history as long as the run went on for ever
    /// ("iteration 301 / 300", ...), round_start 2^64-1 ended at once with exit 0, a NaN or 1e30
    /// image ran and exited 1 with "wrote the last finite image", and the others were refused
    /// without naming the file.
    #[test]
    fn damaged_lbfgs_states_are_refused_naming_the_file_and_the_field() {
        let tmp = stopped_run(LBFGS, 5);
        let dir = tmp.path();
        // The undamaged state resumes and finishes.
        let (code, err) = resume_with(dir, LBFGS, "intact", &std::fs::read(dir.join("state.resume")).unwrap());
        assert_eq!(code, Some(0), "{err}");
        assert!(err.contains("resuming from") && err.contains("after 300 evaluations"), "{err}");
        let made = raw(dir).record["evaluations"].as_u64().unwrap() as usize;
        assert!(made >= 5, "{made}");
        let mut wrong = Vec::new();
        let mut case = |name: &str, damage: &dyn Fn(&mut RawState), needle: &str| {
            let mut r = raw(dir);
            damage(&mut r);
            if let Err(e) = assert_refused(dir, LBFGS, name, &r.bytes(), needle) {
                wrong.push(e);
            }
        };
        let set_f64 = |name: &'static str, k: usize, v: f64| {
            move |r: &mut RawState| {
                let mut x = r.f64s(name);
                x[k] = v;
                r.set_f64s(name, &x);
            }
        };
        let set_f32 = |name: &'static str, k: usize, v: f32| {
            move |r: &mut RawState| {
                let mut x = r.f32s(name);
                x[k] = v;
                r.set_f32s(name, &x);
            }
        };
        case("elapsed_inf", &set_f64("elapsed", 0, f64::INFINITY), "elapsed (the run time so far) is inf s");
        case("elapsed_1e300", &set_f64("elapsed", 0, 1e300), "elapsed (the run time so far) is 1e300 s");
        case("time_nan", &set_f64("history", 4, f64::NAN), "history[0]'s time (of evaluation 1) is NaN s");
        case("time_negative", &set_f64("history", 9, -1.0), "history[1]'s time (of evaluation 2) is -1 s");
        case("x_nan", &set_f32("x", 5, f32::NAN), "x (the image)[5] is NaN");
        case("x_1e30", &set_f32("x", 5, 1e30), "x (the image)[5] is 1e30, outside ±1e4");
        case("g_inf", &set_f32("g", 0, f32::INFINITY), "g (the gradient)[0] is inf");
        case("h_diag_nan", &set_f64("lbfgs.scalars", 0, f64::NAN), "h_diag is NaN");
        case("t_nan", &set_f64("lbfgs.scalars", 1, f64::NAN), "t (the step length) is NaN");
        case("f_nan", &set_f64("lbfgs.scalars", 2, f64::NAN), "f (NaN) is not the loss");
        case("rho_negative", &set_f64("lbfgs.rho", 0, -1.0), "lbfgs.rho[0] is -1");
        case(
            "x_short",
            &|r: &mut RawState| {
                for name in ["x", "g", "lbfgs.d", "lbfgs.prev_g", "lbfgs.y.0000", "lbfgs.s.0000", "lbfgs.y.0001", "lbfgs.s.0001"] {
                    let v = r.f32s(name);
                    r.set_f32s(name, &v[3..]);
                }
            },
            "x (the image) has 2301 values, not the 2304 of the recorded 32x24 image",
        );
        // As many evaluations as the run: it would never end.
        case(
            "history_full",
            &|r: &mut RawState| {
                let mut h = r.f64s("history");
                let last = h[h.len() - 5..].to_vec();
                while h.len() < 5 * 300 {
                    h.extend(&last);
                }
                r.set_f64s("history", &h);
                r.record["evaluations"] = 300.into();
                r.record["state"]["within"]["evaluations"] = 300.into();
                r.record["state"]["within"]["iteration"] = 300.into();
            },
            "the state holds 300 evaluations of a 300-iteration run",
        );
        // round_start + the round's evaluations wraps around to the history's length.
        case(
            "round_start_max",
            &|r: &mut RawState| {
                r.record["state"]["round_start"] = u64::MAX.into();
                r.record["state"]["within"]["evaluations"] = (made + 1).into();
            },
            "round_start 18446744073709551615",
        );
        // A third curvature pair, past this run's --lbfgs-num-correction 2.
        case(
            "pairs_over_history",
            &|r: &mut RawState| {
                let d = r.f32s("lbfgs.d");
                r.put_f32s("lbfgs.y.0002", &d);
                r.put_f32s("lbfgs.s.0002", &d);
                let mut rho = r.f64s("lbfgs.rho");
                rho.resize(3, 1.0);
                r.set_f64s("lbfgs.rho", &rho);
                r.record["state"]["within"]["pairs"] = 3.into();
            },
            "3 curvature pairs, more than --lbfgs-num-correction 2",
        );
        case("iteration", &|r: &mut RawState| r.record["state"]["within"]["iteration"] = (made - 1).into(), "are not those of a fixed-step round");
        assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    }

    /// The Adam state damaged: t off by one was refused without naming the file; a negative or
    /// NaN v ran and exited 1 ("wrote the last finite image").
    #[test]
    fn damaged_adam_states_are_refused_naming_the_file_and_the_field() {
        let tmp = stopped_run(ADAM, 3);
        let dir = tmp.path();
        let mut wrong = Vec::new();
        let mut case = |name: &str, damage: &dyn Fn(&mut RawState), needle: &str| {
            let mut r = raw(dir);
            damage(&mut r);
            if let Err(e) = assert_refused(dir, ADAM, name, &r.bytes(), needle) {
                wrong.push(e);
            }
        };
        let set_v = |k: usize, v: f32| {
            move |r: &mut RawState| {
                let mut x = r.f32s("adam.v");
                x[k] = v;
                r.set_f32s("adam.v", &x);
            }
        };
        case("adam_v_negative", &set_v(0, -1.0), "adam.v[0] is -1");
        case("adam_v_nan", &set_v(3, f32::NAN), "adam.v[3] is NaN");
        case(
            "adam_t",
            &|r: &mut RawState| {
                let t = r.record["state"]["t"].as_u64().unwrap();
                r.record["state"]["t"] = (t + 1).into();
            },
            "adam t (steps taken) is",
        );
        case(
            "adam_x_huge",
            &|r: &mut RawState| {
                let mut x = r.f32s("x");
                x[0] = 1e6;
                r.set_f32s("x", &x);
            },
            "x (the image)[0] is 1e6, outside",
        );
        assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    }
}
