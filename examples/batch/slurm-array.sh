#!/bin/bash
# Stylise every frame in frames/ with one style, spread over a Slurm job array of 8 tasks:
#   mkdir -p logs && sbatch examples/batch/slurm-array.sh
# Each task takes one contiguous block of the naturally sorted frames (neural-style reads
# SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT), so --temporal-init
# chains stay within a task. Resubmitting the array (or `scontrol requeue`) after a failure
# resumes: frames whose output exists are skipped. Use a contiguous range without a step.
#
# Paths and options come from the environment that sbatch passes on, with the defaults below:
#   FRAMES=clips/a OUTPUT=styled/a STYLE=starry.jpg sbatch examples/batch/slurm-array.sh
# NEURAL_STYLE_BIN is the program, NEURAL_STYLE_ARGS the options after the paths (split on
# spaces). The #SBATCH lines can be overridden on sbatch's command line (e.g. --array=0-3).
# CI submits this file to a one-node Slurm (tests/it/slurm.rs).
#SBATCH --job-name=neural-style
#SBATCH --array=0-7
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
#SBATCH --output=logs/neural-style-%A_%a.log

set -euo pipefail
FRAMES="${FRAMES:-frames/}"
OUTPUT="${OUTPUT:-styled/}"
STYLE="${STYLE:-style.jpg}"
NEURAL_STYLE_BIN="${NEURAL_STYLE_BIN:-neural-style}"
NEURAL_STYLE_ARGS="${NEURAL_STYLE_ARGS:---image-size 1024 --scales 256,512,1024 --scale-iterations 300,150,75 --temporal-init --temporal-overlap 2 --device cuda}"
# shellcheck disable=SC2086 # NEURAL_STYLE_ARGS is a list of options
exec "$NEURAL_STYLE_BIN" batch "$FRAMES" --output "$OUTPUT" --style-image "$STYLE" $NEURAL_STYLE_ARGS
