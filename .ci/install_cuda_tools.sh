#!/usr/bin/env bash
# Installs what build.rs needs to compile kernels/*.cu to PTX without a GPU or a CUDA toolkit:
# NVRTC (libnvrtc.so.12), the CUDA headers (cuda_fp16.h, cuda_bf16.h, mma.h, crt/mma.h) and
# ptxas, all from PyPI wheels at pinned versions. Idempotent: does nothing when they are there.
# Prints the export line that points build.rs at them (it also finds them by itself through the
# python3 on PATH).
set -euo pipefail

PY="${PYTHON:-python3}"
PKGS=(nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-nvcc-cu12==12.9.86)

missing=()
for spec in "${PKGS[@]}"; do
    name="${spec%%==*}" want="${spec##*==}"
    have="$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')"
    [[ "$have" == "$want" ]] || missing+=("$spec")
done
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    "$PY" -m pip install --disable-pip-version-check --no-input -q "${missing[@]}"
else
    echo "CUDA build tools already installed (${PKGS[*]})"
fi

root="$("$PY" -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))')"
for f in nvidia/cuda_nvrtc/lib/libnvrtc.so.12 nvidia/cuda_runtime/include/cuda_bf16.h \
         nvidia/cuda_nvcc/include/crt/mma.h nvidia/cuda_nvcc/bin/ptxas; do
    [[ -e "$root/$f" ]] || { echo "missing after install: $root/$f" >&2; exit 1; }
done
chmod +x "$root/nvidia/cuda_nvcc/bin/ptxas" 2>/dev/null || true
echo "export NEURAL_STYLE_CUDA_WHEELS=$root"
