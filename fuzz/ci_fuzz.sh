#!/usr/bin/env bash
# A short fuzz pass over every target (docs/testing.md, "Fuzzing"), for CI: SECS seconds each
# (NEURAL_STYLE_CI_FUZZ_SECS, default 60; 0 skips). Needs nightly Rust and cargo-fuzz; without
# them it says so and succeeds (the committed corpus is replayed by `cargo test` on stable in any
# case: tests/it/fuzz_corpus.rs). New inputs go to a temp folder, never into fuzz/corpus/; a
# finding fails the pass and is left in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${NEURAL_STYLE_CI_FUZZ_SECS:-60}"
[[ "$secs" == 0 ]] && { echo "fuzz: skipped (NEURAL_STYLE_CI_FUZZ_SECS=0)"; exit 0; }
if ! cargo +nightly --version >/dev/null 2>&1 || ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: skipped (needs a nightly toolchain and cargo-fuzz: cargo install cargo-fuzz)"
    exit 0
fi
# The targets never touch the GPU: skip the kernel compile in build.rs.
export NEURAL_STYLE_NO_CUDA=1
unset NEURAL_STYLE_REQUIRE_KERNELS
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo +nightly fuzz build -s none -a
for t in model_pth_zip model_pth_legacy model_safetensors image resume_state png_settings; do
    mkdir -p "$work/$t"
    if cargo +nightly fuzz run -s none -a "$t" "$work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -max_len=1048576 -timeout=10 -print_final_stats=1 >"$work/$t.log" 2>&1; then
        grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$work/$t.log" | sed "s/^/fuzz $t: /"
    else
        tail -40 "$work/$t.log" >&2
        echo "fuzz $t: FOUND A BUG; the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
