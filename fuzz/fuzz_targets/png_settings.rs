//! `cargo +nightly fuzz run png_settings`: see docs/testing.md, "Fuzzing". The body is
//! `neural_style::fuzzing::png_settings`, which tests/it/fuzz_corpus.rs replays on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Err is the expected answer to bad bytes; a panic, abort, timeout or OOM is a finding.
    let _ = neural_style::fuzzing::png_settings(data);
});
