"""Group-relative advantages for MHPO (pure PyTorch / NumPy; the verl wrapper lives in :mod:`mhpo_verl.plugin`).

For the G responses i of one prompt (one group, identified by verl's ``uid``) with outcome rewards R_i:

    A_i = (R_i - mean_g R) / (std_g R + epsilon)     std with Bessel's correction, as torch.std and verl's grpo
    A_i =  R_i - mean_g R                            when normalize_by_std is False (Dr. GRPO)

broadcast over the response tokens. Unlike verl's ``grpo`` (which lets a singleton group keep its raw reward as its
advantage), a group with one response has no baseline and gets A = 0; a group whose rewards are all equal gets
A = 0 exactly. Computed in one vectorised pass in float64, whatever the batch's group layout.

R_i is the sum of response i's whole reward row, as verl's grpo reads it, not of the tokens under its mask: verl's
trainer rewrites ``response_mask`` before advantages (rollout-correction rejection sampling) and agent loops mask
tokens they did not generate, so the reward-carrying token may lie outside the mask, and a rejected response still
belongs to its group's baseline.

Agent loops can return several outputs per session (verl keys them ``{uid}_{session_id}_{index}``): the group
statistics are then taken over each session's final output, and every output of the session inherits that
advantage (:func:`sessions_of_outputs`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def group_ids_to_codes(group_ids: Sequence | np.ndarray) -> torch.Tensor:
    """Map arbitrary hashable group ids (verl's uid strings) to dense integer codes in order of first appearance."""
    codes: dict[object, int] = {}
    return torch.tensor([codes.setdefault(group_id, len(codes)) for group_id in group_ids], dtype=torch.long)


def outcome_scores(token_level_rewards: torch.Tensor) -> torch.Tensor:
    """Each response's outcome reward: the sum of its whole (batch, response_length) reward row, whatever its mask.

    verl pads reward rows with zeros. A non-finite value anywhere in a row is an error naming the response, since
    it would be part of that response's reward.
    """
    if token_level_rewards.dim() != 2:
        raise ValueError(
            f"token_level_rewards must be (batch, response_length), got shape {tuple(token_level_rewards.shape)}"
        )
    bad = (~torch.isfinite(token_level_rewards).all(dim=-1)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"token-level rewards must be finite in every position (a response's reward is the sum of its row, as in "
            f"verl's grpo); responses {bad[:10]} have non-finite values (check the reward function for these samples)"
        )
    return token_level_rewards.sum(dim=-1)


def group_relative_advantages(
    scores: torch.Tensor,
    group_ids: Sequence | np.ndarray,
    epsilon: float = 1e-6,
    normalize_by_std: bool = True,
) -> torch.Tensor:
    """Group-relative advantage of each response from its scalar outcome score.

    Args:
        scores: (batch,) outcome reward of each response. Must be finite.
        group_ids: (batch,) the group (prompt) of each response.
        epsilon: added to the group std before dividing.
        normalize_by_std: divide by the group std (GRPO) or only centre (Dr. GRPO).

    Returns:
        (batch,) advantages in the dtype of ``scores``.
    """
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D (one outcome reward per response), got shape {tuple(scores.shape)}")
    if len(group_ids) != scores.shape[0]:
        raise ValueError(f"got {len(group_ids)} group ids for {scores.shape[0]} responses; expected one per response")
    if not (isinstance(epsilon, int | float) and epsilon >= 0):
        raise ValueError(f"epsilon must be a non-negative number, got {epsilon!r}")
    bad = (~torch.isfinite(scores)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"outcome rewards must be finite; responses {bad[:10]} have {scores[bad[:10]].tolist()} "
            "(check the reward function for these samples)"
        )
    codes = group_ids_to_codes(group_ids).to(scores.device)
    n_groups = int(codes.max()) + 1 if codes.numel() else 0
    values = scores.to(torch.float64)

    def group_sum(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n_groups, dtype=torch.float64, device=x.device).index_add_(0, codes, x)

    counts = group_sum(torch.ones_like(values))
    means = group_sum(values) / counts
    centred = values - means[codes]
    advantages = centred
    if normalize_by_std:
        variances = group_sum(centred * centred) / (counts - 1).clamp(min=1)
        advantages = centred / (variances.sqrt()[codes] + epsilon)
    # Test equality, not variance: a float mean of equal rewards can be off by an ulp, and ulp/epsilon is not 0.
    # A singleton group never varies, so this also gives it A = 0 (it has no baseline).
    group_max = torch.full_like(means, -torch.inf).scatter_reduce(0, codes, values, "amax")
    group_min = torch.full_like(means, torch.inf).scatter_reduce(0, codes, values, "amin")
    varies = (group_max > group_min)[codes]
    advantages = torch.where(varies, advantages, 0.0)
    return advantages.to(scores.dtype)


def sessions_of_outputs(output_keys: Sequence[str]) -> tuple[list[int], list[int]]:
    """Group agent-loop outputs into sessions by verl's keys ``{uid}_{session_id}_{index}``.

    Returns:
        ``(final_rows, session_of_row)``: the row of each session's final output (largest ``index``), in order of
        first appearance, and for every row the position of its session in ``final_rows``.
    """
    final: dict[str, tuple[int, int]] = {}  # session -> (index, row)
    session_of_row: list[int] = []
    order: dict[str, int] = {}
    for row, key in enumerate(output_keys):
        session, separator, index = str(key).rpartition("_")
        if not separator or "_" not in session or not index.isdigit():
            raise ValueError(
                f"agent-loop output key {key!r} (row {row}) is not of the form '{{uid}}_{{session_id}}_{{index}}'"
            )
        output_index = int(index)
        session_of_row.append(order.setdefault(session, len(order)))
        if session in final and final[session][0] == output_index:
            raise ValueError(
                f"two outputs of session {session!r} have the same index {output_index} (rows "
                f"{final[session][1]} and {row})"
            )
        if session not in final or final[session][0] < output_index:
            final[session] = (output_index, row)
    return [final[session][1] for session in order], session_of_row
