//! `neural-style --device cuda` from the command line to the written PNG, on the emulated CUDA
//! driver (NEURAL_STYLE_CUDA_DRIVER=emulated, tests/cuda_driver_emu): every precision and GEMM
//! main loop with L-BFGS and Adam, `--resume`, `--scales`, `batch` and `bench`, each finishing
//! with its first loss equal to the CPU run's within the parity tolerances; and the driver's
//! failures (out of memory, a bad NEURAL_STYLE_CUDA_DRIVER) as clean errors.
//! Where the stand-in was not built (no kernels or no C++ compiler), each test writes
//! "SKIPPED cuda_emulated_cli::<test>: <why>" to stderr and passes, unless
//! NEURAL_STYLE_REQUIRE_KERNELS is set. The stand-in's timings mean nothing: none is checked.

use neural_style::cuda::{self, driver};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_neural-style");

/// The parity tolerances of tests/cuda_parity.rs, on the first loss (relative).
const FP32_TOLERANCE: f64 = 1e-5;
const TF32_TOLERANCE: f64 = 3e-3;
const BF16_TOLERANCE: f64 = 2e-2;

/// Whether the stand-in is there; says so (and passes) when it is not.
fn emulated_driver_built(test: &str) -> bool {
    if driver::EMULATED_DRIVER_PATH.is_some() && cuda::KERNELS_BUILT {
        return true;
    }
    assert!(std::env::var_os("NEURAL_STYLE_REQUIRE_KERNELS").is_none(), "NEURAL_STYLE_REQUIRE_KERNELS is set but the emulated driver was not built");
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED cuda_emulated_cli::{test}: the emulated CUDA driver was not built");
    false
}

fn png(dir: &Path, name: &str, w: u32, h: u32) -> PathBuf {
    let p = dir.join(name);
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, ((x * y) % 251) as u8])).save(&p).unwrap();
    p
}

/// A temporary folder with the tiny inputs of these tests (content 32x24, style 20x28).
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        png(dir.path(), "content.png", 32, 24);
        png(dir.path(), "style.png", 20, 28);
        Env { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The binary in this folder on the emulated driver, with no model file to find.
    fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(self.dir.path())
            .env_remove("NEURAL_STYLE_MODEL")
            .env_remove("NEURAL_STYLE_MODEL_URL")
            .env_remove("NEURAL_STYLE_CUDA_GEMM")
            .env_remove("NEURAL_STYLE_EMU_MEMORY")
            .env("TORCH_HOME", self.path("torch-home"))
            .env(driver::ENV, "emulated");
        c
    }

    /// The tiny stylisation (32 px, relu1_1..relu3_1) writing `output` and `output`.json.
    fn stylize(&self, output: &str, extra: &[&str]) -> Command {
        let mut c = self.cmd();
        c.args(["--content-image", "content.png", "--style-image", "style.png", "--image-size", "32", "--print-iter", "1"])
            .args(["--content-layers", "relu2_2", "--style-layers", "relu1_1,relu2_1,relu3_1", "--save-iter", "0"])
            .args(["--output-image", output, "--log-json", &format!("{output}.json")])
            .args(extra);
        c
    }

    /// The JSON lines `output`'s run logged: (its iterations, its summary).
    fn log(&self, output: &str) -> (Vec<Value>, Value) {
        let text = std::fs::read_to_string(self.path(&format!("{output}.json"))).unwrap();
        let mut lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let summary = lines.pop().expect("a summary line");
        assert_eq!(summary["summary"], true, "{text}");
        (lines, summary)
    }

    /// The first loss (at the start image) `output`'s run logged.
    fn first_loss(&self, output: &str) -> f64 {
        self.log(output).0[0]["total"].as_f64().unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `o` succeeded on the emulated driver and said so first; returns its stderr.
fn succeeded_on_the_stand_in(o: &Output) -> String {
    let err = stderr(o);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // batch names its shard first; the note comes before any other line.
    let first = err.lines().find(|l| !l.starts_with("batch: ")).unwrap_or_default();
    assert!(first.starts_with("note: emulated CUDA driver (") && first.ends_with("timings mean nothing"), "first line: {first}\n{err}");
    assert_eq!(err.matches("note: emulated CUDA driver").count(), 1, "said once: {err}");
    err
}

/// A stylisation on the stand-in in `precision` and `gemm` (wmma or mma) with each optimiser:
/// it finishes, writes a 32x24 PNG, logs the stand-in as its device, and starts from the CPU
/// run's loss within `tolerance` (relative).
fn matches_the_cpu(precision: &str, gemm: &str, tolerance: f64) {
    let env = Env::new();
    for (name, optimizer) in [("lbfgs", &["--optimizer", "lbfgs"][..]), ("adam", &["--optimizer", "adam", "--learning-rate", "0.1"][..])] {
        let cpu_out = format!("cpu-{name}.png");
        let o = env.stylize(&cpu_out, &["--num-iterations", "3", "--device", "cpu"]).args(optimizer).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let out = format!("cuda-{precision}-{gemm}-{name}.png");
        let o = env.stylize(&out, &["--num-iterations", "3", "--device", "cuda", "--precision", precision]).args(optimizer).env("NEURAL_STYLE_CUDA_GEMM", gemm).output().unwrap();
        let err = succeeded_on_the_stand_in(&o);
        let image = image::open(env.path(&out)).unwrap();
        assert_eq!((image.width(), image.height()), (32, 24), "{err}");
        let (iterations, summary) = env.log(&out);
        assert_eq!(iterations.len(), 3, "{err}");
        let device = summary["device"].as_str().unwrap();
        // fp32 always runs the wmma file's FFMA loop (src/cuda/mod.rs, Gemm::for_precision).
        let ran = if precision == "fp32" { "wmma" } else { gemm };
        assert!(device.contains("(emulated driver)") && device.contains(&format!("({precision}, sm_90 cubin, {ran})")), "device: {device}");
        let (cpu, gpu) = (env.first_loss(&cpu_out), env.first_loss(&out));
        let relative = (gpu - cpu).abs() / cpu.abs();
        assert!(relative <= tolerance, "{precision} {gemm} {name}: first loss {gpu} vs the CPU's {cpu}: relative error {relative:e} > {tolerance:e}");
        for line in iterations.iter().chain([&summary["final"]]) {
            assert!(line["total"].as_f64().is_some_and(f64::is_finite), "{line}");
        }
    }
}

#[test]
fn fp32_lbfgs_and_adam_start_from_the_cpu_loss() {
    if emulated_driver_built("fp32_lbfgs_and_adam_start_from_the_cpu_loss") {
        matches_the_cpu("fp32", "wmma", FP32_TOLERANCE);
    }
}

#[test]
fn tf32_on_both_gemm_loops_starts_from_the_cpu_loss() {
    if emulated_driver_built("tf32_on_both_gemm_loops_starts_from_the_cpu_loss") {
        matches_the_cpu("tf32", "wmma", TF32_TOLERANCE);
        matches_the_cpu("tf32", "mma", TF32_TOLERANCE);
    }
}

#[test]
fn bf16_on_both_gemm_loops_starts_from_the_cpu_loss() {
    if emulated_driver_built("bf16_on_both_gemm_loops_starts_from_the_cpu_loss") {
        matches_the_cpu("bf16", "wmma", BF16_TOLERANCE);
        matches_the_cpu("bf16", "mma", BF16_TOLERANCE);
    }
}

/// SIGINT once iteration 2 is shown; returns the finished process's output (stderr collected).
fn interrupt_after_iteration_2(mut c: Command) -> Output {
    let mut child = c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let (mut text, mut line, mut sent) = (String::new(), String::new(), false);
    while err.read_line(&mut line).unwrap() > 0 {
        if !sent && line.starts_with("iteration 2 / ") {
            assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
            sent = true;
        }
        text.push_str(&line);
        line.clear();
    }
    assert!(sent, "the run never showed iteration 2:\n{text}");
    Output { status: child.wait().unwrap(), stdout: Vec::new(), stderr: text.into_bytes() }
}

#[test]
fn an_interrupted_cuda_run_resumes_to_the_uninterrupted_bytes() {
    if !emulated_driver_built("an_interrupted_cuda_run_resumes_to_the_uninterrupted_bytes") {
        return;
    }
    let env = Env::new();
    let flags = ["--num-iterations", "8", "--device", "cuda", "--precision", "tf32"];
    let o = env.stylize("whole.png", &flags).output().unwrap();
    succeeded_on_the_stand_in(&o);
    let o = interrupt_after_iteration_2(env.stylize("out.png", &flags));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("wrote out.png (the image so far) and out.png.resume"), "{err}");
    let o = env.stylize("out.png", &flags).args(["--resume", "out.png.resume"]).output().unwrap();
    let err = succeeded_on_the_stand_in(&o);
    assert!(err.contains("resuming from out.png.resume after iteration"), "{err}");
    // The stand-in runs each kernel's threads in one order and no kernel uses atomics, so the
    // CUDA path is as deterministic here as the CPU's.
    assert_eq!(std::fs::read(env.path("out.png")).unwrap(), std::fs::read(env.path("whole.png")).unwrap(), "resumed bytes differ");
    assert!(!env.path("out.png.resume").exists());
}

#[test]
fn scales_batch_and_bench_run_on_the_stand_in() {
    if !emulated_driver_built("scales_batch_and_bench_run_on_the_stand_in") {
        return;
    }
    let env = Env::new();
    // Two scales: 16 px then 32 px.
    let o = env.stylize("scales.png", &["--device", "cuda", "--scales", "16,32", "--scale-iterations", "2,2"]).output().unwrap();
    let err = succeeded_on_the_stand_in(&o);
    assert_eq!(image::open(env.path("scales.png")).unwrap().width(), 32, "{err}");
    assert_eq!(env.log("scales.png").0.len(), 4, "{err}");

    // batch: two frames, one device (and one note) for both.
    std::fs::create_dir(env.path("frames")).unwrap();
    png(&env.path("frames"), "f1.png", 32, 24);
    png(&env.path("frames"), "f2.png", 24, 32);
    let o = env
        .cmd()
        .args(["batch", "frames", "-o", "out", "--style-image", "style.png", "--image-size", "32", "--num-iterations", "2", "--device", "cuda"])
        .args(["--content-layers", "relu2_2", "--style-layers", "relu1_1,relu2_1,relu3_1"])
        .output()
        .unwrap();
    let err = succeeded_on_the_stand_in(&o);
    for f in ["f1.png", "f2.png"] {
        assert!(image::open(env.path("out").join(f)).is_ok(), "{f}: {err}");
    }

    // bench: the default layers (up to relu5_1) at 32 px.
    let o = env.cmd().args(["bench", "--sizes", "32", "--evals", "1", "--warmup", "0", "--device", "cuda", "--json"]).output().unwrap();
    succeeded_on_the_stand_in(&o);
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["backend"].as_str().unwrap().contains("(emulated driver)"), "{r}");
    assert!(r["final_loss"].as_f64().is_some_and(|l| l.is_finite() && l > 0.0), "{r}");
}

#[test]
fn too_little_gpu_memory_is_a_clear_refusal() {
    if !emulated_driver_built("too_little_gpu_memory_is_a_clear_refusal") {
        return;
    }
    let env = Env::new();
    // 2 MiB: not even the weights up to relu3_1 (4.2 MiB as the GPU keeps them) fit.
    let o = env.stylize("oom.png", &["--device", "cuda"]).env("NEURAL_STYLE_EMU_MEMORY", "2M").output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("more than the 2.0 MiB free on the GPU: the model's weights alone need 4.2 MiB, so no size fits"), "{err}");
    // 40 MiB: a 2000 px run does not fit; the size the message names does, run as it says.
    let o = env.stylize("oom.png", &["--device", "cuda", "--image-size", "2000"]).env("NEURAL_STYLE_EMU_MEMORY", "40M").output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("more than the 40.0 MiB free on the GPU"), "{err}");
    let side: usize = err.split("the largest size that fits is about ").nth(1).and_then(|r| r.split(' ').next()?.parse().ok()).expect(&err);
    assert!((32..2000).contains(&side), "{err}");
    let o = env.stylize("fits.png", &["--device", "cuda", "--num-iterations", "2", "--image-size", &side.to_string()]).env("NEURAL_STYLE_EMU_MEMORY", "40M").output().unwrap();
    succeeded_on_the_stand_in(&o);
    // The estimate held: the GPU's peak stayed under it.
    let summary = env.log("fits.png").1;
    let (peak, estimate) = (summary["peak_device_bytes"].as_u64().unwrap(), summary["estimated_bytes"].as_u64().unwrap());
    assert!(peak > 0 && peak <= estimate && estimate < 40 << 20, "peak {peak} bytes (the run's allocations must show), estimate {estimate}");
    for o in ["oom.png", "oom.png.json"] {
        assert!(!env.path(o).exists(), "{o} written by a refused run");
    }
}

#[test]
fn a_bad_driver_choice_is_a_clear_error() {
    if !emulated_driver_built("a_bad_driver_choice_is_a_clear_error") {
        return;
    }
    let env = Env::new();
    std::fs::write(env.path("not-a-library.so"), b"\x7fELF but truncated").unwrap();
    let cases = [
        ("/nonexistent/libcuda.so", "cannot be read"),
        (".", "is not a file"),
        ("not-a-library.so", "loading the emulated CUDA driver not-a-library.so failed: "),
        // A real shared library that is not the stand-in (this test's own C library).
        ("libc.so.6", ""),
    ];
    for (value, expected) in cases {
        let value = if value == "libc.so.6" { c_library() } else { value.to_string() };
        let expected = if expected.is_empty() { "is not the neural-style emulated CUDA driver" } else { expected };
        let o = env.stylize("bad.png", &["--device", "cuda"]).env(driver::ENV, &value).output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{value}: {err}");
        assert!(err.contains("--device cuda: no usable GPU: NEURAL_STYLE_CUDA_DRIVER") && err.contains(expected), "{value}: {err}");
        assert!(!env.path("bad.png").exists());
        // --device auto goes on on the CPU, saying why.
        let o = env.stylize("auto.png", &["--device", "auto", "--num-iterations", "1"]).env(driver::ENV, &value).output().unwrap();
        let err = stderr(&o);
        assert!(o.status.success() && err.contains("using the CPU: no usable GPU (NEURAL_STYLE_CUDA_DRIVER") && err.contains(expected), "{value}: {err}");
    }
}

/// The path of the C library this process uses (from /proc/self/maps).
fn c_library() -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().filter_map(|l| l.split_whitespace().nth(5)).find(|p| p.contains("/libc.so") || p.contains("/libc-")).expect("libc in /proc/self/maps").to_string()
}
