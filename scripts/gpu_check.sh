#!/usr/bin/env bash
# The one command for a GPU machine: CPU-vs-CUDA parity tests, the CUDA benchmark, and the
# PyTorch baseline if its script is at hand, then a short table.
#
# Build on a machine with Rust (no GPU needed), then carry the repository with its target/ over:
#     .ci/install_cuda_tools.sh && cargo build --release && cargo test --release --test cuda_parity --no-run
#     scripts/gpu_check.sh            # on the GPU machine, from the repository root
# The GPU machine needs only the NVIDIA driver (libcuda): the PTX is inside the binaries.
# Env: BENCH_ARGS (extra args for `neural-style bench`), TORCH_ARGS (for torch_gatys.py,
# default "--sizes 512,1024 --evals 40"), TORCH_GATYS (path of torch_gatys.py),
# CHECK_OUT (log folder, default target/gpu_check), BIN_DIR (a folder holding prebuilt
# `neural-style` and `cuda_parity` binaries, when target/ is too big to carry:
# scripts/gpu_pack.sh fills .gpu/ with them and torch_gatys.py).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${CHECK_OUT:-target/gpu_check}"
mkdir -p "$out"
declare -a rows

row() { rows+=("$(printf '%-22s %-6s %8s  %s' "$1" "$2" "$3" "$4")"); }

run_step() { # name logfile cmd...
    local name="$1" log="$2"; shift 2
    local t0=$SECONDS
    "$@" >"$log" 2>&1
    local rc=$?
    echo "$((SECONDS - t0))s" >"$log.time"
    return $rc
}

echo "== device"
(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi not found") | tee "$out/device.txt"

# 1. Parity tests: the prebuilt test binary (newest), or cargo if there is one.
echo "== parity tests"
bin="$(ls -t ${BIN_DIR:+$BIN_DIR/cuda_parity} target/release/deps/cuda_parity-* target/debug/deps/cuda_parity-* 2>/dev/null | grep -v '\.d$' | head -1)"
if [[ -n "$bin" && -x "$bin" ]]; then
    cmd=("$bin" --test-threads=1 --nocapture)
elif command -v cargo >/dev/null; then
    cmd=(cargo test --release --test cuda_parity -- --test-threads=1 --nocapture)
else
    cmd=()
fi
if ((${#cmd[@]})); then
    if NEURAL_STYLE_REQUIRE_GPU=1 run_step parity "$out/parity.log" "${cmd[@]}"; then st=PASS; else st=FAIL; fi
    summary="$(grep -E '^test result' "$out/parity.log" | tail -1)"
    worst="$(grep -oE 'relative error [0-9.e+-]+ \(tolerance [0-9e.+-]+\)' "$out/parity.log" | sort -t' ' -k3 -g | tail -1)"
    row "parity tests" "$st" "$(cat "$out/parity.log.time")" "${summary:-see $out/parity.log}; worst ${worst:-?}"
    grep -E 'FAILED|panicked|L-BFGS' "$out/parity.log" | head -20
else
    row "parity tests" "MISS" "-" "no target/*/deps/cuda_parity-* binary and no cargo: build it first"
fi

# 2. Benchmark through the CLI.
echo "== neural-style bench --device cuda ${BENCH_ARGS:-}"
nsbin="${BIN_DIR:-target/release}/neural-style"
if [[ -x "$nsbin" ]]; then
    # shellcheck disable=SC2086
    if run_step bench "$out/bench.log" "$nsbin" bench --device cuda ${BENCH_ARGS:-}; then st=PASS; else st=FAIL; fi
    row "neural-style bench" "$st" "$(cat "$out/bench.log.time")" "$(tail -1 "$out/bench.log")"
    cat "$out/bench.log" | tail -20
else
    row "neural-style bench" "MISS" "-" "$nsbin not built"
fi

# 3. Issue 3's acceptance run: 512 px, 500 L-BFGS iterations on the example images, with a log.
echo "== 512 px, 500 iterations on cuda"
if [[ -x "$nsbin" ]]; then
    if run_step run512 "$out/run512.log" "$nsbin" --device cuda --content-image examples/content.png \
        --style-image examples/style.png --image-size 512 --num-iterations 500 --save-iter 0 \
        --print-iter 100 --output-image "$out/run512.png" --log-json "$out/run512.jsonl"; then st=PASS; else st=FAIL; fi
    row "512px x 500 (cuda)" "$st" "$(cat "$out/run512.log.time")" "$(tail -1 "$out/run512.jsonl" 2>/dev/null | cut -c1-200)"
else
    row "512px x 500 (cuda)" "MISS" "-" "$nsbin not built"
fi

# 4. The PyTorch baseline (same work), if its script is here.
echo "== torch_gatys.py"
tg="${TORCH_GATYS:-}"
for p in torch_gatys.py scripts/torch_gatys.py shared/peer/torch_gatys.py ../shared/peer/torch_gatys.py; do
    [[ -z "$tg" && -f "$p" ]] && tg="$p"
done
if [[ -n "$tg" ]] && python3 -c 'import torch' 2>/dev/null; then
    # shellcheck disable=SC2086
    if run_step torch "$out/torch.log" python3 "$tg" ${TORCH_ARGS:---sizes 512,1024 --evals 40}; then st=PASS; else st=FAIL; fi
    row "torch_gatys.py" "$st" "$(cat "$out/torch.log.time")" "$(grep -c '^{' "$out/torch.log") configurations, see $out/torch.log"
    grep '^{' "$out/torch.log" | head -20
else
    row "torch_gatys.py" "SKIP" "-" "script or torch not found"
fi

echo
printf '%-22s %-6s %8s  %s\n' step status time details
for r in "${rows[@]}"; do echo "$r"; done
! printf '%s\n' "${rows[@]}" | grep -q ' FAIL '
