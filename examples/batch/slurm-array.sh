#!/bin/bash
# Stylise every frame in frames/ with one style, spread over a Slurm job array of 8 tasks:
#   sbatch examples/batch/slurm-array.sh
# Each task takes one contiguous block of the naturally sorted frames (neural-style reads
# SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT), so --temporal-init
# chains stay within a task. Resubmitting the array (or `scontrol requeue`) after a failure
# resumes: frames whose output exists are skipped. Use a contiguous range without a step.
#SBATCH --job-name=neural-style
#SBATCH --array=0-7
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
#SBATCH --output=logs/neural-style-%A_%a.log

set -euo pipefail
neural-style batch frames/ --output styled/ \
  --style-image style.jpg --image-size 1024 \
  --scales 256,512,1024 --scale-iterations 300,150,75 \
  --temporal-init --device cuda
