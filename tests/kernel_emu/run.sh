#!/usr/bin/env bash
# Builds and runs the CPU emulation of every CUDA kernel (no GPU, no CUDA toolkit needed).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${CARGO_TARGET_DIR:-$here/../../target}/kernel_emu"
mkdir -p "$out"
"${CXX:-g++}" -std=c++20 -O2 -pthread -Wno-unused-result -I"$here/include" -include cuda_emu.h \
    "$here/check.cpp" -o "$out/check"
"$out/check"
