"""One real run of the study through its child process: verl's actor update on a tiny random Llama, off-policy, so
every optimizer update's gradient norm is recorded and the run folder is finished and reported."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

pytestmark = pytest.mark.slow


def test_an_off_policy_run_trains_in_a_child_and_is_reported(study, tiny_model_dir, tmp_path):
    settings = dataclasses.replace(
        study.StudySettings(), steps=2, seeds=(0,), max_new_tokens=8, model_path=str(tiny_model_dir)
    )
    plan = study.build_plan(settings, arms=["mhpo"], regimes=["off_policy"])
    store = study.RunStore(tmp_path)
    messages = []
    assert study.run_study(plan, store, settings, study.execute_in_child, log=messages.append) == []

    result = store.load(plan[0].run_id)
    regime = study.REGIMES["off_policy"]
    updates_per_step = settings.prompts_per_step // regime.ppo_mini_batch_size * regime.ppo_epochs
    assert [row["step"] for row in result.steps] == [0, 1]
    for row in result.steps:
        norms = row["grad_norm/updates"]
        assert len(norms) == updates_per_step
        assert all(norm is not None and math.isfinite(norm) for norm in norms)
        assert row["actor/grad_norm_max"] == pytest.approx(max(norms), rel=1e-5)
        assert 0 <= row["diag/log_ratio_over_0.5"] <= 1
        assert "actor/mhpo/survival_pos" in row
    assert result.timing["wall_s"] > 0 and result.timing["cpu_s"] > 0
    assert (store.logs / f"{plan[0].run_id}.log").read_text().count("[run] step") == 2
    assert any("done in" in message for message in messages)

    report = study.write_report(store, settings)
    assert "| off_policy | mhpo | 1 |" in report["table"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["runs"][0]["grad_norm"]["updates"] == 2 * updates_per_step
