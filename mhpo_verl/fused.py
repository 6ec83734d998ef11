"""Fused MHPO loss matrix: the values and gradients of :func:`mhpo_verl.objective.mhpo_loss_matrix`, cheaper.

Autograd through the eager formulas keeps about ten (batch, response_length) intermediates alive until the backward
pass. Here the forward runs without autograd and keeps exactly one tensor: the per-token derivative

    d loss_t / d log pi_t = -w_t * A_t * exp(psi_t - zeta_t) * sech^2(u_t / c) * 1[|u_raw_t| <= clamp]
                          =  loss_t * (1 - tanh^2(u_t / c)) * 1[|u_raw_t| <= clamp]

(the same expression in both ratio levels: the sequence form's straight-through gradient reaches each token through
its own log-probability with unit weight). The backward is one multiply. Only ``log_prob`` receives a gradient, which
is how verl uses the loss; passing an ``old_log_prob``, ``advantages`` or weights that require grad is an error.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mhpo_verl.objective import MHPOTerms
from mhpo_verl.params import MHPOParams


def _weibull_hazard_(x: torch.Tensor, k: float, lam: float) -> torch.Tensor:
    """(x / lambda)^k in place. A non-integer power is taken as exp(k log(x / lambda)), about 4x faster than pow on
    CPU and exact at x = 0 (exp(-inf) = 0 for k > 0)."""
    x.div_(lam)
    if k == 1.0:
        return x
    if k == 2.0:
        return x.square_()
    return x.log_().mul_(k).exp_()


def _decoupled_hazard_penalty(psi: torch.Tensor, params: MHPOParams) -> torch.Tensor:
    """:func:`mhpo_verl.objective.decoupled_hazard_penalty` with two allocations instead of seven."""
    positive_shift = F.softplus(psi) if params.hazard_input == "softplus" else torch.relu(psi)
    negative_shift = positive_shift - psi  # = s(-psi) for both transforms
    zeta = _weibull_hazard_(positive_shift, params.k_pos, params.lambda_pos)
    return zeta.add_(_weibull_hazard_(negative_shift, params.k_neg, params.lambda_neg))


class _FusedMHPOLoss(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        log_prob: torch.Tensor,
        old_log_prob: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        token_weights: torch.Tensor | None,
        params: MHPOParams,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        clamp = params.log_ratio_clamp
        padding = ~mask
        raw_log_ratio = torch.sub(log_prob, old_log_prob).masked_fill_(padding, 0.0)
        if params.ratio_level == "sequence":
            lengths = mask.sum(dim=-1, keepdim=True).clamp_(min=1)
            sequence_log_ratio = raw_log_ratio.sum(dim=-1, keepdim=True).div_(lengths)
            raw_log_ratio = sequence_log_ratio.expand_as(raw_log_ratio).masked_fill(padding, 0.0)
        log_ratio = raw_log_ratio.clamp(-clamp, clamp)
        inside_clamp = raw_log_ratio.abs_().le_(clamp)
        del raw_log_ratio

        tanh = torch.div(log_ratio, params.c).tanh_()
        psi = tanh * params.c
        zeta = _decoupled_hazard_penalty(psi, params)
        weighted_advantages = advantages.masked_fill(padding, 0.0)
        if token_weights is not None:
            weighted_advantages.mul_(token_weights.masked_fill(padding, 0.0))
        loss = torch.sub(psi, zeta).exp_().mul_(weighted_advantages).neg_()
        del weighted_advantages

        grad_log_prob = tanh.square_().neg_().add_(1.0).mul_(loss).mul_(inside_clamp)
        ctx.save_for_backward(grad_log_prob)
        ctx.mark_non_differentiable(log_ratio, psi, zeta)
        return loss, log_ratio, psi, zeta

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, *unused_grads: Any) -> tuple[torch.Tensor | None, ...]:
        (grad_log_prob,) = ctx.saved_tensors
        return grad_loss * grad_log_prob, None, None, None, None, None


def mhpo_loss_matrix_fused(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    params: MHPOParams,
    token_weights: torch.Tensor | None = None,
) -> MHPOTerms:
    """Drop-in replacement for :func:`mhpo_verl.objective.mhpo_loss_matrix` (same arguments, same results)."""
    for name, tensor in (("old_log_prob", old_log_prob), ("advantages", advantages), ("token_weights", token_weights)):
        if tensor is not None and tensor.requires_grad:
            raise ValueError(
                f"the fused MHPO loss differentiates only log_prob, but {name} requires grad; "
                "detach it or use implementation='eager'"
            )
    loss, log_ratio, psi, zeta = _FusedMHPOLoss.apply(
        log_prob, old_log_prob, advantages, response_mask.bool(), token_weights, params
    )
    return MHPOTerms(loss=loss, log_ratio=log_ratio, psi=psi, zeta=zeta)


__all__ = ["mhpo_loss_matrix_fused"]
