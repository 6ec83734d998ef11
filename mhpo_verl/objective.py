r"""The MHPO objective in pure PyTorch — read it side by side with the paper (arXiv 2603.16929).

Notation (per response token t; ``sg[x]`` is stop-gradient, i.e. ``x.detach()``):

    u_t    = log r_t = log pi_theta(y_t) - log pi_old(y_t)          clamped to +-log_ratio_clamp, like verl
    psi_t  = c * tanh(u_t / c)                                       Log-Fidelity Modulator (LFM), psi in (-c, c)
    zeta_t = H(s(sg[psi_t]); k_pos, lambda_pos)                      Decoupled Hazard Penalty (DHP), computed on the
           + H(s(-sg[psi_t]); k_neg, lambda_neg)                     detached psi: it scales, never steers, a gradient
    H(x; k, lambda) = (x / lambda)^k                                 Weibull cumulative hazard
    s(x)   = softplus(x) = log(1 + e^x)                              (``relu`` is offered as a variant)
    loss_t = -exp(psi_t - sg[zeta_t]) * A_t                          minimised; no clip, no min

Its gradient with respect to the policy parameters theta is, per token,

    d loss_t / d theta = -A_t * exp(-zeta_t) * M(r_t) * d log pi_theta(y_t) / d theta
    M(r)  = exp(psi) * sech^2(u / c)                                 the gradient multiplier; M(1) = 1

With ``ratio_level="sequence"`` u_t is replaced by the GSPO-style straight-through sequence log-ratio
``sg[mean_t u_t] + log pi_theta(y_t) - sg[log pi_theta(y_t)]``: every token of a response shares the response's
length-normalised log-ratio, and each token's gradient still flows through its own log-probability.

Everything here is elementwise on (batch, response_length) tensors. Positions outside ``response_mask`` are replaced
by zeros *before* any arithmetic, so NaN/Inf padding can never reach a value or a gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from mhpo_verl.params import MHPOParams

__all__ = [
    "MHPOTerms",
    "decoupled_hazard_penalty",
    "gradient_multiplier",
    "log_fidelity_modulator",
    "masked_log_ratio",
    "mhpo_loss_matrix",
    "mhpo_token_loss",
    "weibull_cumulative_hazard",
]


class MHPOTerms(NamedTuple):
    """Per-token quantities of one MHPO evaluation, all (batch, response_length).

    ``loss`` and ``log_ratio`` are zero outside the mask; ``psi`` and ``zeta`` there hold their on-policy values
    (u = 0), so any statistic of them must be masked.
    """

    loss: torch.Tensor
    """-w * exp(psi - sg[zeta]) * A, differentiable with respect to log_prob."""
    log_ratio: torch.Tensor
    """u, detached (after the clamp; the sequence log-ratio when ratio_level="sequence")."""
    psi: torch.Tensor
    """LFM output, detached."""
    zeta: torch.Tensor
    """DHP output (always detached by construction)."""


def log_fidelity_modulator(log_ratio: torch.Tensor, c: float) -> torch.Tensor:
    """LFM: ``psi(r) = c * tanh(log r / c)``. Smooth, bounded in (-c, c), and ``psi ~ log r`` near r = 1."""
    return c * torch.tanh(log_ratio / c)


def weibull_cumulative_hazard(x: torch.Tensor, k: float, lam: float) -> torch.Tensor:
    """Weibull cumulative hazard ``H(x; k, lambda) = (x / lambda)^k`` for x >= 0."""
    return (x / lam).pow(k)


def _hazard_input(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "softplus":
        return F.softplus(x)
    if kind == "relu":
        return torch.relu(x)
    raise ValueError(f"hazard_input must be 'softplus' or 'relu', got {kind!r}")


def decoupled_hazard_penalty(psi: torch.Tensor, params: MHPOParams) -> torch.Tensor:
    """DHP: ``zeta = H(s(sg[psi]); k_pos, lambda_pos) + H(s(-sg[psi]); k_neg, lambda_neg)``.

    The penalty is computed from the detached psi (semi-gradient), so it only rescales each token's gradient by
    ``exp(-zeta)``. Positive shifts (over-expansion) and negative shifts (policy erosion) have separate Weibull
    shape/scale; the paper's defaults penalise negative shifts earlier (smaller lambda) and faster (larger k).
    """
    psi = psi.detach()
    positive_shift = _hazard_input(psi, params.hazard_input)
    negative_shift = positive_shift - psi  # = s(-psi): softplus(-x) = softplus(x) - x, and relu(-x) = relu(x) - x
    return weibull_cumulative_hazard(positive_shift, params.k_pos, params.lambda_pos) + weibull_cumulative_hazard(
        negative_shift, params.k_neg, params.lambda_neg
    )


def mhpo_token_loss(
    log_ratio: torch.Tensor, advantages: torch.Tensor, params: MHPOParams
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token objective ``loss_t = -exp(psi(r_t) - sg[zeta(r_t)]) * A_t``; returns ``(loss, psi, zeta)``."""
    psi = log_fidelity_modulator(log_ratio, params.c)
    zeta = decoupled_hazard_penalty(psi, params)
    loss = -advantages * torch.exp(psi - zeta)
    return loss, psi, zeta


def gradient_multiplier(log_ratio: torch.Tensor, c: float) -> torch.Tensor:
    """``M(r) = exp(psi) * sech^2(log r / c)`` = d exp(psi) / d log r. ``M(1) = 1``; ``M -> 0`` at both ends."""
    t = torch.tanh(log_ratio / c)
    return torch.exp(c * t) * (1.0 - t * t)


def masked_log_ratio(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    params: MHPOParams,
) -> torch.Tensor:
    """The clamped log-ratio u the objective sees: per token, or the straight-through sequence form.

    Zero (with zero gradient) outside ``response_mask``. The clamp is applied last so that its zero gradient beyond
    +-log_ratio_clamp matches verl's built-in losses in both modes.
    """
    mask = response_mask.bool()
    # where() after the subtraction: padded NaN/Inf never leaves this line, and its gradient there is exactly 0.
    token_log_ratio = torch.where(mask, log_prob - old_log_prob, 0.0)
    if params.ratio_level == "sequence":
        lengths = mask.sum(dim=-1, keepdim=True).clamp(min=1)
        sequence_log_ratio = token_log_ratio.detach().sum(dim=-1, keepdim=True) / lengths
        token_log_ratio = torch.where(mask, sequence_log_ratio + (log_prob - log_prob.detach()), 0.0)
    return token_log_ratio.clamp(-params.log_ratio_clamp, params.log_ratio_clamp)


def mhpo_loss_matrix(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    params: MHPOParams,
    token_weights: torch.Tensor | None = None,
) -> MHPOTerms:
    """Per-token MHPO loss on padded (batch, response_length) tensors, ready for verl's ``agg_loss``.

    Args:
        log_prob: log pi_theta of the response tokens (requires grad).
        old_log_prob: log pi_old of the same tokens (the behaviour policy of the PPO step).
        advantages: A_t, e.g. group-relative advantages broadcast over the response.
        response_mask: True/1 on real response tokens. Everything outside is ignored, NaN included.
        params: the validated hyper-parameters.
        token_weights: optional detached per-token weights w_t (verl's rollout importance-sampling weights).
    """
    mask = response_mask.bool()
    log_ratio = masked_log_ratio(log_prob, old_log_prob, mask, params)
    advantages = torch.where(mask, advantages, 0.0)
    if token_weights is not None:  # w_t is detached, so it can scale A_t instead of the differentiable term
        advantages = advantages * torch.where(mask, token_weights.detach(), 0.0)
    loss, psi, zeta = mhpo_token_loss(log_ratio, advantages, params)
    return MHPOTerms(loss=loss, log_ratio=log_ratio.detach(), psi=psi.detach(), zeta=zeta)
