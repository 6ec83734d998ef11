"""``python -m mhpo_verl.demo`` end to end on the real SmolLM2-135M (tiny batch, two steps)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from mhpo_verl.demo.__main__ import build_parser, config_from_args, main
from tests.demo.helpers import ISOLATED_VARIABLES

REQUIRED_KEYS = (
    "step",
    "reward/mean",
    "reward/accuracy",
    "reward/format",
    "actor/grad_norm",
    "actor/entropy",
    "actor/pg_loss",
    "actor/mhpo/survival_pos",
    "actor/mhpo/zeta_mean",
    "diag/log_ratio_over_0.5",
    "timing_s/step",
)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fsdp", "megatron"])
def test_demo_trains_smollm2_and_writes_metrics_and_curves(smollm2_dir, model_cache, tmp_path, engine):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARIABLES}
    command = [
        sys.executable, "-m", "mhpo_verl", "demo", "--steps", "2", "--prompts-per-step", "2",
        "--samples-per-prompt", "2", "--ppo-mini-batch-size", "1", "--max-new-tokens", "12", "--micro-batch-size", "2",
        "--cache-dir", str(model_cache), "--out", str(out), "--quiet", "--engine", engine,
    ]  # fmt: skip
    # A hang guard, not a speed check: bf16 (the Megatron engine's only dtype) runs ~30x slower than fp32 on CPUs
    # without AVX-512 (AVX2-only EPYC: a 2-step tiny demo took minutes a step at load).
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1500)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "reward/mean" in result.stdout and "non-finite events: 0" in result.stdout
    # verl's own prints (engine set-up, memory) go to verl.log, not between the progress bar and the summary.
    assert f"({engine} engine)" in result.stdout
    # Each engine's own set-up print: FSDP's memory report, Megatron's parameter count.
    engine_print = "memory allocated" if engine == "fsdp" else "number of parameters on (tensor, pipeline)"
    assert engine_print not in result.stdout
    assert engine_print in (out / "verl.log").read_text()

    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 1]
    for line in lines:
        for key in REQUIRED_KEYS:
            assert line[key] is not None and math.isfinite(line[key]), (key, line.get(key))
        assert 0 <= line["reward/format"] <= 1 and 0 <= line["reward/accuracy"] <= 1
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["samples"][0]["prompt"].endswith("\\boxed{}.") for s in samples)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((out / "config.json").read_text())
    assert config["loss_mode"] == "mhpo" and config["steps"] == 2 and config["engine"] == engine


def test_arguments_map_onto_the_demo_config():
    args = build_parser().parse_args(
        ["--steps", "5", "--loss-mode", "vanilla", "--tasks", "add_2d", "linear_equation", "--set", "a.b=1",
         "--set", "c=2", "--lr", "1e-5", "--format-score", "0.25"]
    )  # fmt: skip
    config = config_from_args(args)
    assert (config.steps, config.loss_mode, config.lr) == (5, "vanilla", 1e-5)
    assert config.task_kinds == ("add_2d", "linear_equation")
    assert config.overrides == ("a.b=1", "c=2")
    assert config.reward_options["format_score"] == 0.25


def test_bad_arguments_exit_with_a_message_naming_the_value(capsys):
    assert main(["--steps", "0"]) == 2
    assert "steps must be a positive integer, got 0" in capsys.readouterr().err
