#!/bin/sh
# Side by side, in one shell: PyTorch 1.13 CPU (Debian python3-torch + libopenblas0-pthread,
# 2 OpenMP threads) and this crate's CPU backend on the same work (VGG-19 to relu5_1, content +
# style + TV, L-BFGS; the embedded random weights), at the given size.
# Usage: benches/compare_torch.sh [SIZE=256] [EVALS=10]
# PRECISIONS="fp32 bf16" runs ours once per precision after PyTorch's fp32 (default: fp32 only).
# AVX2 only, on an AVX-512 machine (both sides limited to the instructions an AVX2-only CPU has):
#   CARGO_FEATURES=--no-default-features ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2 benches/compare_torch.sh
set -e
size=${1:-256}
evals=${2:-10}
cd "$(dirname "$0")/.."
cargo build --release ${CARGO_FEATURES:-} >&2
# The hypervisor's steal share over the run (a busy host slows both sides unevenly).
steal_before=$(awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $9}' /proc/stat)
echo "# $(date -u +%FT%TZ) load: $(cut -d' ' -f1-4 /proc/loadavg) cargo: ${CARGO_FEATURES:-default features} torch ISA: ${ATEN_CPU_CAPABILITY:-auto} oneDNN: ${DNNL_MAX_CPU_ISA:-auto}"
OMP_NUM_THREADS=2 /usr/bin/python3 "${TORCH_GATYS:-../shared/peer/torch_gatys.py}" --device cpu --sizes "$size" --evals "$evals" | tail -n 1
for p in ${PRECISIONS:-fp32}; do
    RAYON_NUM_THREADS=2 ./target/release/neural-style bench --device cpu --precision "$p" --sizes "$size" --evals "$evals" --warmup 2 --json
done
steal_after=$(awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $9}' /proc/stat)
echo "# $(date -u +%FT%TZ) load: $(cut -d' ' -f1-4 /proc/loadavg) steal: $(echo "$steal_before $steal_after" | awk '{printf "%.1f%%", 100 * ($4 - $2) / ($3 - $1)}')"
