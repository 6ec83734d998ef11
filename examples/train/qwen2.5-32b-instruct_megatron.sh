#!/usr/bin/env bash
# MHPO | Qwen2.5-32B-Instruct
#   Megatron on 4 nodes x 8 GPUs | TP 8 + sequence parallel, PP 2 (virtual 2), DP 2, full recompute | vLLM rollout TP 4.
#
#   bash examples/train/qwen2.5-32b-instruct_megatron.sh --dry-run     # print command + config, check, start nothing
#   bash examples/train/qwen2.5-32b-instruct_megatron.sh trainer.total_epochs=1   # any verl override may follow
#   ALGORITHM=grpo bash examples/train/qwen2.5-32b-instruct_megatron.sh          # baseline: grpo|clip-higher|gspo|sapo|cispo
#
# Data first: bash examples/data_preprocess/prepare_data.sh. Knobs: see examples/common.sh.
#
# Multi-node: start Ray first (examples/cluster/ray_cluster.sh head|worker) and run this on the head node, or
# use examples/cluster/slurm_mhpo.sbatch / ray_cluster.sh submit with MODEL=qwen2.5-32b-instruct.
set -euo pipefail
MODEL=qwen2.5-32b-instruct
ENGINE=megatron
# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
launch_recipe "$MODEL" "$ENGINE" "$@"
