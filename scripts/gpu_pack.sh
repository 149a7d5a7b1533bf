#!/usr/bin/env bash
# Builds here (no GPU needed) and packs what a GPU machine needs into .gpu/ (git-ignored, a few
# MB instead of target/'s hundreds): the neural-style and cuda_parity binaries (cubins and PTX
# inside) and, if given, the PyTorch baseline script. Refuses to pack binaries without kernels.
# Then, in one device call with carry [".gpu"], from the repository root there:
#     BIN_DIR=.gpu TORCH_GATYS=.gpu/torch_gatys.py CHECK_OUT=$OUT scripts/gpu_check.sh
# Usage: scripts/gpu_pack.sh [path/to/torch_gatys.py]
set -euo pipefail
cd "$(dirname "$0")/.."
tools_env="$(bash .ci/install_cuda_tools.sh)"
eval "$(grep '^export ' <<<"$tools_env")"
export NEURAL_STYLE_REQUIRE_KERNELS=1   # build.rs fails rather than build without kernels
cargo build --release
bin="$(cargo test --release --test cuda_parity --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*cuda_parity[^"]*\)".*/\1/p' | tail -1)"
[[ -x "$bin" ]] || { echo "error: cuda_parity test binary not found" >&2; exit 1; }
rm -rf .gpu
mkdir -p .gpu
cp target/release/neural-style .gpu/neural-style
cp "$bin" .gpu/cuda_parity
command -v strip >/dev/null && strip --strip-debug .gpu/neural-style .gpu/cuda_parity

# The packed binaries must carry the kernels: the version line names them, and the test that
# checks every PTX and cubin entry point passes (it needs no GPU).
if ! .gpu/neural-style --version | grep -q '^CUDA kernels: compute_'; then
    .gpu/neural-style --version >&2
    rm -rf .gpu
    echo "error: the neural-style binary holds no CUDA kernels; not packed" >&2
    exit 1
fi
if ! .gpu/cuda_parity --exact binary_holds_ptx_and_cubins_of_every_kernel >/dev/null 2>&1; then
    .gpu/cuda_parity --exact binary_holds_ptx_and_cubins_of_every_kernel --nocapture >&2 || true
    rm -rf .gpu
    echo "error: the cuda_parity binary does not hold every kernel image; not packed" >&2
    exit 1
fi
.gpu/neural-style --version | tail -1
[[ -n "${1:-}" ]] && cp "$1" .gpu/torch_gatys.py
du -sh .gpu
