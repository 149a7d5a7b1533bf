#!/usr/bin/env bash
# Installs what build.rs needs to compile kernels/*.cu without a GPU or a CUDA toolkit: NVRTC
# (libnvrtc.so.12), the CUDA headers (cuda_fp16.h, cuda_bf16.h, mma.h, crt/mma.h) and ptxas, from
# PyPI wheels at pinned versions, into the git-ignored folder .cuda-tools/ of this checkout
# (NEURAL_STYLE_CUDA_TOOLS overrides it), where build.rs finds them by itself.
# Idempotent: does nothing when that folder already holds these versions.
# Progress goes to stderr; stdout gets one line, `export NEURAL_STYLE_CUDA_WHEELS=<folder>`.
# Exits non-zero, with pip's own error shown, when the install fails.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
PKGS=(nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-nvcc-cu12==12.9.86)
dest="${NEURAL_STYLE_CUDA_TOOLS:-$PWD/.cuda-tools}"
stamp="$dest/installed.txt"   # the pinned list, written only after a complete install
needed=(nvidia/cuda_nvrtc/lib/libnvrtc.so.12 nvidia/cuda_runtime/include/cuda_bf16.h
        nvidia/cuda_nvcc/include/crt/mma.h nvidia/cuda_nvcc/bin/ptxas)

complete() {
    [[ -f "$stamp" && "$(cat "$stamp")" == "${PKGS[*]}" ]] || return 1
    local f
    for f in "${needed[@]}"; do [[ -e "$dest/$f" ]] || return 1; done
}

if complete; then
    echo "CUDA build tools already in $dest (${PKGS[*]})" >&2
else
    command -v "$PY" >/dev/null || { echo "error: $PY not found: the CUDA build tools come from PyPI and need Python 3 with pip" >&2; exit 1; }
    echo "installing ${PKGS[*]} into $dest" >&2
    mkdir -p "$dest"
    rm -rf "$dest/nvidia" "$stamp"
    if ! "$PY" -m pip install --disable-pip-version-check --no-input --no-deps --upgrade -q \
            --target "$dest" "${PKGS[@]}" >&2; then
        echo "error: pip could not install ${PKGS[*]} into $dest (its error is above)" >&2
        exit 1
    fi
    for f in "${needed[@]}"; do
        [[ -e "$dest/$f" ]] || { echo "error: missing after install: $dest/$f" >&2; exit 1; }
    done
    chmod +x "$dest/nvidia/cuda_nvcc/bin/ptxas"
    echo "${PKGS[*]}" >"$stamp"
fi
echo "export NEURAL_STYLE_CUDA_WHEELS=$dest"
