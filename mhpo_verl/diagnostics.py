"""MHPO training diagnostics: what a user watches to see the modulator and the hazard at work.

Computed without gradients from the per-token terms of one loss evaluation, returned as plain floats with the
same keys on every call (verl aggregates metrics across micro-batches and DP ranks and needs equal counts). A
single host transfer fetches them all.
"""

from __future__ import annotations

import math

import torch

from mhpo_verl.objective import MHPOTerms, gradient_multiplier
from mhpo_verl.params import MHPOParams

METRIC_KEYS: tuple[str, ...] = (
    # verl's own keys, defined for a loss that never clips: the fraction of tokens whose log-ratio saturates the
    # modulator (u > c on the upper side, u < -c on the lower side), and the k1 estimate of KL(old || new).
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
    transform = math.log(2.0) if params.hazard_input == "softplus" else 0.0
    zeta = (transform / params.lambda_pos) ** params.k_pos + (transform / params.lambda_neg) ** params.k_neg
    return math.exp(-zeta)


@torch.no_grad()
def mhpo_metrics(terms: MHPOTerms, response_mask: torch.Tensor, params: MHPOParams) -> dict[str, float]:
    mask = response_mask.bool()
    weight = mask.to(terms.psi.dtype)
    n_tokens = weight.sum()
    u = terms.log_ratio
    survival = torch.exp(-terms.zeta)
    multiplier = gradient_multiplier(u, params.c) * weight
    positive = weight * (u > 0)
    negative = weight * (u < 0)
    fallback = torch.tensor(on_policy_survival(params), dtype=weight.dtype, device=weight.device)

    def mean(values: torch.Tensor) -> torch.Tensor:
        return (values * weight).sum() / n_tokens.clamp(min=1)

    def mean_over(values: torch.Tensor, selection: torch.Tensor) -> torch.Tensor:
        count = selection.sum()
        return torch.where(count > 0, (values * selection).sum() / count.clamp(min=1), fallback)

    values = torch.stack(
        [
            mean(-u),
            mean((u > params.c).to(weight.dtype)),
            mean((u < -params.c).to(weight.dtype)),
            mean(terms.psi),
            mean(terms.zeta),
            mean_over(survival, positive),
            mean_over(survival, negative),
            multiplier.max() if multiplier.numel() else torch.zeros((), dtype=weight.dtype),
            mean(survival * multiplier),
            (u.abs() * weight).max() if u.numel() else torch.zeros((), dtype=weight.dtype),
        ]
    )
    return dict(zip(METRIC_KEYS, values.tolist()))
