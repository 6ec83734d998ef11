#!/usr/bin/env bash
# MHPO | Qwen3-30B-A3B-Base (MoE)
#   FSDP2 on one node of 8 GPUs, parameter + optimizer offload | vLLM rollout TP 4 | max response 4096.
#
#   bash examples/train/qwen3-30b-a3b-base_fsdp.sh --dry-run     # print command + config, check, start nothing
#   bash examples/train/qwen3-30b-a3b-base_fsdp.sh trainer.total_epochs=1   # any verl override may follow
#   ALGORITHM=grpo bash examples/train/qwen3-30b-a3b-base_fsdp.sh          # baseline: grpo|clip-higher|gspo|sapo|cispo
#
# Data first: bash examples/data_preprocess/prepare_data.sh. Knobs: see examples/common.sh.
set -euo pipefail
MODEL=qwen3-30b-a3b-base
ENGINE=fsdp
# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
launch_recipe "$MODEL" "$ENGINE" "$@"
