#!/usr/bin/env bash
# Remakes docs/serve-page.png: the `--serve` page in headless Chromium, taken by the browser test
# (tests/it/browser.rs) while it watches its run (examples/content.png and examples/style.png,
# the embedded model, 128 px, on the CPU), at iteration 80 or later of 300.
#
#   scripts/make_serve_screenshot.sh [OUTPUT.png]
#
# Needs chromium and chromedriver on the PATH (Debian: apt-get install chromium chromium-driver,
# or `bash .ci/install_browser.sh`).
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-docs/serve-page.png}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
# The test build as .ci/run makes it (with the CUDA tools, and the kernels required where they
# install; another environment rebuilds the crate).
if tools_env="$(bash .ci/install_cuda_tools.sh 2>/dev/null)"; then
    eval "$(grep '^export ' <<<"$tools_env")"
    export NEURAL_STYLE_REQUIRE_KERNELS=1
fi
NEURAL_STYLE_REQUIRE_BROWSER=1 NEURAL_STYLE_SCREENSHOT="$out" \
    cargo test --test it browser::chromium_watches_a_run_sees_its_saved_frames_and_stops_it -- --exact --nocapture
echo "wrote $out"
