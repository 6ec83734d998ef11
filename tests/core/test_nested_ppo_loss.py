"""The mhpo loss through verl's real ``ppo_loss`` on nested (no-padding) micro-batches, as the V1 engine builds them.

The mini-batch is what the V1 actor update receives: jagged nested ``input_ids`` / ``prompts`` / ``responses`` /
``response_mask`` / ``old_log_probs`` / ``advantages`` / ``ref_log_prob`` / ``rollout_is_weights``, with rejection-
sampled masks (whole responses and single tokens, the reward token included). verl's ``prepare_micro_batches``
splits it (fixed sizes and dynamic token budgets), each micro-batch goes through ``ppo_loss`` with KL loss and the
entropy bonus on, and the gradients are summed as the FSDP engine sums them. The "model" is a unigram softmax over
a small vocabulary, so the log-probs depend on the parameters the way a language model's do (through the tokens).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import verl  # noqa: F401  (loads the plugin)
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.workers.config import FSDPActorConfig
from verl.workers.engine.utils import prepare_micro_batches
from verl.workers.utils.losses import ppo_loss

from mhpo_verl.config import MHPOPolicyLossConfig
from tests.core.test_objective import reference

VOCAB, BATCH, KL_COEF, ENTROPY_COEFF = 13, 8, 0.05, 0.01
AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


def nested(rows, dtype=None):
    return torch.nested.as_nested_tensor([torch.as_tensor(row, dtype=dtype) for row in rows], layout=torch.jagged)


def mini_batch(seed=0, poison=float("nan")):
    """A V1 actor mini-batch with rejection-sampled masks; ``poison`` fills our inputs at masked positions."""
    rng = np.random.default_rng(seed)
    prompt_lengths = rng.integers(2, 6, BATCH)
    response_lengths = rng.integers(1, 10, BATCH)
    response_lengths[0] = 9
    tokens = [rng.integers(0, VOCAB, p + r) for p, r in zip(prompt_lengths, response_lengths, strict=True)]
    old_logits, ref_logits = rng.normal(size=VOCAB), rng.normal(size=VOCAB)
    masks, old, ref, advantages, weights = [], [], [], [], []
    for row, (p, r) in enumerate(zip(prompt_lengths, response_lengths, strict=True)):
        mask = np.ones(r, dtype=np.int64)
        if row in (2, 5):
            mask[:] = 0  # rejected outright
        elif row in (0, 3):
            mask[-1] = 0  # the reward-carrying last token rejected
        response = tokens[row][p:]
        old_row = _log_softmax(old_logits)[response]
        ref_row = _log_softmax(ref_logits)[response]
        advantage = np.full(r, rng.normal() if row != 4 else 0.0)
        weight = rng.uniform(0.5, 1.5, r)
        for values in (old_row, advantage, weight):
            values[mask == 0] = poison
        masks.append(mask), old.append(old_row), ref.append(ref_row), advantages.append(advantage)
        weights.append(weight)
    data = TensorDict(
        {
            "input_ids": nested(tokens, torch.long),
            "prompts": nested([t[:p] for t, p in zip(tokens, prompt_lengths, strict=True)], torch.long),
            "responses": nested([t[p:] for t, p in zip(tokens, prompt_lengths, strict=True)], torch.long),
            "response_mask": nested(masks, torch.long),
            "loss_mask": nested(masks, torch.long),
            "old_log_probs": nested(old, torch.float64),
            "ref_log_prob": nested(ref, torch.float64),
            "advantages": nested(advantages, torch.float64),
            "rollout_is_weights": nested(weights, torch.float64),
        },
        batch_size=[BATCH],
    )
    batch_num_tokens = int(sum(mask.sum() for mask in masks))
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=batch_num_tokens, global_batch_size=BATCH)
    return data


def _log_softmax(logits):
    return logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()


def model_output(weights: torch.Tensor, micro_batch: TensorDict) -> dict[str, torch.Tensor]:
    """log pi(token p + 1) at position p (the engine's shift) and the entropy, as nested (bsz, prompt + response)."""
    input_ids = micro_batch["input_ids"]
    log_probs = torch.log_softmax(weights, dim=0)
    next_tokens = torch.roll(input_ids.values(), shifts=-1)
    entropy = -(log_probs.exp() * log_probs).sum().expand(next_tokens.shape)
    offsets = input_ids.offsets()
    return {
        "log_probs": torch.nested.nested_tensor_from_jagged(log_probs[next_tokens], offsets),
        "entropy": torch.nested.nested_tensor_from_jagged(entropy, offsets),
    }


def actor(loss_agg_mode, loss_scale_factor=None, **policy_loss):
    return FSDPActorConfig(
        strategy="fsdp2",
        rollout_n=4,
        ppo_micro_batch_size_per_gpu=1,
        loss_agg_mode=loss_agg_mode,
        loss_scale_factor=loss_scale_factor,
        use_kl_loss=True,
        kl_loss_coef=KL_COEF,
        kl_loss_type="low_var_kl",
        entropy_coeff=ENTROPY_COEFF,
        policy_loss=MHPOPolicyLossConfig(**policy_loss),
    )


def train_mini_batch(config, data, split, parameters):
    """Gradient and summed loss of one mini-batch: verl's micro-batch split, ppo_loss per micro-batch, backward each
    (the FSDP engine's forward_backward_batch without the model)."""
    weights = parameters.clone().requires_grad_()
    data = data.clone()
    if split == "dynamic":
        tu.assign_non_tensor(data, use_dynamic_bsz=True, max_token_len_per_gpu=24)
    else:
        tu.assign_non_tensor(data, use_dynamic_bsz=False, micro_batch_size_per_gpu=split)
    micro_batches, _ = prepare_micro_batches(data, dp_group=None)
    total, all_metrics = 0.0, []
    for micro_batch in micro_batches:
        loss, metrics = ppo_loss(config, model_output(weights, micro_batch), micro_batch)
        loss.backward()
        total += loss.item()
        all_metrics.append(metrics)
    return weights.grad, total, len(micro_batches), all_metrics


PARAMETERS = torch.tensor(np.random.default_rng(99).normal(size=VOCAB))


@pytest.mark.parametrize("loss_agg_mode", AGG_MODES)
@pytest.mark.parametrize("implementation", ["eager", "fused"])
def test_gradient_is_invariant_to_verls_micro_batch_split(loss_agg_mode, implementation):
    scale = 16 if loss_agg_mode == "seq-mean-token-sum-norm" else None  # what the driver's warning asks for
    config = actor(loss_agg_mode, scale, implementation=implementation)
    data = mini_batch(seed=1)
    full, full_loss, count, _ = train_mini_batch(config, data, BATCH, PARAMETERS)
    assert count == 1 and torch.isfinite(full).all() and full.abs().sum() > 0
    for split in (1, 2, 4, "dynamic"):
        gradient, loss, count, _ = train_mini_batch(config, data, split, PARAMETERS)
        assert count > 1
        torch.testing.assert_close(gradient, full, rtol=1e-10, atol=1e-12)
        assert loss == pytest.approx(full_loss, rel=1e-10, abs=1e-12)


def test_seq_mean_token_sum_norm_without_a_scale_factor_depends_on_the_split():
    """The reason for the driver's warning: each micro-batch is padded to its own longest response."""
    config = actor("seq-mean-token-sum-norm", None)
    data = mini_batch(seed=1)
    full, *_ = train_mini_batch(config, data, BATCH, PARAMETERS)
    split, *_ = train_mini_batch(config, data, 1, PARAMETERS)
    assert not torch.allclose(split, full, rtol=1e-3)


def test_masked_positions_never_reach_the_loss_or_the_gradient():
    """Rejected tokens carry garbage in old_log_probs, advantages and IS weights: NaN and huge values change nothing."""
    config = actor("seq-mean-token-mean")
    results = [train_mini_batch(config, mini_batch(seed=2, poison=poison), 2, PARAMETERS) for poison in
               (0.0, float("nan"), 1e30)]  # fmt: skip
    for gradient, loss, _, _ in results[1:]:
        torch.testing.assert_close(gradient, results[0][0], rtol=0, atol=0)
        assert loss == results[0][1]


def test_the_whole_loss_equals_an_independent_float64_computation():
    """pg (the NumPy reference of the paper's formulas) - entropy_coeff * entropy + kl_coef * low-var KL, each
    aggregated seq-mean-token-mean by hand over the unpadded responses."""
    config = actor("seq-mean-token-mean")
    data = mini_batch(seed=3, poison=0.0)
    _, loss, _, metrics = train_mini_batch(config, data, 2, PARAMETERS)
    log_probs = torch.log_softmax(PARAMETERS, dim=0).numpy()
    entropy = -(np.exp(log_probs) * log_probs).sum()
    per_sequence = []
    for row in range(BATCH):
        mask = data["response_mask"][row].numpy().astype(bool)
        if not mask.any():
            continue
        new = log_probs[data["responses"][row].numpy()]
        old, ref = data["old_log_probs"][row].numpy(), data["ref_log_prob"][row].numpy()
        advantages, weights = data["advantages"][row].numpy(), data["rollout_is_weights"][row].numpy()
        pg, *_ = reference(new[None], old[None], advantages[None], mask[None], config.policy_loss.mhpo_params(),
                           weights[None])  # fmt: skip
        kl = np.clip(np.exp(ref - new) - (ref - new) - 1, -10, 10)  # verl's low_var_kl
        token_loss = pg[0] - ENTROPY_COEFF * entropy + KL_COEF * kl
        per_sequence.append(token_loss[mask].mean())
    assert loss == pytest.approx(np.sum(per_sequence) / BATCH, rel=1e-10)
    # the metrics arrive as verl Metric(MEAN) values, one per micro-batch
    zero_adv = [value for m in metrics for value in m["actor/mhpo/zero_adv_frac"].values]
    # rows 4 (advantage 0) and 5 (rejected: not counted) form the third micro-batch
    assert zero_adv == [0.0, 0.0, 1.0, 0.0]
