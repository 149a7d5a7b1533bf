#!/usr/bin/env bash
# ms per evaluation of a 256 px CPU run, without and with --serve (a curl -N client on /events), 3 alternations.
# Usage: scripts/serve_cost.sh (BIN: the binary, default target/debug/neural-style, as `cargo test` builds it; D: a work folder).
set -u
BIN=${BIN:-target/debug/neural-style}
D=${D:-$(mktemp -d)}
BIN=$(realpath "$BIN"); cd "$D"
[ -f ex/content.png ] || $BIN make-examples --out-dir ex >/dev/null 2>&1
common=(--content-image ex/content.png --style-image ex/style.png --image-size 256 --num-iterations 50 --device cpu --save-iter 0 --print-iter 0)
ms() { grep -o '([0-9.]* ms each)' "$1" | grep -o '[0-9.]*' | head -1; }
for k in 1 2 3; do
  env -u NEURAL_STYLE_MODEL TORCH_HOME=$D/th $BIN "${common[@]}" --output-image plain.png 2> plain.err
  a=$(ms plain.err)
  env -u NEURAL_STYLE_MODEL TORCH_HOME=$D/th $BIN "${common[@]}" --output-image served.png --serve 127.0.0.1:0 2> served.err &
  pid=$!
  for i in $(seq 100); do grep -q '^serving ' served.err 2>/dev/null && break; sleep 0.1; done
  url=$(grep -o 'http://[^ ]*' served.err | head -1)
  curl -sN "${url/\/?token=/\/events?token=}" > events.txt &
  cpid=$!
  wait $pid
  kill $cpid 2>/dev/null; wait $cpid 2>/dev/null
  b=$(ms served.err)
  echo "round $k: plain $a ms/eval, served $b ms/eval (events received: $(grep -c '^event: progress' events.txt) progress, $(grep -c '^event: image' events.txt) image)"
done
