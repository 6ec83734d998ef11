"""A CPU training step of a VL model through verl's actor worker, with an image batch and the mhpo loss."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_update_actor_with_images_trains_the_vision_tower_and_the_language_model(tmp_path):
    out = tmp_path / "step.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run(
        [sys.executable, "-m", "tests.vl.train_step", str(out)], cwd=REPO_ROOT, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(out.read_text())
    metrics = result["metrics"]
    assert result["image_tokens"] > 0
    assert all(math.isfinite(value) for value in metrics["actor/pg_loss"])
    assert "actor/mhpo/psi_mean" in metrics and "actor/mhpo/survival_neg" in metrics  # the mhpo loss ran
    # The gradient reached the image features: the vision tower moved, and so did the language model.
    assert any(name.startswith(("visual.", "model.visual.")) for name in result["moved"]), result["moved"][:10]
    assert any("language_model" in name or name.startswith("lm_head") for name in result["moved"])
