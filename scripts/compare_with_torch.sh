#!/usr/bin/env bash
# Held-out check of the whole pipeline against PyTorch: the same weights file, images, settings
# and L-BFGS budget on both sides; prints the objective of each saved 8-bit output (computed by
# the PyTorch reference) and their ratio (ours / PyTorch's; the target is <= 1.05).
#
# Usage: scripts/compare_with_torch.sh GATYS_REF_PY WEIGHTS.pth CONTENT.png STYLE.png [EVALS]
#   GATYS_REF_PY: the reference script (gatys_ref.py: export / optimize / eval subcommands);
#   the images should already be at the working size (e.g. 128 px), so no side resizes them.
# Needs Debian's python3-torch (/usr/bin/python3) and a release build (cargo build --release).
set -euo pipefail
ref="$1" weights="$2" content="$3" style="$4" evals="${5:-100}"
py=/usr/bin/python3
bin="$(dirname "$0")/../target/release/neural-style"
work="$(mktemp -d)"
w=(--content-weight 1 --style-weight 1e4 --tv-weight 1e-4)
# --unbounded: the same algorithm as torch.optim.LBFGS (bounded, ours would win by design).
size="$("$py" -c "from PIL import Image; print(max(Image.open('$content').size))")"
torch_json="$(OMP_NUM_THREADS=2 "$py" "$ref" optimize --weights "$weights" --content "$content" --style "$style" \
    --evals "$evals" --init image "${w[@]}" --out "$work/torch.png")"
"$bin" --model "$weights" --content-image "$content" --style-image "$style" --image-size "$size" \
    --init image --num-iterations "$evals" "${w[@]}" --unbounded --output-image "$work/ours.png" --save-iter 0 --print-iter 0 --device cpu
ours_json="$("$py" "$ref" eval --weights "$weights" --content "$content" --style "$style" --image "$work/ours.png" "${w[@]}")"
echo "torch: $torch_json"
echo "ours:  $ours_json"
"$py" -c "import json,sys; t=json.loads(sys.argv[1])['objective']; o=json.loads(sys.argv[2])['objective']; print(f'ratio ours/torch = {o/t:.4f}')" "$torch_json" "$ours_json"
