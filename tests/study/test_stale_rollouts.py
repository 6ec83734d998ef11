"""The stale-rollout regime: the sampler's weights lag k optimizer updates behind the engine's, and in bypass mode the
old log-probs are the sampler's own log-probs of the sampled tokens (verl's ``rollout_correction.bypass_mode``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mhpo_verl.demo.loop import CPURLTrainer, DemoConfig
from tests.demo.helpers import run_python


def test_staleness_must_be_a_whole_number_of_steps_of_updates():
    config = DemoConfig(prompts_per_step=2, samples_per_prompt=4, ppo_mini_batch_size=1, ppo_epochs=2,
                        micro_batch_size=4, rollout_staleness=8)
    assert config.updates_per_step == 4
    with pytest.raises(ValueError, match=r"rollout_staleness \(6\) must be a multiple of the optimizer updates per "
                                         r"step \(4 = "):
        dataclasses.replace(config, rollout_staleness=6)
    with pytest.raises(ValueError, match=r"rollout_staleness must be an integer >= 0, got -4"):
        dataclasses.replace(config, rollout_staleness=-4)
    with pytest.raises(ValueError, match=r"old_log_probs_from_sampler needs top_p = 1 \(got 0.9\)"):
        dataclasses.replace(config, old_log_probs_from_sampler=True, top_p=0.9)


class FakeEngine:
    """An engine whose single weight equals the number of optimizer updates made so far."""

    def __init__(self):
        self.updates = 0

    def get_per_tensor_param(self):
        return iter([("w", torch.tensor([float(self.updates)]))]), None


class FakeSampler:
    def __init__(self):
        self.weight = None

    def load_weights(self, named_tensors):
        self.weight = dict(named_tensors)["w"].item()


def fake_trainer(staleness: int, updates_per_step: int) -> CPURLTrainer:
    """The trainer's weight-push bookkeeping on fakes: only ``sync_weights`` and the counters are exercised."""
    trainer = object.__new__(CPURLTrainer)
    trainer.config = DemoConfig(prompts_per_step=updates_per_step, samples_per_prompt=2, ppo_mini_batch_size=1,
                                micro_batch_size=2, rollout_staleness=staleness, rollout_dtype="fp32")
    trainer.worker = type("Worker", (), {"actor": type("Actor", (), {"engine": FakeEngine()})()})()
    trainer.sampler = FakeSampler()
    trainer.updates_done = trainer.sampler_weights_at = 0
    trainer._pending_weights = []
    trainer.sync_weights()
    return trainer


@pytest.mark.parametrize(("staleness", "updates_per_step"), [(0, 4), (8, 4), (8, 8), (12, 4)])
def test_the_sampler_gets_the_weights_of_exactly_k_updates_ago(staleness, updates_per_step):
    trainer = fake_trainer(staleness, updates_per_step)
    seen = []
    for _ in range(7):
        seen.append((trainer.updates_done - trainer.sampler_weights_at, trainer.sampler.weight))
        # one training step: the engine makes its updates, then the loop pushes weights
        trainer.engine.updates += updates_per_step
        trainer.updates_done += updates_per_step
        trainer.sync_weights()
    for step, (lag, weight) in enumerate(seen):
        updates_before_step = step * updates_per_step
        assert lag == min(staleness, updates_before_step)
        assert weight == updates_before_step - lag  # the weights really are the ones of `lag` updates ago
    # only the snapshots not yet due are kept
    assert len(trainer._pending_weights) == staleness // updates_per_step


def test_bypass_settings_reach_the_stale_regime_and_no_other(study):
    settings = study.StudySettings()
    stale = study.build_plan(settings, arms=["grpo"], regimes=["stale_8"])[0].demo_config(settings)
    fresh = study.build_plan(settings, arms=["grpo"], regimes=["off_policy"])[0].demo_config(settings)
    assert (stale.rollout_staleness, stale.old_log_probs_from_sampler) == (8, True)
    assert (fresh.rollout_staleness, fresh.old_log_probs_from_sampler) == (0, False)
    # the stale regime differs from the off-policy one in the weight push and the old log-probs only
    assert dataclasses.replace(stale, rollout_staleness=0, old_log_probs_from_sampler=False) == fresh
    # k = 8 is two steps of updates: the last two steps learn from rollouts 8 updates old, and the last step's
    # rollouts come from trained weights (the sampler holds the initial ones until then)
    updates = stale.updates_per_step
    assert stale.rollout_staleness == 2 * updates
    assert settings.steps * updates - stale.rollout_staleness >= 2 * updates
    assert (settings.steps - 1) * updates > stale.rollout_staleness


@pytest.mark.slow
def test_sampler_log_probs_are_the_engines_log_probs_of_the_same_weights(tiny_model_dir):
    """In fp32 with the same weights, the sampler's log-probs of its sampled tokens equal verl's recomputation
    (what bypass mode relies on), and entropies agree too. The trainer enables verl's CPU platform, a process-wide
    change, so it runs in a fresh interpreter (tests/demo/helpers.py)."""
    report = run_python(
        """
import json, os, torch
from mhpo_verl.demo.loop import CPURLTrainer, DemoConfig, build_batch

config = DemoConfig(steps=1, prompts_per_step=2, samples_per_prompt=2, ppo_mini_batch_size=2, micro_batch_size=4,
                    max_new_tokens=6, train_dtype="fp32", rollout_dtype="fp32", model_path=os.environ["TINY_MODEL"],
                    old_log_probs_from_sampler=True)
trainer = CPURLTrainer(config, score_fn=lambda texts, answers: [])
_, rollouts = trainer.generate(0)
batch = build_batch(rollouts, [0.0] * len(rollouts), uids=[str(r.prompt_index) for r in rollouts])
entropy = trainer.compute_old_log_prob(batch)
recomputed = torch.cat(list(batch["old_log_probs"].unbind()))
sampler_entropy = trainer.use_sampler_log_probs(batch, rollouts)
from_sampler = torch.cat(list(batch["old_log_probs"].unbind()))
print(json.dumps({
    "lengths_agree": all(len(r.log_probs) == len(r.response_ids) == len(r.entropies) for r in rollouts),
    "tokens": len(from_sampler),
    "response_tokens": sum(len(r.response_ids) for r in rollouts),
    "max_log_prob_gap": float((from_sampler - recomputed).abs().max()),
    "entropy": float(entropy),
    "sampler_entropy": float(sampler_entropy),
}))
""",
        env={"TINY_MODEL": str(tiny_model_dir)},
    )
    assert report["lengths_agree"]
    assert report["tokens"] == report["response_tokens"] > 0
    assert report["max_log_prob_gap"] < 1e-4, report
    assert report["sampler_entropy"] == pytest.approx(report["entropy"], abs=1e-4)


@pytest.mark.slow
def test_a_stale_run_reports_its_staleness_and_its_drift_against_the_sampler(study, tiny_model_dir, tmp_path):
    settings = dataclasses.replace(study.StudySettings(), steps=3, seeds=(0,), max_new_tokens=6, lr=1e-3,
                                   model_path=str(tiny_model_dir))
    plan = study.build_plan(settings, arms=["grpo"], regimes=["stale_8"])
    store = study.RunStore(tmp_path)
    assert study.run_study(plan, store, settings, study.child_executor(1), log=lambda _: None) == []
    steps = store.load(plan[0].run_id).steps
    assert [row["rollout/staleness_updates"] for row in steps] == [0, 4, 8]
    assert all(len(row["grad_norm/updates"]) == 4 for row in steps)
    # at lr 1e-3 the tiny model moves: the ratio against 8-updates-old weights drifts more than the fresh step's
    assert steps[2]["diag/log_ratio_abs_max"] > steps[0]["diag/log_ratio_abs_max"]
    assert all(row["timing_s/update_actor"] > 0 and row["cpu_s/update_actor"] > 0 for row in steps)
    stats = study.run_statistics(store.load(plan[0].run_id))
    assert stats["staleness_max"] == 8
    assert stats["log_ratio_over_0.5_at_max_staleness"] == steps[2]["diag/log_ratio_over_0.5"]
