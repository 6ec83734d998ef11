"""MHPO's metrics mean what their names say after verl's aggregation, and one loss call makes one host transfer."""

from __future__ import annotations

import pytest
import torch
import verl  # noqa: F401  (loads the plugin)
from torch.overrides import TorchFunctionMode
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
from verl.utils.metric import AggregationType, Metric, reduce_metrics
from verl.workers.utils.losses import ppo_loss

from mhpo_verl.config import MHPOPolicyLossConfig
from mhpo_verl.diagnostics import METRIC_KEYS
from mhpo_verl.plugin import compute_policy_loss_mhpo
from tests.core.test_plugin import _ppo_loss_batch, actor_config, make_batch

CONDITIONAL_MEANS = {"actor/mhpo/survival_pos", "actor/mhpo/survival_neg"}
"""Means over a data-dependent subset of tokens (r > 1, r < 1): a mean of them is not the mini-batch's value."""


def test_no_metric_is_named_for_an_aggregation_it_does_not_get():
    """verl picks max / min / sum aggregation from substrings of the key (``reduce_metrics`` across mini-batches,
    the V1 ``MetricsAggregator`` across steps), and ppo_loss averages every policy-loss metric over micro-batches."""
    for key in METRIC_KEYS:
        assert not any(word in key.lower() for word in ("max", "min", "sum", "total")), key
    reduced = reduce_metrics({key: [0.25, 0.75] for key in METRIC_KEYS})
    assert all(value == pytest.approx(0.5) for value in reduced.values())


def test_verl_refuses_a_true_maximum_from_a_policy_loss():
    """Why no metric is a maximum: ppo_loss wraps policy-loss metrics as Metric(MEAN), and verl 0.9.1 raises on a
    Metric(MAX) there. (If a later verl accepts it, this fails and true maxima become possible.)"""
    old, new, advantages, mask = make_batch(seed=7)
    data, flat_log_probs = _ppo_loss_batch(old, new, advantages, mask)

    def loss_with_a_maximum(**kwargs):
        loss, metrics = compute_policy_loss_mhpo(**kwargs)
        return loss, {**metrics, "actor/mhpo/probe_max": Metric(AggregationType.MAX, 1.0)}

    POLICY_LOSS_REGISTRY["mhpo_probe_max"] = loss_with_a_maximum
    try:
        config = actor_config(policy_loss=MHPOPolicyLossConfig(loss_mode="mhpo_probe_max"))
        with pytest.raises(ValueError, match="Aggregation type mismatch"):
            ppo_loss(config, {"log_probs": flat_log_probs}, data)
    finally:
        del POLICY_LOSS_REGISTRY["mhpo_probe_max"]


@pytest.mark.parametrize("implementation", ["eager", "fused"])
def test_micro_batch_means_aggregate_to_the_mini_batch_value(implementation):
    """Through verl's own Metric aggregation: with equal token counts per micro-batch, the average of the
    per-micro-batch values is the statistic of the whole mini-batch (a mean of maxima would not be)."""
    generator = torch.Generator().manual_seed(11)
    batch, length = 8, 16
    old = -torch.rand(batch, length, generator=generator) * 3
    new = old + 1.2 * torch.randn(batch, length, generator=generator)
    advantages = torch.randn(batch, 1, generator=generator).expand(batch, length).clone()
    advantages[[1, 6]] = 0.0
    mask = torch.ones(batch, length, dtype=torch.bool)
    config = actor_config(policy_loss=MHPOPolicyLossConfig(implementation=implementation, log_ratio_clamp=2.5))

    def metrics(rows):
        return compute_policy_loss_mhpo(old[rows], new[rows], advantages[rows], mask[rows], config=config)[1]

    full = metrics(torch.arange(batch))
    micro = [metrics(rows) for rows in torch.arange(batch).split(2)]
    for key in METRIC_KEYS:
        per_rank = [Metric(AggregationType.MEAN), Metric(AggregationType.MEAN)]  # two DP ranks, two micro-batches each
        for rank, values in enumerate((micro[:2], micro[2:])):
            per_rank[rank].extend([m[key] for m in values])
        aggregated = Metric.aggregate_dp(per_rank)
        if key in CONDITIONAL_MEANS:
            continue
        assert aggregated == pytest.approx(full[key], rel=1e-5, abs=1e-7), key
    assert full["actor/mhpo/zero_adv_frac"] == pytest.approx(2 / 8)
    assert 0 < full["actor/mhpo/log_ratio_clamped_frac"] < 1 and 0 < full["actor/pg_clipfrac"] < 1
    # the old metric's defect, for contrast: the mean of per-micro-batch maxima is below the batch maximum
    u = (new - old).abs()
    assert sum(u[rows].max() for rows in torch.arange(batch).split(2)) / 4 < u.max()


# ---------------------------------------------------------------------------------------------------------------
# Host synchronisation. On a GPU every device->host read blocks the CPU until the stream drains, and so do
# host->device copies of Python data and ops whose output shape depends on the data. The counter sees every torch
# call made inside it (a TorchFunctionMode sees factories and Tensor methods alike), so it works on CPU.

HOST_READS = {"tolist", "item", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy", "__array__"}
DATA_DEPENDENT_SHAPES = {"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount"}
HOST_TO_DEVICE = {"tensor", "as_tensor", "asarray", "from_numpy"}


class SyncCounter(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name in HOST_READS or name in DATA_DEPENDENT_SHAPES or name in HOST_TO_DEVICE:
            self.syncs.append(name)
        elif name == "__getitem__" and any(
            isinstance(index, torch.Tensor) and index.dtype == torch.bool
            for index in (args[1] if isinstance(args[1], tuple) else (args[1],))
        ):
            self.syncs.append("boolean indexing")
        elif name in ("to", "cuda") and any(isinstance(a, torch.device | str) for a in (*args[1:], *kwargs.values())):
            self.syncs.append("device copy")
        return func(*args, **kwargs)


def test_the_sync_counter_catches_each_kind_of_sync():
    x = torch.ones(4)
    probes = {
        "tolist": lambda: x.tolist(),
        "item": lambda: x.sum().item(),
        "__bool__": lambda: bool(x.sum() > 0),
        "tensor": lambda: torch.tensor(0.265, device=x.device),  # the pattern issue 11 found in the diagnostics
        "nonzero": lambda: x.nonzero(),
        "boolean indexing": lambda: x[x > 0],
        "device copy": lambda: x.to("cpu"),
    }
    for expected, probe in probes.items():
        with SyncCounter() as counter:
            probe()
        assert counter.syncs == [expected]
    with SyncCounter() as counter:
        torch.where(x > 0, x, 0.265).sum()
    assert counter.syncs == []


@pytest.mark.parametrize("implementation", ["eager", "fused"])
@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("with_weights", [False, True])
def test_one_loss_call_makes_exactly_one_host_transfer(implementation, ratio_level, loss_agg_mode, with_weights):
    old, new, advantages, mask = make_batch(seed=8, spread=2.0)
    weights = torch.rand(mask.shape) + 0.5 if with_weights else None
    config = actor_config(
        loss_agg_mode,
        MHPOPolicyLossConfig(implementation=implementation, ratio_level=ratio_level),
        dp_size=1,
        batch_num_tokens=torch.tensor(int(mask.sum())),  # the FSDP engine hands over device tensors
        global_batch_size=mask.shape[0],
        loss_scale_factor=None,
    )
    log_prob = new.clone().requires_grad_()
    with SyncCounter() as counter:
        loss, metrics = compute_policy_loss_mhpo(
            old_log_prob=old,
            log_prob=log_prob,
            advantages=advantages,
            response_mask=mask,
            loss_agg_mode=loss_agg_mode,
            config=config,
            rollout_is_weights=weights,
        )
    assert counter.syncs == ["tolist"]
    assert list(metrics) == list(METRIC_KEYS)
    loss.backward()
    assert torch.isfinite(log_prob.grad).all()
