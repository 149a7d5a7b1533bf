//! Scaffolding shared by the tests that run the `neural-style` binary: a temp folder to run in,
//! a command with the model variables cleared (a user's cache cannot leak in), tiny PNGs.
#![allow(dead_code)] // each test file uses a part

pub mod nets;
pub mod png_chunks;
pub mod state_file;
pub mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_neural-style");

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env { dir: tempfile::tempdir().unwrap() }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// The binary, run in the temp folder, with no model variables and no proxy.
    pub fn cmd(&self) -> Command {
        command_in(self.dir.path(), None)
    }
    /// Writes a w x h RGB PNG with some structure (folders made as needed).
    pub fn png(&self, name: &str, w: u32, h: u32) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, ((x * y) % 251) as u8])).save(&p).unwrap();
        p
    }
}

/// The binary, run in `dir`, with no model variables and no proxy (a user's cache cannot leak
/// in); under `ulimit -v limit_kb` where given, so that an allocation of gigabytes fails
/// instead of swapping the machine.
pub fn command_in(dir: &Path, limit_kb: Option<u64>) -> Command {
    let mut c = match limit_kb {
        None => Command::new(BIN),
        Some(kb) => {
            let mut sh = Command::new("sh");
            sh.arg("-c").arg(format!("ulimit -v {kb} && exec \"$0\" \"$@\"")).arg(BIN);
            sh
        }
    };
    c.current_dir(dir).env_remove("NEURAL_STYLE_MODEL").env_remove("NEURAL_STYLE_MODEL_URL").env("TORCH_HOME", dir.join("torch-home"));
    for proxy in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        c.env_remove(proxy); // loopback requests must not go through a proxy
    }
    c
}

/// Runs `c`, killing it after `limit`: a hang is a failure, not a stuck test.
pub fn output_within(mut c: Command, limit: Duration) -> Output {
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}; stderr so far:\n{}", stderr(&o));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A non-zero exit that is no panic or abort, with exactly one `error:` line, containing every
/// one of `needles`; returns that line.
pub fn refused(o: &Output, needles: &[&str]) -> String {
    let err = stderr(o);
    assert!(!o.status.success(), "expected a refusal, got success; stderr:\n{err}");
    assert!(!err.contains("panicked") && !err.contains("memory allocation of"), "panic or abort:\n{err}");
    assert!(o.status.code().is_some_and(|c| c == 1 || c == 2), "exit status {:?} (a signal?):\n{err}", o.status);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{err}");
    for n in needles {
        assert!(errors[0].contains(n), "error line {:?} lacks {n:?}", errors[0]);
    }
    errors[0].to_string()
}
