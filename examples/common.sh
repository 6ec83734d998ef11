# shellcheck shell=bash
# Shared by every script under examples/: reads the recipe choice from the environment and runs commands (or,
# under --dry-run, prints them). The scripts themselves only set variables and call the launcher,
# `python -m mhpo_verl train`, which holds the recipes (`python -m mhpo_verl train --list`).
#
# Environment knobs (all optional except MODEL where a script does not set it):
#   MODEL          recipe model, e.g. qwen2.5-7b-instruct (cluster scripts; training scripts fix their own)
#   ENGINE         fsdp | megatron (cluster scripts; default megatron)
#   ALGORITHM      mhpo (default) | grpo | clip-higher | gspo | sapo | cispo
#   MODE           sync (default) | one-step-off | fully-async (verl's asynchronous trainers; + ROLLOUT_NNODES)
#   NNODES, GPUS_PER_NODE, MODEL_PATH, DATA_DIR   override the recipe's layout, model location, data folder
#   RESIZE=1       accept NNODES / GPUS_PER_NODE other than the layout's (data parallelism re-derived)
#   ROLLOUT_NNODES, ROLLOUT_GPUS_PER_NODE   asynchronous modes: the rollout pool (default 1 node x GPUS_PER_NODE)
#   OUTPUT_DIR     checkpoints + metrics + TensorBoard (default ./outputs, made absolute; shared storage on clusters)
#   GPU_MEMORY_GB  GPU size the memory estimate is checked against (default 80)
#   PYTHON         interpreter with mhpo-verl installed (default: python3)
#   RAY            Ray command line tool (default: the `ray` installed beside PYTHON, so both are one environment)
#   NODE_IP        this node's address for Ray (default: its first routable IPv4, see node_ipv4)
#   SOCKET_IFNAME  network interface for Gloo/NCCL (exported as GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME; its IPv4
#                  becomes the node address)
#   NUM_CPUS       CPUs Ray may use on a node (default: the Slurm allocation's SLURM_CPUS_ON_NODE, else nproc)

PYTHON=${PYTHON:-python3}
RAY=${RAY:-}
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
    RECIPE_ARGS=(--model "$1" --engine "$2" --algorithm "${ALGORITHM:-mhpo}" --mode "${MODE:-sync}")
    if [[ -n ${NNODES:-} ]]; then RECIPE_ARGS+=(--nnodes "$NNODES"); fi
    if [[ -n ${GPUS_PER_NODE:-} ]]; then RECIPE_ARGS+=(--gpus-per-node "$GPUS_PER_NODE"); fi
    if [[ ${RESIZE:-0} == 1 ]]; then RECIPE_ARGS+=(--resize); fi
    if [[ -n ${ROLLOUT_NNODES:-} ]]; then RECIPE_ARGS+=(--rollout-nnodes "$ROLLOUT_NNODES"); fi
    if [[ -n ${ROLLOUT_GPUS_PER_NODE:-} ]]; then RECIPE_ARGS+=(--rollout-gpus-per-node "$ROLLOUT_GPUS_PER_NODE"); fi
    if [[ -n ${MODEL_PATH:-} ]]; then RECIPE_ARGS+=(--model-path "$MODEL_PATH"); fi
    if [[ -n ${DATA_DIR:-} ]]; then RECIPE_ARGS+=(--data-dir "$DATA_DIR"); fi
    if [[ -n ${OUTPUT_DIR:-} ]]; then RECIPE_ARGS+=(--output-dir "$OUTPUT_DIR"); fi
    if [[ -n ${GPU_MEMORY_GB:-} ]]; then RECIPE_ARGS+=(--gpu-memory-gb "$GPU_MEMORY_GB"); fi
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

# The Ray CLI: $RAY, else the `ray` beside $PYTHON (a `ray` from another environment starts workers that lack
# mhpo-verl or run another Ray version). Under --dry-run a missing one prints as `ray`.
ray_cli() {
    if [[ -n $RAY ]]; then
        printf '%s\n' "$RAY"
        return
    fi
    local python beside
    python=$(command -v "$PYTHON" || true)
    beside=$(dirname "${python:-.}")/ray
    if [[ -n $python && -x $beside ]]; then
        printf '%s\n' "$beside"
    elif ((DRY_RUN)); then
        printf 'ray\n'
    else
        printf 'error: no ray beside PYTHON=%s (%s); install ray there or set RAY\n' "$PYTHON" "$beside" >&2
        return 1
    fi
}

# This node's address for Ray: NODE_IP; else the IPv4 of SOCKET_IFNAME; else the first address of `hostname -I`
# that is IPv4, not loopback (127.*, as 127.0.1.1 from /etc/hosts) and not Docker's default bridge (172.17.*).
node_ipv4() {
    local address
    if [[ -n ${NODE_IP:-} ]]; then
        printf '%s\n' "$NODE_IP"
        return
    fi
    if [[ -n ${SOCKET_IFNAME:-} ]]; then
        address=$(ip -4 -o addr show dev "$SOCKET_IFNAME" 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')
        if [[ -n $address ]]; then
            printf '%s\n' "$address"
            return
        fi
        printf 'error: no IPv4 address on SOCKET_IFNAME=%s; set NODE_IP\n' "$SOCKET_IFNAME" >&2
        return 1
    fi
    for address in $(hostname -I 2>/dev/null || hostname --ip-address); do
        if [[ $address =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ && $address != 127.* && $address != 172.17.* ]]; then
            printf '%s\n' "$address"
            return
        fi
    done
    printf 'error: no routable IPv4 address among: %s; set NODE_IP (or SOCKET_IFNAME)\n' "$(hostname -I 2>/dev/null)" >&2
    return 1
}

# Gloo (verl's CPU collectives) and NCCL pick an interface themselves, sometimes a wrong one; a named interface is
# exported to both, before Ray starts, so every worker inherits it.
export_socket_ifname() {
    if [[ -n ${SOCKET_IFNAME:-} ]]; then
        export GLOO_SOCKET_IFNAME=$SOCKET_IFNAME NCCL_SOCKET_IFNAME=$SOCKET_IFNAME
        if ((DRY_RUN)); then
            printf '[dry-run] export GLOO_SOCKET_IFNAME=%s NCCL_SOCKET_IFNAME=%s\n' "$SOCKET_IFNAME" "$SOCKET_IFNAME"
        fi
    fi
}

# CPUs Ray may schedule on this node: NUM_CPUS, the Slurm allocation's, or every CPU of the machine.
node_cpus() {
    printf '%s\n' "${NUM_CPUS:-${SLURM_CPUS_ON_NODE:-$(nproc)}}"
}

# `ray start` for the head node: RAY_START_HEAD=(...), given the node's IP address and GPU count.
ray_head_args() {
    local ray
    ray=$(ray_cli)
    # shellcheck disable=SC2034  # read by the script that sources this file
    RAY_START_HEAD=("$ray" start --head --node-ip-address="$1" --port="$RAY_PORT" --num-gpus="$2")
    RAY_START_HEAD+=(--num-cpus="$(node_cpus)" --dashboard-host=0.0.0.0 --dashboard-port="$RAY_DASHBOARD_PORT")
    RAY_START_HEAD+=(--disable-usage-stats)
}

# `ray start` for a worker node: RAY_START_WORKER=(...), given the head's IP address and this node's GPU count.
ray_worker_args() {
    local ray
    ray=$(ray_cli)
    # shellcheck disable=SC2034  # read by the script that sources this file
    RAY_START_WORKER=("$ray" start --address="$1:$RAY_PORT" --num-gpus="$2" --num-cpus="$(node_cpus)")
    RAY_START_WORKER+=(--disable-usage-stats)
}

# Wait until the Ray head at $1 answers (`ray health-check`), polling every 2 s for up to HEAD_WAIT_TIMEOUT
# seconds (default 300): a worker started first gives up after Ray's ~20 GCS connection retries.
wait_for_head() {
    local ray deadline
    ray=$(ray_cli)
    if ((DRY_RUN)); then
        run "$ray" health-check --address="$1:$RAY_PORT"
        return
    fi
    deadline=$((SECONDS + ${HEAD_WAIT_TIMEOUT:-300}))
    until "$ray" health-check --address="$1:$RAY_PORT" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            printf 'error: the Ray head %s:%s did not answer within %s s\n' "$1" "$RAY_PORT" "${HEAD_WAIT_TIMEOUT:-300}" >&2
            return 1
        fi
        sleep 2
    done
}
