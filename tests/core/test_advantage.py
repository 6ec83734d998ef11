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

from mhpo_verl.advantage import group_relative_advantages, sessions_of_outputs
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
    ours, returns = get_adv_estimator_fn("mhpo")(
        token_level_rewards=rewards, response_mask=mask, index=index, config=config
    )
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


def test_a_non_finite_reward_anywhere_in_a_row_is_a_clear_error():
    """The reward is the sum of the whole row (the reward token may lie outside the mask), so NaN anywhere is part
    of a response's reward: an error naming the response, inside the mask or not."""
    rewards, mask, index = outcome_batch([3, 3], seed=3)
    for row, column in ((4, 0), (1, mask.shape[1] - 1)):
        broken = rewards.clone()
        broken[row, column] = float("nan")
        with pytest.raises(ValueError, match=rf"responses \[{row}\] have non-finite values"):
            compute_mhpo_advantage(broken, mask, index=index)
    assert not mask[1, -1]  # the second probe is outside the response mask


@pytest.mark.parametrize("norm_by_std", [True, False])
def test_masks_that_hide_the_reward_token_or_reject_a_response_match_verl_grpo(norm_by_std):
    """verl's V1 trainer rewrites response_mask before advantages (rejection sampling zeroes a rejected response's
    row), and agent loops mask tokens, including the reward-carrying last token. The reward stays the response's."""
    rewards, mask, index = outcome_batch([4, 4, 6], seed=9, binary=True)
    lengths = mask.sum(-1)
    masked = mask.clone()
    masked[torch.arange(len(index)), lengths - 1] = False  # the reward token is outside every mask
    masked[[0, 5]] = False  # two responses rejected outright
    config = OmegaConf.create({"norm_adv_by_std_in_grpo": norm_by_std})
    ours, _ = compute_mhpo_advantage(rewards, masked, index=index, config=config)
    theirs, _ = compute_grpo_outcome_advantage(rewards, masked, index, norm_adv_by_std_in_grpo=norm_by_std)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert (ours[[0, 5]] == 0).all() and (ours[masked] != 0).any()
    # issue 11's example: two correct responses of four, one with its reward token masked: A = +0.866 (not -0.5)
    two_right = torch.zeros(4, 3)
    two_right[[0, 1], 2] = 1.0
    hidden = torch.ones(4, 3, dtype=torch.bool)
    hidden[0, 2] = False
    advantage, _ = compute_mhpo_advantage(two_right, hidden, index=np.array(["g"] * 4, dtype=object))
    assert advantage[0, 0].item() == pytest.approx(0.866, abs=1e-3)
    assert advantage[0, 0].item() == advantage[1, 0].item()


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


def test_sessions_of_outputs_finds_each_sessions_final_output():
    keys = ["u-1_0_0", "u-1_0_2", "u-1_1_0", "u-2_0_1", "u-1_0_1", "u-2_0_0"]
    final_rows, session_of_row = sessions_of_outputs(keys)
    assert final_rows == [1, 2, 3]  # u-1 session 0 ends at index 2, its session 1 has one output, u-2 ends at 1
    assert session_of_row == [0, 0, 1, 2, 0, 2]
    for bad, message in (("u-1_0", "is not of the form"), ("u-1_0_x", "is not of the form"), ("u-1_0_0", "same index")):
        with pytest.raises(ValueError, match=message):
            sessions_of_outputs(["u-1_0_0", bad] if message == "same index" else [bad])
