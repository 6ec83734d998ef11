"""``python -m mhpo_verl cpu-main-ppo`` with two CPU training workers: verl's full trainer, data parallel on gloo."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.distributed.local_cluster import wait_until_gone
from tests.distributed.runs import SMALL_RUN, assert_trained, run_env, step_metrics, worker_pids


@pytest.mark.slow
@pytest.mark.ray
def test_cpu_main_ppo_trains_two_steps_on_two_cpu_workers(char_model_dir, tmp_path):
    # Ray's socket paths must stay under 108 bytes; pytest's tmp_path is too deep for them.
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    overrides = [*SMALL_RUN, "trainer.n_gpus_per_node=2"]
    command = [
        sys.executable, "-m", "mhpo_verl", "cpu-main-ppo", "--steps", "2", "--model", str(char_model_dir),
        "--out", str(tmp_path / "run"), *[part for override in overrides for part in ("--set", override)],
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, env=run_env(RAY_TMPDIR=str(ray_tmp)), timeout=1500
        )
    finally:
        left_behind = wait_until_gone(ray_tmp)  # verl's local Ray instance ends with its driver
        shutil.rmtree(ray_tmp, ignore_errors=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert not left_behind, f"processes of the run were still alive 60 s after it ended: {left_behind}"

    # The local Ray instance was sized from the user's override: 2 training slots, one worker each.
    assert "+ray_kwargs.ray_init.num_gpus=2" in output
    assert len(worker_pids(output)) == 2, sorted(worker_pids(output))
    assert_trained(step_metrics(output), expected_steps=2)


def test_the_local_ray_cluster_is_sized_from_the_composed_layout(tmp_path):
    from mhpo_verl.demo.loop import DemoConfig
    from mhpo_verl.demo.main_ppo import compose_main_ppo, main_ppo_overrides, training_slots

    files = (tmp_path / "model", tmp_path, tmp_path / "train.parquet", tmp_path / "val.parquet")
    config = DemoConfig(steps=1, overrides=("trainer.nnodes=2", "trainer.n_gpus_per_node=3"))
    assert training_slots(compose_main_ppo(config.loss_mode, main_ppo_overrides(config, *files))) == 6
    sized = compose_main_ppo(config.loss_mode, main_ppo_overrides(config, *files, training_slots=6))
    assert sized.ray_kwargs.ray_init.num_gpus == 6
    broken = DemoConfig(steps=1, overrides=("trainer.n_gpus_per_node=0",))
    with pytest.raises(ValueError, match="positive integers, got 1 and 0"):
        training_slots(compose_main_ppo(broken.loss_mode, main_ppo_overrides(broken, *files)))


def test_cluster_overrides_leave_data_layout_and_ray_sizing_to_the_launcher(tmp_path):
    from mhpo_verl.demo.loop import DemoConfig
    from mhpo_verl.demo.main_ppo import LAUNCHER_KEYS, cluster_overrides

    overrides = cluster_overrides(DemoConfig(steps=2, overrides=("a.b=1",)), tmp_path / "model", tmp_path)
    keys = [override.split("=", 1)[0].lstrip("+") for override in overrides]
    assert not set(keys) & set(LAUNCHER_KEYS)
    assert not any(key.startswith("ray_kwargs.") for key in keys)  # a driver joining a cluster may not size it
    assert "actor_rollout_ref.rollout.name=hf" in overrides and "trainer.device=cpu" in overrides
    assert overrides[-1] == "a.b=1"  # the user's overrides come last and win
