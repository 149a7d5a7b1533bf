#!/usr/bin/env bash
# The one command for a GPU machine (see docs/GPU.md): CPU-vs-CUDA parity tests, the end-to-end
# objective against the CPU, our benchmark and PyTorch's (torch_gatys.py) at 512² and 1024² for
# fp32, tf32 and bf16 in the same run, then a table. Nothing here needs a CUDA toolkit on that
# machine, only the driver: the kernels (cubins + PTX) are inside the binaries.
#
# Here (with Rust, no GPU needed):   scripts/gpu_pack.sh ../shared/peer/torch_gatys.py
# There, from the repository root, in one device call with carry [".gpu"]:
#     BIN_DIR=.gpu TORCH_GATYS=.gpu/torch_gatys.py CHECK_OUT=$OUT scripts/gpu_check.sh
#
# Writes under CHECK_OUT (default target/gpu_check): device.txt, parity.log, e2e_*.jsonl,
# bench_<precision>.jsonl, run512.*, torch.log, gpu-results.jsonl (one JSON line per size and
# precision, plus one per parity op and precision and per end-to-end run) and table.txt.
#
# Env: BIN_DIR (folder with prebuilt `neural-style` and `cuda_parity`; default target/release
# and target/release/deps), SIZES (512,1024), PRECISIONS (fp32,tf32,bf16), EVALS (20), WARMUP (3),
# TORCH_EVALS (40), TORCH_CONFIGS, TORCH_GATYS, PYTHON (python3), E2E_SIZE (128), E2E_ITERS (50),
# RUN512_ITERS (500; 0 skips the 512 px run), DEVICE (cuda; `cpu` dry-runs every step on the CPU,
# for checking this script on a machine without a GPU), GEMMS (wmma,mma: the GEMM main loops to
# check, NEURAL_STYLE_CUDA_GEMM; `mma` exists for tf32 and bf16, so it adds one parity run and the
# benches bench_tf32-mma.jsonl and bench_bf16-mma.jsonl, whose table rows have no PyTorch column:
# compare them with the tf32 and bf16 rows).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${CHECK_OUT:-target/gpu_check}"
mkdir -p "$out"
device="${DEVICE:-cuda}"
sizes="${SIZES:-512,1024}"
precisions="${PRECISIONS:-fp32,tf32,bf16}"
py="${PYTHON:-python3}"
bin_dir="${BIN_DIR:-target/release}"
# Carried files can lose their execute bits on the way.
chmod +x scripts/*.sh "$bin_dir"/neural-style "$bin_dir"/cuda_parity 2>/dev/null || true

declare -a rows
row() { rows+=("$(printf '%-26s %-5s %6s  %s' "$1" "$2" "$3" "$4")"); }
# run_step NAME LOG CMD...: runs CMD with stdout+stderr in LOG, records its wall time.
run_step() {
    local log="$2"; shift 2
    local t0=$SECONDS
    "$@" >"$log" 2>&1
    local rc=$?
    echo "$((SECONDS - t0))s" >"$log.time"
    return $rc
}
status() { if "$@"; then echo PASS; else echo FAIL; fi; }

echo "== device"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null || echo "nvidia-smi not found"; } | tee "$out/device.txt"
ns="$bin_dir/neural-style"
[[ -x "$ns" ]] && "$ns" --version | tee -a "$out/device.txt"

# 1. Parity tests: every op per precision against the CPU (the `parity {json}` lines), whole
# evaluations, determinism, and 100 L-BFGS iterations on a narrow network.
echo "== parity tests"
pbin="$(ls -t "$bin_dir/cuda_parity" target/release/deps/cuda_parity-* 2>/dev/null | grep -v '\.d$' | head -1)"
if [[ -n "$pbin" && -x "$pbin" ]]; then
    require=(env NEURAL_STYLE_REQUIRE_GPU=1)
    [[ "$device" == cpu ]] && require=(env)
    st="$(status run_step parity "$out/parity.log" "${require[@]}" "$pbin" --test-threads=1 --nocapture)"
    row "parity tests" "$st" "$(cat "$out/parity.log.time")" "$(grep -E '^test result' "$out/parity.log" | tail -1)"
    grep -E 'FAILED|panicked' "$out/parity.log" | head -20
    # The same suite with the mma.sync main loop selected: every tf32 and bf16 test (whole evaluation and
    # L-BFGS included) then runs the fast path. (mma_gemm_matches_cpu_and_the_wmma_reference
    # compares the two op by op in either run.)
    if [[ ",${GEMMS:-wmma,mma}," == *,mma,* ]]; then
        st="$(status run_step parity_mma "$out/parity_mma.log" env NEURAL_STYLE_CUDA_GEMM=mma "${require[@]}" "$pbin" --test-threads=1 --nocapture)"
        row "parity tests (gemm mma)" "$st" "$(cat "$out/parity_mma.log.time")" "$(grep -E '^test result' "$out/parity_mma.log" | tail -1)"
        grep -E 'FAILED|panicked' "$out/parity_mma.log" | head -20
    fi
else
    row "parity tests" "MISS" "-" "no cuda_parity binary: run scripts/gpu_pack.sh first"
fi

# 2. End to end: the same run (the example images, E2E_ITERS L-BFGS iterations) on the CPU and
# on the GPU in each precision; gpu_results.py compares the final objectives.
echo "== end to end vs the CPU"
e2e() { # name device [precision]
    local name="$1"; shift
    run_step "e2e_$name" "$out/e2e_$name.log" "$ns" --device "$@" --content-image examples/content.png \
        --style-image examples/style.png --image-size "${E2E_SIZE:-128}" --num-iterations "${E2E_ITERS:-50}" \
        --save-iter 0 --print-iter 0 --output-image "$out/e2e_$name.png" --log-json "$out/e2e_$name.jsonl"
}
if [[ -x "$ns" ]]; then
    st="$(status e2e cpu cpu)"
    row "end to end: cpu" "$st" "$(cat "$out/e2e_cpu.log.time")" "$(tail -1 "$out/e2e_cpu.log")"
    if [[ "$device" == cuda ]]; then
        for p in ${precisions//,/ }; do
            st="$(status e2e "$p" cuda --precision "$p")"
            row "end to end: cuda $p" "$st" "$(cat "$out/e2e_$p.log.time")" "$(tail -1 "$out/e2e_$p.log")"
        done
    fi
fi

# 3. Our benchmark, per precision (the CPU has only fp32).
echo "== neural-style bench"
if [[ -x "$ns" ]]; then
    for p in ${precisions//,/ }; do
        args=(bench --device "$device" --sizes "$sizes" --evals "${EVALS:-20}" --warmup "${WARMUP:-3}" --json)
        [[ "$device" == cuda ]] && args+=(--precision "$p")
        st="$(status run_step "bench_$p" "$out/bench_$p.log" "$ns" "${args[@]}")"
        grep '^{' "$out/bench_$p.log" >"$out/bench_$p.jsonl"
        row "bench $p" "$st" "$(cat "$out/bench_$p.log.time")" "$(tail -1 "$out/bench_$p.log" | cut -c1-120)"
        if [[ "$device" == cuda && "$p" != fp32 && ",${GEMMS:-wmma,mma}," == *,mma,* ]]; then
            st="$(status run_step "bench_$p-mma" "$out/bench_$p-mma.log" env NEURAL_STYLE_CUDA_GEMM=mma "$ns" "${args[@]}")"
            grep '^{' "$out/bench_$p-mma.log" >"$out/bench_$p-mma.jsonl"
            row "bench $p (gemm mma)" "$st" "$(cat "$out/bench_$p-mma.log.time")" "$(tail -1 "$out/bench_$p-mma.log" | cut -c1-120)"
        fi
        [[ "$device" == cpu ]] && break
    done
else
    row "neural-style bench" "MISS" "-" "$ns not built"
fi

# 4. The 512 px acceptance run with the default precision (issue 3), for the log and the image.
if [[ -x "$ns" && "${RUN512_ITERS:-500}" != 0 && "$device" == cuda ]]; then
    echo "== 512 px, ${RUN512_ITERS:-500} iterations"
    st="$(status run_step run512 "$out/run512.log" "$ns" --device cuda --content-image examples/content.png \
        --style-image examples/style.png --image-size 512 --num-iterations "${RUN512_ITERS:-500}" --save-iter 0 \
        --print-iter 100 --output-image "$out/run512.png" --log-json "$out/run512.jsonl")"
    row "512px x ${RUN512_ITERS:-500} (cuda)" "$st" "$(cat "$out/run512.log.time")" "$(tail -1 "$out/run512.jsonl" 2>/dev/null | cut -c1-120)"
fi

# 5. PyTorch, the same work, same machine, same run.
echo "== torch_gatys.py"
tg="${TORCH_GATYS:-}"
for p in "$bin_dir/torch_gatys.py" shared/peer/torch_gatys.py ../shared/peer/torch_gatys.py; do
    [[ -z "$tg" && -f "$p" ]] && tg="$p"
done
if [[ -n "$tg" ]] && "$py" -c 'import torch' 2>/dev/null; then
    configs="${TORCH_CONFIGS:-lbfgs-fp32,lbfgs-tf32,adam-tf32,lbfgs-tf32-cl,lbfgs-bf16-cl,adam-bf16-cl}"
    [[ "$device" == cpu ]] && configs=lbfgs-fp32
    st="$(status run_step torch "$out/torch.log" env PYTHONUNBUFFERED=1 "$py" "$tg" --device "$device" --sizes "$sizes" --evals "${TORCH_EVALS:-40}" --configs "$configs")"
    row "torch_gatys.py" "$st" "$(cat "$out/torch.log.time")" "$(grep -c '"ms_per_eval"' "$out/torch.log") configurations"
else
    row "torch_gatys.py" "SKIP" "-" "script (TORCH_GATYS) or torch not found"
fi

echo
{
    printf '%-26s %-5s %6s  %s\n' step status time details
    for r in "${rows[@]}"; do echo "$r"; done
} | tee "$out/steps.txt"
echo
# The results table and gpu-results.jsonl (python3 from the standard library only).
"$py" scripts/gpu_results.py "$out" | tee "$out/table.txt"
rc=${PIPESTATUS[0]}
! printf '%s\n' "${rows[@]}" | grep -q ' FAIL ' && ((rc == 0))
