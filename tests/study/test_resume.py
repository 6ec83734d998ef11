"""Resumability and the plan: a finished run is never redone, an interrupted one is redone cleanly, a finished run
made with other settings is an error, and every run shares everything but the method, regime and seed."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import subprocess
import sys
import threading

import pytest

from mhpo_verl.demo.report import RunWriter
from mhpo_verl.recipes import ALGORITHMS


@pytest.fixture
def settings(study):
    return dataclasses.replace(study.StudySettings(), steps=3, seeds=(0,))


def small_plan(study, settings):
    return study.build_plan(settings, arms=["mhpo", "grpo"], regimes=["on_policy"])


class FakeExecutor:
    """Writes the steps a child would write; ``crash_after`` steps of the named run it raises (a killed study)."""

    def __init__(self, crash=None, crash_after=1, error=None):
        self.calls: list[str] = []
        self.crash, self.crash_after, self.error = crash, crash_after, error

    def __call__(self, spec, folder, log_path):
        self.calls.append(spec.run_id)
        # A run always starts from a clean folder holding only its config.
        assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
        steps = json.loads((folder / "config.json").read_text())["demo_config"]["steps"]
        writer = RunWriter(folder)
        for step in range(steps):
            if spec.run_id == self.crash and step == self.crash_after:
                raise self.error or KeyboardInterrupt
            writer.append({"step": step, "reward/mean": 0.5, "actor/entropy": 0.3, "grad_norm/updates": [1.0]})
        return {"wall_s": 1.0, "cpu_s": 2.0}


def quiet(_message):
    pass


def test_finished_runs_are_never_redone(study, settings, tmp_path):
    store, plan = study.RunStore(tmp_path), small_plan(study, settings)
    first = FakeExecutor()
    assert study.run_study(plan, store, settings, first, log=quiet) == []
    assert first.calls == [spec.run_id for spec in plan]
    metrics = store.final_dir(plan[0].run_id) / "metrics.jsonl"
    written = metrics.stat().st_mtime_ns

    again = FakeExecutor()
    assert study.run_study(plan, store, settings, again, log=quiet) == []
    assert again.calls == []
    assert metrics.stat().st_mtime_ns == written
    assert [r.run_id for r in store.load_finished()] == sorted(spec.run_id for spec in plan)


def test_an_interrupted_run_is_discarded_and_redone_from_scratch(study, settings, tmp_path):
    store, plan = study.RunStore(tmp_path), small_plan(study, settings)
    victim = plan[1].run_id
    with pytest.raises(KeyboardInterrupt):
        study.run_study(plan, store, settings, FakeExecutor(crash=victim, crash_after=2), log=quiet)
    assert store.final_dir(plan[0].run_id).is_dir()
    assert not store.final_dir(victim).exists()
    partial = store.partial_dir(victim) / "metrics.jsonl"
    assert len(partial.read_text().splitlines()) == 2  # what the killed run had written

    resumed = FakeExecutor()
    assert study.run_study(plan, store, settings, resumed, log=quiet) == []
    assert resumed.calls == [victim]  # the finished one is kept, the interrupted one redone
    assert not store.partial_dir(victim).exists()
    steps = [json.loads(line)["step"] for line in (store.final_dir(victim) / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]  # no step twice, none missing
    assert json.loads((store.final_dir(victim) / "timing.json").read_text()) == {"wall_s": 1.0, "cpu_s": 2.0}


def test_a_run_that_ends_short_or_fails_is_reported_and_the_study_goes_on(study, settings, tmp_path):
    store, plan = study.RunStore(tmp_path), small_plan(study, settings)
    messages = []
    failing = FakeExecutor(crash=plan[0].run_id, crash_after=1, error=study.StudyError("exit status 1"))
    assert study.run_study(plan, store, settings, failing, log=messages.append) == [plan[0].run_id]
    assert failing.calls == [spec.run_id for spec in plan]
    assert not store.final_dir(plan[0].run_id).exists() and store.final_dir(plan[1].run_id).is_dir()
    assert any("FAILED: exit status 1" in message for message in messages)

    def short(spec, folder, log_path):  # exits cleanly but recorded only one of three steps
        RunWriter(folder).append({"step": 0, "reward/mean": 0.5})
        return {"wall_s": 1.0, "cpu_s": 1.0}

    messages.clear()
    assert study.run_study(plan, store, settings, short, log=messages.append) == [plan[0].run_id]
    assert any("ended with 1 of 3 steps recorded" in message for message in messages)
    assert not store.final_dir(plan[0].run_id).exists()


def test_a_finished_run_made_with_other_settings_is_an_error_not_a_silent_redo(study, settings, tmp_path):
    store, plan = study.RunStore(tmp_path), small_plan(study, settings)
    study.run_study(plan, store, settings, FakeExecutor(), log=quiet)
    changed = dataclasses.replace(settings, lr=3e-5)
    never = FakeExecutor()
    with pytest.raises(study.StudyError, match=r"other settings \(demo_config\.lr differ\)"):
        study.run_study(plan, store, changed, never, log=quiet)
    assert never.calls == []
    # More seeds extend a study: the finished runs stay, only the new ones run.
    more = FakeExecutor()
    wider = dataclasses.replace(settings, seeds=(0, 1))
    study.run_study(small_plan(study, wider), store, wider, more, log=quiet)
    assert more.calls == [f"on_policy__{arm}__seed1" for arm in ("mhpo", "grpo")]


def test_train_run_records_per_update_grad_norms_and_keeps_nan_out_of_json(study, tmp_path, settings):
    spec = study.build_plan(settings, arms=["mhpo"], regimes=["off_policy"])[0]
    folder = study.RunStore(tmp_path).start(spec, settings)

    class FakeTrainer:
        def __init__(self, config):
            self.config, self.update_grad_norms = config, []

        def step(self, step):
            self.update_grad_norms = [0.5, float("nan"), 2.0, 1.0]
            return {"step": step, "reward/mean": 0.25, "actor/entropy": 0.4, "timing_s/step": 1.0,
                    "diag/log_ratio_over_0.5": 0.125, "actor/grad_norm": float("nan"), "not/kept": 1.0,
                    "samples": [{"prompt": "p", "answer": "1", "response": "r"}]}

    study.train_run(folder, make_trainer=FakeTrainer)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1, 2]
    assert rows[0]["grad_norm/updates"] == [0.5, None, 2.0, 1.0]
    assert rows[0]["actor/grad_norm"] is None and "not/kept" not in rows[0]
    assert (folder / "samples.jsonl").read_text().count('"response": "r"') == 3


def test_the_default_plan_is_six_methods_in_both_regimes_at_four_seeds(study):
    settings = study.StudySettings()
    plan = study.build_plan(settings)
    ids = [spec.run_id for spec in plan]
    assert len(ids) == len(set(ids))
    main = {"mhpo", "grpo", "clip-higher", "gspo", "sapo", "cispo"}
    cells = {(spec.regime.name, spec.arm.name) for spec in plan}
    assert cells == {(r, a) for r in ("off_policy", "stale_8") for a in main}
    assert len(settings.seeds) >= 4
    assert len(plan) == len(cells) * len(settings.seeds) == 48
    # MHPO and GRPO in the stale regime first, paired at every seed; then off-policy; then the other methods
    head = [(spec.regime.name, spec.arm.name, spec.seed) for spec in plan[:16]]
    assert head == [(regime, arm, seed) for regime in ("stale_8", "off_policy") for seed in settings.seeds
                    for arm in ("mhpo", "grpo")]
    rest = plan[16:]
    assert {spec.arm.name for spec in rest} == main - {"mhpo", "grpo"}
    # within a regime the seeds come in order, every method of a seed before the next seed
    for earlier, later in itertools.pairwise(rest):
        if earlier.regime == later.regime:
            assert settings.seeds.index(earlier.seed) <= settings.seeds.index(later.seed)


def test_on_policy_and_the_ablation_run_when_named(study):
    settings = study.StudySettings()
    ablation = {"mhpo-lfm_only", "mhpo-dhp_symmetric", "mhpo-c0.5", "mhpo-c3.0", "mhpo-relu"}
    plan = study.build_plan(settings, arms=list(study.ARMS), regimes=["on_policy", "off_policy"])
    cells = {(spec.regime.name, spec.arm.name) for spec in plan}
    assert {("off_policy", arm) for arm in ablation} <= cells
    assert not any(regime == "on_policy" and arm in ablation for regime, arm in cells)


def test_runs_share_everything_but_method_regime_and_seed(study):
    settings = study.StudySettings()
    method_fields = {"loss_mode", "adv_estimator", "loss_agg_mode", "overrides"}
    regime_fields = {"ppo_mini_batch_size", "ppo_epochs", "rollout_staleness", "old_log_probs_from_sampler"}
    shared = None
    for spec in study.build_plan(settings, regimes=list(study.REGIMES)):
        config = dataclasses.asdict(spec.demo_config(settings))
        assert config["seed"] == spec.seed
        assert config["ppo_epochs"] == spec.regime.ppo_epochs
        rest = {k: v for k, v in config.items() if k not in method_fields | regime_fields | {"seed"}}
        shared = shared or rest
        assert rest == shared
    off = study.REGIMES["off_policy"]
    assert settings.prompts_per_step // off.ppo_mini_batch_size * off.ppo_epochs > 1  # several updates per batch
    on = study.REGIMES["on_policy"]
    assert (on.ppo_mini_batch_size, on.ppo_epochs) == (settings.prompts_per_step, 1)


@pytest.mark.parametrize("name", ["mhpo", "grpo", "clip-higher", "gspo", "sapo", "cispo"])
def test_methods_come_from_the_recipes_without_the_kl_term(study, name):
    loss_mode, estimator, agg_mode, overrides = study.algorithm_settings(name)
    recipe = dict(o.split("=", 1) for o in ALGORITHMS[name].overrides)
    assert loss_mode == recipe["actor_rollout_ref.actor.policy_loss.loss_mode"]
    assert estimator == recipe["algorithm.adv_estimator"]
    assert agg_mode == recipe["actor_rollout_ref.actor.loss_agg_mode"]
    keys = [o.split("=", 1)[0] for o in overrides]
    assert len(keys) == len(set(keys))
    assert "actor_rollout_ref.actor.use_kl_loss=False" in overrides
    assert not any("kl_loss_coef" in key or "loss_mode" in key or "adv_estimator" in key for key in keys)
    for key, value in recipe.items():  # every other recipe setting is kept as it is
        if "kl" not in key and key in keys:
            assert f"{key}={value}" in overrides


def test_unknown_arm_or_regime_is_named(study):
    with pytest.raises(study.StudyError, match=r"unknown arm \['ppo'\]"):
        study.build_plan(study.StudySettings(), arms=["ppo"])
    with pytest.raises(study.StudyError, match=r"unknown regime \['offpolicy'\]"):
        study.build_plan(study.StudySettings(), regimes=["offpolicy"])


def test_every_arm_composes_into_a_valid_verl_config(study):
    """Hydra rejects an unknown key, and MHPO's config class rejects a bad option value."""
    from verl.utils.config import omega_conf_to_dataclass

    from mhpo_verl.demo.loop import compose_verl_config

    settings = study.StudySettings()
    for regime in study.REGIMES:
        for spec in study.build_plan(settings, arms=list(study.ARMS), regimes=[regime]):
            if spec.seed != settings.seeds[0]:
                continue
            config = compose_verl_config(spec.demo_config(settings), "/not/loaded")
            actor = config.actor_rollout_ref.actor
            assert actor.use_kl_loss is False
            assert (actor.ppo_mini_batch_size, actor.ppo_epochs) == (spec.regime.ppo_mini_batch_size,
                                                                    spec.regime.ppo_epochs)
            if spec.arm.algorithm == "mhpo":
                options = omega_conf_to_dataclass(actor.policy_loss).mhpo_params()
                for key, value in spec.arm.loss_options:
                    got = getattr(options, key)
                    assert got == value if isinstance(got, str) else math.isclose(got, float(value))


# Only reached when the code under test is wrong (runs that should overlap never do): then the wait times out.
OVERLAP_TIMEOUT_S = 60.0


class ConcurrentExecutor(FakeExecutor):
    """A FakeExecutor that counts how many runs are under way at once. Overlap is made certain by synchronisation,
    not hoped for from sleeps (which need not overlap on a loaded runner): every run but the crashing one holds its
    slot until ``together`` runs have been under way at once, or, with a ``gate``, until the gate opens."""

    def __init__(self, together=2, gate=None, **kwargs):
        super().__init__(**kwargs)
        self.together, self.gate = together, gate
        self.condition = threading.Condition()
        self.running = self.most_at_once = 0

    def __call__(self, spec, folder, log_path):
        with self.condition:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.condition.notify_all()
        try:
            if spec.run_id != self.crash:
                if self.gate is not None:
                    assert self.gate.wait(OVERLAP_TIMEOUT_S), "the gate never opened"
                else:
                    with self.condition:
                        self.condition.wait_for(lambda: self.most_at_once >= self.together, OVERLAP_TIMEOUT_S)
            return super().__call__(spec, folder, log_path)
        finally:
            with self.condition:
                self.running -= 1


def test_jobs_run_that_many_runs_at_once_and_finish_every_run(study, settings, tmp_path):
    plan = study.build_plan(settings, arms=["mhpo", "grpo", "clip-higher"], regimes=["on_policy"])
    store = study.RunStore(tmp_path)
    executor = ConcurrentExecutor(together=2)
    assert study.run_study(plan, store, settings, executor, log=quiet, jobs=2) == []
    assert executor.most_at_once == 2
    assert sorted(executor.calls) == sorted(spec.run_id for spec in plan)
    assert all(store.is_finished(spec, settings) for spec in plan)


def test_an_interrupted_parallel_study_propagates_and_resumes_cleanly(study, settings, tmp_path, monkeypatch):
    plan = study.build_plan(settings, arms=["mhpo", "grpo", "clip-higher"], regimes=["on_policy"])
    store = study.RunStore(tmp_path)
    victim = plan[0].run_id
    # The run beside the victim finishes only once the study has seen the interruption (it then ends the runs under
    # way): it is certainly still under way when the victim dies, however slow the machine.
    interruption_seen = threading.Event()
    stop_children = study.stop_children

    def stop_children_and_open_the_gate():
        interruption_seen.set()
        stop_children()

    monkeypatch.setattr(study, "stop_children", stop_children_and_open_the_gate)
    interrupted = ConcurrentExecutor(gate=interruption_seen, crash=victim, crash_after=2)
    with pytest.raises(KeyboardInterrupt):
        study.run_study(plan, store, settings, interrupted, log=quiet, jobs=2)
    assert interruption_seen.is_set()
    assert not store.is_finished(plan[0], settings)
    assert not store.is_finished(plan[2], settings)  # never started: nothing was left queued behind the interruption
    resumed = FakeExecutor()
    assert study.run_study(plan, store, settings, resumed, log=quiet, jobs=2) == []
    assert victim in resumed.calls and plan[2].run_id in resumed.calls
    assert all(store.is_finished(spec, settings) for spec in plan)


def test_jobs_below_one_is_named(study, settings, tmp_path):
    with pytest.raises(study.StudyError, match="jobs must be at least 1, got 0"):
        study.run_study(small_plan(study, settings), study.RunStore(tmp_path), settings, FakeExecutor(), jobs=0)


def test_stop_children_ends_every_run_under_way(study):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with study._LIVE_CHILDREN_LOCK:
        study._LIVE_CHILDREN.add(child)
    try:
        study.stop_children()
        assert child.poll() is not None
    finally:
        with study._LIVE_CHILDREN_LOCK:
            study._LIVE_CHILDREN.discard(child)
        if child.poll() is None:
            child.kill()
            child.wait()


def test_every_run_gets_the_settings_threads_whatever_the_jobs(study, monkeypatch, tmp_path):
    seen = []

    class FakeWorker:
        def __init__(self, threads, log_dir):
            seen.append(threads)
            self.alive = True

        def run(self, folder, log_path):
            raise study.StudyError("not trained here")

        def close(self):
            self.alive = False

    monkeypatch.setattr(study, "RunWorker", FakeWorker)
    for jobs in ("1", "2"):
        study.main(["--out", str(tmp_path / jobs), "--jobs", jobs, "--arms", "grpo", "--regimes", "off_policy",
                    "--seeds", "0", "1"])
    assert seen and set(seen) == {study.StudySettings().threads} == {1}
    # the thread count is part of a run's record: runs made with another one are not mixed in
    spec = study.build_plan(study.StudySettings(), arms=["grpo"])[0]
    assert spec.record(study.StudySettings())["threads"] == 1
