//! Replays the fuzz targets' committed corpus (fuzz/corpus/<target>/: seeds from
//! fuzz/make_corpus.py for the model and image targets, from `write_seed_corpus` below for
//! `resume_state` and `png_settings`, and every input fuzzing ever found a bug with) through the
//! targets' bodies, on stable Rust: each input must give Ok or Err, never a panic. Fuzzing itself
//! needs nightly and cargo-fuzz; see docs/testing.md, "Fuzzing".

use crate::common;

use common::png_chunks::{png_with_chunks, zlib_bomb, zlib_stored};
use common::state_file::RawState;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

type Target = fn(&[u8]) -> anyhow::Result<()>;

/// Seeds fuzz/make_corpus.py writes to be refused; so are those named `seed-refused-*` (the
/// ones `write_seed_corpus` writes to be refused); every other seed-* must load.
const REFUSED_SEEDS: [&str; 8] = ["truncated", "unchained", "nan", "self_reference", "i32_refused", "empty_header", "truncated.jpg", "truncated.png"];
/// The name prefix of the seeds to be refused that `write_seed_corpus` writes.
const REFUSED_PREFIX: &str = "refused-";

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
}

/// Runs every input: none may panic; seeds load or are refused as their names say (other inputs,
/// found by fuzzing, may do either). Fails listing every input that did otherwise.
fn replay(target: &str, run: Target) {
    let mut wrong = Vec::new();
    for path in corpus(target) {
        let bytes = std::fs::read(&path).expect("read corpus input");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match catch_unwind(AssertUnwindSafe(|| run(&bytes))) {
            Err(_) => wrong.push(format!("{name}: panicked")),
            Ok(r) => {
                let Some(seed) = name.strip_prefix("seed-") else { continue };
                let refused = REFUSED_SEEDS.contains(&seed) || seed.starts_with(REFUSED_PREFIX);
                match (r, refused) {
                    (Ok(()), true) => wrong.push(format!("{name}: loaded, but it should be refused")),
                    (Err(e), false) => wrong.push(format!("{name}: {e:#}")),
                    _ => {}
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{target}:\n{}", wrong.join("\n"));
}

#[test]
fn model_pth_zip() {
    replay("model_pth_zip", |b| neural_style::fuzzing::model_pth_zip(b).map(drop));
}

#[test]
fn model_pth_legacy() {
    replay("model_pth_legacy", |b| neural_style::fuzzing::model_pth_legacy(b).map(drop));
}

#[test]
fn model_safetensors() {
    replay("model_safetensors", |b| neural_style::fuzzing::model_safetensors(b).map(drop));
}

#[test]
fn image() {
    replay("image", |b| neural_style::fuzzing::image(b).map(drop));
}
#[test]
fn resume_state() {
    replay("resume_state", |b| neural_style::fuzzing::resume_state(b).map(drop));
}

#[test]
fn png_settings() {
    replay("png_settings", |b| neural_style::fuzzing::png_settings(b).map(drop));
}

/// Every target has a corpus folder, and every corpus folder a target here.
#[test]
fn every_corpus_is_replayed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["image", "model_pth_legacy", "model_pth_zip", "model_safetensors", "png_settings", "resume_state"]);
}

// ---- the seeds of resume_state and png_settings ---------------------------------------------

/// The seeds of the `resume_state` and `png_settings` targets as (target, name, bytes): state
/// files of tiny runs (a 6x5 image, a two-conv network made here) in each optimiser layout, then
/// damaged; PNGs recording settings in each text chunk kind, then hostile records. Deterministic
/// on one machine (the runs are the CPU's).
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, bytes) in resume_seeds() {
        out.push(("resume_state", name, bytes));
    }
    for (name, bytes) in png_seeds() {
        out.push(("png_settings", name, bytes));
    }
    out
}

/// Writes the seeds (`fuzz/corpus/<target>/seed-*`, each at most 16 KB); inputs fuzzing found
/// (crash-*, ...) stay. Run after changing `seeds`:
/// `cargo test --test it -- --ignored fuzz_corpus::write_seed_corpus`.
#[test]
#[ignore]
fn write_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for target in ["resume_state", "png_settings"] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap().to_string_lossy().starts_with("seed-") {
                std::fs::remove_file(p).unwrap();
            }
        }
    }
    for (target, name, bytes) in seeds() {
        assert!(bytes.len() <= 16384, "{target}/{name}: {} bytes", bytes.len());
        std::fs::write(root.join(target).join(format!("seed-{name}")), bytes).unwrap();
    }
}

/// The committed seeds of these two targets are the ones `write_seed_corpus` writes (by name:
/// their bytes may differ by the last bit of a float on another CPU).
#[test]
fn the_committed_seeds_are_the_generators() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for target in ["resume_state", "png_settings"] {
        let mut committed: Vec<String> = std::fs::read_dir(root.join(target))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|n| n.strip_prefix("seed-").map(str::to_string))
            .collect();
        committed.sort();
        let mut made: Vec<String> = seeds().into_iter().filter(|s| s.0 == target).map(|s| s.1).collect();
        made.sort();
        assert_eq!(committed, made, "{target}: rerun write_seed_corpus");
    }
}

mod state_seeds {
    use neural_style::model::random::random_vgg;
    use neural_style::optim::lbfgs::LineSearch;
    use neural_style::resume::{self, Header, OptimizerState, RunState};
    use neural_style::{stylize_from, CpuBackend, Image, Init, Job, ObjectiveSpec, Optimizer, PoolKind, Run};

    pub const ITERATIONS: usize = 12;

    pub fn header() -> Header {
        Header { fingerprint: "seed".into(), settings: serde_json::json!({"args": {"seed": 1}, "version": "0"}), width: 6, height: 5, iterations: ITERATIONS }
    }

    /// The tiny job, with `optimizer`, stopped after `at` evaluations.
    pub fn stopped(optimizer: Optimizer, at: usize) -> RunState {
        let vgg = random_vgg(&[2, 0, 2], 5, "seed".into());
        let image = |k: usize| Image { w: 6, h: 5, data: (0..90).map(|i| ((i * 37 + k * 11) % 256) as f32 / 64.0 - 2.0).collect() };
        let spec = ObjectiveSpec {
            content_layers: vec!["relu2_1".into()],
            style_layers: vec!["relu1_1".into(), "relu2_1".into()],
            content_weight: 1.0,
            style_weight: 1e3,
            tv_weight: 1e-3,
            pooling: PoolKind::Max,
            ..Default::default()
        };
        let job = Job { content: image(1), styles: vec![(image(2), 1.0)], spec, init: Init::Random, optimizer, iterations: ITERATIONS, seed: 3, snapshot_every: 0, snapshot_gate: None, bounds: None };
        let made = std::cell::Cell::new(0);
        let mut observer = |p: &neural_style::Progress, _: Option<&[f32]>| {
            made.set(p.iteration);
            Ok(())
        };
        let mut stop = || made.get() >= at;
        match stylize_from(&CpuBackend::new(), &vgg, &job, None, &mut stop, &mut observer).unwrap() {
            Run::Stopped(state) => state,
            Run::Finished(_) => panic!("the seed run finished"),
        }
    }

    pub fn bytes(state: &RunState) -> Vec<u8> {
        resume::to_bytes(&header(), state).unwrap()
    }

    pub fn lbfgs(round: usize, line_search: LineSearch) -> Optimizer {
        Optimizer::Lbfgs { history: 3, line_search, round }
    }

    pub fn within(state: &mut RunState) -> &mut resume::LbfgsRound {
        match &mut state.optimizer {
            OptimizerState::Lbfgs { within: Some(r), .. } => r,
            _ => panic!("not in a round"),
        }
    }
}

fn resume_seeds() -> Vec<(String, Vec<u8>)> {
    use neural_style::optim::lbfgs::LineSearch;
    use neural_style::resume::OptimizerState;
    use neural_style::Optimizer;
    use state_seeds::{bytes, lbfgs, stopped, within};
    let fixed = stopped(lbfgs(0, LineSearch::None), 6);
    let wolfe = stopped(lbfgs(4, LineSearch::StrongWolfe), 6);
    let between = stopped(lbfgs(4, LineSearch::None), 8);
    assert!(matches!(between.optimizer, OptimizerState::Lbfgs { round_start: 8, within: None }), "{:?}", between.optimizer);
    let adam = stopped(Optimizer::Adam { learning_rate: 0.05 }, 5);
    let first = stopped(lbfgs(0, LineSearch::None), 1);
    let mut out: Vec<(String, Vec<u8>)> = vec![
        ("lbfgs_fixed".into(), bytes(&fixed)),
        ("lbfgs_strong_wolfe_rounds".into(), bytes(&wolfe)),
        ("lbfgs_between_rounds".into(), bytes(&between)),
        ("lbfgs_after_one".into(), bytes(&first)),
        ("adam".into(), bytes(&adam)),
    ];
    let mut refused = |name: &str, b: Vec<u8>| out.push((format!("refused-{name}"), b));
    let f = bytes(&fixed);
    refused("truncated", f[..f.len() / 2].to_vec());
    refused("empty", Vec::new());
    refused("not_a_state", b"{\"x\": 1}".to_vec());
    let damaged = |d: &dyn Fn(&mut neural_style::resume::RunState)| {
        let mut s = fixed.clone();
        d(&mut s);
        bytes(&s)
    };
    refused("nan_x", damaged(&|s| s.x[3] = f32::NAN));
    refused("huge_x", damaged(&|s| s.x[3] = 1e30));
    refused("inf_g", damaged(&|s| within(s).g[0] = f32::INFINITY));
    refused("nan_h_diag", damaged(&|s| within(s).optimizer.h_diag = f64::NAN));
    refused("nan_t", damaged(&|s| within(s).optimizer.t = f64::NAN));
    refused("zero_rho", damaged(&|s| within(s).optimizer.pairs[0].2 = 0.0));
    refused("f_not_a_loss", damaged(&|s| within(s).minimized.f = 1.0));
    refused("final_evaluation_out", damaged(&|s| within(s).minimized.final_evaluation = Some(99)));
    refused("iteration_over", damaged(&|s| within(s).optimizer.iteration = 99));
    refused("nan_loss", damaged(&|s| s.history[1].0.content = f64::NAN));
    refused(
        "round_start_max",
        damaged(&|s| {
            if let OptimizerState::Lbfgs { round_start, .. } = &mut s.optimizer {
                *round_start = usize::MAX;
            }
        }),
    );
    let mut h = state_seeds::header();
    h.width = 7;
    refused("wrong_size", neural_style::resume::to_bytes(&h, &fixed).unwrap());
    h = state_seeds::header();
    h.iterations = fixed.history.len();
    refused("finished", neural_style::resume::to_bytes(&h, &fixed).unwrap());
    let mut a = adam.clone();
    if let OptimizerState::Adam(s) = &mut a.optimizer {
        s.v[2] = -1.0;
    }
    refused("adam_negative_v", bytes(&a));
    let mut a = adam.clone();
    if let OptimizerState::Adam(s) = &mut a.optimizer {
        s.t += 1;
    }
    refused("adam_t", bytes(&a));
    refused("inf_elapsed", RawState::parse(&f).set_f64("elapsed", 0, f64::INFINITY).bytes());
    refused("huge_time", RawState::parse(&f).set_f64("history", 4, 1e300).bytes());
    refused("negative_time", RawState::parse(&f).set_f64("history", 9, -1.0).bytes());
    refused("nan_time", RawState::parse(&f).set_f64("history", 4, f64::NAN).bytes());
    let mut r = RawState::parse(&f);
    r.record["evaluations"] = serde_json::json!(usize::MAX / 4);
    refused("evaluations_overflow", r.bytes());
    let mut r = RawState::parse(&f);
    r.record["state"]["within"]["pairs"] = serde_json::json!(1usize << 40);
    refused("pairs_huge", r.bytes());
    let mut r = RawState::parse(&f);
    r.record["format"] = serde_json::json!(2);
    refused("format_2", r.bytes());
    let mut r = RawState::parse(&f);
    let x = r.tensors.iter().find(|t| t.0 == "x").unwrap().clone();
    r.tensors.push(("extra".into(), x.1, x.2, x.3));
    refused("extra_tensor", r.bytes());
    out
}

/// A 2x2 PNG with `chunks` (type, body) before its image data.
fn png_with(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    png_with_chunks(2, 2, chunks)
}

fn png_seeds() -> Vec<(String, Vec<u8>)> {
    use neural_style::settings_record::SETTINGS_KEY as KEY;
    use serde_json::json;
    let args = json!({
        "content_image": "/data/content.png", "style_image": ["/data/a.png", "/data/b.png"], "style_blend_weights": [0.5, 1.5],
        "image_size": 512, "num_iterations": 1000, "style_weight": 100.0, "optimizer": "lbfgs", "original_colors": false,
        "init_image": null, "seed": 0, "content_layers": ["relu4_2"], "style_layers": ["relu1_1", "relu2_1"],
    });
    let record = |args: serde_json::Value| json!({"program": "neural-style", "version": "0.1.0", "model": "m.pth", "model_sha256": null, "args": args}).to_string();
    let merged = |extra: serde_json::Value| {
        let mut a = args.clone();
        for (k, v) in extra.as_object().unwrap() {
            a[k] = v.clone();
        }
        record(a)
    };
    let itxt = |text: &str| png_with(&[(b"iTXt", [KEY.as_bytes(), b"\0\0\0\0\0", text.as_bytes()].concat())]);
    let full = record(args.clone());
    let mut out: Vec<(String, Vec<u8>)> = vec![
        ("itxt".into(), itxt(&full)),
        ("itxt_compressed".into(), png_with(&[(b"iTXt", [KEY.as_bytes(), b"\0\x01\0en\0Settings\0", &zlib_stored(full.as_bytes())].concat())])),
        ("ztxt".into(), png_with(&[(b"zTXt", [KEY.as_bytes(), b"\0\0", &zlib_stored(full.as_bytes())].concat())])),
        ("text".into(), png_with(&[(b"tEXt", [KEY.as_bytes(), b"\0", full.as_bytes()].concat())])),
        ("no_record".into(), png_with(&[(b"tEXt", b"Comment\0hello".to_vec())])),
        ("other_chunks_first".into(), png_with(&[(b"zTXt", [&b"Comment\0\0"[..], &zlib_bomb(9_000)].concat()), (b"iTXt", [KEY.as_bytes(), b"\0\0\0\0\0", full.as_bytes()].concat())])),
        ("unknown_keys".into(), itxt(&merged(json!({"a": 1, "output_image": "/etc/passwd", "log_json": "x"})))),
        ("flag_like_values".into(), itxt(&merged(json!({"content_image": "--model=/etc/passwd", "style_image": ["--help"]})))),
        ("nulls".into(), itxt(&merged(json!({"style_image": [], "image_size": null, "original_colors": true})))),
    ];
    let mut refused = |name: &str, b: Vec<u8>| out.push((format!("refused-{name}"), b));
    refused("bomb_itxt", png_with(&[(b"iTXt", [KEY.as_bytes(), b"\0\x01\0\0\0", &zlib_bomb(4100)].concat())]));
    refused("bomb_ztxt", png_with(&[(b"zTXt", [KEY.as_bytes(), b"\0\0", &zlib_bomb(4100)].concat())]));
    refused("damaged_zlib", png_with(&[(b"zTXt", [KEY.as_bytes(), b"\0\0\x78\x01\xff\xff\xff"].concat())]));
    refused("not_json", itxt("{\"args\": "));
    refused("deep_json", itxt(&"[".repeat(5000)));
    refused("not_an_object", itxt("[1, 2]"));
    refused("no_args", itxt("{\"a\": 1}"));
    refused("args_array", itxt("{\"args\": [\"--model=/etc/passwd\"]}"));
    refused("switch_string", itxt(&merged(json!({"original_colors": "yes"}))));
    refused("value_true", itxt(&merged(json!({"content_image": true}))));
    refused("value_object", itxt(&merged(json!({"image_size": {"a": 1}}))));
    refused("value_huge", itxt(&merged(json!({"image_size": 1e300}))));
    refused("list_comma", itxt(&merged(json!({"style_image": ["/a,b.png"]}))));
    refused("list_nested", itxt(&merged(json!({"style_image": [1, [2]]}))));
    let good = itxt(&full);
    refused("truncated", good[..good.len() / 2].to_vec());
    refused("not_a_png", full.into_bytes());
    out
}
