#!/usr/bin/env bash
# The CUDA half of CI, on a machine without a GPU:
#   1. install NVRTC, the CUDA headers and ptxas from PyPI (pinned, idempotent);
#   2. build, so that build.rs compiles every kernels/*.cu to PTX (a compile error fails here);
#   3. ptxas -arch=sm_90 and sm_80 -v on every PTX: registers/spills table, fails if conv/Gram kernels spill;
#   4. run every kernel under the CPU emulation of CUDA against a double reference (needs g++);
#   5. the parity tests: on a machine without a GPU they check the clean "no GPU" error and the
#      PTX's entry points, and skip the rest (NEURAL_STYLE_REQUIRE_KERNELS=1: kernels must exist).
set -euo pipefail
cd "$(dirname "$0")/.."
tools_env="$(bash .ci/install_cuda_tools.sh)"
eval "$(grep "^export " <<<"$tools_env")"
cargo test --test cuda_parity --no-run
.ci/check_ptxas.sh
if command -v "${CXX:-g++}" >/dev/null; then
    tests/kernel_emu/run.sh | tail -3
else
    echo "no C++ compiler: skipping tests/kernel_emu"
fi
NEURAL_STYLE_REQUIRE_KERNELS=1 cargo test --test cuda_parity
