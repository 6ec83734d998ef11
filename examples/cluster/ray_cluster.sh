#!/usr/bin/env bash
# A Ray cluster for multi-node MHPO training, by hand: start the head, start the workers, submit the recipe.
#
#   bash examples/cluster/ray_cluster.sh head                 # on the head node
#   bash examples/cluster/ray_cluster.sh worker HEAD_IP       # on every other node
#   MODEL=qwen2.5-32b-instruct ENGINE=megatron bash examples/cluster/ray_cluster.sh submit [verl overrides]
#   bash examples/cluster/ray_cluster.sh stop                 # on every node, when done
#
# `submit` runs `ray job submit` against RAY_DASHBOARD (default http://127.0.0.1:8265) with a runtime env that
# makes every worker import the MHPO plugin (VERL_USE_EXTERNAL_MODULES=mhpo_verl.plugin), after checking the
# recipe here. mhpo-verl must be pip-installed on every node, and the data folder must be on shared storage.
# Add --dry-run to any of them to print what would run instead (submit then also prints the resolved config).
# A worker first waits for the head to answer (HEAD_WAIT_TIMEOUT, default 300 s).
# Knobs: NODE_IP / SOCKET_IFNAME (this node's address, default: its first routable IPv4), NUM_CPUS, GPUS_PER_NODE
# (default 8), RAY, RAY_PORT, RAY_DASHBOARD_PORT, RAY_DASHBOARD, and the recipe variables of examples/common.sh.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

usage() {
    sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

command=${1:-}
[[ -n $command ]] || usage
shift
read_dry_run_flag "$@"
gpus=${GPUS_PER_NODE:-8}

case $command in
    head)
        export_socket_ifname
        ip=$(node_ipv4)
        ray_head_args "$ip" "$gpus"
        run "${RAY_START_HEAD[@]}"
        ;;
    worker)
        head_ip=${1:-}
        [[ -n $head_ip && $head_ip != --dry-run ]] || usage
        export_socket_ifname
        ip=$(node_ipv4)
        wait_for_head "$head_ip"
        ray_worker_args "$head_ip" "$gpus"
        run "${RAY_START_WORKER[@]}" --node-ip-address="$ip"
        ;;
    submit)
        recipe_args "${MODEL:?set MODEL (see: python -m mhpo_verl train --list)}" "${ENGINE:-megatron}"
        dashboard=${RAY_DASHBOARD:-http://127.0.0.1:$RAY_DASHBOARD_PORT}
        exec "$PYTHON" -m mhpo_verl train "${RECIPE_ARGS[@]}" --submit "$dashboard" "$@"
        ;;
    stop)
        ray=$(ray_cli)
        run "$ray" stop
        ;;
    *)
        usage
        ;;
esac
