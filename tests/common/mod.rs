//! Scaffolding shared by the tests that run the `neural-style` binary: a temp folder to run in,
//! a command with the model variables cleared (a user's cache cannot leak in), tiny PNGs.
#![allow(dead_code)] // each test file uses a part

pub mod png_chunks;

use std::path::PathBuf;
use std::process::{Command, Output};

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
        let mut c = Command::new(BIN);
        c.current_dir(self.dir.path())
            .env_remove("NEURAL_STYLE_MODEL")
            .env_remove("NEURAL_STYLE_MODEL_URL")
            .env("TORCH_HOME", self.path("torch-home"));
        for proxy in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
            c.env_remove(proxy); // loopback requests must not go through a proxy
        }
        c
    }
    /// Writes a w x h RGB PNG with some structure (folders made as needed).
    pub fn png(&self, name: &str, w: u32, h: u32) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, ((x * y) % 251) as u8])).save(&p).unwrap();
        p
    }
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
