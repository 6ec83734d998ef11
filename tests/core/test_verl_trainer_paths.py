"""The mhpo estimator through the V1 trainer's own advantage step (``verl.trainer.ppo.v1.trainer_base``): rejection-
sampled masks, multi-output agent sessions and bypass mode, against verl's grpo on the same path.

What runs is verl's code: ``PPOTrainer._compute_advantage`` and ``_compute_old_log_prob`` (rollout correction,
``compute_advantage_for_multi_trajectories`` through the name the trainer module bound at import, the nested
write-back). Only TransferQueue's ``kv_batch_get`` / ``kv_batch_put``, which need Ray actors, are replaced by an
in-memory store that returns jagged nested tensors as TransferQueue does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import verl  # noqa: F401  (loads the plugin)
from omegaconf import OmegaConf
from tensordict import NonTensorData, NonTensorStack, TensorDict
from verl.trainer.ppo.v1 import trainer_base
from verl.trainer.ppo.v1 import utils as v1_utils

from mhpo_verl.plugin import WRAPPED_TAG

pytestmark = pytest.mark.slow

PARTITION = "train"


class BatchMeta(SimpleNamespace):
    """The parts of TransferQueue's KVBatchMeta the trainer reads."""

    def __len__(self) -> int:
        return len(self.keys)


class InMemoryTransferQueue:
    """kv_batch_get / kv_batch_put over a dict of rows; fields a row lacks are left out, as for a grpo run's
    absent ``values``."""

    def __init__(self, rows: dict[str, dict]) -> None:
        self.rows = rows

    def kv_batch_get(self, keys, partition_id, select_fields=None):
        assert partition_id == PARTITION
        names = select_fields or list(self.rows[keys[0]])
        data = {}
        for name in names:
            if not all(name in self.rows[key] for key in keys):
                continue
            values = [self.rows[key][name] for key in keys]
            if isinstance(values[0], torch.Tensor):
                data[name] = torch.nested.as_nested_tensor(values, layout=torch.jagged)
            else:
                data[name] = NonTensorStack(*[NonTensorData(value) for value in values])
        return TensorDict(data, batch_size=[len(keys)])

    def kv_batch_put(self, keys, partition_id, fields=None, tags=None):
        assert partition_id == PARTITION
        for name, value in fields.items():
            for key, row_value in zip(keys, value.unbind(0), strict=True):
                self.rows[key][name] = row_value.clone()
        return BatchMeta(keys=list(keys), partition_id=partition_id, extra_info={})

    def column(self, keys, name):
        return [self.rows[key][name] for key in keys]


def rollout(sessions_per_prompt, outputs_per_session, seed=0):
    """Rows keyed ``{uid}_{session}_{index}`` as the agent loop writes them; the session's 0/1 reward sits on the
    final output's last token, and intermediate outputs carry noise a correct estimator must ignore."""
    rng = np.random.default_rng(seed)
    rows = {}
    for prompt, sessions in enumerate(sessions_per_prompt):
        uid = f"prompt-{prompt}"
        for session in range(sessions):
            outputs = outputs_per_session(prompt, session)
            reward = float(rng.integers(0, 2))
            for index in range(outputs):
                length = int(rng.integers(2, 9))
                old = torch.tensor(-rng.exponential(1.0, length), dtype=torch.float32)
                scores = torch.zeros(length)
                scores[-1] = reward if index == outputs - 1 else float(rng.normal())
                rows[f"{uid}_{session}_{index}"] = {
                    "uid": uid,
                    "response_mask": torch.ones(length, dtype=torch.long),
                    "rm_scores": scores,
                    "old_log_probs": old,
                    "rollout_log_probs": old.clone(),
                }
    return rows


def trainer_config(adv_estimator, rollout_correction=None, n=4):
    return OmegaConf.create(
        {
            "algorithm": {
                "adv_estimator": adv_estimator,
                "gamma": 1.0,
                "lam": 1.0,
                "norm_adv_by_std_in_grpo": True,
                "use_kl_in_reward": False,
                "rollout_correction": rollout_correction,
            },
            "actor_rollout_ref": {"rollout": {"n": n, "temperature": 1.0}},
        }
    )


def advantage_step(rows, adv_estimator, rollout_correction=None, bypass_old_log_probs=False):
    """Run the V1 trainer's old-log-prob (bypass branch only) and advantage steps; returns the store."""
    store = InMemoryTransferQueue({key: dict(value) for key, value in rows.items()})
    trainer = SimpleNamespace(config=trainer_config(adv_estimator, rollout_correction))
    batch = BatchMeta(keys=list(rows), partition_id=PARTITION, extra_info={})
    patch = pytest.MonkeyPatch()
    try:
        patch.setattr(trainer_base.tq, "kv_batch_get", store.kv_batch_get)
        patch.setattr(trainer_base.tq, "kv_batch_put", store.kv_batch_put)
        if bypass_old_log_probs:
            trainer_base.PPOTrainer._compute_old_log_prob(trainer, batch, {})
        trainer_base.PPOTrainer._compute_advantage(trainer, batch, {})
    finally:
        patch.undo()
    return store


def first_token_advantages(store, keys):
    return torch.stack([advantages[0] for advantages in store.column(keys, "advantages")])


def test_the_v1_trainer_calls_the_wrapped_function_and_other_estimators_are_untouched():
    wrapped = trainer_base.compute_advantage_for_multi_trajectories
    assert wrapped is v1_utils.compute_advantage_for_multi_trajectories
    original = getattr(wrapped, WRAPPED_TAG)
    rows = rollout([4, 3], lambda prompt, session: 1 + session % 2, seed=1)
    for estimator in ("grpo", "rloo", "reinforce_plus_plus"):
        ours, theirs = (
            advantage_step(rows, estimator),
            _with_function(original, lambda estimator=estimator: advantage_step(rows, estimator)),
        )
        for key in rows:
            assert torch.equal(ours.rows[key]["advantages"], theirs.rows[key]["advantages"]), (estimator, key)


def _with_function(function, run):
    patch = pytest.MonkeyPatch()
    patch.setattr(trainer_base, "compute_advantage_for_multi_trajectories", function)
    try:
        return run()
    finally:
        patch.undo()


@pytest.mark.parametrize("seed", range(3))
def test_multi_output_sessions_get_grpos_treatment(seed):
    """Group statistics over each session's final output, broadcast to the session's other outputs."""
    rows = rollout([4, 5, 3, 1], lambda prompt, session: 1 + (prompt + session + seed) % 3, seed=seed)
    keys = list(rows)
    mhpo = advantage_step(rows, "mhpo")
    grpo = advantage_step(rows, "grpo")
    singleton = [key.startswith("prompt-3_") for key in keys]
    ours, theirs = first_token_advantages(mhpo, keys), first_token_advantages(grpo, keys)
    torch.testing.assert_close(ours[[not s for s in singleton]], theirs[[not s for s in singleton]])
    assert (ours[singleton] == 0).all()
    # every output of a session has its session's advantage on each of its tokens
    for key in keys:
        session = key.rpartition("_")[0]
        final = max((k for k in keys if k.rpartition("_")[0] == session), key=lambda k: int(k.rpartition("_")[2]))
        assert torch.equal(
            mhpo.rows[key]["advantages"],
            torch.full_like(mhpo.rows[key]["advantages"], float(mhpo.rows[final]["advantages"][0])),
        )
    assert (ours != 0).any() and len({key.rpartition("_")[0] for key in keys}) < len(keys)


REJECTION = {
    "rollout_is": "token",
    "rollout_is_threshold": 2.0,
    "rollout_rs": "token_k1",
    "rollout_rs_threshold": "0.5_2.0",
    "rollout_is_batch_normalize": False,
    "bypass_mode": False,
    "loss_type": "ppo_clip",
}


def rejected(rows, fully, last_token):
    """Make verl's token_k1 rejection sampling drop whole rows and the reward-carrying last token of others."""
    rows = {key: dict(value) for key, value in rows.items()}
    for key in fully:
        rows[key]["rollout_log_probs"] = rows[key]["old_log_probs"] + 3.0
    for key in last_token:
        shifted = rows[key]["old_log_probs"].clone()
        shifted[-1] += 3.0
        rows[key]["rollout_log_probs"] = shifted
    return rows


def test_rejection_sampled_masks_match_grpo_through_the_trainer():
    rows = rollout([4, 4, 6], lambda prompt, session: 1, seed=4)
    keys = list(rows)
    rows = rejected(rows, fully=keys[0:2] + keys[9:10], last_token=keys[2:6] + keys[10:13])
    mhpo = advantage_step(rows, "mhpo", REJECTION)
    grpo = advantage_step(rows, "grpo", REJECTION)
    masks = mhpo.column(keys, "response_mask")
    assert [bool(mask.any()) for mask in masks[:3]] == [False, False, True]  # verl rejected rows 0 and 1 whole
    assert not masks[2][-1] and masks[2][0]  # ... and row 2's reward token only
    for key in keys:
        torch.testing.assert_close(mhpo.rows[key]["advantages"], grpo.rows[key]["advantages"])
        assert torch.equal(mhpo.rows[key]["response_mask"], grpo.rows[key]["response_mask"])
        assert torch.equal(mhpo.rows[key]["rollout_is_weights"], grpo.rows[key]["rollout_is_weights"])
    # the correct rejected/hidden responses still count: some row with a hidden reward token trains on a positive
    # advantage, which the masked-reward estimator of before got wrong
    hidden_correct = [k for k in keys[2:6] + keys[10:13] if rows[k]["rm_scores"][-1] == 1.0]
    assert hidden_correct and all(mhpo.rows[k]["advantages"][0] > 0 for k in hidden_correct)


def test_a_session_whose_final_output_is_rejected_keeps_its_advantage():
    """The one place mhpo and verl's grpo differ beyond singletons: verl's grpo reads the session's advantage
    back from the final output's first unmasked token, so a fully rejected final output gives its whole session 0.
    mhpo broadcasts the response-level value (the session's reward did happen)."""
    rows = rollout([3, 3], lambda prompt, session: 2, seed=5)
    keys = list(rows)
    final_rejected = [key for key in keys if key.endswith("_1")][:2]
    rows = rejected(rows, fully=final_rejected, last_token=[])
    mhpo = advantage_step(rows, "mhpo", REJECTION)
    grpo = advantage_step(rows, "grpo", REJECTION)
    assert not any(mhpo.rows[key]["response_mask"].any() for key in final_rejected)
    inherited = 0
    for key in keys:
        session_final = key.rpartition("_")[0] + "_1"
        if session_final in final_rejected and not key.endswith("_1"):
            assert (grpo.rows[key]["advantages"] == 0).all()
            if not _session_reward_is_average(rows, key):
                assert (mhpo.rows[key]["advantages"] != 0).all()
                inherited += 1
        else:
            torch.testing.assert_close(mhpo.rows[key]["advantages"], grpo.rows[key]["advantages"])
    assert inherited > 0


def _session_reward_is_average(rows, key):
    """True when the session's final reward equals its group's mean (its advantage is then 0 in both)."""
    uid = rows[key]["uid"]
    finals = [k for k in rows if rows[k]["uid"] == uid and k.endswith("_1")]
    rewards = [float(rows[k]["rm_scores"][-1]) for k in finals]
    return float(rows[key.rpartition("_")[0] + "_1"]["rm_scores"][-1]) == sum(rewards) / len(rewards)


def test_bypass_mode_uses_rollout_log_probs_and_applies_no_correction():
    """Bypass: old log-probs are the rollout's and no IS/RS runs, even with RS configured (why the driver refuses
    that combination for mhpo runs: see tests/core/test_config.py)."""
    rows = rollout([4, 4], lambda prompt, session: 1, seed=6)
    keys = list(rows)
    rows = rejected(rows, fully=keys[:2], last_token=keys[2:4])
    bypass = {**REJECTION, "bypass_mode": True}
    mhpo = advantage_step(rows, "mhpo", bypass, bypass_old_log_probs=True)
    grpo = advantage_step(rows, "grpo", bypass, bypass_old_log_probs=True)
    for key in keys:
        assert torch.equal(mhpo.rows[key]["old_log_probs"], rows[key]["rollout_log_probs"])
        assert mhpo.rows[key]["response_mask"].all()  # no rejection happened
        assert "rollout_is_weights" not in mhpo.rows[key]
        torch.testing.assert_close(mhpo.rows[key]["advantages"], grpo.rows[key]["advantages"])


def test_the_wrappers_reach_modules_imported_before_the_plugin():
    """Import order: with verl's plugin loading off, the trainer and main_ppo bind verl's functions first; loading
    the plugin afterwards (as actor_rollout_ref.model.external_lib does) still reaches the names they bound."""
    code = """
import json
import verl.trainer.ppo.v1.trainer_base as trainer_base
import verl.trainer.main_ppo as main_ppo
before = [hasattr(trainer_base.compute_advantage_for_multi_trajectories, "_mhpo_verl_wraps"),
          hasattr(main_ppo.validate_config, "_mhpo_verl_wraps")]
import mhpo_verl.plugin
after = [hasattr(trainer_base.compute_advantage_for_multi_trajectories, "_mhpo_verl_wraps"),
         hasattr(main_ppo.validate_config, "_mhpo_verl_wraps")]
import importlib
importlib.reload(mhpo_verl.plugin)  # a second registration does not stack wrappers
inner = getattr(trainer_base.compute_advantage_for_multi_trajectories, "_mhpo_verl_wraps")
print("RESULT " + json.dumps([before, after, hasattr(inner, "_mhpo_verl_wraps")]))
"""
    environment = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "none"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")][-1]
    assert json.loads(line[len("RESULT ") :]) == [[False, False], [True, True], False]
