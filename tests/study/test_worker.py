"""The study's run worker: one child trains run after run (paying verl's set-up once), and a run's numbers do not
depend on what the worker trained before it."""

from __future__ import annotations

import dataclasses
import json

import pytest

pytestmark = pytest.mark.slow

TIMING_KEYS = ("timing_s/", "cpu_s/")


def numbers(store, run_id):
    """A run's recorded metrics without the timings (which no two runs share)."""
    return [
        {key: value for key, value in row.items() if not key.startswith(TIMING_KEYS)}
        for row in store.load(run_id).steps
    ]


def test_a_worker_trains_runs_back_to_back_exactly_as_a_fresh_one_would(study, tiny_model_dir, tmp_path):
    settings = dataclasses.replace(study.StudySettings(), steps=2, seeds=(0,), max_new_tokens=6, lr=1e-3,
                                   model_path=str(tiny_model_dir))
    first, second = study.build_plan(settings, arms=["cispo", "mhpo"], regimes=["stale_8"])
    shared, alone = study.RunStore(tmp_path / "shared"), study.RunStore(tmp_path / "alone")

    execute, close = study.worker_executor(settings.threads)
    try:
        assert study.run_study([first, second], shared, settings, execute, log=lambda _: None) == []
    finally:
        close()
    execute, close = study.worker_executor(settings.threads)
    try:
        assert study.run_study([second], alone, settings, execute, log=lambda _: None) == []
    finally:
        close()

    assert numbers(shared, second.run_id) == numbers(alone, second.run_id)
    assert numbers(shared, first.run_id) != numbers(shared, second.run_id)  # two methods, two different runs
    timing = json.loads((shared.final_dir(second.run_id) / "timing.json").read_text())
    assert timing["cpu_s"] > 0 and timing["wall_s"] > 0
    assert (shared.logs / f"{second.run_id}.log").read_text().count("[run] step") == 2
    with study._LIVE_CHILDREN_LOCK:  # close() ended every worker: none is left behind
        assert not study._LIVE_CHILDREN


def test_a_failing_run_is_reported_and_the_next_run_gets_a_fresh_worker(study, tiny_model_dir, tmp_path):
    settings = dataclasses.replace(study.StudySettings(), steps=1, seeds=(0,), max_new_tokens=4,
                                   model_path=str(tiny_model_dir))
    bad = dataclasses.replace(settings, model_path=str(tmp_path / "no-such-model"))
    store = study.RunStore(tmp_path / "study")
    spec = study.build_plan(settings, arms=["grpo"], regimes=["off_policy"])[0]
    execute, close = study.worker_executor(settings.threads)
    messages = []
    try:
        assert study.run_study([spec], store, bad, execute, log=messages.append) == [spec.run_id]
        assert any("FAILED" in message for message in messages)
        assert study.run_study([spec], store, settings, execute, log=messages.append) == []
    finally:
        close()
    assert store.is_finished(spec, settings)
