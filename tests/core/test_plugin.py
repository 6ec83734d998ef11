"""The verl adapter: the registered `mhpo` loss called the way verl's engines call it."""

from __future__ import annotations

import math

import pytest
import torch
import verl  # noqa: F401  (loads the plugin through the verl.plugins entry point)
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, get_policy_loss_fn
from verl.utils import tensordict_utils as tu
from verl.workers.config import FSDPActorConfig, McoreActorConfig, PolicyLossConfig
from verl.workers.utils.losses import ppo_loss

from mhpo_verl.config import MHPOPolicyLossConfig
from mhpo_verl.diagnostics import METRIC_KEYS, on_policy_survival
from mhpo_verl.params import MHPOParams
from mhpo_verl.plugin import compute_policy_loss_mhpo

AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


def actor_config(loss_agg_mode="seq-mean-token-mean", policy_loss=None, **global_batch_info) -> FSDPActorConfig:
    config = FSDPActorConfig(
        strategy="fsdp2",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        loss_agg_mode=loss_agg_mode,
        use_kl_loss=False,
        entropy_coeff=0.0,
        policy_loss=policy_loss if policy_loss is not None else MHPOPolicyLossConfig(),
    )
    config.global_batch_info.update(global_batch_info)
    return config


def make_batch(seed=0, batch=6, length=10, spread=0.8):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    old = -torch.rand(batch, length, generator=generator) * 3
    new = old + spread * torch.randn(batch, length, generator=generator)
    advantages = torch.randn(batch, 1, generator=generator).expand(batch, length).clone()
    new[~mask] = float("nan")
    return old, new, advantages, mask


def call(config, old, new, advantages, mask, **kwargs):
    return get_policy_loss_fn("mhpo")(
        old_log_prob=old,
        log_prob=new,
        advantages=advantages,
        response_mask=mask,
        loss_agg_mode=config.loss_agg_mode,
        config=config,
        **kwargs,
    )


def test_registered_function_is_ours_and_accepts_future_keywords():
    assert POLICY_LOSS_REGISTRY["mhpo"] is compute_policy_loss_mhpo
    old, new, advantages, mask = make_batch()
    loss, metrics = call(actor_config(), old, new, advantages, mask, rollout_is_weights=None, some_future_kwarg=1)
    assert torch.isfinite(loss) and set(metrics) == set(METRIC_KEYS)


def test_plain_policy_loss_config_gives_paper_defaults():
    """`loss_mode=mhpo` alone (verl's own PolicyLossConfig, no MHPO fields) must behave like the paper defaults."""
    old, new, advantages, mask = make_batch(seed=4)
    plain = actor_config(policy_loss=PolicyLossConfig(loss_mode="mhpo"))
    ours = actor_config(policy_loss=MHPOPolicyLossConfig())
    assert torch.equal(call(plain, old, new, advantages, mask)[0], call(ours, old, new, advantages, mask)[0])
    changed = actor_config(policy_loss=MHPOPolicyLossConfig(c=0.5))
    assert not torch.equal(call(changed, old, new, advantages, mask)[0], call(ours, old, new, advantages, mask)[0])


@pytest.mark.parametrize("implementation", ["eager", "fused"])
def test_metrics_have_the_same_keys_and_are_finite_on_every_call(implementation):
    config = actor_config(policy_loss=MHPOPolicyLossConfig(implementation=implementation))
    old, new, advantages, mask = make_batch(seed=1)
    on_policy = torch.where(mask, old, float("nan"))
    empty = torch.zeros_like(mask)
    results = [
        call(config, old, new, advantages, mask)[1],
        call(config, old, on_policy, advantages, mask)[1],
        call(config, old, new, advantages, empty)[1],
    ]
    for metrics in results:
        assert list(metrics) == list(METRIC_KEYS)
        assert all(isinstance(value, float) and math.isfinite(value) for value in metrics.values())
    on_policy_metrics = results[1]
    assert on_policy_metrics["actor/ppo_kl"] == 0.0
    assert on_policy_metrics["actor/pg_clipfrac"] == on_policy_metrics["actor/pg_clipfrac_lower"] == 0.0
    survival = on_policy_survival(MHPOParams())
    assert survival == pytest.approx(math.exp(-1.3275), abs=1e-3)  # 0.265, the paper's on-policy rescale
    assert on_policy_metrics["actor/mhpo/survival_pos"] == pytest.approx(survival)
    assert on_policy_metrics["actor/mhpo/grad_multiplier_mean"] == pytest.approx(1.0)
    assert on_policy_metrics["actor/mhpo/grad_amplified_frac"] == 0.0
    assert on_policy_metrics["actor/mhpo/grad_scale_mean"] == pytest.approx(survival, rel=1e-6)
    assert on_policy_metrics["actor/mhpo/log_ratio_abs_mean"] == on_policy_metrics["actor/mhpo/log_ratio_clamped_frac"]
    assert on_policy_metrics["actor/mhpo/log_ratio_abs_mean"] == 0.0


def test_metrics_agree_with_a_direct_computation():
    config = actor_config(policy_loss=MHPOPolicyLossConfig(log_ratio_clamp=4.0))
    old, new, advantages, mask = make_batch(seed=2, batch=8, length=40, spread=2.0)
    advantages[:3] = 0.0  # three responses that train nothing
    metrics = call(config, old, new, advantages, mask)[1]
    u = (new - old)[mask].double().clamp(-4.0, 4.0)
    c = 1.5
    psi = c * torch.tanh(u / c)
    sp, sn = torch.nn.functional.softplus(psi), torch.nn.functional.softplus(-psi)
    zeta = sp**1.5 + (sn / 0.8) ** 2
    survival = torch.exp(-zeta)
    multiplier = torch.exp(psi) / torch.cosh(u / c) ** 2
    expected = {
        "actor/ppo_kl": (-u).mean(),
        "actor/pg_clipfrac": (u > c).double().mean(),
        "actor/pg_clipfrac_lower": (u < -c).double().mean(),
        "actor/mhpo/psi_mean": psi.mean(),
        "actor/mhpo/zeta_mean": zeta.mean(),
        "actor/mhpo/survival_pos": survival[u > 0].mean(),
        "actor/mhpo/survival_neg": survival[u < 0].mean(),
        "actor/mhpo/grad_multiplier_mean": multiplier.mean(),
        "actor/mhpo/grad_amplified_frac": (multiplier > 1).double().mean(),
        "actor/mhpo/grad_scale_mean": (survival * multiplier).mean(),
        "actor/mhpo/log_ratio_abs_mean": u.abs().mean(),
        "actor/mhpo/log_ratio_clamped_frac": (u.abs() >= 4.0).double().mean(),
        "actor/mhpo/zero_adv_frac": torch.tensor(3 / 8),
    }
    assert set(expected) == set(METRIC_KEYS)
    assert (u > c).any() and (u < -c).any()  # the batch exercises both saturation counters
    assert 0 < expected["actor/mhpo/log_ratio_clamped_frac"] < 1
    assert 0 < expected["actor/mhpo/grad_amplified_frac"] < 1
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value.item(), rel=1e-5, abs=1e-6), key


def test_rollout_is_weights_scale_each_token():
    config = actor_config(loss_agg_mode="token-mean")
    old, new, advantages, mask = make_batch(seed=3)
    weights = torch.rand(mask.shape) + 0.5
    weights[~mask] = float("nan")
    leaf_a, leaf_b = new.clone().requires_grad_(), new.clone().requires_grad_()
    weighted, _ = call(config, old, leaf_a, advantages, mask, rollout_is_weights=weights)
    reference, _ = call(config, old, leaf_b, advantages * torch.where(mask, weights, 0.0), mask)
    weighted.backward()
    reference.backward()
    torch.testing.assert_close(weighted, reference)
    torch.testing.assert_close(leaf_a.grad, leaf_b.grad)
    assert torch.isfinite(leaf_a.grad).all()


def _parameter_gradient(loss_agg_mode, implementation, rows, theta, features, old, base, advantages, mask, info):
    """Gradient w.r.t. shared parameters theta of the loss over `rows` (log_prob = base + features @ theta)."""
    theta = theta.detach().clone().requires_grad_()
    log_prob = base[rows] + features[rows] @ theta
    config = actor_config(loss_agg_mode, MHPOPolicyLossConfig(implementation=implementation), **info)
    loss, _ = call(config, old[rows], log_prob, advantages[rows], mask[rows])
    loss.backward()
    return theta.grad


@pytest.mark.parametrize("loss_agg_mode", AGG_MODES)
@pytest.mark.parametrize("implementation", ["eager", "fused"])
def test_gradient_is_invariant_to_micro_batch_split_and_dp_size(loss_agg_mode, implementation):
    """verl's contract: per micro-batch losses are normalised by global counts; FSDP sums micro-batch gradients and
    averages over DP ranks. MHPO must give the full-batch gradient either way."""
    generator = torch.Generator().manual_seed(0)
    batch, length, dims = 8, 12, 3
    old, _, advantages, mask = make_batch(seed=5, batch=batch, length=length)
    base = old + 0.5 * torch.randn(batch, length, generator=generator)
    features = torch.randn(batch, length, dims, generator=generator)
    theta = 0.3 * torch.randn(dims, generator=generator)
    all_rows = torch.arange(batch)

    def info(dp_size):
        return dict(dp_size=dp_size, batch_num_tokens=int(mask.sum()), global_batch_size=batch, loss_scale_factor=None)

    args = (theta, features, old, base, advantages, mask)
    full = _parameter_gradient(loss_agg_mode, implementation, all_rows, *args, info(1))
    micro = sum(_parameter_gradient(loss_agg_mode, implementation, rows, *args, info(1)) for rows in all_rows.split(3))
    torch.testing.assert_close(micro, full, rtol=1e-5, atol=1e-7)
    ranks = [all_rows[:5], all_rows[5:]]  # uneven shards: the global counts, not shard sizes, normalise
    dp_average = sum(_parameter_gradient(loss_agg_mode, implementation, rows, *args, info(2)) for rows in ranks) / 2
    torch.testing.assert_close(dp_average, full, rtol=1e-5, atol=1e-7)
    assert full.abs().sum() > 0


def _ppo_loss_batch(old, new, advantages, mask, prompt_length=3, rollout_is_weights=None):
    """A TensorDict as verl's engines hand it to ppo_loss: padded fields plus flat (no-padding) log-probs."""
    batch, length = mask.shape
    response_lengths = mask.sum(dim=1)
    attention = torch.cat([torch.ones(batch, prompt_length, dtype=torch.long), mask.long()], dim=1)
    flat = []
    for row in range(batch):
        block = torch.full((prompt_length + int(response_lengths[row]),), float("nan"))
        # the engine's log_probs are shifted by one: position p scores token p + 1
        block[prompt_length - 1 : prompt_length - 1 + int(response_lengths[row])] = new[row, : response_lengths[row]]
        flat.append(block)
    fields = {
        "prompts": torch.ones(batch, prompt_length, dtype=torch.long),
        "responses": torch.ones(batch, length, dtype=torch.long),
        "attention_mask": attention,
        "response_mask": mask.long(),
        "old_log_probs": old,
        "advantages": advantages,
    }
    if rollout_is_weights is not None:
        fields["rollout_is_weights"] = rollout_is_weights
    data = TensorDict(fields, batch_size=[batch])
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=batch)
    return data, torch.cat(flat)


@pytest.mark.parametrize("strategy_config", [FSDPActorConfig, McoreActorConfig])
def test_dispatch_through_verls_ppo_loss_matches_a_direct_call(strategy_config):
    """ppo_loss is what the FSDP and the Megatron engines call for every micro-batch."""
    old, new, advantages, mask = make_batch(seed=6)
    weights = torch.rand(mask.shape) + 0.5
    config = strategy_config(
        strategy="fsdp2" if strategy_config is FSDPActorConfig else "megatron",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        loss_agg_mode="seq-mean-token-mean",
        use_kl_loss=False,
        policy_loss=MHPOPolicyLossConfig(c=2.0, k_neg=3.0),
    )
    data, flat_log_probs = _ppo_loss_batch(old, new, advantages, mask, rollout_is_weights=weights)
    flat_log_probs.requires_grad_()
    policy_loss, metrics = ppo_loss(config, {"log_probs": flat_log_probs}, data)
    policy_loss.backward()

    leaf = new.clone().requires_grad_()
    direct_config = actor_config(
        policy_loss=MHPOPolicyLossConfig(c=2.0, k_neg=3.0),
        dp_size=1,
        batch_num_tokens=int(mask.sum()),
        global_batch_size=mask.shape[0],
    )
    direct, direct_metrics = call(direct_config, old, leaf, advantages, mask, rollout_is_weights=weights)
    direct.backward()
    torch.testing.assert_close(policy_loss, direct)
    # the gradient reached the engine's flat log-probs at exactly the response positions, nowhere else
    engine_grad = flat_log_probs.grad
    assert torch.isfinite(engine_grad).all()
    engine_nonzero = engine_grad[engine_grad != 0].sort().values
    torch.testing.assert_close(engine_nonzero, leaf.grad[mask & (leaf.grad != 0)].sort().values)
    for key in METRIC_KEYS:
        assert key in metrics
        assert metrics[key].values[0] == pytest.approx(direct_metrics[key])
