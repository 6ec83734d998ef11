#!/usr/bin/env bash
# MHPO | Qwen2.5-7B-Instruct (paper)
#   FSDP on one node of 8 GPUs | vLLM rollout TP 2 | max response 2048.
#
#   bash examples/train/qwen2.5-7b-instruct_fsdp.sh --dry-run     # print command + config, check, start nothing
#   bash examples/train/qwen2.5-7b-instruct_fsdp.sh trainer.total_epochs=1   # any verl override may follow
#   ALGORITHM=grpo bash examples/train/qwen2.5-7b-instruct_fsdp.sh          # baseline: grpo|clip-higher|gspo|sapo|cispo
#
# Data first: bash examples/data_preprocess/prepare_data.sh. Knobs: see examples/common.sh.
set -euo pipefail
MODEL=qwen2.5-7b-instruct
ENGINE=fsdp
# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
launch_recipe "$MODEL" "$ENGINE" "$@"
