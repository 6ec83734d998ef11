#!/usr/bin/env bash
# MHPO | Qwen2.5-VL-7B-Instruct (paper, vision-language setting)
#   Megatron on 2 nodes x 8 GPUs | TP 2 + sequence parallel, DP 8, full recompute | vLLM rollout TP 2 (0.4 of the GPU) | max prompt 2048 (images), max response 2048.
#   Trains on Geometry3K; validates on Geometry3K test, MathVista, MathVerse and MathVision.
#
#   bash examples/train/qwen2.5-vl-7b-instruct_megatron.sh --dry-run     # print command + config, check, start nothing
#   bash examples/train/qwen2.5-vl-7b-instruct_megatron.sh trainer.total_epochs=1   # any verl override may follow
#   ALGORITHM=clip-higher bash examples/train/qwen2.5-vl-7b-instruct_megatron.sh   # a baseline (see --list)
#
# Data first: python -m mhpo_verl data convert geometry3k / mathvista / mathverse / mathvision (README, VL section).
# Knobs: see examples/common.sh.
#
# Multi-node: start Ray first (examples/cluster/ray_cluster.sh head|worker) and run this on the head node, or
# use examples/cluster/slurm_mhpo.sbatch / ray_cluster.sh submit with MODEL=qwen2.5-vl-7b-instruct.
set -euo pipefail
MODEL=qwen2.5-vl-7b-instruct
ENGINE=megatron
# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
launch_recipe "$MODEL" "$ENGINE" "$@"
