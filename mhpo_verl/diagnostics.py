"""MHPO training diagnostics: what a user watches to see the modulator and the hazard at work.

Computed without gradients from the per-token terms of one loss evaluation, returned as plain floats with the
same keys on every call (verl aggregates metrics across micro-batches and DP ranks and needs equal counts). It is
on the training hot path, so it makes one pass per statistic with no mask copies and a single host transfer: outside
the mask u = psi = 0 exactly (see :class:`mhpo_verl.objective.MHPOTerms`), so sums and sign tests of u and psi need
no masking; only zeta and M, which are non-zero at u = 0, are masked.
"""

from __future__ import annotations

import math

import torch

from mhpo_verl.objective import MHPOTerms
from mhpo_verl.params import MHPOParams

METRIC_KEYS: tuple[str, ...] = (
    # verl's own keys, defined for a loss that never clips: the k1 estimate of KL(old || new), and the fractions
    # of tokens whose log-ratio saturates the modulator on the upper side (u > c) and on the lower side (u < -c).
    "actor/ppo_kl",
    "actor/pg_clipfrac",
    "actor/pg_clipfrac_lower",
    "actor/mhpo/psi_mean",
    "actor/mhpo/zeta_mean",
    # mean survival weight exp(-zeta) over tokens with r > 1 / r < 1; the on-policy value when there are none.
    "actor/mhpo/survival_pos",
    "actor/mhpo/survival_neg",
    # M(r) = exp(psi) sech^2(u / c); the effective per-token gradient scale is exp(-zeta) * M(r).
    "actor/mhpo/grad_multiplier_max",
    "actor/mhpo/grad_scale_mean",
    "actor/mhpo/log_ratio_abs_max",
)


def on_policy_survival(params: MHPOParams) -> float:
    """exp(-zeta) at r = 1, the constant rescale the paper's softplus hazard applies to on-policy tokens."""
    shift = math.log(2.0) if params.hazard_input == "softplus" else 0.0
    zeta = (shift / params.lambda_pos) ** params.k_pos + (shift / params.lambda_neg) ** params.k_neg
    return math.exp(-zeta)


@torch.no_grad()
def mhpo_metrics(terms: MHPOTerms, response_mask: torch.Tensor, params: MHPOParams) -> dict[str, float]:
    mask = response_mask.bool()
    padding = ~mask
    u, psi = terms.log_ratio, terms.psi
    n_tokens = torch.count_nonzero(mask).clamp(min=1)
    survival = terms.zeta.neg().exp_().masked_fill_(padding, 0.0)  # exp(-zeta)
    # M = exp(psi) * sech^2(u / c), using tanh(u / c) = psi / c.
    multiplier = (psi / params.c).square_().neg_().add_(1.0).mul_(psi.exp()).masked_fill_(padding, 0.0)
    # Split survival by the sign of u with arithmetic on sign(u) in {-1, 0, 1}: sums over the positive and the
    # negative tokens are (sum |sign| s +- sum sign s) / 2. (Boolean selects on a random sign pattern cost several
    # times more on CPU.) Padding has u = 0 and falls in neither side.
    sign = torch.sign(u)
    shifted = sign.abs()
    n_shifted, n_sign = shifted.sum(), sign.sum()
    survival_shifted, survival_sign = torch.dot(survival.flatten(), shifted.flatten()), torch.dot(
        survival.flatten(), sign.flatten()
    )
    fallback = torch.tensor(on_policy_survival(params), dtype=survival.dtype, device=survival.device)

    def side_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        return torch.where(count > 0.5, total / count.clamp(min=1), fallback)

    statistics = torch.stack(
        [
            -u.sum() / n_tokens,
            torch.count_nonzero(u > params.c) / n_tokens,
            torch.count_nonzero(u < -params.c) / n_tokens,
            psi.sum() / n_tokens,
            torch.where(mask, terms.zeta, 0.0).sum() / n_tokens,
            side_mean((survival_shifted + survival_sign) / 2, (n_shifted + n_sign) / 2),
            side_mean((survival_shifted - survival_sign) / 2, (n_shifted - n_sign) / 2),
            multiplier.max() if multiplier.numel() else multiplier.new_zeros(()),
            torch.dot(survival.flatten(), multiplier.flatten()) / n_tokens,
            torch.maximum(u.max(), -u.min()) if u.numel() else u.new_zeros(()),
        ]
    )
    return dict(zip(METRIC_KEYS, statistics.tolist()))
