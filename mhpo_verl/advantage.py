"""Group-relative advantages for MHPO (pure PyTorch / NumPy; the verl wrapper lives in :mod:`mhpo_verl.plugin`).

For the G responses i of one prompt (one group, identified by verl's ``uid``) with outcome rewards R_i:

    A_i = (R_i - mean_g R) / (std_g R + epsilon)     std with Bessel's correction, as torch.std and verl's grpo
    A_i =  R_i - mean_g R                            when normalize_by_std is False (Dr. GRPO)

broadcast over the response tokens. Unlike verl's ``grpo`` (which lets a singleton group keep its raw reward as its
advantage), a group with one response has no baseline and gets A = 0; a group whose rewards are all equal gets
A = 0 exactly. Computed in one vectorised pass in float64, whatever the batch's group layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def group_ids_to_codes(group_ids: Sequence | np.ndarray) -> torch.Tensor:
    """Map arbitrary hashable group ids (verl's uid strings) to dense integer codes in order of first appearance."""
    codes: dict[object, int] = {}
    return torch.tensor([codes.setdefault(group_id, len(codes)) for group_id in group_ids], dtype=torch.long)


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
    has_baseline = counts[codes] > 1
    group_max = torch.full_like(means, -torch.inf).scatter_reduce(0, codes, values, "amax")
    group_min = torch.full_like(means, torch.inf).scatter_reduce(0, codes, values, "amin")
    varies = (group_max > group_min)[codes]
    advantages = torch.where(has_baseline & varies, advantages, 0.0)
    return advantages.to(scores.dtype)
