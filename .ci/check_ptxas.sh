#!/usr/bin/env bash
# Assembles every PTX that build.rs generated with `ptxas -arch=sm_90 -v` and `-arch=sm_80` (no GPU
# needed) and prints registers / spills / shared memory per kernel and architecture. Fails if ptxas rejects a file, if no PTX
# is found, or if a convolution or Gram kernel (conv3x3_*, gram_*) spills. The mma.sync fast path
# (*_mma.ptx) must also really hold its instructions: mma.sync m16n8k8 tf32 and m16n8k16 bf16,
# the bf16x2 packing, ldmatrix, cp.async with the zero-filling src-size form, ld.shared for the
# LDS fragments, and no WMMA.
#
# Usage: .ci/check_ptxas.sh [ptx dir]   (default: $NEURAL_STYLE_PTX_DIR or ${CARGO_TARGET_DIR:-target}/ptx,
#        which build.rs fills on every build that compiles kernels). PTXAS_ARCH overrides the list
#        "sm_90 sm_80" (one or more, space-separated): the 128-register mma kernels sit at their
#        budget, and ptxas allocates differently per architecture.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${1:-${NEURAL_STYLE_PTX_DIR:-${CARGO_TARGET_DIR:-target}/ptx}}"
archs="${PTXAS_ARCH:-sm_90 sm_80}"

ptxas="${PTXAS:-}"
if [[ -z "$ptxas" ]]; then
    if command -v ptxas >/dev/null; then
        ptxas="$(command -v ptxas)"
    else
        root="$(python3 -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null || true)"
        for p in "${NEURAL_STYLE_CUDA_WHEELS:-}/nvidia/cuda_nvcc/bin/ptxas" .cuda-tools/nvidia/cuda_nvcc/bin/ptxas \
                 "$root/nvidia/cuda_nvcc/bin/ptxas" /usr/local/cuda/bin/ptxas; do
            [[ -x "$p" ]] && { ptxas="$p"; break; }
        done
    fi
fi
[[ -n "$ptxas" && -x "$ptxas" ]] || { echo "ptxas not found: run .ci/install_cuda_tools.sh" >&2; exit 1; }

shopt -s nullglob
files=("$dir"/*.ptx)
((${#files[@]})) || { echo "no PTX in $dir: build first (cargo build with .ci/install_cuda_tools.sh done)" >&2; exit 1; }

fail=0
for arch in $archs; do
echo "ptxas: $("$ptxas" --version | tail -1)   arch: $arch   ptx: $dir"
printf '%-28s %-8s %5s %12s %12s %8s %8s\n' kernel file regs spill_st_B spill_ld_B stack_B smem_B
for f in "${files[@]}"; do
    if ! out="$("$ptxas" -arch="$arch" -v "$f" -o /dev/null 2>&1)"; then
        echo "$out" >&2
        echo "FAIL: ptxas rejected $f" >&2
        fail=1
        continue
    fi
    # Lines per kernel: "Compiling entry function 'K' for 'sm_90'", "... N bytes stack frame,
    # S bytes spill stores, L bytes spill loads", "Used R registers, ... M bytes smem ...".
    rows="$(awk -v file="$(basename "$f" .ptx)" '
        /Compiling entry function/ { if (k != "") print k, file, regs, st, ld, stack, smem; match($0, /\x27[^\x27]+\x27/); k = substr($0, RSTART + 1, RLENGTH - 2); regs = st = ld = stack = smem = 0 }
        /bytes stack frame/ { for (i = 1; i <= NF; i++) { if ($(i+1) == "bytes" && $(i+2) == "stack") stack = $i; if ($(i+1) == "bytes" && $(i+2) == "spill" && $(i+3) ~ /^stores/) st = $i; if ($(i+1) == "bytes" && $(i+2) == "spill" && $(i+3) ~ /^loads/) ld = $i } }
        /Used [0-9]+ registers/ { for (i = 1; i <= NF; i++) { if ($i == "Used") regs = $(i+1); if ($(i+1) == "bytes" && $(i+2) ~ /^smem/) smem = $i } }
        END { if (k != "") print k, file, regs, st, ld, stack, smem }' <<<"$out")"
    while read -r k file regs st ld stack smem; do
        [[ -z "$k" ]] && continue
        printf '%-28s %-8s %5s %12s %12s %8s %8s\n' "$k" "$file" "$regs" "$st" "$ld" "$stack" "$smem"
        if [[ "$k" == conv3x3_* || "$k" == gram_* ]] && { ((st > 0)) || ((ld > 0)); }; then
            echo "FAIL: $k spills at $arch ($st bytes stored, $ld bytes loaded)" >&2
            fail=1
        fi
    done <<<"$rows"
done
done
for f in "$dir"/*_mma.ptx; do
    for want in 'mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32' 'mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32' \
                'cvt.rn.bf16x2.f32' 'ldmatrix.sync.aligned.m8n8.x4.shared.b16' \
                'cp.async.cg.shared.global' 'cp.async.wait_group' 'ld.shared.b32'; do
        grep -qF "$want" "$f" || { echo "FAIL: $(basename "$f") lacks $want" >&2; fail=1; }
    done
    if grep -q 'wmma\.' "$f"; then echo "FAIL: $(basename "$f") uses WMMA" >&2; fail=1; fi
done
((fail == 0)) && echo "OK: every kernel assembles for $archs; no conv/Gram kernel spills"
exit "$fail"
