"""The `mhpo` advantage estimator: group-relative, vectorised, NaN-safe, and equal to verl's `grpo` where defined."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import verl  # noqa: F401  (loads the plugin)
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, get_adv_estimator_fn
from verl.trainer.ppo.ray_trainer import compute_advantage

from mhpo_verl.advantage import group_relative_advantages
from mhpo_verl.plugin import compute_mhpo_advantage


def outcome_batch(group_sizes, length=7, seed=0, binary=False):
    rng = np.random.default_rng(seed)
    batch = sum(group_sizes)
    index = np.array([f"prompt-{g}" for g, size in enumerate(group_sizes) for _ in range(size)], dtype=object)
    order = rng.permutation(batch)  # groups interleaved, as after verl's balancing/shuffling
    index = index[order]
    scores = rng.integers(0, 2, batch).astype(np.float32) if binary else rng.normal(size=batch).astype(np.float32)
    lengths = rng.integers(1, length + 1, batch)
    mask = torch.tensor(np.arange(length)[None, :] < lengths[:, None])
    rewards = torch.zeros(batch, length)
    rewards[torch.arange(batch), torch.tensor(lengths - 1)] = torch.tensor(scores)  # outcome reward on last token
    return rewards, mask, index


@pytest.mark.parametrize("norm_by_std", [True, False])
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_equals_verl_grpo_for_groups_of_two_or_more(norm_by_std, binary, seed):
    rewards, mask, index = outcome_batch([2, 5, 8, 3, 16], seed=seed, binary=binary)
    config = OmegaConf.create({"norm_adv_by_std_in_grpo": norm_by_std})
    ours, returns = get_adv_estimator_fn("mhpo")(token_level_rewards=rewards, response_mask=mask, index=index,
                                                 config=config)
    theirs, _ = compute_grpo_outcome_advantage(rewards, mask, index, norm_adv_by_std_in_grpo=norm_by_std)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert torch.equal(ours, returns)
    assert (ours[~mask] == 0).all()


def test_singleton_groups_get_zero_where_grpo_keeps_the_raw_reward():
    rewards, mask, index = outcome_batch([1, 4, 1], seed=1)
    ours, _ = compute_mhpo_advantage(rewards, mask, index=index)
    theirs, _ = compute_grpo_outcome_advantage(rewards, mask, index)
    singletons = np.isin(index, ["prompt-0", "prompt-2"])
    assert (ours[torch.tensor(singletons)] == 0).all()
    assert (theirs[torch.tensor(singletons)] != 0).any()  # verl's grpo: mean 0, std 1 -> A = R
    torch.testing.assert_close(ours[torch.tensor(~singletons)], theirs[torch.tensor(~singletons)])


def test_zero_variance_groups_give_exactly_zero():
    scores = torch.tensor([0.1, 0.1, 0.1, 7.0, 7.0, 1.0, 2.0])
    advantages = group_relative_advantages(scores, ["a", "a", "a", "b", "b", "c", "c"], epsilon=1e-6)
    assert advantages[:5].tolist() == [0.0] * 5
    assert advantages[5] < 0 < advantages[6]


def test_epsilon_and_std_normalisation_are_read_from_the_algorithm_config():
    rewards, mask, index = outcome_batch([4, 4], seed=2)
    struct_config = OmegaConf.create({"norm_adv_by_std_in_grpo": False, "gamma": 1.0})
    OmegaConf.set_struct(struct_config, True)  # verl's composed config is in struct mode: no `epsilon` key
    centred, _ = compute_mhpo_advantage(rewards, mask, index=index, config=struct_config)
    scores = rewards.sum(-1)
    for group in set(index):
        rows = torch.tensor(index == group)
        torch.testing.assert_close(centred[rows, 0], scores[rows] - scores[rows].mean())
    big_epsilon, _ = compute_mhpo_advantage(rewards, mask, index=index, config=OmegaConf.create({"epsilon": 1e3}))
    small_epsilon, _ = compute_mhpo_advantage(rewards, mask, index=index, config=OmegaConf.create({"epsilon": 1e-6}))
    assert big_epsilon.abs().max() < 1e-2 < small_epsilon.abs().max()


def test_nan_in_padding_is_ignored_and_nan_in_a_response_is_a_clear_error():
    rewards, mask, index = outcome_batch([3, 3], seed=3)
    clean, _ = compute_mhpo_advantage(rewards, mask, index=index)
    padded = rewards.clone()
    padded[~mask] = float("nan")
    torch.testing.assert_close(compute_mhpo_advantage(padded, mask, index=index)[0], clean)
    broken = rewards.clone()
    broken[4, 0] = float("nan")
    with pytest.raises(ValueError, match=r"responses \[4\]"):
        compute_mhpo_advantage(broken, mask, index=index)


def test_bad_arguments_are_named():
    rewards, mask, index = outcome_batch([2, 2])
    with pytest.raises(ValueError, match="needs `index`"):
        compute_mhpo_advantage(rewards, mask)
    with pytest.raises(ValueError, match="3 group ids for 4 responses"):
        compute_mhpo_advantage(rewards, mask, index=index[:3])
    with pytest.raises(ValueError, match="epsilon"):
        group_relative_advantages(torch.ones(2), ["a", "a"], epsilon=-1.0)


def test_dispatch_through_verls_compute_advantage():
    """The path the V1 trainer takes (`ray_trainer.compute_advantage`) for a registered, non-builtin estimator."""
    rewards, mask, index = outcome_batch([4, 6, 2], seed=5)
    data = DataProto.from_dict(
        tensors={"token_level_rewards": rewards, "response_mask": mask.long()},
        non_tensors={"uid": index},
    )
    algorithm = OmegaConf.create({"adv_estimator": "mhpo", "norm_adv_by_std_in_grpo": True, "gamma": 1.0, "lam": 1.0})
    result = compute_advantage(data, adv_estimator="mhpo", config=algorithm)
    expected, _ = compute_grpo_outcome_advantage(rewards, mask, index)
    torch.testing.assert_close(result.batch["advantages"], expected, rtol=1e-5, atol=1e-5)
