# shellcheck shell=bash
# Shared by every script under examples/: reads the recipe choice from the environment and runs commands (or,
# under --dry-run, prints them). The scripts themselves only set variables and call the launcher,
# `python -m mhpo_verl train`, which holds the recipes (`python -m mhpo_verl train --list`).
#
# Environment knobs (all optional except MODEL where a script does not set it):
#   MODEL          recipe model, e.g. qwen2.5-7b-instruct (cluster scripts; training scripts fix their own)
#   ENGINE         fsdp | megatron (cluster scripts; default megatron)
#   ALGORITHM      mhpo (default) | grpo | dapo | gspo | sapo | cispo
#   NNODES, GPUS_PER_NODE, MODEL_PATH, DATA_DIR   override the recipe's layout, model location, data folder
#   PYTHON         interpreter with mhpo-verl installed (default: python3)
#   RAY            Ray command line tool (default: ray)

PYTHON=${PYTHON:-python3}
RAY=${RAY:-ray}
RAY_PORT=${RAY_PORT:-6379}
RAY_DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-8265}
DRY_RUN=0

# Set DRY_RUN=1 if --dry-run is among the arguments; OTHER_ARGS=(...) holds the remaining ones.
read_dry_run_flag() {
    local arg
    OTHER_ARGS=()
    for arg in "$@"; do
        if [[ $arg == --dry-run ]]; then
            DRY_RUN=1
        else
            # shellcheck disable=SC2034  # read by the script that sources this file
            OTHER_ARGS+=("$arg")
        fi
    done
}

# The launcher's recipe options: RECIPE_ARGS=(...) for model $1 and engine $2, the rest from the environment.
recipe_args() {
    RECIPE_ARGS=(--model "$1" --engine "$2" --algorithm "${ALGORITHM:-mhpo}")
    if [[ -n ${NNODES:-} ]]; then RECIPE_ARGS+=(--nnodes "$NNODES"); fi
    if [[ -n ${GPUS_PER_NODE:-} ]]; then RECIPE_ARGS+=(--gpus-per-node "$GPUS_PER_NODE"); fi
    if [[ -n ${MODEL_PATH:-} ]]; then RECIPE_ARGS+=(--model-path "$MODEL_PATH"); fi
    if [[ -n ${DATA_DIR:-} ]]; then RECIPE_ARGS+=(--data-dir "$DATA_DIR"); fi
}

# Replace this shell by the shared launcher for model $1 on engine $2; further arguments go to the launcher
# (--dry-run, launcher options, verl overrides).
launch_recipe() {
    recipe_args "$1" "$2"
    shift 2
    exec "$PYTHON" -m mhpo_verl train "${RECIPE_ARGS[@]}" "$@"
}

# Run a command, or only print it under --dry-run.
run() {
    if ((DRY_RUN)); then
        printf '[dry-run]'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# Start a long-running command in the background (its PID is added to BACKGROUND_PIDS), or print it under --dry-run.
BACKGROUND_PIDS=()
run_in_background() {
    if ((DRY_RUN)); then
        run "$@"
    else
        "$@" &
        BACKGROUND_PIDS+=($!)
    fi
}

# `ray start` for the head node: RAY_START_HEAD=(...), given the node's IP address and GPU count.
ray_head_args() {
    # shellcheck disable=SC2034  # read by the script that sources this file
    RAY_START_HEAD=("$RAY" start --head --node-ip-address="$1" --port="$RAY_PORT" --num-gpus="$2")
    RAY_START_HEAD+=(--dashboard-host=0.0.0.0 --dashboard-port="$RAY_DASHBOARD_PORT" --disable-usage-stats)
}

# `ray start` for a worker node: RAY_START_WORKER=(...), given the head's IP address and this node's GPU count.
ray_worker_args() {
    # shellcheck disable=SC2034  # read by the script that sources this file
    RAY_START_WORKER=("$RAY" start --address="$1:$RAY_PORT" --num-gpus="$2" --disable-usage-stats)
}
