#!/usr/bin/env bash
# MHPO | Qwen2.5-VL-7B-Instruct (paper, vision-language setting)
#   FSDP on one node of 8 GPUs | vLLM rollout TP 2 | max prompt 2048 (images), max response 2048.
#   Trains on Geometry3K; validates on Geometry3K test, MathVista, MathVerse and MathVision.
#
#   bash examples/train/qwen2.5-vl-7b-instruct_fsdp.sh --dry-run     # print command + config, check, start nothing
#   bash examples/train/qwen2.5-vl-7b-instruct_fsdp.sh trainer.total_epochs=1   # any verl override may follow
#   ALGORITHM=clip-higher bash examples/train/qwen2.5-vl-7b-instruct_fsdp.sh   # a baseline (see --list)
#
# Data first: python -m mhpo_verl data convert geometry3k / mathvista / mathverse / mathvision (README, VL section).
# Knobs: see examples/common.sh.
set -euo pipefail
MODEL=qwen2.5-vl-7b-instruct
ENGINE=fsdp
# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
launch_recipe "$MODEL" "$ENGINE" "$@"
