#!/usr/bin/env bash
# MHPO | Qwen3-30B-A3B-Base (MoE, 128 experts)
#   Megatron on 4 nodes x 8 GPUs | TP 2 + SP, PP 2, EP 8, DP 8 | vLLM rollout TP 4.
#
#   bash examples/train/qwen3-30b-a3b-base_megatron.sh --dry-run     # print command + config, check, start nothing
#   bash examples/train/qwen3-30b-a3b-base_megatron.sh trainer.total_epochs=1   # any verl override may follow
#   ALGORITHM=grpo bash examples/train/qwen3-30b-a3b-base_megatron.sh          # baseline: grpo|clip-higher|gspo|sapo|cispo
#
# Data first: bash examples/data_preprocess/prepare_data.sh. Knobs: see examples/common.sh.
#
# Multi-node: start Ray first (examples/cluster/ray_cluster.sh head|worker) and run this on the head node, or
# use examples/cluster/slurm_mhpo.sbatch / ray_cluster.sh submit with MODEL=qwen3-30b-a3b-base.
set -euo pipefail
MODEL=qwen3-30b-a3b-base
ENGINE=megatron
# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
launch_recipe "$MODEL" "$ENGINE" "$@"
