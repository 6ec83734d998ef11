"""Run a snippet in a fresh interpreter: the CPU platform changes process-wide state that must not leak into
other tests (verl's platform singleton, VERL_PLATFORM / VERL_USE_EXTERNAL_MODULES for child processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

ISOLATED_VARIABLES = {"VERL_PLATFORM", "VERL_USE_EXTERNAL_MODULES"}


def run_python(code: str, env: dict[str, str] | None = None, timeout: int = 600) -> dict:
    """Run ``code``; it must exit 0 and print one JSON object as its last stdout line, which is returned."""
    environment = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARIABLES}
    # Busy-waiting OpenMP threads stall badly on a shared 2-core runner.
    environment.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    environment.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=environment, timeout=timeout
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])
