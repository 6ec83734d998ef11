"""The CPU RL loop through verl's actor worker: it trains, and the registered mhpo loss it reaches through
``TrainingWorker`` / ``ppo_loss`` gives the gradient of our loss called directly.

Each test drives the loop in a fresh interpreter (see ``tests/demo/helpers.py``) on a tiny random Llama that shares
SmolLM2's tokenizer; ``test_cli.py`` runs the real model end to end.
"""

from __future__ import annotations

import math

import pytest

from mhpo_verl.demo.loop import DemoConfig, build_batch, reduce_update_metrics, verl_overrides
from mhpo_verl.demo.rollout import Rollout
from tests.demo.helpers import run_python

pytestmark = pytest.mark.slow

MHPO_METRICS = (
    "actor/mhpo/psi_mean",
    "actor/mhpo/zeta_mean",
    "actor/mhpo/survival_pos",
    "actor/mhpo/survival_neg",
    "actor/mhpo/grad_scale_mean",
    "actor/mhpo/log_ratio_abs_mean",
)

# Rewards alternate inside every group of two, so every advantage is non-zero and the gradient is real.
_ALTERNATING_SCORE = """
from mhpo_verl.demo.rewards import Grade
def alternating(texts, answers):
    return [Grade(score=float(i % 2), correct=bool(i % 2), formatted=False) for i in range(len(texts))]
"""


def test_a_few_steps_train_the_policy_through_verl(tiny_model_dir):
    report = run_python(
        _ALTERNATING_SCORE
        + """
import json, math, os, torch
from mhpo_verl.demo.loop import CPURLTrainer, DemoConfig

config = DemoConfig(
    steps=3, prompts_per_step=2, samples_per_prompt=2, ppo_mini_batch_size=1, ppo_epochs=2, micro_batch_size=2,
    max_new_tokens=6, lr=1e-3, train_dtype="fp32", rollout_dtype="fp32", model_path=os.environ["TINY_MODEL"],
    overrides=("actor_rollout_ref.actor.optim.weight_decay=0.0",),
)
trainer = CPURLTrainer(config, score_fn=alternating)
optimizer_steps = []
original_step = trainer.engine.optimizer_step

def recording_step():
    # verl zeroes the gradients when the update's train-mode context exits; look at them just before the step.
    grads = [p.grad.full_tensor() for p in trainer.engine.module.parameters() if p.grad is not None]
    optimizer_steps.append({"with_grad": len(grads), "finite": all(bool(torch.isfinite(g).all()) for g in grads)})
    return original_step()

trainer.engine.optimizer_step = recording_step

def weights():
    return {n: p.detach().full_tensor().clone() for n, p in trainer.engine.module.named_parameters()}

before = weights()
steps = [trainer.step(step) for step in range(config.steps)]
after = weights()
sampler = dict(trainer.sampler.model.named_parameters())
print(json.dumps({
    "changed": sum(not torch.equal(before[n], after[n]) for n in before),
    "parameters": len(before),
    "sampler_matches_engine": all(torch.equal(sampler[n], after[n]) for n in after),
    "optimizer_steps": optimizer_steps,
    "steps": [{k: v for k, v in s.items() if k != "samples"} for s in steps],
}))
""",
        env={"TINY_MODEL": str(tiny_model_dir)},
    )
    # Without weight decay, only a gradient step can move a weight: every tensor moved (the tiny model's
    # embedding is the output layer too, so it gets gradient on every row).
    assert report["changed"] == report["parameters"] > 0
    assert report["sampler_matches_engine"]
    # 3 steps x 2 epochs x 2 mini-batches, each ending in one optimizer step on finite gradients of every tensor.
    assert len(report["optimizer_steps"]) == 12
    assert all(s == {"with_grad": report["parameters"], "finite": True} for s in report["optimizer_steps"])
    assert len(report["steps"]) == 3
    for metrics in report["steps"]:
        for key in ("actor/pg_loss", "actor/grad_norm", "actor/entropy", "reward/mean", *MHPO_METRICS):
            assert math.isfinite(metrics[key]), (key, metrics[key])
        assert metrics["actor/grad_norm"] > 0
        assert metrics["reward/mean"] == 0.5
        assert metrics["diag/nonfinite_loss"] == metrics["diag/nonfinite_grad_norm_steps"] == 0
        assert 0 <= metrics["diag/log_ratio_over_0.5"] <= 1
    # Two mini-batches x two epochs: after the first update the policy is off its sampling distribution.
    assert any(metrics["actor/mhpo/log_ratio_abs_mean"] > 0 for metrics in report["steps"])


def test_mhpo_gradient_through_training_worker_equals_direct_loss_gradient(tiny_model_dir):
    report = run_python(
        _ALTERNATING_SCORE
        + """
import json, os, torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from mhpo_verl.demo.loop import CPURLTrainer, DemoConfig, build_batch
from mhpo_verl.plugin import compute_policy_loss_mhpo

temperature = 0.9
config = DemoConfig(
    steps=1, prompts_per_step=3, samples_per_prompt=2, ppo_mini_batch_size=3, micro_batch_size=2,
    max_new_tokens=8, lr=0.0, temperature=temperature, train_dtype="fp32", rollout_dtype="fp32",
    model_path=os.environ["TINY_MODEL"],
    overrides=("actor_rollout_ref.actor.optim.clip_grad=1.0e9", "actor_rollout_ref.actor.optim.weight_decay=0.0"),
)
trainer = CPURLTrainer(config, score_fn=alternating)
engine_grads = {}
original_step = trainer.engine.optimizer_step

def recording_step():
    # verl zeroes the gradients when the update's train-mode context exits; take them just before the step.
    for name, param in trainer.engine.module.named_parameters():
        engine_grads[name] = param.grad.full_tensor().clone()
    return original_step()

trainer.engine.optimizer_step = recording_step
problems, rollouts = trainer.generate(step=0)
texts, grades = trainer.grade(problems, rollouts)
batch = build_batch(rollouts, [g.score for g in grades], uids=[str(r.prompt_index) for r in rollouts])
trainer.compute_old_log_prob(batch)
# Move the old policy away from the current one so that r != 1 and every part of the objective is exercised.
generator = torch.Generator().manual_seed(0)
shifted = [old + 0.4 * torch.randn(old.shape, generator=generator) for old in batch["old_log_probs"].unbind()]
batch["old_log_probs"] = torch.nested.as_nested_tensor(shifted, layout=torch.jagged)
trainer.compute_advantage(batch)
trainer.update_actor(batch)  # 3 micro-batches of <= 2 sequences, one optimizer step

# The same loss, called directly on log-probs from a plain transformers forward of the same weights.
model = AutoModelForCausalLM.from_pretrained(config.model_path, dtype=torch.float32, attn_implementation="sdpa")
padded = batch.select("response_mask", "old_log_probs", "advantages").to_padded_tensor()
mask = padded["response_mask"].bool()
actor = trainer.verl_config.actor_rollout_ref.actor
loss_config = OmegaConf.create({
    "policy_loss": OmegaConf.to_container(actor.policy_loss),
    "clip_ratio": actor.clip_ratio, "clip_ratio_low": actor.clip_ratio_low, "clip_ratio_high": actor.clip_ratio_high,
    "clip_ratio_c": actor.clip_ratio_c,
    "global_batch_info": {"dp_size": 1, "batch_num_tokens": int(mask.sum()), "global_batch_size": len(rollouts),
                           "loss_scale_factor": None},
})

def gradient_of(loss_fn):
    model.zero_grad()
    rows = []
    for row, rollout in enumerate(rollouts):
        ids = torch.tensor([rollout.prompt_ids + rollout.response_ids])
        logits = model(input_ids=ids).logits[0, len(rollout.prompt_ids) - 1 : -1] / temperature
        tokens = torch.tensor(rollout.response_ids)
        rows.append(torch.log_softmax(logits.float(), -1).gather(-1, tokens[:, None])[:, 0])
    log_prob = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=0.0)
    loss, _ = loss_fn(
        old_log_prob=padded["old_log_probs"], log_prob=log_prob, advantages=padded["advantages"],
        response_mask=mask, loss_agg_mode=actor.loss_agg_mode, config=loss_config,
    )
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}

def relative_error(grads):
    num = sum(float((engine_grads[n] - g).pow(2).sum()) for n, g in grads.items())
    den = sum(float(g.pow(2).sum()) for g in grads.values())
    return (num / den) ** 0.5

mhpo = gradient_of(compute_policy_loss_mhpo)
vanilla = gradient_of(get_policy_loss_fn("vanilla"))
print(json.dumps({
    "loss_mode": actor.policy_loss.loss_mode,
    "loss_agg_mode": actor.loss_agg_mode,
    "micro_batches": -(-len(rollouts) // config.micro_batch_size),
    "names_match": sorted(mhpo) == sorted(engine_grads),
    "grad_norm": sum(float(g.pow(2).sum()) for g in mhpo.values()) ** 0.5,
    "error_vs_mhpo": relative_error(mhpo),
    "error_vs_vanilla": relative_error(vanilla),
    "max_abs_diff": max(float((engine_grads[n] - g).abs().max()) for n, g in mhpo.items()),
}))
""",
        env={"TINY_MODEL": str(tiny_model_dir)},
    )
    assert report["loss_mode"] == "mhpo"
    assert report["loss_agg_mode"] == "seq-mean-token-mean"
    assert report["micro_batches"] == 3
    assert report["names_match"]
    assert report["grad_norm"] > 1e-4
    assert report["error_vs_mhpo"] < 1e-4, report
    # The comparison has power: a different loss on the same inputs gives a clearly different gradient.
    assert report["error_vs_vanilla"] > 1e-2, report


def _rollout(prompt: list[int], response: list[int], index: int = 0) -> Rollout:
    return Rollout(prompt_index=index, prompt_ids=prompt, response_ids=response, truncated=False)


def test_build_batch_lays_rollouts_out_like_verls_v1_trainer():
    batch = build_batch([_rollout([5, 6], [7, 8, 2]), _rollout([9], [2], 1)], scores=[1.0, -0.5], uids=["a", "b"])
    assert batch["input_ids"].unbind()[0].tolist() == [5, 6, 7, 8, 2]
    assert batch["position_ids"].unbind()[0].tolist() == [0, 1, 2, 3, 4]
    assert batch["response_mask"].unbind()[1].tolist() == [1]
    assert batch["rm_scores"].unbind()[0].tolist() == [0.0, 0.0, 1.0]
    assert batch["rm_scores"].unbind()[1].tolist() == [-0.5]
    assert list(batch["uid"]) == ["a", "b"]


@pytest.mark.parametrize(
    ("scores", "uids", "message"),
    [([1.0], ["a", "b"], "need equally many"), ([math.nan], ["a"], "reward nan"), ([], [], "need equally many")],
)
def test_build_batch_rejects_inconsistent_or_non_finite_input(scores, uids, message):
    rollouts = [_rollout([1], [2])] if uids else []
    with pytest.raises(ValueError, match=message):
        build_batch(rollouts, scores=scores, uids=uids)


def test_empty_response_is_rejected():
    with pytest.raises(ValueError, match="empty response"):
        build_batch([_rollout([1], [])], scores=[0.0], uids=["a"])


def test_update_metrics_are_reduced_per_step():
    reduced = reduce_update_metrics(
        {
            "actor/pg_loss": [0.5, 1.5],
            "grad_norm": [1.0, math.inf],
            "diag/nonfinite_loss": [0.0, 1.0],
            "diag/log_ratio_abs_max": [0.2, 0.7],
            "actor/mhpo/grad_multiplier_max": [1.5, 1.2],
            "lr": 1e-5,
            "mfu": [0.4],
        }
    )
    assert reduced["actor/pg_loss"] == 1.0
    assert reduced["actor/grad_norm_max"] == math.inf
    assert reduced["diag/nonfinite_grad_norm_steps"] == 1.0
    assert reduced["diag/nonfinite_loss"] == 1.0
    assert reduced["diag/log_ratio_abs_max"] == 0.7
    assert reduced["actor/mhpo/grad_multiplier_max"] == 1.5
    assert reduced["actor/lr"] == 1e-5
    assert "actor/mfu" not in reduced and "mfu" not in reduced


def test_demo_config_rejects_bad_values_by_name():
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        DemoConfig(steps=0)
    with pytest.raises(ValueError, match="must be a multiple of ppo_mini_batch_size"):
        DemoConfig(prompts_per_step=6, ppo_mini_batch_size=4)
    with pytest.raises(ValueError, match=r"micro_batch_size \(4\) must divide the sequences of a mini-batch"):
        DemoConfig(prompts_per_step=2, samples_per_prompt=2, ppo_mini_batch_size=1, micro_batch_size=4)
    with pytest.raises(ValueError, match="train_dtype must be one of"):
        DemoConfig(train_dtype="fp16")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        DemoConfig(temperature=0.0)
    with pytest.raises(ValueError, match="task kinds"):
        DemoConfig(task_kinds=("calculus",))


def test_verl_overrides_select_the_cpu_path_and_keep_user_overrides_last(tmp_path):
    config = DemoConfig(loss_mode="gspo", overrides=("actor_rollout_ref.actor.ppo_epochs=3",))
    overrides = verl_overrides(config, tmp_path)
    assert "actor_rollout_ref.actor.strategy=fsdp2" in overrides
    assert "+actor_rollout_ref.model.override_config.attn_implementation=sdpa" in overrides
    assert "actor_rollout_ref.actor.policy_loss.loss_mode=gspo" in overrides
    assert overrides[-1] == "actor_rollout_ref.actor.ppo_epochs=3"
