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
    # the CPU stack's imports: the CUDA ones (Megatron-Bridge, Transformer Engine, vLLM) are not installed here
    result = doctor("--json", "--engine", "fsdp", "--rollout", "hf", "actor_rollout_ref.actor.policy_loss.c=2.0",
                    "model_engine=megatron")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["ok"] is True
    names = [check["name"] for check in report["checks"]]
    assert names == ["entry point", "plugin policy", "driver process (fresh `import verl`)",
                     "fsdp engine + hf rollout dependencies (this process)", "config"]
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


FAKE_STACK = {"vllm/__init__.py": "__version__ = '0.24.0+fake'\n"}  # a stand-in vLLM with a version


def _write_fake_vllm(folder):
    for relative, source in FAKE_STACK.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)


@pytest.mark.slow
def test_dependencies_report_versions_and_what_is_missing(tmp_path, monkeypatch):
    from mhpo_verl.doctor import Report, check_dependencies, probe_dependencies

    _write_fake_vllm(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    found = {d["module"]: d for d in probe_dependencies("megatron", "vllm")}
    assert list(found) == ["torch", "megatron.core", "megatron.bridge", "transformer_engine", "vllm"]
    assert found["vllm"]["ok"] and found["vllm"]["version"] == "0.24.0+fake"  # no distribution: the module's
    import torch

    assert found["torch"]["version"] == torch.__version__
    # Transformer Engine is never installed on this CPU machine: reported, by name, as missing
    assert not found["transformer_engine"]["ok"] and "transformer_engine" in found["transformer_engine"]["error"]
    report = Report()
    check_dependencies(report, "megatron", "vllm")
    (check,) = report.checks
    assert not check.ok and "transformer_engine MISSING" in check.detail and "vllm 0.24.0+fake" in check.detail
    assert "mhpo-verl[megatron]" in check.hint


@pytest.mark.slow
def test_doctor_fails_where_the_chosen_engine_cannot_import():
    result = doctor("--engine", "megatron", "--rollout", "vllm")
    assert result.returncode == 1
    assert "[FAIL] megatron engine + vllm rollout dependencies (this process): torch " in result.stdout
    assert "megatron.bridge MISSING" in result.stdout


@pytest.mark.slow
@pytest.mark.ray
def test_doctor_reports_dependencies_on_every_ray_node():
    import ray

    from mhpo_verl.doctor import Report, check_ray_workers

    ray.init(num_cpus=1, include_dashboard=False)
    try:
        report = Report()
        check_ray_workers(report, address=None, engine="fsdp", rollout="hf")
    finally:
        ray.shutdown()
    registration, dependencies = report.checks
    assert registration.ok and registration.name.startswith("ray worker on ")
    assert dependencies.ok and dependencies.name.startswith("fsdp engine + hf rollout dependencies (ray worker on ")
    assert dependencies.detail.startswith("torch ")
