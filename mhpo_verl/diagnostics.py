"""MHPO training diagnostics: what a user watches to see the modulator and the hazard at work.

Computed without gradients from the per-token terms of one loss evaluation, returned as plain floats with the
same keys on every call (verl aggregates metrics across micro-batches and DP ranks and needs equal counts).

What verl does with them: ``ppo_loss`` wraps every value the policy loss returns as ``Metric(MEAN)`` (verl 0.9.1
refuses any other aggregation there), and the actor worker averages each over micro-batches and data-parallel
ranks. So every statistic here is a mean or a fraction over one micro-batch's response tokens (responses for
``zero_adv_frac``), which stays a mean under that averaging; none is a maximum, since a mean of per-micro-batch
maxima is no maximum. With equal token counts per micro-batch the averaged value is the statistic over the whole
mini-batch; otherwise each micro-batch weighs equally (as for verl's own ``actor/pg_clipfrac``).

It is on the training hot path: one pass per statistic, no mask copies, no host-to-device copy and exactly one
device-to-host transfer (the final ``tolist``). Outside the mask u = psi = 0 exactly (see
:class:`mhpo_verl.objective.MHPOTerms`), so sums and sign tests of u and psi need no masking; zeta and M, which
are non-zero at u = 0, are masked.
"""

from __future__ import annotations

import math

import torch

from mhpo_verl.objective import MHPOTerms
from mhpo_verl.params import MHPOParams

METRIC_KEYS: tuple[str, ...] = (
    # verl's own keys, defined for a loss that never clips: the k1 estimate of KL(old || new), and the fractions
    # of tokens whose log-ratio saturates the modulator on the upper side (u > c) and on the lower side (u < -c).
    # PPO's pg_clipfrac counts tokens whose gradient the clip removed; these tokens keep a (small) gradient.
    "actor/ppo_kl",
    "actor/pg_clipfrac",
    "actor/pg_clipfrac_lower",
    "actor/mhpo/psi_mean",
    "actor/mhpo/zeta_mean",
    # mean survival weight exp(-zeta) over tokens with r > 1 / r < 1; the on-policy value when there are none.
    "actor/mhpo/survival_pos",
    "actor/mhpo/survival_neg",
    # M(r) = exp(psi) sech^2(u / c) (objective.gradient_multiplier); the effective per-token gradient scale is
    # exp(-zeta) * M(r). amplified: tokens with M > 1, whose gradient the modulator raises above the on-policy one.
    "actor/mhpo/grad_multiplier_mean",
    "actor/mhpo/grad_amplified_frac",
    "actor/mhpo/grad_scale_mean",
    # |u| and the tokens at the log-ratio clamp, where the gradient is exactly 0 (as in verl's built-in losses).
    "actor/mhpo/log_ratio_abs_mean",
    "actor/mhpo/log_ratio_clamped_frac",
    # responses (with at least one token in the mask) whose advantage is 0 on every token: they train nothing.
    "actor/mhpo/zero_adv_frac",
)


def on_policy_survival(params: MHPOParams) -> float:
    """exp(-zeta) at r = 1, the constant rescale the paper's softplus hazard applies to on-policy tokens."""
    shift = math.log(2.0) if params.hazard_input == "softplus" else 0.0
    zeta = (shift / params.lambda_pos) ** params.k_pos + (shift / params.lambda_neg) ** params.k_neg
    return math.exp(-zeta)


@torch.no_grad()
def mhpo_metrics(
    terms: MHPOTerms, response_mask: torch.Tensor, params: MHPOParams, advantages: torch.Tensor
) -> dict[str, float]:
    """The :data:`METRIC_KEYS` statistics of one micro-batch, as Python floats (one device-to-host transfer)."""
    mask = response_mask.bool()
    padding = ~mask
    u, psi = terms.log_ratio, terms.psi
    n_tokens = torch.count_nonzero(mask).clamp(min=1)
    survival = terms.zeta.neg().exp_().masked_fill_(padding, 0.0)  # exp(-zeta)
    # M(r) of objective.gradient_multiplier, from the psi the loss already holds (tanh(u / c) = psi / c) and in
    # place: on CPU each fresh full-size temporary costs more than the arithmetic done in it.
    multiplier = psi.exp().mul_((psi / params.c).square_().neg_().add_(1.0)).masked_fill_(padding, 0.0)
    abs_u = u.abs()
    # Split survival by the sign of u with arithmetic on sign(u) in {-1, 0, 1}: sums over the positive and the
    # negative tokens are (sum |sign| s +- sum sign s) / 2. (Boolean selects on a random sign pattern cost several
    # times more on CPU.) Padding has u = 0 and falls in neither side.
    sign = torch.sign(u)
    n_sign = sign.sum()
    survival_sign = torch.dot(survival.flatten(), sign.flatten())
    shifted = sign.abs_()  # |sign(u)|, in sign's buffer: sign is not read after this
    n_shifted = shifted.sum()
    survival_shifted = torch.dot(survival.flatten(), shifted.flatten())
    fallback = on_policy_survival(params)  # a Python float: torch.where takes it without a host-to-device copy

    def side_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        return torch.where(count > 0.5, total / count.clamp(min=1), fallback)

    trained = mask.any(dim=-1)
    zero_advantage = trained & ~torch.where(mask, advantages != 0, False).any(dim=-1)
    statistics = torch.stack(
        [
            -u.sum() / n_tokens,
            torch.count_nonzero(u > params.c) / n_tokens,
            torch.count_nonzero(u < -params.c) / n_tokens,
            psi.sum() / n_tokens,
            torch.where(mask, terms.zeta, 0.0).sum() / n_tokens,
            side_mean((survival_shifted + survival_sign) / 2, (n_shifted + n_sign) / 2),
            side_mean((survival_shifted - survival_sign) / 2, (n_shifted - n_sign) / 2),
            multiplier.sum() / n_tokens,
            torch.count_nonzero(multiplier > 1.0) / n_tokens,
            torch.dot(survival.flatten(), multiplier.flatten()) / n_tokens,
            abs_u.sum() / n_tokens,
            torch.count_nonzero(abs_u >= params.log_ratio_clamp) / n_tokens,
            torch.count_nonzero(zero_advantage) / torch.count_nonzero(trained).clamp(min=1),
        ]
    ).to(torch.float64)
    return dict(zip(METRIC_KEYS, statistics.tolist(), strict=True))
