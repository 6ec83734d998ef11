"""The ``hf`` rollout backend: registration with verl, the batching generate server, and verl's own main_ppo on CPU."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import tempfile

import pytest
import torch
from verl.workers.rollout.base import get_rollout_class
from verl.workers.rollout.replica import get_rollout_replica_class

from mhpo_verl.cpu_backend.hf_rollout import HFReplica, HFRolloutServer, HFServerAdapter
from tests.demo.helpers import ISOLATED_VARIABLES


def test_backend_is_registered_with_verl():
    assert get_rollout_class("hf", "async") is HFServerAdapter
    assert get_rollout_replica_class("hf") is HFReplica


def test_the_former_module_path_registers_the_same_backend():
    from mhpo_verl.demo import hf_rollout

    assert hf_rollout.HFServerAdapter is HFServerAdapter and hf_rollout.HFReplica is HFReplica


def _generate(server: HFRolloutServer, requests: list[dict]) -> list:
    async def run():
        return await asyncio.gather(
            *[server.generate(prompt_ids=r["prompt"], sampling_params=r["params"], request_id=str(i))
              for i, r in enumerate(requests)]
        )  # fmt: skip

    return asyncio.run(run())


def test_server_batches_concurrent_requests_and_reports_the_weights_version(tiny_model_dir):
    server = HFRolloutServer(str(tiny_model_dir), replica_rank=0, response_length=5, dtype="float32")
    weights = {name: torch.zeros_like(p) for name, p in server.sampler.model.named_parameters()}
    server.load_weights(weights, global_steps=7)
    same = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": False}
    outputs = _generate(server, [{"prompt": [1, 2, 3], "params": dict(same)} for _ in range(4)])
    assert server.batches == 1  # four concurrent requests, one generate call
    assert all(0 < len(o.token_ids) <= 5 for o in outputs)
    assert all(o.extra_fields["global_steps"] == 7 for o in outputs)
    assert all(o.stop_reason == "completed" for o in outputs)

    mixed = [{"prompt": [1, 2], "params": {**same, "max_tokens": 2}}, {"prompt": [4], "params": {**same, "top_p": 0.5}}]
    outputs = _generate(server, mixed)
    assert server.batches == 3  # different sampling settings are never mixed in one call
    assert len(outputs[0].token_ids) <= 2


@pytest.mark.parametrize(
    ("params", "message"),
    [({"top_k": 5}, "without top-k"), ({"repetition_penalty": 1.1}, "no repetition penalty"),
     ({"logprobs": True}, "calculate_log_probs=False")],
)  # fmt: skip
def test_server_refuses_sampling_options_it_cannot_honour(tiny_model_dir, params, message):
    server = HFRolloutServer(str(tiny_model_dir), replica_rank=0, response_length=4, dtype="float32")
    with pytest.raises(ValueError, match=message):
        _generate(server, [{"prompt": [1], "params": params}])


@pytest.mark.slow
@pytest.mark.ray
def test_verl_main_ppo_runs_a_step_on_cpu_with_the_hf_rollout(tiny_model_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARIABLES}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Ray's socket paths must stay under 108 bytes; pytest's tmp_path is too deep for them.
    ray_tmp = tempfile.TemporaryDirectory(prefix="ray", dir="/tmp")
    env["RAY_TMPDIR"] = ray_tmp.name
    command = [
        sys.executable, "-m", "mhpo_verl.demo.main_ppo", "--steps", "1", "--model", str(tiny_model_dir),
        "--out", str(tmp_path / "run"),
        "--set", "actor_rollout_ref.rollout.response_length=6", "--set", "data.max_response_length=6",
        "--set", "data.train_batch_size=2", "--set", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "--set", "actor_rollout_ref.rollout.n=2", "--set", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "--set", "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    ]  # fmt: skip
    with ray_tmp:
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    step_lines = [line for line in output.splitlines() if "step:1 - " in line]
    assert step_lines, output[-3000:]
    metrics = dict(item.split(":", 1) for item in step_lines[-1].split("step:1 - ", 1)[1].split(" - "))
    # Every stage of verl's step ran: sampling on the hf replica, grading with reward_fns, old log-probs, the mhpo
    # estimator, the update through the registered mhpo loss, and the weight push to the replica.
    for key in ("timing_s/gen", "critic/score/mean", "timing_s/old_log_prob", "critic/advantages/mean",
                "actor/pg_loss", "actor/grad_norm", "actor/mhpo/survival_pos", "timing_s/update_weights"):
        assert key in metrics, (key, sorted(metrics))
        assert math.isfinite(float(metrics[key])), (key, metrics[key])
