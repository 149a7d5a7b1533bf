//! Replays the fuzz targets' committed corpus (fuzz/corpus/<target>/: seeds from
//! fuzz/make_corpus.py and every input fuzzing ever found a bug with) through the targets'
//! bodies, on stable Rust: each input must give Ok or Err, never a panic. Fuzzing itself needs
//! nightly and cargo-fuzz; see README.md, "Fuzzing".

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

type Target = fn(&[u8]) -> anyhow::Result<()>;

/// Seeds fuzz/make_corpus.py writes to be refused; every other seed-* must load.
const REFUSED_SEEDS: [&str; 8] = ["truncated", "unchained", "nan", "self_reference", "i32_refused", "empty_header", "truncated.jpg", "truncated.png"];

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
                let refused = REFUSED_SEEDS.contains(&seed);
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
/// Every target has a corpus folder, and every corpus folder a target here.
#[test]
fn every_corpus_is_replayed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["image", "model_pth_legacy", "model_pth_zip", "model_safetensors"]);
}
