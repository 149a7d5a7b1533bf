#!/usr/bin/env bash
# Saved-PNG objective of neural-style vs torch.optim.LBFGS on real Caffe VGG-16 weights.
#
#   run_table.sh BIN "EXTRA_FLAGS" SIZE ITERS PAIR [PAIR...]
#     BIN          neural-style binary
#     EXTRA_FLAGS  extra flags for our program only ("" or "--unbounded" ...)
#     SIZE         longer side in px (128, 256, ...)
#     ITERS        iterations = loss-and-gradient evaluations (100, 300, ...)
#     PAIR         content:style, names of images in $IMAGES without extension (astronaut:ihc)
#
# Environment:
#   TORCH=0          skip the torch.optim.LBFGS side (default 1: run it)
#   OURS=0           skip our program (default 1)
#   OBJ_FLAGS="..."  objective flags given to BOTH programs and the evaluator (same names):
#                    --content-weight --style-weight --tv-weight --content-layers --style-layers
#   MEASURE_DIR      where inputs and results live (default ~/.cache/neural-style-real/measure):
#                    weights/vgg16-caffe.safetensors (../shared/tools/real-vgg16.sh writes it),
#                    images/*.png|jpg (photos and paintings of your choice: never commit them),
#                    and the outputs: sized/, runs/, table.tsv
#   WEIGHTS, IMAGES, TABLE, RUNS   override those paths one by one
#
# Each side's PNG is scored by ONE evaluator (torch_lbfgs_caffe.py eval, float64). Rows are
# appended to $TABLE (TSV): pair size iters which saved_objective float_final ratio wall_s
# self_reported_final self_vs_eval_rel evaluations load1 png (load1: 1-min load average
# when the row was written; the machine has 2 cores, so wall_s is only comparable at low load).
#  - saved_objective: the evaluator's objective of the PNG written.
#  - float_final: the optimiser's loss at its last evaluation (ours: --log-json summary
#    final_optimizer.total; torch: the closure's last loss). x ends one step past that point.
#  - binary_eval: BIN's own objective of that PNG. Ours: --log-json summary final.total (the
#    program's report for the image it wrote). Torch's PNG: iteration 1's loss of a 1-iteration
#    BIN run started from it (--init-image), i.e. BIN evaluating torch's PNG.
#  - binary_vs_eval_rel: |binary_eval - saved_objective| / saved_objective (evaluator agreement).
set -euo pipefail
M="${MEASURE_DIR:-$HOME/.cache/neural-style-real/measure}"
BIN="$1"; EXTRA="$2"; SIZE="$3"; ITERS="$4"; shift 4
WEIGHTS="${WEIGHTS:-$M/weights/vgg16-caffe.safetensors}"
IMAGES="${IMAGES:-$M/images}"
TABLE="${TABLE:-$M/table.tsv}"
RUNS="${RUNS:-$M/runs}"
PY=/usr/bin/python3
REF="$(cd "$(dirname "$0")" && pwd)/torch_lbfgs_caffe.py"
OBJ_FLAGS="${OBJ_FLAGS:-}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
mkdir -p "$RUNS" "$M/sized/$SIZE"
[ -s "$TABLE" ] || printf 'pair\tsize\titers\twhich\tsaved_objective\tfloat_final\tratio_saved_float\twall_s\tbinary_eval\tbinary_vs_eval_rel\tevaluations\tload1\tpng\n' > "$TABLE"

sized() {  # name -> pre-sized PNG (longer side SIZE, Lanczos): both programs read these pixels
  local src; src=$(ls "$IMAGES/$1".* 2>/dev/null | head -1)
  [ -n "$src" ] || { echo "no image $IMAGES/$1.*" >&2; exit 1; }
  local out="$M/sized/$SIZE/$1.png"
  [ -s "$out" ] || $PY "$REF" prep --size "$SIZE" --in "$src" --out "$out" >/dev/null
  echo "$out"
}

tag=$(echo "$EXTRA $OBJ_FLAGS" | tr -c 'A-Za-z0-9_.=-' '_' | sed 's/__*/_/g; s/^_//; s/_$//')
for pair in "$@"; do
  c="${pair%%:*}"; s="${pair##*:}"
  C=$(sized "$c"); S=$(sized "$s")
  base="$RUNS/${c}_${s}_${SIZE}_${ITERS}"
  if [ "${OURS:-1}" = 1 ]; then
    out="${base}_ours${tag:+_$tag}.png"; log="${out%.png}.jsonl"; rm -f "$log"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$BIN" --model "$WEIGHTS" --content-image "$C" --style-image "$S" --image-size "$SIZE" \
      --num-iterations "$ITERS" --device cpu --save-iter 0 --print-iter 0 \
      --log-json "$log" --output-image "$out" $OBJ_FLAGS $EXTRA > "${out%.png}.stderr" 2>&1
    t1=$(date +%s.%N)
    # shellcheck disable=SC2086
    ev=$($PY "$REF" eval --weights "$WEIGHTS" --content "$C" --style "$S" --image "$out" $OBJ_FLAGS)
    $PY - "$log" "$ev" "$pair" "$SIZE" "$ITERS" "ours${EXTRA:+ $EXTRA}" "$(echo "$t1 - $t0" | bc)" "$out" >> "$TABLE" <<'EOF'
import json, sys
load1 = open("/proc/loadavg").read().split()[0]
log, ev, pair, size, iters, which, wall, png = sys.argv[1:]
summ = [json.loads(l) for l in open(log) if '"summary"' in l][-1]
saved = json.loads(ev)["total"]; fl = summ["final_optimizer"]["total"]; rep = summ["final"]["total"]
print("\t".join([pair, size, iters, which, f"{saved:.6e}", f"{fl:.6e}", f"{saved/fl:.4f}", f"{float(wall):.1f}",
                 f"{rep:.6e}", f"{abs(rep-saved)/saved:.2e}", str(summ["evaluations"]), load1, png]))
EOF
    tail -1 "$TABLE"
  fi
  if [ "${TORCH:-1}" = 1 ]; then
    out="${base}_torch${OBJ_FLAGS:+_$(echo "$OBJ_FLAGS" | tr -c 'A-Za-z0-9_.=-' '_')}.png"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    js=$($PY "$REF" optimize --weights "$WEIGHTS" --content "$C" --style "$S" --iters "$ITERS" --out "$out" $OBJ_FLAGS)
    t1=$(date +%s.%N)
    echo "$js" > "${out%.png}.json"
    # shellcheck disable=SC2086
    ev=$($PY "$REF" eval --weights "$WEIGHTS" --content "$C" --style "$S" --image "$out" $OBJ_FLAGS)
    # BIN's own evaluation of torch's PNG: the first evaluation of a run started from it.
    # shellcheck disable=SC2086
    "$BIN" --model "$WEIGHTS" --content-image "$C" --style-image "$S" --image-size "$SIZE" \
      --num-iterations 1 --device cpu --save-iter 0 --print-iter 0 --init image --init-image "$out" \
      --log-json "${out%.png}.bineval.jsonl" --output-image "${out%.png}.bineval.png" $OBJ_FLAGS $EXTRA > /dev/null 2>&1
    export BINEVAL="${out%.png}.bineval.jsonl"
    $PY - "$js" "$ev" "$pair" "$SIZE" "$ITERS" "torch.optim.LBFGS" "$(echo "$t1 - $t0" | bc)" "$out" >> "$TABLE" <<'EOF'
import json, sys
load1 = open("/proc/loadavg").read().split()[0]
js, ev, pair, size, iters, which, wall, png = sys.argv[1:]
import os
r = json.loads(js); saved = json.loads(ev)["total"]; fl = r["final_optimizer"]["total"]
rep = json.loads(open(os.environ["BINEVAL"]).readline())["total"]
print("\t".join([pair, size, iters, which, f"{saved:.6e}", f"{fl:.6e}", f"{saved/fl:.4f}", f"{float(wall):.1f}",
                 f"{rep:.6e}", f"{abs(rep-saved)/saved:.2e}", str(r["evaluations"]), load1, png]))
EOF
    tail -1 "$TABLE"
  fi
done
