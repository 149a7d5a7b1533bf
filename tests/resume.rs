//! Stopping a run between iterations and resuming it from its saved state ends on exactly the
//! bits of the uninterrupted run: L-BFGS with the fixed step, L-BFGS with strong Wolfe and
//! rounds (stops inside a round and on a round boundary), and Adam; the state goes through its
//! file format (resume::to_bytes / from_bytes) between the sessions.

use neural_style::model::random::random_vgg;
use neural_style::optim::lbfgs::LineSearch;
use neural_style::resume::{self, Header, OptimizerState, RunState};
use neural_style::{stylize_from, CpuBackend, Image, Init, Job, ObjectiveSpec, Optimizer, Output, PoolKind, Progress, Run, Vgg};
use std::cell::Cell;

fn image(w: usize, h: usize, k: usize) -> Image {
    Image { w, h, data: (0..w * h * 3).map(|i| (((i * 37 + k * 101 + (i / 7) * 13) % 256) as f32 / 64.0) - 2.0).collect() }
}

fn setup() -> (Vgg, Job) {
    let vgg = random_vgg(&[4, 4, 0, 6, 6, 0, 8, 8], 3, "tiny".into());
    let spec = ObjectiveSpec {
        content_layers: vec!["relu2_2".into()],
        style_layers: vec!["relu1_1".into(), "relu2_1".into(), "relu3_1".into()],
        content_weight: 1.0,
        style_weight: 1e3,
        tv_weight: 1e-5,
        pooling: PoolKind::Max,
        ..Default::default()
    };
    let job = Job {
        content: image(24, 18, 1),
        styles: vec![(image(20, 20, 2), 1.0)],
        spec,
        init: Init::Random,
        optimizer: Optimizer::lbfgs(5),
        iterations: 0,
        seed: 3,
        snapshot_every: 0,
    };
    (vgg, job)
}

fn header() -> Header {
    Header { fingerprint: "test".into(), settings: serde_json::json!({}), width: 24, height: 18, iterations: 0 }
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
    let (vgg, mut job) = setup();
    job.optimizer = optimizer;
    job.iterations = iterations;
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
                    let bytes = resume::to_bytes(&header(), &state).unwrap();
                    let (h, back) = resume::from_bytes(&bytes).unwrap();
                    assert_eq!(h, header());
                    assert_eq!(back, state, "the state survives its file format");
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
