"""Registration happens in every process that imports verl, through the entry point or the documented fallbacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = (
    "import json, mhpo_verl.doctor as d; r = d.probe_registration(); "
    "print('RESULT ' + json.dumps([r.get('loss_registered'), r.get('estimator_registered')]))"
)


def run_python(code: str, **env: str) -> str:
    environment = {**os.environ, **env}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [line for line in result.stdout.splitlines() if line.startswith("RESULT ")][-1][len("RESULT ") :]


def test_plain_import_verl_registers_through_the_entry_point():
    assert json.loads(run_python(PROBE)) == [True, True]


def test_without_the_entry_point_nothing_is_registered():
    """The control for the test above: with verl's plugin discovery off, the registries do not have mhpo."""
    assert json.loads(run_python(PROBE, VERL_USE_EXTERNAL_PLUGINS="none")) == [False, False]


def test_fallback_verl_use_external_modules():
    registered = run_python(PROBE, VERL_USE_EXTERNAL_PLUGINS="none", VERL_USE_EXTERNAL_MODULES="mhpo_verl.plugin")
    assert json.loads(registered) == [True, True]


def test_fallback_model_external_lib():
    """`actor_rollout_ref.model.external_lib` is imported by HFModelConfig before the model path is even read."""
    code = (
        "from verl.workers.config import HFModelConfig\n"
        "try:\n    HFModelConfig(path='/nonexistent/model', external_lib='mhpo_verl.plugin')\n"
        "except Exception:\n    pass\n"
        "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as P, ADV_ESTIMATOR_REGISTRY as A\n"
        "import json; print('RESULT ' + json.dumps(['mhpo' in P, 'mhpo' in A]))"
    )
    assert json.loads(run_python(code, VERL_USE_EXTERNAL_PLUGINS="none")) == [True, True]


def test_registration_is_idempotent_and_refuses_to_overwrite_a_foreign_function():
    code = """
import importlib, json, verl
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as P, ADV_ESTIMATOR_REGISTRY as A
from verl.utils.import_utils import load_module
import mhpo_verl.plugin as plugin
reloaded = importlib.reload(plugin)
by_path = load_module(plugin.__file__)  # a second copy under another module name, as verl's file loaders do
by_path.register(); by_path.register()
results = [P['mhpo'] is by_path.compute_policy_loss_mhpo, A['mhpo'] is by_path.compute_mhpo_advantage]
P['mhpo'] = lambda **kwargs: None
try:
    plugin.register(); results.append('overwrote')
except RuntimeError as error:
    results.append('will not overwrite' in str(error))
print('RESULT ' + json.dumps(results))
"""
    assert json.loads(run_python(code)) == [True, True, True]


@pytest.mark.slow
@pytest.mark.ray
def test_ray_workers_register_and_the_runtime_env_fallback_works():
    """On an existing cluster whose workers do not load entry points, the documented runtime_env fallback fixes it."""
    import ray

    from mhpo_verl.doctor import Report, check_ray_workers

    off = {"VERL_USE_EXTERNAL_PLUGINS": "none"}
    outcomes = {}
    for label, env_vars in {
        "entry point": {},
        "plugins off": off,
        "plugins off + fallback": {**off, "VERL_USE_EXTERNAL_MODULES": "mhpo_verl.plugin"},
    }.items():
        ray.init(num_cpus=1, include_dashboard=False, runtime_env={"env_vars": env_vars})
        try:
            report = Report()
            check_ray_workers(report, address=None)
            outcomes[label] = [(check.ok, check.detail) for check in report.checks]
        finally:
            ray.shutdown()
    assert [ok for ok, _ in outcomes["entry point"]] == [True]
    assert [ok for ok, _ in outcomes["plugins off"]] == [False]
    assert "loss 'mhpo' MISSING" in outcomes["plugins off"][0][1]
    assert [ok for ok, _ in outcomes["plugins off + fallback"]] == [True]
