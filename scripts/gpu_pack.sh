#!/usr/bin/env bash
# Builds here (no GPU needed) and packs what a GPU machine needs into .gpu/ (git-ignored, a few
# MB instead of target/'s hundreds): the neural-style and cuda_parity binaries (PTX inside) and,
# if given, the PyTorch baseline script. Then on the GPU machine, from the repository root:
#     BIN_DIR=.gpu TORCH_GATYS=.gpu/torch_gatys.py CHECK_OUT=$OUT scripts/gpu_check.sh
# Usage: scripts/gpu_pack.sh [path/to/torch_gatys.py]
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash .ci/install_cuda_tools.sh | grep '^export ')"
export NEURAL_STYLE_REQUIRE_KERNELS=1
cargo build --release
bin="$(cargo test --release --test cuda_parity --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*cuda_parity[^"]*\)".*/\1/p' | tail -1)"
[[ -x "$bin" ]] || { echo "cuda_parity test binary not found" >&2; exit 1; }
mkdir -p .gpu
cp target/release/neural-style .gpu/neural-style
cp "$bin" .gpu/cuda_parity
command -v strip >/dev/null && strip --strip-debug .gpu/neural-style .gpu/cuda_parity
[[ -n "${1:-}" ]] && cp "$1" .gpu/torch_gatys.py
du -sh .gpu
