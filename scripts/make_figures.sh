#!/usr/bin/env bash
# Remakes every figure committed under examples/ and records, beside each image, the commands that
# made it (examples/<name>.txt: the commands, then a comment line with the program's version, the
# CPU and the time taken). The figures are made on the CPU (every GPU hidden with
# CUDA_VISIBLE_DEVICES=-1), where the figure check (tests/it/figures.rs) runs README's first command.
#
#   scripts/make_figures.sh [--real-weights FILE]
#
# Without --real-weights, examples/real-vgg16.png and real-grid.png (made with real ImageNet VGG-16
# weights, which are never committed) are left as they are; with it, they are remade too. On the machines of
# this workplace ../shared/tools/real-vgg16.sh writes such a file (vgg16-caffe.safetensors, the
# Caffe-converted ImageNet VGG-16 that Keras ships); elsewhere any Caffe VGG-16 or VGG-19 file
# whose name contains "caffe" gives the same kind of figure.
#
# The first command (examples/result.png, then examples/figure.png) is README's first command
# with --output-image examples/result.png; tests/it/figures.rs fails when README, this script's
# record and the committed images disagree.
set -euo pipefail
cd "$(dirname "$0")/.."

real_weights=""
while [ $# -gt 0 ]; do
    case "$1" in
        --real-weights) real_weights="${2:?--real-weights needs a FILE}"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "$real_weights" ] && [ ! -f "$real_weights" ]; then
    echo "error: --real-weights $real_weights: no such file" >&2; exit 1
fi

cargo build --release --quiet
bin="$PWD/target/release/neural-style"
export CUDA_VISIBLE_DEVICES=-1
version="$("$bin" --version | head -1)"
cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || echo unknown), $(nproc) cores"

# record NAME COMMAND...: the commands made so far for examples/NAME.png, one per line.
declare -A commands
run() {
    local name="$1"; shift
    echo "+ neural-style $*" >&2
    "$bin" "$@"
    commands[$name]+="neural-style $*"$'\n'
}
# finish NAME SECONDS: write examples/NAME.txt.
finish() {
    local name="$1" seconds="$2"
    { printf '%s' "${commands[$name]}"
      echo "# $version; CPU: $cpu; ${seconds} s; $(date -u +%Y-%m-%d)"; } > "examples/$name.txt"
    echo "wrote examples/$name.png and examples/$name.txt" >&2
}

# The procedural inputs every figure uses.
SECONDS=0
run content make-examples --out-dir examples
commands[style]="${commands[content]}"
finish content "$SECONDS"; finish style "$SECONDS"

# README's first command, then the figure beside it. The CPU's matrix kernels accumulate in
# another order on AVX-512 than on AVX2, and 100 L-BFGS steps carry that far (a mean difference
# of 8.5 levels of 255), so the figure check needs the result of each: examples/result.png and
# the figure from an AVX-512 machine (what the default build runs there), examples/result-avx2.png
# from a build without the avx512 feature (what every AVX2 machine runs). On a machine without
# AVX-512 only the latter can be made.
first=(--content-image examples/content.png --style-image examples/style.png --image-size 128 --num-iterations 100)
avx512=yes
for flag in avx512f avx512bw avx512cd avx512dq avx512vl; do
    grep -qw "$flag" /proc/cpuinfo || avx512=""
done
if [ -n "$avx512" ]; then
    SECONDS=0
    run result "${first[@]:0:4}" --output-image examples/result.png "${first[@]:4}"
    finish result "$SECONDS"
    commands[figure]="${commands[result]}"
    SECONDS=0
    run figure make-examples --out-dir examples --figure examples/result.png
    finish figure "$SECONDS"
else
    echo "note: this CPU has no AVX-512: examples/result.png and figure.png (AVX-512 results) left as they are" >&2
fi
cargo build --release --quiet --no-default-features --target-dir target/avx2
SECONDS=0
default_bin="$bin"; bin="$PWD/target/avx2/release/neural-style"
run result-avx2 "${first[@]:0:4}" --output-image examples/result-avx2.png "${first[@]:4}"
bin="$default_bin"
commands[result-avx2]+="# built with: cargo build --release --no-default-features (the AVX2 kernels only)"$'\n'
finish result-avx2 "$SECONDS"

# The paper's figures (docs/commands.md).
SECONDS=0
run sheet sheet --content-image examples/content.png --style-image examples/style.png,examples/content.png --image-size 128 --num-iterations 100 --device cpu --output-image examples/sheet.png
finish sheet "$SECONDS"
SECONDS=0
run grid grid --content-image examples/content.png --style-image examples/style.png --image-size 96 --num-iterations 60 --device cpu --output-image examples/grid.png
finish grid "$SECONDS"

# Real weights: the result goes to a temp folder (only the figure is committed); its settings,
# model hash included, are in the result's PNG chunk and the commands in real-vgg16.txt.
if [ -n "$real_weights" ]; then
    tmp="${TMPDIR:-/tmp}/neural-style-figures"; rm -rf "$tmp"; mkdir -p "$tmp"
    SECONDS=0
    run real-vgg16 --model "$real_weights" --content-image examples/content.png --style-image examples/style.png --style-weight 10 --image-size 384 --num-iterations 300 --device cpu --output-image "$tmp/real-vgg16-result.png"
    run real-vgg16 make-examples --out-dir examples --figure "$tmp/real-vgg16-result.png" --figure-output examples/real-vgg16.png
    sha="$(sha256sum "$real_weights" | cut -c1-16)"
    commands[real-vgg16]+="# weights: $(basename "$real_weights") (sha256 $sha...), ImageNet VGG-16, Caffe convention"$'\n'
    finish real-vgg16 "$SECONDS"
    # grid at its defaults (the paper's objective and ratios) with real weights: Figure 3's
    # progression across the columns (docs/commands.md).
    SECONDS=0
    run real-grid grid --model "$real_weights" --content-image examples/content.png --style-image examples/style.png --image-size 256 --num-iterations 100 --device cpu --output-image examples/real-grid.png
    commands[real-grid]+="# weights: $(basename "$real_weights") (sha256 $sha...), ImageNet VGG-16, Caffe convention"$'\n'
    finish real-grid "$SECONDS"
else
    echo "note: examples/real-vgg16.png and real-grid.png left as they are (give --real-weights FILE to remake them)" >&2
fi
