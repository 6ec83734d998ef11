#!/usr/bin/env bash
# Install (scripts/setup.sh) and run every check CI runs: ruff, this project's tests, and verl's own CPU loss tests.
# Extra arguments go to this project's pytest run, e.g. `bash scripts/test.sh -k objective`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
venv=${VENV:-.venv}
py="$venv/bin/python"

"$py" -m ruff check .
# Two workers: most of the suite waits on single-threaded interpreter start-ups (verl's import, Ray), so a 2-core
# runner finishes in about two thirds of the serial time. Tests that start Ray share one worker (tests/conftest.py).
# Passive OpenMP threads: two torch processes on two cores must not spin against each other.
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} "$py" -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadgroup "$@"

# verl's own CPU policy-loss / estimator tests must still pass with the plugin installed. They run in a separate
# process from a neutral folder: verl's wheel ships a top-level `tests` package (ours would shadow it), and one of
# them empties verl's estimator registry.
neutral=$(mktemp -d)
trap 'rm -rf "$neutral"' EXIT
(cd "$neutral" && "$OLDPWD/$py" -m pytest -q -p no:cacheprovider --pyargs \
    tests.trainer.ppo.test_core_algos_on_cpu \
    tests.trainer.ppo.test_dynamic_policy_losses_on_cpu \
    tests.trainer.ppo.test_loss_aggregation_on_cpu)
