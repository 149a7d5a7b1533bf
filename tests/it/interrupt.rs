//! SIGINT and SIGTERM sent to the running binary: the run stops after its current iteration,
//! writes its image and state, exits 130 / 143, and `--resume` finishes on the bytes of the
//! uninterrupted run; and Ctrl-C at any moment of a `--save-iter 1` run leaves no temp file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_neural-style");

pub(crate) fn png(dir: &Path, name: &str, w: u32, h: u32) -> PathBuf {
    let p = dir.join(name);
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, ((x * y) % 251) as u8])).save(&p).unwrap();
    p
}

/// The program in `dir` with the embedded model (no model file or download found), and 32x24
/// content and 20x28 style images written there.
pub(crate) fn tiny_inputs(dir: &Path) -> (Command, PathBuf, PathBuf) {
    let content = png(dir, "content.png", 32, 24);
    let style = png(dir, "style.png", 20, 28);
    let mut c = Command::new(BIN);
    c.current_dir(dir).env_remove("NEURAL_STYLE_MODEL").env_remove("NEURAL_STYLE_MODEL_URL").env("TORCH_HOME", dir.join("torch-home"));
    (c, content, style)
}

/// A tiny run (32x24 inputs written into `dir`, the embedded model, three style layers) writing
/// `output`, without --print-iter: also the run tests/it/serve.rs watches.
pub(crate) fn tiny_run(dir: &Path, output: &str) -> Command {
    let (mut c, content, style) = tiny_inputs(dir);
    c.args(["--content-image", content.to_str().unwrap(), "--style-image", style.to_str().unwrap()])
        .args(["--image-size", "32", "--device", "cpu", "--save-iter", "0"])
        .args(["--content-layers", "relu2_2", "--style-layers", "relu1_1,relu2_1,relu3_1"])
        .args(["--output-image", output]);
    c
}

/// The tiny run of these tests, writing `output`, showing every iteration, with `extra` flags.
fn command(dir: &Path, output: &str, extra: &[&str]) -> Command {
    let mut c = tiny_run(dir, output);
    c.args(["--print-iter", "1"]).args(extra);
    c
}

fn kill(child: &Child, signal: &str) {
    let ok = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {signal} failed");
}

/// Starts `c`, sends `signal` once the progress output shows iteration `after` (then waits
/// `delay`), and returns the finished process's output (stderr collected).
fn interrupt(mut c: Command, after: usize, delay: Duration, signal: &str) -> Output {
    let mut child = c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut text = String::new();
    let mut sent = false;
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 {
        if !sent && line.starts_with(&format!("iteration {after} / ")) {
            std::thread::sleep(delay);
            kill(&child, signal);
            sent = true;
        }
        text.push_str(&line);
        line.clear();
    }
    assert!(sent, "the run never showed iteration {after}:\n{text}");
    let status = child.wait().unwrap();
    Output { status, stdout: Vec::new(), stderr: text.into_bytes() }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Interrupts a run with `signal` after a few iterations and resumes it (the command it printed):
/// exit `code`, image and state written, then the uninterrupted run's exact bytes.
fn interrupted_run_resumes_to_the_same_bytes(extra: &[&str], signal: &str, code: i32) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = command(d, "whole.png", extra).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = interrupt(command(d, "out.png", extra), 3, Duration::ZERO, signal);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{signal}: {err}");
    let (out, state) = (d.join("out.png"), d.join("out.png.resume"));
    assert!(out.is_file() && state.is_file(), "{err}");
    assert_eq!(image::open(&out).unwrap().width(), 32, "the image so far is a whole image");
    assert!(err.contains("wrote out.png (the image so far) and out.png.resume"), "{err}");
    let resume = err.lines().find_map(|l| l.split_once("continue with: ")).map(|(_, c)| c.to_string()).expect("the command to resume");
    assert!(resume.ends_with("--resume out.png.resume"), "{resume}");
    let stopped_at: usize = err.lines().find_map(|l| l.split_once(" after iteration ")).and_then(|(_, r)| r.split(' ').next()?.parse().ok()).unwrap();
    assert!(stopped_at >= 3, "{err}");
    // Different settings are refused, and leave the state as it was.
    let o = command(d, "out.png", extra).args(["--seed", "7", "--resume", "out.png.resume"]).output().unwrap();
    assert!(!o.status.success() && stderr(&o).contains("--seed 0 there, 7 here"), "{}", stderr(&o));
    assert!(state.is_file());
    // The printed command, run as printed.
    let o = Command::new("sh").arg("-c").arg(&resume).current_dir(d).env_remove("NEURAL_STYLE_MODEL").env("TORCH_HOME", d.join("torch-home")).output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains(&format!("resuming from out.png.resume after iteration {stopped_at}")), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(d.join("whole.png")).unwrap(), "{signal} {extra:?}: resumed bytes differ");
    assert!(!state.exists(), "the state file is deleted once the run finishes");
}

#[test]
fn sigint_stops_after_the_iteration_saves_the_state_and_resume_gives_the_same_bytes() {
    interrupted_run_resumes_to_the_same_bytes(&["--num-iterations", "300"], "-INT", 130);
}

#[test]
fn sigterm_stops_a_strong_wolfe_run_with_rounds_and_resume_gives_the_same_bytes() {
    interrupted_run_resumes_to_the_same_bytes(&["--num-iterations", "300", "--lbfgs-line-search", "strong-wolfe", "--lbfgs-round", "20"], "-TERM", 143);
}

#[test]
fn sigint_stops_an_adam_run_and_resume_gives_the_same_bytes() {
    interrupted_run_resumes_to_the_same_bytes(&["--num-iterations", "300", "--optimizer", "adam", "--learning-rate", "0.05"], "-INT", 130);
}

/// Ctrl-C at twelve moments of a run that writes a snapshot every iteration: each run exits
/// 130 (or 0 if it had finished) and no `.tmp` file is ever left in the folder.
#[test]
fn ctrl_c_at_any_moment_of_save_iter_1_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let (mut left, mut codes) = (Vec::new(), Vec::new());
    for k in 0..12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % 60_000);
        let out = format!("run{k}.png");
        let o = interrupt(command(d, &out, &["--num-iterations", "400", "--save-iter", "1"]), 1, delay, "-INT");
        codes.push(o.status.code());
        let tmp: Vec<String> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".tmp")).collect();
        if !tmp.is_empty() {
            left.push((k, delay, tmp));
        }
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap().to_string_lossy().starts_with(&format!("run{k}")) || p.extension().is_some_and(|x| x == "tmp") {
                std::fs::remove_file(p).unwrap();
            }
        }
    }
    assert!(left.is_empty(), "{} of 12 interrupted runs left a temp file: {left:?}", left.len());
    assert!(codes.iter().all(|c| matches!(c, Some(130) | Some(0))), "exit codes {codes:?}");
}
