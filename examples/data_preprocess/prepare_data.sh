#!/usr/bin/env bash
# Convert every dataset the training recipes use into verl's parquet schema, from the Hugging Face Hub:
# GSM8K, MATH, DAPO-Math-17k (deduplicated) for training; MATH500, AIME24, AIME25, AMC23, HMMT25 for evaluation.
# Files land in DATA_DIR/<dataset>/<split>.parquet (default DATA_DIR: ~/data/mhpo), each with a .report.json that
# lists every malformed, duplicate or excluded row.
#
#   bash examples/data_preprocess/prepare_data.sh                     # everything
#   bash examples/data_preprocess/prepare_data.sh --only aime24 math500
#   bash examples/data_preprocess/prepare_data.sh --decontaminate     # drop benchmark problems from training sets
#   bash examples/data_preprocess/prepare_data.sh --dry-run           # print the command only
#
# Offline? Convert files you downloaded elsewhere, one split at a time:
#   python -m mhpo_verl data convert aime24 --input aime_2024.jsonl
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
read_dry_run_flag "$@"
run "$PYTHON" -m mhpo_verl data all --out-dir "${DATA_DIR:-$HOME/data/mhpo}" "${OTHER_ARGS[@]}"
