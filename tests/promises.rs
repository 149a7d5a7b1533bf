//! Promises the README and the docs make that nothing else tested (issue 12 item 5): the model
//! discovery order, the Caffe convention, style blend normalisation against PyTorch, Adam's step
//! counter and learning rate, every key of the `--log-json` lines as docs/options.md shows them,
//! `--save-iter` naming at and near the last iteration, an existing output surviving a failed
//! write, every relative link of README.md, docs/ and PERFORMANCE.md, and README's commands.
//! Tiny images and the narrow fixture network: every test takes well under a second (the CLI
//! ones a second or two).

use neural_style::backend::PoolKind;
use neural_style::model::source::{self, ModelSource};
use neural_style::{image_io, model, stylize, Convention, CpuBackend, Image, Init, Job, Objective, ObjectiveSpec, Optimizer, Vgg};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_neural-style");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn load_png(name: &str, convention: Convention) -> Image {
    let rgb = image::open(fixture(name)).unwrap().to_rgb8();
    let (w, h) = rgb.dimensions();
    Image { h: h as usize, w: w as usize, data: convention.preprocess(rgb.as_raw()) }
}

fn narrow_vgg() -> Vgg {
    model::load_file(&fixture("narrow_vgg19_zip.pth")).unwrap()
}

// ---- the model discovery order ------------------------------------------------------------

/// `--model` over `$NEURAL_STYLE_MODEL` over `$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth`
/// over the embedded model; TORCH_HOME unset: `$XDG_CACHE_HOME/torch`, else `~/.cache/torch`.
/// (The only test here that touches the environment; the CLI tests set theirs explicitly.)
#[test]
fn model_discovery_order() {
    let dir = tempfile::tempdir().unwrap();
    let torch_home = dir.path().join("th");
    let ckpt = torch_home.join("hub/checkpoints");
    std::fs::create_dir_all(&ckpt).unwrap();
    let cached = ckpt.join("vgg19-dcbb9e9d.pth");
    std::fs::write(&cached, b"not read by resolve").unwrap();
    let (flag, env) = (dir.path().join("flag.pth"), dir.path().join("env.pth"));
    let set = |k: &str, v: Option<&Path>| match v {
        Some(v) => std::env::set_var(k, v),
        None => std::env::remove_var(k),
    };
    set("TORCH_HOME", Some(&torch_home));
    set("NEURAL_STYLE_MODEL", Some(&env));
    assert_eq!(source::resolve(Some(&flag), 3), ModelSource::Flag(flag.clone()), "--model first");
    assert_eq!(source::resolve(None, 3), ModelSource::Env(env.clone()), "then $NEURAL_STYLE_MODEL");
    // The variable names a file without it being checked here: load says it is missing.
    let err = source::load(&ModelSource::Env(env.clone())).unwrap_err().to_string();
    assert!(err.contains("$NEURAL_STYLE_MODEL") && err.contains("does not exist"), "{err}");
    std::env::set_var("NEURAL_STYLE_MODEL", "");
    assert_eq!(source::resolve(None, 3), ModelSource::TorchCache(cached.clone()), "an empty variable counts as unset");
    set("NEURAL_STYLE_MODEL", None);
    assert_eq!(source::resolve(None, 3), ModelSource::TorchCache(cached.clone()), "then torch.hub's cache");
    std::fs::remove_file(&cached).unwrap();
    std::fs::create_dir(&cached).unwrap();
    assert_eq!(source::resolve(None, 3), ModelSource::Embedded { seed: 3 }, "a directory in the cache is not a model");
    std::fs::remove_dir(&cached).unwrap();
    assert_eq!(source::resolve(None, 5), ModelSource::Embedded { seed: 5 }, "else the embedded model");
    assert_eq!(source::resolve(Some(&flag), 5), ModelSource::Flag(flag.clone()));

    // The cache root: $TORCH_HOME, else $XDG_CACHE_HOME/torch, else $HOME/.cache/torch.
    let (saved_xdg, saved_home) = (std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"));
    assert_eq!(source::torch_checkpoints_dir(), Some(torch_home.join("hub").join("checkpoints")));
    set("TORCH_HOME", None);
    set("XDG_CACHE_HOME", Some(Path::new("/x/cache")));
    set("HOME", Some(Path::new("/h/me")));
    assert_eq!(source::torch_home(), Some(PathBuf::from("/x/cache/torch")));
    set("XDG_CACHE_HOME", None);
    assert_eq!(source::torch_home(), Some(PathBuf::from("/h/me/.cache/torch")));
    assert_eq!(source::torch_checkpoints_dir(), Some(PathBuf::from("/h/me/.cache/torch/hub/checkpoints")));
    std::env::set_var("TORCH_HOME", "");
    assert_eq!(source::torch_home(), Some(PathBuf::from("/h/me/.cache/torch")), "an empty TORCH_HOME counts as unset");
    // A cache file under the default root is found with TORCH_HOME unset.
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".cache/torch/hub/checkpoints")).unwrap();
    let default_cached = home.join(".cache/torch/hub/checkpoints/vgg19-dcbb9e9d.pth");
    std::fs::write(&default_cached, b"x").unwrap();
    set("TORCH_HOME", None);
    set("HOME", Some(&home));
    assert_eq!(source::resolve(None, 0), ModelSource::TorchCache(default_cached));
    set("XDG_CACHE_HOME", saved_xdg.as_deref().map(Path::new));
    set("HOME", saved_home.as_deref().map(Path::new));
}

// ---- the Caffe convention -----------------------------------------------------------------

#[test]
fn caffe_convention_is_bgr_minus_the_mean_pixel() {
    // One pixel, RGB (10, 20, 30): Caffe's input is BGR, 0..255, minus (103.939, 116.779, 123.68).
    let x = Convention::Caffe.preprocess(&[10, 20, 30]);
    assert_eq!(x, [30.0 - 103.939, 20.0 - 116.779, 10.0 - 123.68]);
    // torchvision's for contrast: RGB, /255, minus mean, over std.
    let t = Convention::Torchvision.preprocess(&[10, 20, 30]);
    assert!((t[0] - (10.0 / 255.0 - 0.485) / 0.229).abs() < 1e-6, "{t:?}");
    // Back to RGB, every value exactly, for both.
    let all: Vec<u8> = (0..=255u8).flat_map(|v| [v, 255 - v, v / 2]).collect();
    for c in [Convention::Caffe, Convention::Torchvision] {
        assert_eq!(c.deprocess(&c.preprocess(&all)), all, "{c:?}");
    }
    // Out-of-range values clamp.
    assert_eq!(Convention::Caffe.deprocess(&[1e4, -1e4, 0.0]), [124, 0, 255], "B, G, R in; R = 0 + 123.68 rounds to 124");
    assert_eq!("caffe".parse::<Convention>().unwrap(), Convention::Caffe);

    // The name fragments that select it, in any case, from any source; others are torchvision's.
    for name in ["vgg19-d01eb7cb.pth", "VGG16-00B39A1B.pth", "my_Caffe_vgg.safetensors", "x/caffe/../vgg-caffe.pth"] {
        for s in [ModelSource::Flag(name.into()), ModelSource::Env(name.into()), ModelSource::TorchCache(name.into())] {
            assert_eq!(s.convention(), Convention::Caffe, "{s:?}");
        }
    }
    for name in ["vgg19-dcbb9e9d.pth", "caffe/vgg19.pth", "d01eb7c.pth"] {
        assert_eq!(ModelSource::Flag(name.into()).convention(), Convention::Torchvision, "{name}: only the file name counts");
    }
}

/// The binary picks the convention from the model's name and, with it, Caffe's default weights
/// (jcjohnson's 5 / 100 / 1e-3); `--preprocess torchvision` overrides both.
#[test]
fn a_caffe_named_model_runs_with_caffe_input_and_weights() {
    let env = CliEnv::new();
    let model = env.path("narrow-caffe.pth");
    std::fs::copy(fixture("narrow_vgg19_zip.pth"), &model).unwrap();
    let m = model.to_str().unwrap();
    let o = env.stylize(&["--model", m, "--num-iterations", "2", "--log-json", "c.jsonl", "--output-image", "c.png"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("(weights: content 5, style 100, tv 0.001)"), "{}", stderr(&o));
    assert_eq!(env.summary("c.jsonl")["convention"], "caffe");
    let o = env.stylize(&["--model", m, "--num-iterations", "2", "--log-json", "t.jsonl", "--output-image", "t.png", "--preprocess", "torchvision"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("(weights: content 1, style 10000, tv 0.00001)"), "{}", stderr(&o));
    assert_eq!(env.summary("t.jsonl")["convention"], "torchvision");
}

// ---- style blend normalisation against PyTorch --------------------------------------------

/// Two style images blended 3 : 1 (tests/fixtures/make_blend_fixture.py, float64 PyTorch): the
/// loss terms and the gradient at eval.png, for max and average pooling. The weights are
/// normalised (30 : 10 and 0.75 : 0.25 give the same numbers), and the ratio matters (1 : 1
/// does not match), so a blend that ignored or mis-normalised the weights fails.
#[test]
fn style_blend_matches_pytorch() {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture("blend_golden.json")).unwrap()).unwrap();
    let bytes = std::fs::read(fixture("blend_golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(json["blend"], serde_json::json!([3.0, 1.0]));
    let (be, vgg) = (CpuBackend::new(), narrow_vgg());
    let tv = Convention::Torchvision;
    let (content, style, x) = (load_png("content.png", tv), load_png("style.png", tv), load_png("eval.png", tv));
    let num = |v: &serde_json::Value| v.as_f64().unwrap();
    for (pooling, p) in [(PoolKind::Max, "max"), (PoolKind::Avg, "avg")] {
        let want = &json[p];
        let grad_ref: Vec<f32> = st.tensor(&format!("grad_{p}")).unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let spec = ObjectiveSpec {
            content_layers: vec!["relu4_2".into()],
            style_layers: ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"].map(String::from).to_vec(),
            content_weight: num(&json["weights"]["content"]) as f32,
            style_weight: num(&json["weights"]["style"]) as f32,
            tv_weight: num(&json["weights"]["tv"]) as f32,
            pooling,
            ..Default::default()
        };
        let eval = |blend: [f32; 2]| {
            let styles = [(style.clone(), blend[0]), (content.clone(), blend[1])];
            let mut obj = Objective::new(&be, &vgg, spec.clone(), &content, &styles).unwrap();
            let mut grad = vec![0.0; x.data.len()];
            (obj.evaluate(&x.data, &mut grad).unwrap(), grad)
        };
        let grad_err = |g: &[f32]| {
            let scale = grad_ref.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
            g.iter().zip(&grad_ref).map(|(a, b)| (*a as f64 - *b as f64).abs()).fold(0.0, f64::max) / scale
        };
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
        for blend in [[3.0, 1.0], [30.0, 10.0], [0.75, 0.25]] {
            let (parts, grad) = eval(blend);
            for (name, got) in [("style", parts.style), ("total", parts.total), ("content", parts.content)] {
                let w = num(&want[name]);
                assert!(rel(got, w) < 1e-4, "{p} {blend:?} {name}: {got} vs PyTorch {w}");
            }
            let err = grad_err(&grad);
            assert!(err < 1e-4, "{p} {blend:?}: gradient error {err:e}");
        }
        // An equal blend is measurably different: the test sees the ratio.
        let (parts, grad) = eval([1.0, 1.0]);
        assert!(rel(parts.style, num(&want["style"])) > 1e-2 && grad_err(&grad) > 1e-3, "{p}: 1:1 blend too close to 3:1");
    }
}

// ---- Adam's step counter and learning rate, end to end --------------------------------------

/// torch.optim.Adam (betas 0.9, 0.999, eps 1e-8), in f64, from the gradients of the same
/// objective at each iterate: `t` counts from 1 (or stays at `stuck_t` when given, to show the
/// test would see a counter that does not advance).
fn reference_adam(obj: &mut Objective<CpuBackend>, x0: &[f32], lr: f64, steps: usize, stuck_t: Option<i32>) -> (Vec<f64>, Vec<f32>) {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let n = x0.len();
    let (mut x, mut m, mut v) = (x0.iter().map(|&a| a as f64).collect::<Vec<_>>(), vec![0.0f64; n], vec![0.0f64; n]);
    let mut losses = Vec::new();
    for t in 1..=steps as i32 {
        let xf: Vec<f32> = x.iter().map(|&a| a as f32).collect();
        let mut g = vec![0.0f32; n];
        losses.push(obj.evaluate(&xf, &mut g).unwrap().total);
        let t = stuck_t.unwrap_or(t);
        for i in 0..n {
            let gi = g[i] as f64;
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let (mh, vh) = (m[i] / (1.0 - b1.powi(t)), v[i] / (1.0 - b2.powi(t)));
            x[i] -= lr * mh / (vh.sqrt() + eps);
        }
    }
    (losses, x.iter().map(|&a| a as f32).collect())
}

#[test]
fn adam_runs_as_torch_optim_adam() {
    let (be, vgg) = (CpuBackend::new(), narrow_vgg());
    let tv = Convention::Torchvision;
    let (content, style) = (load_png("content.png", tv), load_png("style.png", tv));
    let spec = ObjectiveSpec {
        content_layers: vec!["relu2_1".into()],
        style_layers: vec!["relu1_1".into(), "relu2_1".into()],
        content_weight: 1.0,
        style_weight: 1e3,
        tv_weight: 1e-3,
        ..Default::default()
    };
    let (lr, steps) = (0.05f32, 8);
    let job = Job {
        content: content.clone(),
        styles: vec![(style.clone(), 1.0)],
        spec: spec.clone(),
        init: Init::Image(content.data.clone()),
        optimizer: Optimizer::Adam { learning_rate: lr },
        iterations: steps,
        seed: 0,
        snapshot_every: 0,
        snapshot_gate: None,
        bounds: None,
    };
    let mut losses = Vec::new();
    let out = stylize(&be, &vgg, &job, &mut |p, _| {
        losses.push(p.loss.total);
        Ok(())
    })
    .unwrap();
    assert_eq!((out.evaluations, losses.len()), (steps, steps));
    let mut obj = Objective::new(&be, &vgg, spec, &content, &[(style, 1.0)]).unwrap();
    let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let (ref_losses, ref_x) = reference_adam(&mut obj, &content.data, lr as f64, steps, None);
    for (i, (a, b)) in losses.iter().zip(&ref_losses).enumerate() {
        assert!((a - b).abs() <= 1e-5 * b.abs(), "iteration {}: loss {a} vs reference {b}", i + 1);
    }
    // x moved by up to lr per step; the f32 run stays within 1e-4 of the f64 one.
    let err = diff(&out.image, &ref_x);
    assert!(err < 1e-4, "final image differs from torch.optim.Adam's by {err}");
    // What the test would see: a counter stuck at 1, or another learning rate.
    let (_, stuck) = reference_adam(&mut obj, &content.data, lr as f64, steps, Some(1));
    let (_, other_lr) = reference_adam(&mut obj, &content.data, lr as f64 * 1.1, steps, None);
    assert!(diff(&out.image, &stuck) > 1e-2 && diff(&out.image, &other_lr) > 1e-2, "the reference does not tell these apart");
}

// ---- the --log-json keys, as docs/options.md shows them -----------------------------------

/// The keys of the JSON object on the line of docs/options.md's `--log-json` section that starts
/// with `` `{"<first>": ``.
fn documented_keys(first: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/options.md")).unwrap();
    let start = doc.find("\n### `--log-json`\n").expect("docs/options.md has a --log-json section");
    let section = &doc[start + 1..];
    let end = section[1..].find("\n#").map_or(section.len(), |i| i + 1);
    let section = &section[..end];
    let line = section.lines().find(|l| l.starts_with(&format!("`{{\"{first}\":"))).unwrap_or_else(|| panic!("no line for {first} in docs/options.md's --log-json section"));
    let json = line.trim_start_matches('`').split('`').next().unwrap();
    // The example elides values with …: keep the keys, in order (top level and "final").
    keys_in_order(json)
}

/// The keys of a JSON text, nested objects' keys where they stand, in the text's order (the
/// program's lines are compared with the documented ones this way: a parsed `Value` sorts its keys).
fn keys_in_order(json: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut rest = json;
    while let Some(i) = rest.find('"') {
        let after = &rest[i + 1..];
        let j = after.find('"').unwrap();
        let word = &after[..j];
        rest = &after[j + 1..];
        if rest.starts_with(':') {
            keys.push(word.to_string());
        }
    }
    keys
}

/// The keys of a JSON object, nested objects' keys as "outer.inner", in order.
fn keys_of(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    for (k, val) in v.as_object().unwrap() {
        out.push(format!("{prefix}{k}"));
        if val.is_object() {
            keys_of(val, &format!("{prefix}{k}."), out);
        }
    }
}

#[test]
fn log_json_lines_have_exactly_the_documented_keys() {
    let env = CliEnv::new();
    let o = env.stylize(&["--num-iterations", "2", "--log-json", "log.jsonl", "--output-image", "out.png"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(env.path("log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    // docs/options.md: the iteration line's keys, then the summary's (its "final" object's keys
    // are flattened here as final.total etc.; the docs list them in the same object).
    let iter_keys = sorted(documented_keys("iteration"));
    let mut summary_keys = documented_keys("summary");
    for object in ["final", "final_optimizer"] {
        let at = summary_keys.iter().position(|k| k == object).unwrap_or_else(|| panic!("the documented summary lacks {object}"));
        for (i, k) in ["total", "content", "style", "tv"].iter().enumerate() {
            assert_eq!(summary_keys.get(at + 1 + i).map(String::as_str), Some(*k), "the documented summary: {object}.{k}");
            summary_keys[at + 1 + i] = format!("{object}.{k}");
        }
    }
    let summary_keys = sorted(summary_keys);
    for (i, line) in lines[..2].iter().enumerate() {
        let mut k = Vec::new();
        keys_of(line, "", &mut k);
        assert_eq!(sorted(k), iter_keys, "iteration line {}", i + 1);
        assert_eq!(line["iteration"], i + 1);
        assert_eq!(line["evaluations"], i + 1);
        for key in ["total", "content", "style", "tv", "elapsed_ms"] {
            assert!(line[key].as_f64().is_some_and(f64::is_finite), "{key} in {line}");
        }
    }
    let s = &lines[2];
    let mut k = Vec::new();
    keys_of(s, "", &mut k);
    assert_eq!(sorted(k), summary_keys, "summary line {s}");
    // And in the documented order.
    let raw: Vec<&str> = text.lines().collect();
    assert_eq!(keys_in_order(raw[0]), documented_keys("iteration"), "the iteration line's key order: {}", raw[0]);
    assert_eq!(keys_in_order(raw[2]), documented_keys("summary"), "the summary line's key order: {}", raw[2]);
    // Each value's type and meaning.
    assert_eq!(s["summary"], true);
    assert!(s["device"].as_str().unwrap().starts_with("cpu ("), "{s}");
    assert!(s["model"].as_str().unwrap().contains("embedded"), "{s}");
    assert_eq!(s["convention"], "torchvision");
    assert_eq!((s["width"].as_u64(), s["height"].as_u64()), (Some(32), Some(24)));
    assert_eq!(s["evaluations"], 2);
    assert!(s["ms_per_evaluation"].as_f64().unwrap() > 0.0 && s["gflop_per_evaluation"].as_f64().unwrap() > 0.0, "{s}");
    assert_eq!(s["final_optimizer"]["total"], lines[1]["total"], "the optimiser's final loss is the last evaluation's");
    assert!(s["final"]["total"].as_f64().is_some_and(f64::is_finite), "{s}");
    assert!(s["output"].as_str().unwrap().ends_with("out.png"), "{s}");
    // VmHWM on Linux, null elsewhere.
    if cfg!(target_os = "linux") {
        assert!(s["peak_rss_bytes"].as_u64().unwrap() > 1 << 20, "{s}");
    } else {
        assert!(s["peak_rss_bytes"].is_null(), "{s}");
    }
}

// ---- Adam's default learning rate follows the convention -----------------------------------

/// Adam with no --learning-rate descends in both conventions. One default of 10 (jcjohnson's,
/// for Caffe's 0..255 inputs) threw torchvision inputs, ~1/58 of that scale, into noise: the
/// loss went from 2.7 to 27,753 in one step.
#[test]
fn adam_with_its_default_learning_rate_descends_in_both_conventions() {
    for convention in ["torchvision", "caffe"] {
        let env = CliEnv::new();
        let o = env.stylize(&["--optimizer", "adam", "--preprocess", convention, "--num-iterations", "20", "--log-json", "log.jsonl", "--output-image", "out.png"]);
        assert!(o.status.success(), "{convention}: {}", stderr(&o));
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(env.path("log.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let total = |k: usize| lines[k]["total"].as_f64().unwrap();
        let (first, last) = (total(0), total(19));
        assert!(last < first, "{convention}: the loss went from {first} to {last} in 20 default Adam steps");
        for k in 1..20 {
            assert!(total(k) < 10.0 * first, "{convention}: iteration {}: {} from {first}", k + 1, total(k));
        }
    }
}

// ---- the final loss is the saved image's ------------------------------------------------------

/// The final loss reported (the line, `final` of --log-json, the plot's last point) is the
/// objective at the PNG written: a second run that starts from that PNG measures exactly it at
/// its first evaluation. The optimiser's float loss is reported beside it where they differ.
/// Unbounded, Caffe inputs with a high learning rate push values far outside the pixel range,
/// so the two differ by far more than rounding (issue 20: saving clamps); bounded (the default)
/// the same run stays inside it.
#[test]
fn the_final_loss_is_that_of_the_image_written() {
    let env = CliEnv::new();
    let far = ["--optimizer", "adam", "--learning-rate", "100", "--preprocess", "caffe"];
    for (case, iterations, extra) in [
        ("lbfgs", "6", &[][..]),
        ("lbfgs, unbounded", "6", &["--unbounded"][..]),
        ("adam pushed far outside the pixel range, bounded", "3", &far[..]),
        ("adam far outside the pixel range, unbounded", "3", &[&far[..], &["--unbounded"]].concat()[..]),
    ] {
        let o = env.stylize(&[extra, &["--num-iterations", iterations, "--log-json", "log.jsonl", "--output-image", "out.png"]].concat());
        assert!(o.status.success(), "{case}: {}", stderr(&o));
        let log = |name: &str| -> Vec<serde_json::Value> { std::fs::read_to_string(env.path(name)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
        let summary = log("log.jsonl").pop().unwrap();
        let (saved, float) = (summary["final"]["total"].as_f64().unwrap(), summary["final_optimizer"]["total"].as_f64().unwrap());
        // The written PNG as the starting image of a second run: its first evaluation is at it.
        let again = env.stylize(&[extra, &["--num-iterations", "1", "--init", "image", "--init-image", "out.png", "--log-json", "again.jsonl", "--output-image", "again.png"]].concat());
        assert!(again.status.success(), "{case}: {}", stderr(&again));
        assert_eq!(log("again.jsonl")[0]["total"].as_f64().unwrap(), saved, "{case}: the reported final loss is not the written image's");
        let line = stderr(&o).lines().find(|l| l.starts_with("wrote out.png")).unwrap().to_string();
        assert!(line.contains(&format!("final loss {saved:.4e}")) && line.contains("of the saved image"), "{case}: {line}");
        if (saved - float).abs() > 1e-4 * float.abs() {
            assert!(line.contains(&format!("the optimiser's float image had {float:.4e}")), "{case}: {line}");
        }
        if case.starts_with("adam far") {
            assert!(saved > 1.01 * float, "{case}: clamping should raise the loss well past rounding ({saved} vs {float})");
        }
    }
}

// ---- --save-iter naming at and near the last iteration -------------------------------------

/// Snapshots are `<stem>_<iteration>.<ext>` beside the output, every `--save-iter` iterations,
/// never at the last iteration (that image is the output itself).
#[test]
fn save_iter_names_at_and_near_the_last_iteration() {
    for (every, want) in [(1, &["out_1.png", "out_2.png", "out_3.png", "out_4.png"][..]), (2, &["out_2.png", "out_4.png"]), (4, &["out_4.png"]), (5, &[]), (6, &[])] {
        let env = CliEnv::new();
        let o = env.stylize(&["--num-iterations", "5", "--save-iter", &every.to_string(), "--output-image", "out.png"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let mut want: Vec<&str> = want.to_vec();
        want.push("out.png");
        want.sort();
        // The first snapshot is announced, once.
        let announced = stderr(&o).lines().filter(|l| l.contains("a snapshot every")).map(str::to_string).collect::<Vec<_>>();
        match want.iter().find(|n| **n != "out.png") {
            Some(first) => assert!(announced.len() == 1 && announced[0].starts_with("wrote") && announced[0].contains(first), "--save-iter {every}: {announced:?}"),
            None => assert!(announced.is_empty(), "--save-iter {every}: {announced:?}"),
        }
        assert_eq!(env.outputs(), want, "--save-iter {every} over 5 iterations");
    }
    // Other extensions and dotted stems keep theirs.
    assert_eq!(image_io::iteration_path(Path::new("a/b.v2.jpg"), 300), Path::new("a/b.v2_300.jpg"));
    assert_eq!(image_io::iteration_path(Path::new("out.png"), 1), Path::new("out_1.png"));
}

// ---- an existing output surviving a failed write ------------------------------------------

/// Writes go to a temp file beside the target and are renamed over it, so a write that fails
/// leaves the old file as it was. Made to fail by a directory squatting on the temp file's
/// name (`image_io::temp_path_for`: the same process id, so in-process), which works as root
/// too, where permissions would not stop the write.
#[test]
fn a_failed_write_leaves_the_existing_output_intact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.png");
    let old = image_io::Rgb8 { w: 3, h: 2, data: (0..18).collect() };
    image_io::save(&old, &out).unwrap();
    let old_bytes = std::fs::read(&out).unwrap();
    let tmp = image_io::temp_path_for(&out);
    std::fs::create_dir(&tmp).unwrap();
    std::fs::write(tmp.join("keep"), b"").unwrap();
    let new = image_io::Rgb8 { w: 4, h: 4, data: vec![200; 48] };
    let err = image_io::save(&new, &out).unwrap_err();
    assert!(format!("{err:#}").contains("cannot write"), "{err:#}");
    assert_eq!(std::fs::read(&out).unwrap(), old_bytes, "the old output changed");
    assert_eq!(image_io::load(&out).unwrap().data, old.data);
    // The same through save_with_text (the final output's path) and write_atomic.
    assert!(image_io::save_with_text(&new, &out, &[("k", "v")]).is_err());
    assert!(image_io::write_atomic(&out, b"garbage").is_err());
    assert_eq!(std::fs::read(&out).unwrap(), old_bytes);
    // Nothing else was left beside it; once the squatter is gone, the write goes through.
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(names(dir.path()).len(), 2, "{:?}", names(dir.path()));
    std::fs::remove_dir_all(&tmp).unwrap();
    image_io::save(&new, &out).unwrap();
    assert_eq!(image_io::load(&out).unwrap().data, new.data);
    assert_eq!(names(dir.path()), ["out.png"]);
}

// ---- the binary -----------------------------------------------------------------------------

struct CliEnv {
    dir: tempfile::TempDir,
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

impl CliEnv {
    fn new() -> CliEnv {
        let env = CliEnv { dir: tempfile::tempdir().unwrap() };
        for (name, w, h) in [("content.png", 32, 24), ("style.png", 20, 28)] {
            image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, ((x * y) % 251) as u8])).save(env.path(name)).unwrap();
        }
        env
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// A tiny CPU run of the embedded model (the environment cleared of model variables);
    /// `extra` replaces the default of any option it names.
    fn stylize(&self, extra: &[&str]) -> Output {
        let defaults = [
            ("--content-image", "content.png"),
            ("--style-image", "style.png"),
            ("--image-size", "32"),
            ("--num-iterations", "5"),
            ("--device", "cpu"),
            ("--print-iter", "0"),
            ("--content-layers", "relu2_2"),
            ("--style-layers", "relu1_1,relu2_1,relu3_1"),
        ];
        let mut c = Command::new(BIN);
        c.current_dir(self.dir.path()).env_remove("NEURAL_STYLE_MODEL").env_remove("NEURAL_STYLE_MODEL_URL").env("TORCH_HOME", self.path("torch-home"));
        for (k, v) in defaults {
            if !extra.contains(&k) {
                c.args([k, v]);
            }
        }
        c.args(extra).output().unwrap()
    }
    fn summary(&self, log: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(self.path(log)).unwrap();
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    }
    /// Files the run wrote (everything but the inputs).
    fn outputs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !["content.png", "style.png", "torch-home"].contains(&n.as_str()))
            .collect();
        v.sort();
        v
    }
}

// ---- README.md and docs/: links and commands --------------------------------------------------

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, every docs/*.md and PERFORMANCE.md, as paths relative to the repository root.
fn documentation_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md"), PathBuf::from("PERFORMANCE.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo_root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| p.strip_prefix(repo_root()).unwrap().to_path_buf())
        .collect();
    docs.sort();
    assert!(docs.len() >= 6, "docs/ has {docs:?}");
    files.extend(docs);
    files
}

/// The lines of a markdown text outside fenced code blocks, with their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// GitHub's anchor for a heading: lowercase, punctuation other than `-` and `_` dropped, spaces
/// as `-` ("## Batches: `neural-style batch`" is `#batches-neural-style-batch`).
fn github_slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor of a markdown text's headings (a repeated heading's gets `-1`, `-2`, ..., as on
/// GitHub).
fn anchors(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.len() - line.trim_start_matches('#').len();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            let slug = github_slug(&line[hashes..]);
            let mut anchor = slug.clone();
            let mut n = 0;
            while out.contains(&anchor) {
                n += 1;
                anchor = format!("{slug}-{n}");
            }
            out.push(anchor);
        }
    }
    out
}

/// The targets of a markdown text's inline links and images, `[..](target)` and `![..](target)`,
/// outside code blocks and code spans, with their line numbers.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (number, line) in prose_lines(text) {
        // Drop code spans (a link's text may hold one; its target never does).
        let mut prose = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                prose.push_str(part);
            }
        }
        let mut rest = prose.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let end = after.find(')').unwrap_or_else(|| panic!("line {number}: a link without its ')': {line}"));
            let target = after[..end].split_whitespace().next().unwrap_or("").trim_start_matches('<').trim_end_matches('>');
            out.push((number, target.to_string()));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn github_slugs_and_link_parsing_follow_the_rules_the_links_rely_on() {
    assert_eq!(github_slug(" Batches: `neural-style batch`"), "batches-neural-style-batch");
    assert_eq!(github_slug(" `--plot`"), "--plot");
    assert_eq!(github_slug(" What happens when ..."), "what-happens-when-");
    assert_eq!(github_slug(" The paper's figures: `sheet` and `grid`"), "the-papers-figures-sheet-and-grid");
    assert_eq!(github_slug(" Bounded optimisation (the default) and `--unbounded`"), "bounded-optimisation-the-default-and---unbounded");
    assert_eq!(anchors("# A\n\n## A\n```sh\n# not a heading\n```\n#not one either\n### `--x`\n"), ["a", "a-1", "--x"]);
    assert_eq!(
        link_targets("see [a](x.md#y) and ![b](../i.png \"t\"), `[c](code)`\n```\n[d](fenced)\n```\n[`e`](e.sh)"),
        [(1, "x.md#y".to_string()), (1, "../i.png".to_string()), (5, "e.sh".to_string())]
    );
}

#[test]
fn every_link_in_readme_and_docs_points_at_something() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in documentation_files() {
        let text = std::fs::read_to_string(repo_root().join(&file)).unwrap();
        let dir = file.parent().unwrap();
        for (line, target) in link_targets(&text) {
            if target.starts_with("http://") || target.starts_with("https://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let linked = if path.is_empty() { file.clone() } else { dir.join(path) };
            let at = format!("{}:{line}: ({target})", file.display());
            if path.is_empty() && anchor.is_none() {
                broken.push(format!("{at}: an empty link"));
                continue;
            }
            let full = repo_root().join(&linked);
            if !full.exists() {
                broken.push(format!("{at}: {} does not exist", linked.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                if full.extension().is_none_or(|e| e != "md") {
                    broken.push(format!("{at}: an anchor on a file that is not markdown"));
                } else if !anchors(&std::fs::read_to_string(&full).unwrap()).iter().any(|a| a == anchor) {
                    broken.push(format!("{at}: {} has no heading whose anchor is #{anchor}", linked.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{} broken link(s):\n{}", broken.len(), broken.join("\n"));
    assert!(checked >= 30, "only {checked} relative links found: is the link parser broken?");
}

/// The commands in README's ```sh blocks, continuation lines joined, with the number of the
/// block each is in (0 for the first).
fn readme_commands() -> Vec<(usize, String)> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut block: Option<usize> = None;
    let mut blocks = 0;
    let mut pending = String::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            if block.is_some() {
                assert!(pending.is_empty(), "README: a sh block ends on a continued line");
                block = None;
            } else if line.trim() == "```sh" {
                block = Some(blocks);
                blocks += 1;
            }
            continue;
        }
        let Some(b) = block else { continue };
        let (part, continued) = match line.trim_end().strip_suffix('\\') {
            Some(p) => (p, true),
            None => (line, false),
        };
        pending.push_str(part.trim());
        pending.push(' ');
        if !continued {
            let command = std::mem::take(&mut pending).trim().to_string();
            if !command.is_empty() && !command.starts_with('#') {
                out.push((b, command));
            }
        }
    }
    out
}

/// A command that downloads: checked against its `--help` only.
fn downloads(args: &[&str]) -> bool {
    args.first() == Some(&"fetch-model")
}

/// What a test runs for `--image-size` and `--num-iterations` beyond these.
const TEST_SIZE: (u64, u64) = (64, 3);

#[test]
fn every_command_in_readme_runs() {
    let commands = readme_commands();
    let scratch = tempfile::tempdir().unwrap();
    let (mut ran, mut helped) = (0, 0);
    for (block, command) in &commands {
        for quote in ['\'', '"', '$', '`', '*', '|', '>', '<', ';', '&'] {
            assert!(!command.contains(quote), "README command {command:?}: {quote} needs a shell; keep README's commands plain words");
        }
        let rest = if let Some(rest) = command.strip_prefix("neural-style ") {
            rest
        } else if let Some(rest) = command.strip_prefix("cargo run --release -- ") {
            // The first command (128 px, 100 iterations) is run by the figure test in tests/it
            // (it also checks its output against examples/), so it is not run twice here.
            if *block == 0 {
                continue;
            }
            rest
        } else {
            // The test command: CI runs it (.ci/run).
            assert_eq!(*command, "cargo test", "README command {command:?} is neither this program nor the test command: give it a check here");
            continue;
        };
        let args: Vec<&str> = rest.split_whitespace().collect();
        let mut c = Command::new(BIN);
        c.current_dir(repo_root())
            .env_remove("NEURAL_STYLE_MODEL")
            .env_remove("NEURAL_STYLE_MODEL_URL")
            .env("TORCH_HOME", scratch.path().join("torch-home"));
        if downloads(&args) {
            let o = c.args(&args).arg("--help").output().unwrap();
            assert!(o.status.success(), "README command {command:?} with --help: {}", stderr(&o));
            let help = String::from_utf8_lossy(&o.stdout);
            for flag in args.iter().filter(|a| a.starts_with("--")) {
                let flag = flag.split('=').next().unwrap();
                assert!(help.contains(flag), "README command {command:?}: {flag} is not in its --help:\n{help}");
            }
            helped += 1;
        } else {
            let out_dir = scratch.path().join(format!("run-{ran}"));
            std::fs::create_dir(&out_dir).unwrap();
            let mut redirected: Vec<PathBuf> = Vec::new();
            let mut full: Vec<std::ffi::OsString> = Vec::new();
            let mut redirect_next = false;
            let mut shrink_next: Option<u64> = None;
            for a in &args {
                if let Some(max) = shrink_next.take() {
                    // A long run at a tiny size: its flags, inputs and outputs are what is checked.
                    let v: u64 = a.parse().unwrap_or_else(|_| panic!("README command {command:?}: {a} is not a number"));
                    full.push(v.min(max).to_string().into());
                } else if redirect_next {
                    let to = out_dir.join(Path::new(a).file_name().unwrap_or_else(|| panic!("README command {command:?}: {a} names no file")));
                    full.push(to.clone().into());
                    redirected.push(to);
                    redirect_next = false;
                } else {
                    assert!(!a.contains('='), "README command {command:?}: write {a} as two words");
                    redirect_next = matches!(*a, "--output-image" | "--output" | "-o" | "--dest" | "--log-json" | "--plot" | "--out-dir");
                    shrink_next = match *a {
                        "--image-size" => Some(TEST_SIZE.0),
                        "--num-iterations" => Some(TEST_SIZE.1),
                        _ => None,
                    };
                    full.push(a.into());
                }
            }
            if !args.contains(&"--num-iterations") && args.first().is_some_and(|a| a.starts_with("--")) {
                // A stylise command on the default 1000 iterations: a few are enough here.
                full.extend(["--num-iterations".into(), TEST_SIZE.1.to_string().into()]);
            }
            let o = c.args(&full).output().unwrap();
            assert!(o.status.success(), "README command {command:?} (outputs in {}): {}", out_dir.display(), stderr(&o));
            for path in redirected {
                assert!(path.exists(), "README command {command:?} did not write {}", path.display());
            }
            ran += 1;
        }
    }
    // The README's commands beside the first: fetch-model and a real-weights run, at least.
    assert!(ran + helped >= 2, "README's sh blocks hold {commands:?}: too few commands of this program");
}
