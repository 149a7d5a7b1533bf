#!/usr/bin/env bash
# The CPU time --serve's own threads (serve-*: the encoder, the request workers, the accept loop,
# the event streams) take from a 256 px CPU run with a client on /events, against the process's
# total: a cost measure that a shared machine's wall-clock noise (±10% between runs) does not blur.
# Usage: scripts/serve_cpu_share.sh (BIN: default target/release/neural-style; D: a work folder;
# ITERS: iterations, default 100; EVERY: --serve-every, default none: a frame a second).
set -u
BIN=$(realpath "${BIN:-target/release/neural-style}")
D=${D:-$(mktemp -d)}
ITERS=${ITERS:-100}
cd "$D"
[ -f ex/content.png ] || "$BIN" make-examples --out-dir ex >/dev/null 2>&1
every=(); [ -n "${EVERY:-}" ] && every=(--serve-every "$EVERY")
env -u NEURAL_STYLE_MODEL TORCH_HOME="$D/th" "$BIN" --content-image ex/content.png --style-image ex/style.png \
  --image-size 256 --num-iterations "$ITERS" --device cpu --save-iter 0 --print-iter 0 \
  --output-image served.png --serve 127.0.0.1:0 "${every[@]}" 2> served.err &
pid=$!
for _ in $(seq 100); do grep -q '^serving ' served.err 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[^ ]*' served.err | head -1)
curl -sN "${url/\/?token=/\/events?token=}" > events.txt &
cpid=$!
# utime + stime (clock ticks) of every thread, the last value seen for each (threads that end
# are counted up to the last sample, 0.2 s before).
declare -A ticks names
total=0
while kill -0 $pid 2>/dev/null; do
  for f in /proc/$pid/task/*/stat; do
    read -r line < "$f" 2>/dev/null || continue
    tid=${f#/proc/$pid/task/}; tid=${tid%/stat}
    name=${line#*(}; name=${name%%)*}
    rest=${line##*) }
    set -- $rest
    ticks[$tid]=$(( ${12} + ${13} )); names[$tid]=$name
  done
  read -r line < /proc/$pid/stat 2>/dev/null && { rest=${line##*) }; set -- $rest; total=$(( ${12} + ${13} )); }
  sleep 0.2
done
wait $pid; rc=$?
kill $cpid 2>/dev/null; wait $cpid 2>/dev/null
serve=0
for tid in "${!ticks[@]}"; do [[ ${names[$tid]} == serve-* ]] && serve=$(( serve + ticks[$tid] )); done
hz=$(getconf CLK_TCK)
echo "exit $rc; $(grep -o '([0-9.]* ms each)' served.err | head -1); events: $(grep -c '^event: progress' events.txt) progress, $(grep -c '^event: image' events.txt) image"
awk -v s=$serve -v t=$total -v hz=$hz 'BEGIN { printf "serve-* threads %.2f s of %.2f s process CPU time: %.2f%%\n", s/hz, t/hz, 100*s/t }'
