#!/usr/bin/env bash
# The README's first command: install everything (scripts/setup.sh), then train SmolLM2-135M-Instruct with MHPO on
# the CPU through verl's own actor update. Shows a progress bar and a summary; writes outputs/demo/metrics.jsonl and
# outputs/demo/curves.png. Extra arguments go to `python -m mhpo_verl.demo`, e.g. `bash scripts/demo.sh --steps 10`.
#   VENV=path    the virtual environment scripts/setup.sh creates or reuses (default: .venv)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
venv=${VENV:-.venv}
exec "$venv/bin/python" -m mhpo_verl.demo "$@"
