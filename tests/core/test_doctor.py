"""`python -m mhpo_verl doctor` passes on a good install and fails loudly, with the reason, on a broken one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

BREAK_PLUGIN_IMPORT = '''
import sys

class _SimulatedBrokenDependency:
    """Makes `import mhpo_verl.plugin` fail the way a missing/broken dependency would."""

    def find_spec(self, name, path=None, target=None):
        if name == "mhpo_verl.plugin":
            raise ImportError("simulated broken dependency of the plugin")
        return None

sys.meta_path.insert(0, _SimulatedBrokenDependency())
'''


def doctor(*args: str, extra_pythonpath: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if extra_pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra_pythonpath, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "mhpo_verl", "doctor", "--no-ray", *args],
        capture_output=True, text=True, env=env, timeout=600,
    )


@pytest.mark.slow
def test_doctor_passes_with_user_overrides_and_reports_json():
    result = doctor("--json", "actor_rollout_ref.actor.policy_loss.c=2.0", "model_engine=megatron")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["ok"] is True
    names = [check["name"] for check in report["checks"]]
    assert names == ["entry point", "plugin policy", "driver process (fresh `import verl`)", "config"]
    config_detail = next(check["detail"] for check in report["checks"] if check["name"] == "config")
    assert "McoreActorConfig" in config_detail and "c=2.0" in config_detail


@pytest.mark.slow
def test_doctor_surfaces_the_plugin_load_error_that_verl_swallows(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BREAK_PLUGIN_IMPORT)
    result = doctor(extra_pythonpath=str(tmp_path))
    assert result.returncode == 1
    out = result.stdout
    assert "[FAIL] entry point" in out
    assert "[FAIL] driver process" in out and "loss 'mhpo' MISSING" in out
    assert "simulated broken dependency of the plugin" in out  # the swallowed error, shown
    assert "check(s) FAILED" in out


@pytest.mark.slow
def test_doctor_reports_a_bad_override_with_the_reason():
    result = doctor("actor_rollout_ref.actor.policy_loss.lambda_neg=0")
    assert result.returncode == 1
    assert "[FAIL] config" in result.stdout
    assert "lambda_neg must be a positive finite number, got 0" in result.stdout
    assert "[PASS] driver process" in result.stdout
