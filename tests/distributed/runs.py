"""What the multi-process ``main_ppo`` tests share: a small run's overrides, the environment, reading verl's log."""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path

from tests.demo.helpers import ISOLATED_VARIABLES
from tests.distributed.local_cluster import SLOW_MACHINE_TIMEOUTS

DIGIT_REWARD = Path(__file__).with_name("digit_reward.py")

SMALL_RUN = (
    # 2 prompts x 4 responses of 12 characters per step; one PPO mini-batch, 2 micro-batches per rank on 2 ranks.
    "data.train_batch_size=2",
    "actor_rollout_ref.rollout.n=4",
    "actor_rollout_ref.rollout.response_length=12",
    "data.max_response_length=12",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    f"reward.custom_reward_function.path={DIGIT_REWARD}",
    "reward.custom_reward_function.name=compute_score",
)
"""verl overrides of a run small enough for a shared 2-core machine, with a reward that varies within groups."""

STEP_LINE = re.compile(r"step:(\d+) - (.*)$")
WORKER_PREFIX = re.compile(r"\((?:pid=\d+, )?WorkerDict pid=(\d+)")


def run_env(**extra: str) -> dict[str, str]:
    """This environment without the CPU platform's inherited switches, this interpreter's folder first on PATH (so
    that ``python3`` and ``ray`` are this environment's), passive OpenMP threads (many processes, few cores), and
    Ray's start-up timeouts stretched for a loaded machine."""
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARIABLES}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", **SLOW_MACHINE_TIMEOUTS, **extra)
    return env


def step_metrics(output: str) -> dict[int, dict[str, float]]:
    """verl's console logger lines (``step:N - key:value - ...``), the numeric values of each step."""
    steps: dict[int, dict[str, float]] = {}
    for line in output.splitlines():
        match = STEP_LINE.search(line)
        if match is None:
            continue
        values = {}
        for item in match.group(2).split(" - "):
            key, _, value = item.partition(":")
            try:
                values[key] = float(re.sub(r"^np\.\w+\((.*)\)$", r"\1", value))
            except ValueError:
                continue
        steps[int(match.group(1))] = values
    return steps


def assert_trained(steps: dict[int, dict[str, float]], expected_steps: int) -> None:
    """Every step ran verl's whole loop (generation, reward, old log-probs, advantages, the mhpo update, the weight
    push) and the update was a real one: rewards varied and the gradient was finite and non-zero."""
    assert sorted(steps) == list(range(1, expected_steps + 1)), sorted(steps)
    for step, metrics in steps.items():
        for key in ("timing_s/gen", "critic/score/mean", "timing_s/old_log_prob", "critic/advantages/max",
                    "actor/pg_loss", "actor/mhpo/survival_pos", "timing_s/update_weights"):  # fmt: skip
            assert key in metrics and math.isfinite(metrics[key]), (step, key, metrics.get(key))
        assert metrics["critic/score/max"] > metrics["critic/score/min"], (step, "no reward variance")
        assert math.isfinite(metrics["actor/grad_norm"]) and metrics["actor/grad_norm"] > 0, (step, metrics)


def worker_pids(output: str) -> set[int]:
    """Process ids of verl's training workers (Ray actors of class ``WorkerDict``) that logged anything."""
    return {int(match.group(1)) for match in WORKER_PREFIX.finditer(output)}
