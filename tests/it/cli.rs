//! End-to-end tests of the `neural-style` binary: tiny images, a few iterations, the embedded
//! model (the environment is cleared of model variables so a user's cache cannot leak in).

use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_neural-style");
/// Layers that exist in VGG-19 and survive a 16-pixel image (two poolings before relu3_1).
const FAST: [&str; 4] = ["--content-layers", "relu2_2", "--style-layers", "relu1_1,relu2_1,relu3_1"];

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env { dir: tempfile::tempdir().unwrap() }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(self.dir.path())
            .env_remove("NEURAL_STYLE_MODEL")
            .env_remove("NEURAL_STYLE_MODEL_URL")
            .env("TORCH_HOME", self.path("torch-home"))
            // Loopback requests must not go through a proxy.
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy");
        c
    }
    /// Writes a w x h RGB PNG with some structure.
    fn png(&self, name: &str, w: u32, h: u32) -> PathBuf {
        let p = self.path(name);
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, ((x * y) % 251) as u8]))
            .save(&p)
            .unwrap();
        p
    }
    /// Runs a tiny stylisation; `extra` replaces the default of any option it names.
    fn stylize(&self, extra: &[&str]) -> Output {
        let content = self.png("content.png", 32, 24);
        let style = self.png("style.png", 20, 28);
        let defaults = [
            ("--content-image", content.to_str().unwrap()),
            ("--style-image", style.to_str().unwrap()),
            ("--image-size", "32"),
            ("--num-iterations", "5"),
            ("--device", "cpu"),
            ("--print-iter", "1"),
            (FAST[0], FAST[1]),
            (FAST[2], FAST[3]),
        ];
        let mut c = self.cmd();
        for (k, v) in defaults {
            if !extra.contains(&k) {
                c.args([k, v]);
            }
        }
        c.args(extra);
        c.output().unwrap()
    }
    /// Files in the temp dir other than the inputs the test wrote.
    fn outputs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !["content.png", "style.png", "gray.png", "corrupt.png", "model.pth", "torch-home", "frames"].contains(&n.as_str()))
            .collect();
        v.sort();
        v
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Non-zero exit, a single `error:` line on stderr (other lines may be notes), and no output.
fn assert_user_error(env: &Env, o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success; stderr:\n{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got:\n{err}");
    assert!(errors[0].to_lowercase().contains(&needle.to_lowercase()), "error line {:?} lacks {needle:?}", errors[0]);
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(env.outputs().is_empty(), "files were written: {:?}", env.outputs());
}

#[test]
fn stylizes_tiny_images_and_logs_json() {
    let env = Env::new();
    let o = env.stylize(&["--output-image", "out.png", "--log-json", "log.jsonl", "--save-iter", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = image::open(env.path("out.png")).unwrap();
    assert_eq!((out.width(), out.height()), (32, 24));
    // Snapshots at 2 and 4 (not at the last iteration, which is the output itself).
    assert_eq!(env.outputs(), ["log.jsonl", "out.png", "out_2.png", "out_4.png"]);
    for s in ["out_2.png", "out_4.png"] {
        let img = image::open(env.path(s)).unwrap();
        assert_eq!((img.width(), img.height()), (32, 24));
    }
    let log = std::fs::read_to_string(env.path("log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (iters, summary) = lines.split_at(lines.len() - 1);
    assert!(!iters.is_empty() && iters.len() <= 5);
    for (k, it) in iters.iter().enumerate() {
        assert_eq!(it["iteration"], k + 1);
        for key in ["evaluations", "total", "content", "style", "tv", "elapsed_ms"] {
            assert!(it[key].is_number(), "{key} missing in {it}");
        }
        let parts = it["content"].as_f64().unwrap() + it["style"].as_f64().unwrap() + it["tv"].as_f64().unwrap();
        assert!((parts - it["total"].as_f64().unwrap()).abs() <= 1e-9 * parts.abs().max(1.0));
    }
    let s = &summary[0];
    assert_eq!(s["summary"], true);
    assert!(s["ms_per_evaluation"].as_f64().unwrap() > 0.0);
    assert!(s["device"].as_str().unwrap().starts_with("cpu"));
    assert!(s["model"].as_str().unwrap().contains("embedded"));
    assert_eq!(s["evaluations"].as_u64().unwrap() as usize, iters.len());
    for key in ["total", "content", "style", "tv"] {
        assert!(s["final"][key].is_number());
    }
    // The loss went down.
    assert!(iters.last().unwrap()["total"].as_f64() < iters[0]["total"].as_f64());
    // Plain progress lines, since stderr is not a terminal; and the embedded-model note.
    let err = stderr(&o);
    assert_eq!(progress_lines(&err), [1, 2, 3, 4, 5], "--print-iter 1: {err}");
    assert!(err.contains("fetch-model"), "{err}");
    // Every N-th iteration and the last; none with 0.
    let o = env.stylize(&["--output-image", "out2.png", "--save-iter", "0", "--print-iter", "2"]);
    assert_eq!(progress_lines(&stderr(&o)), [2, 4, 5], "--print-iter 2: {}", stderr(&o));
    let o = env.stylize(&["--output-image", "out3.png", "--save-iter", "0", "--print-iter", "0"]);
    assert_eq!(progress_lines(&stderr(&o)), Vec::<usize>::new(), "--print-iter 0: {}", stderr(&o));
}

/// The iteration numbers of the plain progress lines "iteration K / N: loss ... (content ..., style ..., tv ...), S s".
fn progress_lines(err: &str) -> Vec<usize> {
    err.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("iteration ")?;
            let (k, rest) = rest.split_once(" / ")?;
            let (_, rest) = rest.split_once(": loss ")?;
            (rest.contains("(content ") && rest.contains(", style ") && rest.contains(", tv ") && rest.ends_with(" s")).then(|| k.parse().ok())?
        })
        .collect()
}

#[test]
fn adam_random_init_jpeg_output_and_two_styles() {
    let env = Env::new();
    let style2 = env.png("style2.png", 30, 30);
    let content = env.png("content.png", 32, 24);
    let style = env.png("style.png", 20, 28);
    let styles = format!("{},{}", style.display(), style2.display());
    let o = env
        .cmd()
        .args(["--content-image", content.to_str().unwrap(), "--style-image", &styles, "--style-blend-weights", "3,1"])
        .args(["--image-size", "24", "--num-iterations", "3", "--device", "cpu", "--save-iter", "0"])
        .args(["--optimizer", "adam", "--learning-rate", "1", "--init", "random", "--pooling", "avg", "--output-image", "r.jpg"])
        .args(FAST)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(env.path("r.jpg")).unwrap();
    assert_eq!((img.width(), img.height()), (24, 18));
}

#[test]
fn grayscale_with_alpha_input_is_accepted() {
    let env = Env::new();
    let gray = env.path("gray.png");
    image::GrayAlphaImage::from_fn(20, 20, |x, y| image::LumaA([(x * 12) as u8, (y * 12) as u8])).save(&gray).unwrap();
    let o = env.stylize(&["--style-image", gray.to_str().unwrap(), "--output-image", "g.png", "--save-iter", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(env.path("g.png")).unwrap();
    assert_eq!((img.width(), img.height()), (32, 24));
}

#[test]
fn bad_numbers_are_rejected_before_any_work() {
    let cases: &[(&[&str], &str)] = &[
        (&["--style-weight", "-1"], "--style-weight"),
        (&["--content-weight", "nan"], "--content-weight"),
        (&["--tv-weight", "-0.5"], "--tv-weight"),
        (&["--num-iterations", "0"], "--num-iterations"),
        (&["--image-size", "0"], "--image-size"),
        (&["--image-size", "-3"], "--image-size"),
        (&["--style-blend-weights", "1,2"], "--style-blend-weights"),
        (&["--style-blend-weights", "-1"], "--style-blend-weights"),
        (&["--learning-rate", "0"], "--learning-rate"),
        (&["--lbfgs-num-correction", "0"], "--lbfgs-num-correction"),
        (&["--save-iter", "-1"], "--save-iter"),
        (&["--num-iterations", "many"], "--num-iterations"),
        (&["--optimizer", "sgd"], "--optimizer"),
        (&["--output-image", "out.gif"], ".gif"),
        (&["--output-image", "no/such/dir/out.png"], "does not exist"),
        (&["--style-layers", "relu9_9"], "relu9_9"),
        (&["--content-layers", "conv1_1"], "conv1_1"),
        (&["--content-layers", "", "--style-layers", ""], "no content or style layers"),
        (&["--init", "random", "--init-image", "content.png"], "--init-image"),
    ];
    for (args, needle) in cases {
        let env = Env::new();
        let o = env.stylize(args);
        assert_user_error(&env, &o, needle);
    }
}

#[test]
fn bad_images_are_rejected() {
    let env = Env::new();
    std::fs::write(env.path("corrupt.png"), b"\x89PNG\r\n\x1a\n not really a png").unwrap();
    for (args, needle) in [
        (vec!["--content-image", "missing.png"], "missing.png"),
        (vec!["--style-image", "missing.png"], "missing.png"),
        (vec!["--style-image", "corrupt.png"], "corrupt.png"),
        (vec!["--init-image", "corrupt.png"], "corrupt.png"),
    ] {
        let mut a = args.clone();
        a.extend(["--output-image", "o.png"]);
        let o = env.stylize(&a);
        assert_user_error(&env, &o, needle);
    }
    // A directory is unreadable as an image.
    let o = env.stylize(&["--content-image", env.dir.path().to_str().unwrap()]);
    assert_user_error(&env, &o, "error");
}

#[test]
fn images_too_small_for_the_layers_are_rejected() {
    let env = Env::new();
    // relu5_1 sits behind four poolings: it needs 16 pixels per side.
    let o = env.stylize(&["--image-size", "8", "--style-layers", "relu5_1"]);
    assert_user_error(&env, &o, "too small");
}

#[test]
fn bad_model_files_are_rejected() {
    let env = Env::new();
    let o = env.stylize(&["--model", "no-such-model.pth"]);
    assert_user_error(&env, &o, "no-such-model.pth");
    // Truncated/garbage file: whatever the reader says, it is one error line.
    std::fs::write(env.path("model.pth"), b"PK\x03\x04 truncated").unwrap();
    let o = env.stylize(&["--model", "model.pth"]);
    assert_user_error(&env, &o, "model.pth");
    // Through the environment variable too.
    let content = env.png("content.png", 32, 24);
    let o = env
        .cmd()
        .env("NEURAL_STYLE_MODEL", env.path("nope.safetensors"))
        .args(["--content-image", content.to_str().unwrap(), "--style-image", content.to_str().unwrap(), "--device", "cpu"])
        .output()
        .unwrap();
    assert_user_error(&env, &o, "NEURAL_STYLE_MODEL");
}

#[test]
fn missing_required_options_and_cuda_without_gpu() {
    let env = Env::new();
    let o = env.cmd().args(["--style-image", "x.png"]).output().unwrap();
    assert_user_error(&env, &o, "--content-image");
    assert_eq!(o.status.code(), Some(2));
    // Without a usable GPU, --device cuda is an error (where a GPU is found, the run succeeds).
    let o = env.stylize(&["--device", "cuda", "--output-image", "o.png"]);
    if !o.status.success() {
        assert_user_error(&env, &o, "cuda");
    }
}

#[test]
fn bench_reports_timings_and_the_flop_count_as_json() {
    let env = Env::new();
    let o = env.cmd().args(["bench", "--sizes", "32", "--evals", "2", "--warmup", "1", "--device", "cpu", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let line = String::from_utf8(o.stdout).unwrap();
    let r: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    // VGG-19 to relu5_1 at 32x32: 2 x forward conv FLOPs, computed here from the layer widths.
    let widths = [64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512];
    let (mut side, mut c_in, mut fwd) = (32u64, 3u64, 0u64);
    for w in widths {
        if w == 0 {
            side /= 2;
        } else {
            fwd += 2 * side * side * w * 9 * c_in;
            c_in = w;
        }
    }
    assert_eq!(r["flops_per_eval"].as_u64(), Some(2 * fwd));
    assert_eq!(r["times_ms"].as_array().map(|t| t.len()), Some(2));
    let median = r["median_ms"].as_f64().unwrap();
    assert!(median > 0.0 && r["min_ms"].as_f64().unwrap() <= median);
    assert!(r["final_loss"].as_f64().unwrap().is_finite());
}

#[test]
fn make_examples_writes_both_images() {
    let env = Env::new();
    let o = env.cmd().args(["make-examples", "--out-dir", "ex", "--width", "48"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let c = image::open(env.path("ex/content.png")).unwrap();
    let s = image::open(env.path("ex/style.png")).unwrap();
    assert_eq!((c.width(), c.height(), s.width(), s.height()), (48, 32, 48, 48));
}

/// `make-examples --figure R --figure-output F`: content | style | R at R's height, written to F;
/// an F that is one of the figure's inputs, in a missing folder, or given without --figure is
/// refused, and nothing is written.
#[test]
fn make_examples_composes_a_figure_where_asked_and_never_over_an_input() {
    let env = Env::new();
    let o = env.cmd().args(["make-examples", "--out-dir", "ex", "--width", "48"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    env.png("r.png", 30, 20);
    let o = env.cmd().args(["make-examples", "--out-dir", "ex", "--figure", "r.png", "--figure-output", "fig.png"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let fig = image::open(env.path("fig.png")).unwrap();
    // content 48x32 and style 48x48 scaled to height 20 (30 and 20 wide), the result 30, two 4-px gaps.
    assert_eq!((fig.width(), fig.height()), (30 + 4 + 20 + 4 + 30, 20));
    assert!(!env.path("ex/figure.png").exists());
    let before: Vec<Vec<u8>> = ["r.png", "ex/content.png", "ex/style.png"].iter().map(|p| std::fs::read(env.path(p)).unwrap()).collect();
    for (output, needle) in [("r.png", "must not overwrite the --figure file"), ("ex/content.png", "must not overwrite the content file"), ("ex/./style.png", "must not overwrite the style file"), ("missing/f.png", "folder does not exist")] {
        let o = env.cmd().args(["make-examples", "--out-dir", "ex", "--figure", "r.png", "--figure-output", output]).output().unwrap();
        assert!(!o.status.success() && stderr(&o).contains(needle), "--figure-output {output}: {}", stderr(&o));
    }
    let o = env.cmd().args(["make-examples", "--out-dir", "ex", "--figure-output", "f.png"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let after: Vec<Vec<u8>> = ["r.png", "ex/content.png", "ex/style.png"].iter().map(|p| std::fs::read(env.path(p)).unwrap()).collect();
    assert!(before == after, "an input changed");
    assert!(!env.path("missing").exists() && !env.path("f.png").exists());
}

/// Serves `body` once per connection for `connections` requests on a loopback port; returns the port.
fn serve(body: Vec<u8>, connections: usize) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                line.clear();
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&body).unwrap();
        }
    });
    (port, handle)
}

fn fixture_bytes() -> Vec<u8> {
    (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
}

fn sha_prefix(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().take(4).map(|b| format!("{b:02x}")).collect()
}

#[test]
fn fetch_model_over_loopback_checks_the_hash() {
    let env = Env::new();
    let body = fixture_bytes();
    let prefix = sha_prefix(&body);
    let (port, server) = serve(body.clone(), 1);
    let dest = env.path("models/vgg19-fixture.pth");
    let o = env
        .cmd()
        .args(["fetch-model", "--url", &format!("http://127.0.0.1:{port}/vgg19-{prefix}.pth"), "--dest", dest.to_str().unwrap()])
        .output()
        .unwrap();
    server.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut got = Vec::new();
    std::fs::File::open(&dest).unwrap().read_to_end(&mut got).unwrap();
    assert_eq!(got, body);
    // Only the file itself: no temp file left beside it.
    assert_eq!(std::fs::read_dir(env.path("models")).unwrap().count(), 1);
}

#[test]
fn fetch_model_default_dest_is_the_torch_cache_and_url_comes_from_env() {
    let env = Env::new();
    let body = fixture_bytes();
    let prefix = sha_prefix(&body);
    let (port, server) = serve(body.clone(), 1);
    let o =
        env.cmd().arg("fetch-model").env("NEURAL_STYLE_MODEL_URL", format!("http://127.0.0.1:{port}/vgg19-{prefix}.pth")).output().unwrap();
    server.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let cached = env.path("torch-home").join("hub/checkpoints").join(format!("vgg19-{prefix}.pth"));
    assert_eq!(std::fs::read(cached).unwrap(), body);
}

#[test]
fn fetch_model_with_a_wrong_hash_fails_and_leaves_nothing() {
    let env = Env::new();
    let body = fixture_bytes();
    let (port, server) = serve(body, 1);
    let dest_dir = env.path("models");
    std::fs::create_dir(&dest_dir).unwrap();
    let dest = dest_dir.join("vgg19-00000000.pth");
    let o = env
        .cmd()
        .args(["fetch-model", "--url", &format!("http://127.0.0.1:{port}/vgg19-00000000.pth"), "--dest", dest.to_str().unwrap()])
        .output()
        .unwrap();
    server.join().unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.lines().filter(|l| l.starts_with("error:")).count() == 1 && err.contains("sha256"), "{err}");
    assert_eq!(std::fs::read_dir(&dest_dir).unwrap().count(), 0, "something was left behind");
}

#[test]
fn fetch_model_reports_an_unreachable_server() {
    let env = Env::new();
    // Bind then drop: the port is (almost certainly) closed.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dest = env.path("m/vgg19-dcbb9e9d.pth");
    let o = env
        .cmd()
        .args(["fetch-model", "--url", &format!("http://127.0.0.1:{port}/vgg19-dcbb9e9d.pth"), "--dest", dest.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(!dest.exists());
    assert!(!env.path("m").exists(), "the folder made for the download was left behind");
    assert!(stderr(&o).starts_with("error:") || stderr(&o).contains("\nerror:"));
}

#[test]
fn failed_fetches_leave_no_file_and_no_folder() {
    let env = Env::new();
    // A wrong hash into folders that did not exist: both go again.
    let (port, server) = serve(fixture_bytes(), 1);
    let dest = env.path("new/deeper/vgg19-00000000.pth");
    let o = env.cmd().args(["fetch-model", "--url", &format!("http://127.0.0.1:{port}/vgg19-00000000.pth"), "--dest", dest.to_str().unwrap()]).output().unwrap();
    server.join().unwrap();
    assert_user_error(&env, &o, "sha256");
    assert!(!env.path("new").exists());
    // The destination is a folder: refused before any download, the folder untouched.
    std::fs::create_dir(env.path("dir")).unwrap();
    let o = env.cmd().args(["fetch-model", "--url", "http://127.0.0.1:9/vgg19-dcbb9e9d.pth", "--dest", "dir"]).output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is a folder"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(env.path("dir")).unwrap().count(), 0);
    std::fs::remove_dir(env.path("dir")).unwrap();
    // A URL that names no file.
    let o = env.cmd().args(["fetch-model", "--url", "http://127.0.0.1:9/models/..", "--dest", "x/y.pth"]).output().unwrap();
    assert_user_error(&env, &o, "not a URL of a file");
}

/// A minimal `.safetensors` file of f32 tensors `(name, shape)`, filled with small values.
fn write_safetensors(path: &std::path::Path, tensors: &[(&str, Vec<usize>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (k, (name, shape)) in tensors.iter().enumerate() {
        let n: usize = shape.iter().product();
        let start = data.len();
        for i in 0..n {
            data.extend_from_slice(&((((i * 7 + k * 3) % 13) as f32 - 6.0) * 0.05).to_le_bytes());
        }
        header.insert(name.to_string(), serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}));
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend(h);
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn model_file_with_a_wrong_layout_is_rejected() {
    let env = Env::new();
    // features.0 then features.5: a gap no VGG has.
    let model = env.path("model.pth");
    write_safetensors(
        &model,
        &[("features.0.weight", vec![4, 3, 3, 3]), ("features.0.bias", vec![4]), ("features.5.weight", vec![4, 4, 3, 3]), ("features.5.bias", vec![4])],
    );
    let o = env.stylize(&["--model", "model.pth", "--output-image", "o.png"]);
    assert_user_error(&env, &o, "model.pth");
}

#[test]
fn small_model_file_end_to_end() {
    let env = Env::new();
    // relu1_1, relu1_2, pool, relu2_1 with 4/4/6 channels.
    let model = env.path("tiny.safetensors");
    write_safetensors(
        &model,
        &[
            ("features.0.weight", vec![4, 3, 3, 3]),
            ("features.0.bias", vec![4]),
            ("features.2.weight", vec![4, 4, 3, 3]),
            ("features.2.bias", vec![4]),
            ("features.5.weight", vec![6, 4, 3, 3]),
            ("features.5.bias", vec![6]),
        ],
    );
    let model_arg = model.to_str().unwrap();
    let o = env.stylize(&[
        "--model",
        model_arg,
        "--content-layers",
        "relu1_2",
        "--style-layers",
        "relu1_1,relu2_1",
        "--output-image",
        "m.png",
        "--log-json",
        "m.jsonl",
        "--save-iter",
        "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("embedded"), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_str(std::fs::read_to_string(env.path("m.jsonl")).unwrap().lines().last().unwrap()).unwrap();
    assert!(summary["model"].as_str().unwrap().contains("tiny.safetensors"));
    let img = image::open(env.path("m.png")).unwrap();
    assert_eq!((img.width(), img.height()), (32, 24));
    // A layer this model lacks is named in the error, which lists the ones it has.
    let o = env.stylize(&["--model", model_arg, "--style-layers", "relu3_1", "--content-layers", "relu1_2", "--output-image", "n.png"]);
    std::fs::remove_file(&model).unwrap();
    std::fs::remove_file(env.path("m.png")).unwrap();
    std::fs::remove_file(env.path("m.jsonl")).unwrap();
    assert_user_error(&env, &o, "relu3_1");
}

/// `--version` says what the binary holds: the embedded CUDA kernels (PTX ISA and cubin
/// architectures), or why there are none. CI builds with NEURAL_STYLE_REQUIRE_KERNELS=1.
#[test]
fn version_names_the_embedded_kernels() {
    let env = Env::new();
    let o = env.cmd().arg("--version").output().unwrap();
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("neural-style "), "{out}");
    assert!(lines.get(1).is_some_and(|l| l.starts_with("CUDA kernels: ")), "{out}");
    if std::env::var_os("NEURAL_STYLE_REQUIRE_KERNELS").is_some() {
        assert!(lines[1].contains("compute_80 PTX (ISA ") && lines[1].contains("SASS for sm_80, sm_90"), "{out}");
    }
}

// ---- multi-scale (--scales) and `batch` ----

/// Iteration lines of a --log-json file (the summary line left out).
fn log_iterations(path: &std::path::Path) -> Vec<serde_json::Value> {
    let log = std::fs::read_to_string(path).unwrap();
    log.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).filter(|v| v["summary"] != true).collect()
}

#[test]
fn multiscale_ends_at_the_last_scale_with_the_iterations_of_each() {
    let env = Env::new();
    let o = env.stylize(&["--scales", "16,32", "--scale-iterations", "3,3", "--output-image", "m.png", "--log-json", "m.jsonl", "--save-iter", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(env.path("m.png")).unwrap();
    assert_eq!((img.width(), img.height()), (32, 24));
    let iters = log_iterations(&env.path("m.jsonl"));
    let numbers: Vec<u64> = iters.iter().map(|v| v["iteration"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6], "3 iterations at 16 px, then 3 at 32 px");
    // Snapshots come from the last scale (every 2 of its iterations), numbered overall.
    assert_eq!(env.outputs(), ["m.jsonl", "m.png", "m_5.png"]);
    let snap = image::open(env.path("m_5.png")).unwrap();
    assert_eq!((snap.width(), snap.height()), (32, 24));
    assert!(stderr(&o).contains("16 px x 3, 32 px x 3"), "{}", stderr(&o));

    // --scales N --scale-factor F ends at --image-size; --num-iterations at each scale.
    let o = env.stylize(&["--scales", "2", "--scale-factor", "2", "--num-iterations", "2", "--output-image", "f.png", "--log-json", "f.jsonl"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("16 px x 2, 32 px x 2"), "{}", stderr(&o));
    assert_eq!(log_iterations(&env.path("f.jsonl")).len(), 4);
    let img = image::open(env.path("f.png")).unwrap();
    assert_eq!((img.width(), img.height()), (32, 24));
}

#[test]
fn bad_scale_options_are_rejected() {
    let cases: &[(&[&str], &str)] = &[
        (&["--scales", "32,16"], "increase"),
        (&["--scales", "16,0"], "--scales"),
        (&["--scales", "16,32", "--scale-iterations", "5"], "--scale-iterations"),
        (&["--scales", "16,32", "--scale-iterations", "5,0"], "--scale-iterations"),
        (&["--scale-factor", "2"], "--scale-factor"),
        (&["--scale-iterations", "3"], "--scale-iterations"),
        (&["--scales", "2", "--scale-factor", "0.5"], "--scale-factor"),
        (&["--scales", "16,32", "--scale-factor", "2"], "number of scales"),
        (&["--scales", "4,32"], "smallest scale"),
    ];
    for (args, needle) in cases {
        let env = Env::new();
        let o = env.stylize(&[args, &["--output-image", "o.png"][..]].concat());
        assert_user_error(&env, &o, needle);
    }
}

/// A folder of `n` distinct 32x24 frames, named so that natural and byte order differ.
fn frames(env: &Env, n: u32) -> PathBuf {
    let dir = env.path("frames");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 1..=n {
        image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([((x * 8 + i * 40) % 256) as u8, ((y * 10 + i * 25) % 256) as u8, (i * 20) as u8]))
            .save(dir.join(format!("f{i}.png")))
            .unwrap();
    }
    dir
}

/// `neural-style batch` on the frames folder with tiny settings, plus `extra`.
fn batch(env: &Env, extra: &[&str]) -> Output {
    let style = env.png("style.png", 20, 28);
    let mut c = env.cmd();
    c.args(["batch", "frames", "-o", "out", "--style-image", style.to_str().unwrap()])
        .args(["--image-size", "32", "--num-iterations", "2", "--device", "cpu"])
        .args(FAST)
        .args(extra)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX");
    c.output().unwrap()
}

fn written(o: &Output) -> Vec<String> {
    stderr(o).lines().filter(|l| l.contains(": wrote ")).map(|l| l.split_whitespace().nth(1).unwrap().trim_end_matches(':').to_string()).collect()
}

#[test]
fn batch_resumes_a_killed_run_without_redoing_finished_frames() {
    let env = Env::new();
    frames(&env, 4);
    let o = batch(&env, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Natural order: f2 before f10 would matter; here f1..f4 in order.
    assert_eq!(written(&o), ["f1.png", "f2.png", "f3.png", "f4.png"]);
    let out = env.path("out");
    let mtime = |n: &str| std::fs::metadata(out.join(n)).unwrap().modified().unwrap();
    let before: Vec<_> = ["f1.png", "f2.png", "f4.png"].iter().map(|n| mtime(n)).collect();
    // As if the run had been killed before f3 was written.
    std::fs::remove_file(out.join("f3.png")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let o = batch(&env, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(written(&o), ["f3.png"], "{}", stderr(&o));
    assert!(stderr(&o).contains("1 stylised, 3 skipped"), "{}", stderr(&o));
    let after: Vec<_> = ["f1.png", "f2.png", "f4.png"].iter().map(|n| mtime(n)).collect();
    assert_eq!(before, after, "finished frames were rewritten");
    let img = image::open(out.join("f3.png")).unwrap();
    assert_eq!((img.width(), img.height()), (32, 24));
    // Nothing else was left in the output folder (no temp files).
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 4);
    // The style targets are computed once for frames of one size, again when the size changes.
    assert!(stderr(&o).contains("style targets computed 1 time(s)"), "{}", stderr(&o));
    let tall = env.png("tall.png", 24, 32);
    let style = env.path("style.png");
    let o = env
        .cmd()
        .args(["batch", "frames/f1.png", "frames/f2.png", tall.to_str().unwrap(), "frames/f3.png", "-o", "mixed"])
        .args(["--style-image", style.to_str().unwrap(), "--image-size", "32", "--num-iterations", "1", "--device", "cpu"])
        .args(FAST)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(written(&o), ["f1.png", "f2.png", "tall.png", "f3.png"], "the order given");
    assert!(stderr(&o).contains("style targets computed 3 time(s)"), "{}", stderr(&o));
    let img = image::open(env.path("mixed/tall.png")).unwrap();
    assert_eq!((img.width(), img.height()), (24, 32));
}

#[test]
fn batch_shards_from_flags_slurm_and_kubernetes_cover_every_frame_once() {
    let n = 5;
    let schemes: Vec<(usize, Box<dyn Fn(usize) -> (Vec<String>, Vec<(&'static str, String)>)>)> = vec![
        (3, Box::new(|i| (vec!["--shard".into(), format!("{i}/3")], vec![]))),
        (7, Box::new(|i| (vec!["--shard".into(), format!("{i}/7")], vec![]))),
        (
            2,
            Box::new(|i| {
                (vec![], vec![("SLURM_ARRAY_TASK_ID", (i + 4).to_string()), ("SLURM_ARRAY_TASK_MIN", "4".into()), ("SLURM_ARRAY_TASK_COUNT", "2".into())])
            }),
        ),
        (3, Box::new(|i| (vec![], vec![("JOB_COMPLETION_INDEX", i.to_string()), ("NEURAL_STYLE_SHARD_COUNT", "3".into())]))),
        (2, Box::new(|i| (vec!["--shard-count".into(), "2".into()], vec![("JOB_COMPLETION_INDEX", i.to_string())]))),
    ];
    for (count, scheme) in schemes {
        let env = Env::new();
        frames(&env, n);
        let style = env.png("style.png", 20, 28);
        let mut all = Vec::new();
        for i in 0..count {
            let (args, vars) = scheme(i);
            let mut c = env.cmd();
            c.args(["batch", "frames", "-o", "out", "--style-image", style.to_str().unwrap()])
                .args(["--image-size", "32", "--num-iterations", "1", "--device", "cpu"])
                .args(FAST)
                .args(&args)
                .env_remove("SLURM_ARRAY_TASK_ID")
                .env_remove("JOB_COMPLETION_INDEX");
            for (k, v) in &vars {
                c.env(k, v);
            }
            let o = c.output().unwrap();
            assert!(o.status.success(), "shard {i}/{count} {args:?} {vars:?}: {}", stderr(&o));
            assert!(!stderr(&o).contains(": skipped,"), "shard {i}/{count} overlapped another: {}", stderr(&o));
            let w = written(&o);
            // Contiguous: the frames of shard i follow those of shard i-1.
            all.extend(w);
        }
        let expected: Vec<String> = (1..=n).map(|i| format!("f{i}.png")).collect();
        assert_eq!(all, expected, "{count} shards");
        assert_eq!(std::fs::read_dir(env.path("out")).unwrap().count(), n as usize);
    }
}

#[test]
fn batch_temporal_init_starts_from_the_previous_frame() {
    // Adam with a tiny rate for one iteration returns (almost) its starting image, so each
    // output shows where that frame started.
    let env = Env::new();
    let dir = frames(&env, 3);
    let args = ["--optimizer", "adam", "--learning-rate", "1e-6", "--num-iterations", "1", "--temporal-init"];
    let o = batch(&env, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let load = |p: PathBuf| image::open(p).unwrap().to_rgb8().into_raw();
    let close = |a: &[u8], b: &[u8]| a.iter().zip(b).all(|(x, y)| x.abs_diff(*y) <= 2);
    let (c1, c2) = (load(dir.join("f1.png")), load(dir.join("f2.png")));
    assert!(!close(&c1, &c2), "the frames must differ for this test");
    let out = |n: &str| load(env.path("out").join(n));
    assert!(close(&out("f1.png"), &c1), "frame 1 starts from its content");
    for n in ["f2.png", "f3.png"] {
        assert!(close(&out(n), &c1), "{n} does not start from the previous frame's result");
    }
    // Resume: frame 3 again, now from frame 2's output file.
    std::fs::remove_file(env.path("out/f3.png")).unwrap();
    let o = batch(&env, &args);
    assert!(o.status.success() && stderr(&o).contains("from the previous output file"), "{}", stderr(&o));
    assert!(close(&out("f3.png"), &c1));
    // Without --temporal-init each frame starts from its own content.
    std::fs::remove_dir_all(env.path("out")).unwrap();
    let o = batch(&env, &args[..6]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(close(&out("f2.png"), &c2));
}

#[test]
fn batch_temporal_overlap_starts_a_shard_from_a_chain_warmed_on_the_frames_before_it() {
    // As above: Adam at a tiny rate for one iteration returns its start, so shard 1/2's first
    // frame (f4 of f1..f6) shows where its chain began: K warm-up frames back, from --init.
    let env = Env::new();
    let dir = frames(&env, 6);
    let load = |p: PathBuf| image::open(p).unwrap().to_rgb8().into_raw();
    let close = |a: &[u8], b: &[u8]| a.iter().zip(b).all(|(x, y)| x.abs_diff(*y) <= 2);
    let content: Vec<Vec<u8>> = (1..=6).map(|i| load(dir.join(format!("f{i}.png")))).collect();
    let tiny = ["--optimizer", "adam", "--learning-rate", "1e-6", "--num-iterations", "1", "--temporal-init", "--shard", "1/2"];
    // (K, the content frame the chain starts from: f4 itself without warm-up, f1 at most)
    for (k, start) in [("0", 4), ("1", 3), ("2", 2), ("3", 1), ("100", 1), ("18446744073709551615", 1)] {
        let _ = std::fs::remove_dir_all(env.path("out"));
        let o = batch(&env, &[&tiny[..], &["--temporal-overlap", k]].concat());
        assert!(o.status.success(), "K={k}: {}", stderr(&o));
        assert_eq!(written(&o), ["f4.png", "f5.png", "f6.png"], "K={k}: warm-up frames must not be written");
        assert_eq!(std::fs::read_dir(env.path("out")).unwrap().count(), 3, "K={k}");
        let f4 = load(env.path("out/f4.png"));
        assert!(close(&f4, &content[start - 1]), "K={k}: f4 did not start from a chain begun at f{start}");
        let warmed = stderr(&o).lines().filter(|l| l.contains(": warmed the chain")).count();
        assert_eq!(warmed, 4 - start, "K={k}: {}", stderr(&o));
    }
    // The first shard has nothing before it; a shard whose first frame exists continues from it.
    let o = batch(&env, &["--optimizer", "adam", "--learning-rate", "1e-6", "--num-iterations", "1", "--temporal-init", "--shard", "0/2", "--temporal-overlap", "2"]);
    assert!(o.status.success() && !stderr(&o).contains("warm"), "{}", stderr(&o));
    std::fs::remove_file(env.path("out/f5.png")).unwrap();
    let o = batch(&env, &[&tiny[..], &["--temporal-overlap", "2"]].concat());
    assert!(o.status.success() && !stderr(&o).contains("warmed") && stderr(&o).contains("from the previous output file"), "{}", stderr(&o));
    assert_eq!(written(&o), ["f5.png"]);
    // Refused: without --temporal-init (nothing to warm), and values that are no count.
    std::fs::remove_dir_all(env.path("out")).unwrap();
    let o = batch(&env, &["--shard", "1/2", "--temporal-overlap", "2"]);
    assert_user_error(&env, &o, "--temporal-overlap needs --temporal-init");
    for bad in ["-1", "nan", "1.5", "18446744073709551616", ""] {
        let o = batch(&env, &["--temporal-init", &format!("--temporal-overlap={bad}")]);
        assert!(o.status.code() == Some(2) && stderr(&o).contains("--temporal-overlap"), "{bad:?}: {}", stderr(&o));
    }
}

#[test]
fn bad_batch_inputs_are_rejected_and_write_nothing() {
    let env = Env::new();
    env.png("content.png", 32, 24);
    let cases: &[(&[&str], &str)] = &[
        (&["content.png", "-o", "out", "--shard", "3/3"], "--shard"),
        (&["content.png", "-o", "out", "--shard", "one"], "--shard"),
        (&["content.png", "-o", "out", "--shard", "0/2", "--shard-count", "2"], "--shard-count"),
        (&["content.png", "-o", "."], "refusing to overwrite an input"),
        (&["content.png", "-o", "{stem}.png"], "refusing to overwrite an input"),
        (&["missing.png", "-o", "out"], "missing.png"),
        (&["content.png", "content.png", "-o", "out"], "named twice"),
        (&["content.png", "-o", "out.png"], "folder or a pattern"),
        (&["content.png", "-o", "out", "--output-ext", "gif"], "gif"),
        (&["content.png", "-o", "out", "--content-image", "content.png"], "--content-image"),
        (&["content.png", "-o", "out", "--num-iterations", "0"], "--num-iterations"),
        (&["content.png", "-o", "out", "--image-size", "8"], "too small"),
        (&["content.png", "-o", "out", "--scales", "32,16"], "increase"),
    ];
    for (args, needle) in cases {
        let style = env.png("style.png", 20, 28);
        let o = env.cmd().arg("batch").args(*args).args(["--style-image", style.to_str().unwrap(), "--device", "cpu"]).output().unwrap();
        assert_user_error(&env, &o, needle);
    }
    // Slurm variables that do not map to a shard.
    let o = env
        .cmd()
        .args(["batch", "content.png", "-o", "out", "--style-image", "style.png", "--device", "cpu"])
        .env("SLURM_ARRAY_TASK_ID", "8")
        .env("SLURM_ARRAY_TASK_COUNT", "3")
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .unwrap();
    assert_user_error(&env, &o, "SLURM_ARRAY_TASK_COUNT");
}

// ---- sheet, grid and --plot ----------------------------------------------------------------

use neural_style::contact::{layers_label, ratio_label, Layout, INK};

/// Runs `neural-style <sub>` on the tiny inputs (content 32x24; styles style.png and gray.png).
fn sheet_cmd(env: &Env, sub: &str, extra: &[&str]) -> Output {
    sheet_cmd_with_iterations(env, sub, "3", extra)
}

fn sheet_cmd_with_iterations(env: &Env, sub: &str, iterations: &str, extra: &[&str]) -> Output {
    env.png("content.png", 32, 24);
    env.png("style.png", 20, 28);
    image::RgbImage::from_fn(24, 24, |x, y| image::Rgb([((x / 4 + y / 4) % 2 * 200) as u8, 90, 30])).save(env.path("gray.png")).unwrap();
    let mut c = env.cmd();
    c.args([sub, "--content-image", "content.png", "--image-size", "32", "--num-iterations", iterations, "--device", "cpu"]);
    c.args(["--print-iter", "1", FAST[0], FAST[1], FAST[2], FAST[3]]);
    c.args(extra);
    c.output().unwrap()
}

fn rgb_at(img: &image::RgbImage, x: usize, y: usize, w: usize, h: usize) -> Vec<u8> {
    (y..y + h).flat_map(|yy| (x..x + w).flat_map(move |xx| img.get_pixel(xx as u32, yy as u32).0)).collect()
}

fn ink_in(img: &image::RgbImage, x: usize, y: usize, w: usize, h: usize) -> usize {
    rgb_at(img, x, y, w, h).chunks(3).filter(|p| *p == INK).count()
}

#[test]
fn sheet_shows_the_content_then_a_style_result_pair_per_style() {
    let env = Env::new();
    let o = sheet_cmd(&env, "sheet", &["--style-image", "style.png,gray.png", "--output-image", "fig2.png"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(env.outputs(), ["fig2.png"]);
    let img = image::open(env.path("fig2.png")).unwrap().to_rgb8();
    let l = Layout::new(1, 5, (32, 24), &[], &[]);
    assert_eq!((img.width() as usize, img.height() as usize), l.size());
    let cell = |c: usize| {
        let (x, y) = l.cell_origin(0, c);
        rgb_at(&img, x, y, 32, 24)
    };
    // The content cell is the content image itself (32 px is its size already).
    let content = image::open(env.path("content.png")).unwrap().to_rgb8().into_raw();
    assert_eq!(cell(0), content);
    for c in 1..5 {
        assert_ne!(cell(c), cell(c - 1), "cell {c} repeats its left neighbour");
    }
    assert_ne!(cell(2), cell(4), "the two results differ");
    for c in 0..5 {
        let (x, y) = l.cell_origin(0, c);
        assert!(ink_in(&img, x, y + 24, 32, l.label_h) > 10, "label under cell {c}");
    }
    let err = stderr(&o);
    assert!(err.contains("cell 2/2 [gray.png] iteration 3 / 3"), "progress over both cells: {err}");
}

#[test]
fn grid_rows_are_style_layer_prefixes_and_columns_ratios_and_a_cell_matches_a_plain_run() {
    let env = Env::new();
    // 10 iterations: 3 evaluations of grid's line-searching L-BFGS (--preset gatys2015) left
    // these 8-bit cells unchanged.
    let o = sheet_cmd_with_iterations(&env, "grid", "10", &["--style-image", "style.png", "--ratios", "1e-4,1e-2", "--save-iter", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(env.outputs(), ["grid.png"], "the default name; no snapshots");
    let img = image::open(env.path("grid.png")).unwrap().to_rgb8();
    let layers: Vec<String> = ["relu1_1", "relu2_1", "relu3_1"].map(String::from).to_vec();
    let rows: Vec<String> = (1..=3).map(|n| layers_label(&layers[..n])).collect();
    assert_eq!(rows[2], "relu1_1..relu3_1");
    let cols = vec![ratio_label(1e-4), ratio_label(1e-2)];
    let l = Layout::new(3, 2, (32, 24), &rows, &cols);
    assert_eq!((img.width() as usize, img.height() as usize), l.size());
    let cell = |r: usize, c: usize| {
        let (x, y) = l.cell_origin(r, c);
        rgb_at(&img, x, y, 32, 24)
    };
    for r in 0..3 {
        assert_ne!(cell(r, 0), cell(r, 1), "row {r}: the ratios make a difference");
        let (x, y) = l.cell_origin(r, 0);
        assert!(ink_in(&img, 0, y, x, 24) > 10, "row header {r}");
        assert!(ink_in(&img, x, y + 24, 32, l.label_h) > 10, "label under row {r}");
    }
    assert_ne!(cell(0, 0), cell(1, 0), "the layers make a difference");
    for c in 0..2 {
        let (x, _) = l.cell_origin(0, c);
        assert!(ink_in(&img, x, 0, 32, l.top) > 10, "column header {c}");
    }
    // Cell (relu1_1..relu2_1, 1e-2) is what the main command makes with those layers, grid's
    // default objective (the paper's) and content/style weights 1/100: the reused objective
    // changes nothing.
    let o = env.stylize(&["--preset", "gatys2015", "--style-layers", "relu1_1,relu2_1", "--style-weight", "100", "--num-iterations", "10", "--save-iter", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let single = image::open(env.path("out.png")).unwrap().to_rgb8().into_raw();
    assert_eq!(cell(1, 1), single);
    assert_ne!(cell(1, 0), single);
}

#[test]
fn sheet_and_grid_reject_bad_options_before_any_work() {
    for (sub, extra, needle) in [
        ("grid", vec!["--style-image", "style.png", "--ratios", "0"], "--ratios"),
        ("grid", vec!["--style-image", "style.png", "--ratios", "1e-3,-1"], "--ratios"),
        ("grid", vec!["--style-image", "style.png", "--style-weight", "5"], "--style-weight"),
        ("grid", vec!["--style-image", "style.png", "--content-weight", "0"], "--content-weight"),
        ("sheet", vec!["--style-image", "style.png", "--pairs-per-row", "0"], "pairs-per-row"),
        ("sheet", vec!["--style-image", "style.png,gray.png", "--style-blend-weights", "1,2"], "--style-blend-weights"),
        ("sheet", vec!["--style-image", "style.png", "--plot", "p.png"], "--plot"),
        ("grid", vec!["--style-image", "style.png", "--log-json", "l.jsonl"], "--log-json"),
        ("sheet", vec!["--style-image", "style.png", "--output-image", "style.png"], "overwrite"),
        ("grid", vec!["--style-image", "style.png", "--output-image", "./content.png"], "overwrite"),
        ("sheet", vec!["--style-image", "style.png", "--output-image", "no/dir/s.png"], "folder does not exist"),
        ("grid", vec!["--style-image", "missing.png"], "missing.png"),
    ] {
        let env = Env::new();
        let before = std::fs::read(env.png("style.png", 20, 28)).unwrap();
        let o = sheet_cmd(&env, sub, &extra);
        assert_user_error(&env, &o, needle);
        assert_eq!(std::fs::read(env.path("style.png")).unwrap(), before);
    }
}

#[test]
fn plot_draws_the_loss_curves() {
    let env = Env::new();
    let o = env.stylize(&["--plot", "loss.png", "--num-iterations", "8", "--save-iter", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(env.outputs(), ["loss.png", "out.png"]);
    let img = image::open(env.path("loss.png")).unwrap().to_rgb8();
    assert_eq!((img.width() as usize, img.height() as usize), neural_style::plot::PLOT_SIZE);
    let (w, h) = neural_style::plot::PLOT_SIZE;
    for (name, rgb, _) in neural_style::plot::SERIES {
        // More than the legend's 12x3 swatch: the curve is drawn.
        let n = rgb_at(&img, 0, 0, w, h).chunks(3).filter(|p| *p == rgb).count();
        assert!(n > 100, "{name}: {n} pixels");
    }
    assert!(ink_in(&img, 0, 0, w, h) > 200, "axis labels and legend");
}

#[test]
fn plot_never_overwrites_an_input_and_fails_before_any_work() {
    for (plot, needle) in [
        ("content.png", "--content-image"),
        ("./style.png", "--style-image"),
        ("out.png", "--output-image"),
        ("no/dir/loss.png", "folder does not exist"),
        ("loss.jpg", "PNG"),
    ] {
        let env = Env::new();
        let o = env.stylize(&["--plot", plot, "--save-iter", "1"]);
        assert_user_error(&env, &o, needle);
        assert!(!stderr(&o).contains("stylising"), "failed before the optimisation: {}", stderr(&o));
    }
}

// ---- presets, --from-png and jcjohnson's controls ------------------------------------------

/// The run's stderr start line: "stylising WxH on ... (weights: content C, style S, tv T)".
fn start_line(o: &Output) -> String {
    stderr(o).lines().find(|l| l.starts_with("stylising")).unwrap_or_default().to_string()
}

#[test]
fn from_png_reruns_the_recorded_settings_to_identical_bytes_and_explicit_flags_win() {
    let env = Env::new();
    let o = env.stylize(&["--output-image", "a.png", "--seed", "4", "--init", "random", "--style-weight", "300", "--save-iter", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The settings, the version and the model are recorded in the PNG.
    let texts = neural_style::image_io::read_png_text(&env.path("a.png")).unwrap();
    let (_, settings) = texts.iter().find(|(k, _)| k == "neural-style:settings").expect("settings recorded");
    let v: serde_json::Value = serde_json::from_str(settings).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["args"]["style_weight"], 300.0);
    assert_eq!(v["args"]["seed"], 4);
    assert!(v["args"]["content_image"].as_str().unwrap().starts_with('/'), "input paths are absolute");
    assert!(v["args"].get("output_image").is_none(), "where the result went is not a setting");
    // Run again from the PNG alone (another folder, so relative paths would not resolve).
    let other = Env::new();
    let o = other.cmd().args(["--from-png", env.path("a.png").to_str().unwrap(), "--output-image", "b.png", "--save-iter", "0"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(env.path("a.png")).unwrap(), std::fs::read(other.path("b.png")).unwrap(), "identical bytes");
    // An explicit flag wins over the recorded one.
    let o = other.cmd().args(["--from-png", env.path("a.png").to_str().unwrap(), "--output-image", "c.png", "--num-iterations", "2", "--save-iter", "0"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("after 2 evaluations"), "{}", stderr(&o));
    assert!(start_line(&o).contains("style 300"), "{}", start_line(&o));
    // A PNG without settings is refused with one line.
    let o = env.cmd().args(["--from-png", env.png("plain.png", 8, 8).to_str().unwrap(), "--output-image", "d.png"]).output().unwrap();
    assert_user_error_except(&env, &o, "no settings recorded", &["plain.png"]);
}

/// assert_user_error, for a test that wrote files of its own beforehand.
fn assert_user_error_except(env: &Env, o: &Output, needle: &str, own: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure; stderr:\n{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got:\n{err}");
    assert!(errors[0].contains(needle), "{:?} lacks {needle:?}", errors[0]);
    let written: Vec<String> = env.outputs().into_iter().filter(|n| !own.contains(&n.as_str()) && n != "a.png").collect();
    assert!(written.is_empty(), "files were written: {written:?}");
}

#[test]
fn presets_set_their_flags_and_explicit_flags_win() {
    let env = Env::new();
    // jcjohnson: Caffe weights 5 / 100 / 1e-3 and noise init; --image-size and
    // --num-iterations given here win over its 512 px and 1000 iterations.
    let o = env.stylize(&["--preset", "jcjohnson", "--output-image", "j.png", "--log-json", "j.jsonl", "--num-iterations", "2", "--save-iter", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = start_line(&o);
    assert!(line.contains("stylising 32x24") && line.contains("2 iterations"), "{line}");
    assert!(line.contains("content 5, style 100, tv 0.001"), "{line}");
    let log = std::fs::read_to_string(env.path("j.jsonl")).unwrap();
    let summary: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(summary["convention"], "caffe");
    // An explicit weight wins over the preset's.
    let o = env.stylize(&["--preset", "jcjohnson", "--style-weight", "7", "--output-image", "j2.png", "--num-iterations", "1", "--save-iter", "0"]);
    assert!(start_line(&o).contains("content 5, style 7, tv 0.001"), "{}", start_line(&o));
    // keras-example: its objective and optimiser, here on a 32-row image (an explicit --image-height
    // wins over its 400; its content layer relu5_2 needs 16 px per side).
    let o = env
        .cmd()
        .args(["--preset", "keras-example", "--content-image", "content.png", "--style-image", "style.png", "--device", "cpu"])
        .args(["--image-height", "32", "--num-iterations", "25", "--output-image", "k.png", "--log-json", "k.jsonl", "--save-iter", "0"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let line = start_line(&o);
    assert!(line.contains("stylising 43x32") && line.contains("content 0.025, style 0.2, tv 1"), "{line}");
    let texts = neural_style::image_io::read_png_text(&env.path("k.png")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&texts[0].1).unwrap();
    for (key, want) in [("content_layers", serde_json::json!(["relu5_2"])), ("content_reduction", "sum".into()), ("gram_normalization", "keras-example".into()),
        ("tv_power", 1.25.into()), ("lbfgs_line_search", "strong-wolfe".into()), ("lbfgs_round", 20.into()), ("lbfgs_num_correction", 10.into()), ("style_resize", "match-content".into())] {
        assert_eq!(v["args"][key], want, "{key}");
    }
    // 25 evaluations in rounds of at most 20 with the line search: the loss goes down overall.
    let log = std::fs::read_to_string(env.path("k.jsonl")).unwrap();
    let totals: Vec<f64> = log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter_map(|v| v["total"].as_f64()).collect();
    assert_eq!(totals.len(), 25);
    assert!(totals[24] < 0.5 * totals[0], "{totals:?}");
}

#[test]
fn style_scale_resizes_the_style_images() {
    let env = Env::new();
    // At 0.1 x 32 px the style image is 3 px on its longer side: too small for relu3_1.
    let o = env.stylize(&["--style-scale", "0.1", "--output-image", "s.png"]);
    assert_user_error(&env, &o, "style image 1 is 2x3 pixels");
    let o = env.stylize(&["--style-scale", "0", "--output-image", "s.png"]);
    assert_user_error(&env, &o, "--style-scale");
    let o = env.stylize(&["--style-scale", "2", "--output-image", "s.png", "--num-iterations", "1", "--save-iter", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn original_colors_keep_the_content_chroma() {
    let env = Env::new();
    let o = env.stylize(&["--original-colors", "--output-image", "o.png", "--num-iterations", "8", "--save-iter", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o2 = env.stylize(&["--output-image", "p.png", "--num-iterations", "8", "--save-iter", "0"]);
    assert!(o2.status.success(), "{}", stderr(&o2));
    let load = |n: &str| {
        let img = image::open(env.path(n)).unwrap().to_rgb8();
        neural_style::image_io::Rgb8 { w: img.width() as usize, h: img.height() as usize, data: img.into_raw() }
    };
    let (content, with, without) = (load("content.png"), load("o.png"), load("p.png"));
    use neural_style::color::{mean_abs_diff, yuv};
    let chroma_with = mean_abs_diff(&yuv(&with), &yuv(&content));
    let chroma_without = mean_abs_diff(&yuv(&without), &yuv(&content));
    let luma = mean_abs_diff(&yuv(&with), &yuv(&without));
    // The content's chroma (up to 8-bit rounding and clamping), the plain result's luminance.
    assert!(chroma_with[1] < 1.5 && chroma_with[2] < 1.5, "chroma vs content {chroma_with:?}");
    assert!(chroma_without[1] + chroma_without[2] > 2.0 * (chroma_with[1] + chroma_with[2]), "the plain run's chroma differs more: {chroma_without:?}");
    assert!(luma[0] < 1.5, "luminance vs the plain result {luma:?}");
}

// ---- reliability: inputs never overwritten, outputs checked up front, numbers, messages -----

#[test]
fn outputs_never_overwrite_an_input() {
    // (flags, the file the test made as an input besides content.png and style.png, needle)
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--output-image", "content.png"], "", "--output-image must not overwrite the --content-image"),
        (&["--output-image", "./style.png"], "", "--output-image must not overwrite the --style-image"),
        (&["--log-json", "style.png"], "", "--log-json must not overwrite the --style-image"),
        // The snapshot of iteration 2 would be out_2.png, the init image.
        (&["--output-image", "out.png", "--save-iter", "2", "--init-image", "out_2.png"], "out_2.png", "--save-iter must not overwrite the --init-image"),
        (&["--plot", "init.png", "--init-image", "init.png"], "init.png", "--plot must not overwrite the --init-image"),
    ];
    for (args, own, needle) in cases {
        let env = Env::new();
        if !own.is_empty() {
            env.png(own, 32, 24);
        }
        let o = env.stylize(args);
        assert_user_error_except(&env, &o, needle, &[own]);
    }
    // sheet and grid: the output against the inputs.
    let env = Env::new();
    let o = sheet_cmd(&env, "sheet", &["--style-image", "style.png", "--output-image", "content.png"]);
    assert_user_error(&env, &o, "--output-image must not overwrite the --content-image");
    let o = sheet_cmd(&env, "grid", &["--style-image", "style.png", "--output-image", "style.png", "--ratios", "1e-3"]);
    assert_user_error(&env, &o, "--output-image must not overwrite the --style-image");
    // batch: a frame's output is the style image.
    let env = Env::new();
    frames(&env, 2);
    std::fs::create_dir_all(env.path("out")).unwrap();
    env.png("out/f1.png", 20, 28);
    let o = env
        .cmd()
        .args(["batch", "frames", "-o", "out", "--style-image", "out/f1.png", "--image-size", "32", "--num-iterations", "2", "--device", "cpu"])
        .args(FAST)
        .output()
        .unwrap();
    assert_user_error_except(&env, &o, "out/f1.png: --output must not overwrite the --style-image file", &["out"]);
    assert_eq!(std::fs::read_dir(env.path("out")).unwrap().count(), 1, "only the style image is in out/");
}

#[test]
fn unwritable_outputs_are_refused_before_any_work() {
    // /proc takes no new files, even for root (whom a read-only mode does not stop).
    for args in [&["--output-image", "/proc/out.png"][..], &["--log-json", "/proc/log.jsonl"], &["--plot", "/proc/loss.png"]] {
        let env = Env::new();
        let o = env.stylize(args);
        assert_user_error(&env, &o, "folder is not writable");
        assert!(!stderr(&o).contains("stylising"), "failed before the optimisation: {}", stderr(&o));
    }
    // An existing read-only output is refused, not replaced.
    let env = Env::new();
    let ro = env.png("out.png", 4, 4);
    let mut perm = std::fs::metadata(&ro).unwrap().permissions();
    perm.set_readonly(true);
    std::fs::set_permissions(&ro, perm).unwrap();
    let o = env.stylize(&["--output-image", "out.png"]);
    assert_user_error_except(&env, &o, "--output-image is a read-only file", &["out.png"]);
    assert_eq!(image::open(&ro).unwrap().width(), 4, "the read-only file is unchanged");
}

#[test]
fn non_finite_loss_or_gradient_stops_with_advice_for_the_optimizer_and_keeps_the_last_good_image() {
    // L-BFGS: the gradient overflows at once (the loss, in f64, is still finite).
    let env = Env::new();
    let o = env.stylize(&["--style-weight", "3e38", "--output-image", "out.png", "--save-iter", "0"]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(line.contains("gradient became") && line.contains("iteration 1"), "{line}");
    assert!(line.contains("--style-weight") && !line.contains("learning-rate"), "L-BFGS advice: {line}");
    assert!(line.contains("wrote the starting image"), "{line}");
    assert_eq!(image::open(env.path("out.png")).unwrap().width(), 32);
    // Adam, unbounded: a huge step makes the loss of iteration 2 non-finite; iteration 1's image
    // is kept. (Bounded, the default, the step is clamped into the pixel box and the loss stays
    // finite: checked last.)
    let env = Env::new();
    let o = env.stylize(&["--optimizer", "adam", "--learning-rate", "1e38", "--output-image", "out.png", "--save-iter", "0", "--unbounded"]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(line.contains("at iteration 2") && line.contains("smaller --learning-rate"), "{line}");
    assert!(line.contains("last finite image (iteration 1)") && line.contains("out.png"), "{line}");
    let kept = image::open(env.path("out.png")).unwrap();
    assert_eq!((kept.width(), kept.height()), (32, 24));
    let env = Env::new();
    let o = env.stylize(&["--optimizer", "adam", "--learning-rate", "1e38", "--output-image", "out.png", "--save-iter", "0"]);
    assert!(o.status.success(), "bounded, the huge step stays in the box: {}", stderr(&o));
}

#[test]
fn overflowing_blend_weights_are_refused() {
    let env = Env::new();
    let o = env.stylize(&["--style-image", "style.png,style.png", "--style-blend-weights", "3e38,3e38"]);
    assert_user_error(&env, &o, "--style-blend-weights sum to more than");
}

#[test]
fn errors_name_the_flag_at_fault() {
    let cases: &[(&[&str], &str)] = &[
        (&["--seed", "-1"], "--seed must be 0 or more"),
        (&["--style-image", "style.png,"], "'--style-image <FILE[,FILE...]>': an empty file name (a trailing or doubled comma?)"),
        (&["--content-layers", "relu9_9"], "--content-layers: unknown layer 'relu9_9'"),
        (&["--style-layers", "relu1_1,conv1_1"], "--style-layers: unknown layer 'conv1_1'"),
    ];
    for (args, needle) in cases {
        let env = Env::new();
        let o = env.stylize(args);
        assert_user_error(&env, &o, needle);
    }
    let env = Env::new();
    let o = env.cmd().args(["bench", "--sizes", "32,8", "--device", "cpu"]).output().unwrap();
    assert_user_error(&env, &o, "--sizes: 8 is too small: the minimum size is 16 pixels");
}

#[test]
fn a_size_that_cannot_fit_in_memory_is_refused_up_front() {
    if neural_style::memory::available_bytes().is_none() {
        println!("skipped: no /proc/meminfo");
        return;
    }
    let env = Env::new();
    // 100000 px would need tens of TB; today's check runs before any resize or allocation.
    let o = env.stylize(&["--image-size", "100000", "--output-image", "big.png"]);
    assert_user_error(&env, &o, "the largest size that fits is about");
    assert!(stderr(&o).contains("100000x75000"), "{}", stderr(&o));
    // bench checks each size the same way (it used to abort on a 230 GB allocation).
    let o = env.cmd().args(["bench", "--device", "cpu", "--sizes", "64,30000"]).output().unwrap();
    assert_user_error(&env, &o, "--sizes 30000: a 30000x30000 run needs about");
    assert!(stderr(&o).contains("the largest size that fits is about"), "{}", stderr(&o));
}

/// Issue 9, item 2: a PNG far larger than the size asked for (a 7000 x 6000 image, a few hundred
/// KB on disk, 126 MB as RGB) is reduced while it is read: the run's peak memory stays within a
/// few MB of the same run on a small content image.
#[test]
fn a_huge_png_costs_the_memory_of_the_size_needed_not_of_the_file() {
    let env = Env::new();
    image::GrayImage::from_fn(7000, 6000, |x, y| image::Luma([((x / 50 + y / 50) % 2 * 200) as u8])).save(env.path("huge.png")).unwrap();
    let peak = |content: &str, log: &str| {
        let o = env.stylize(&["--content-image", content, "--num-iterations", "1", "--log-json", log]);
        assert!(o.status.success(), "{}", stderr(&o));
        let text = std::fs::read_to_string(env.path(log)).unwrap();
        let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        summary["peak_rss_bytes"].as_u64().expect("peak_rss_bytes on Linux") as f64 / (1 << 20) as f64
    };
    let small = peak(env.png("small.png", 70, 60).to_str().unwrap(), "small.jsonl");
    let huge = peak(env.path("huge.png").to_str().unwrap(), "huge.jsonl");
    assert!(huge - small < 40.0, "peak RSS {huge:.0} MiB with the huge PNG, {small:.0} MiB with a small one");
}
