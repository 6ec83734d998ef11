"""MHPO hyper-parameters: one validated, immutable value object shared by the core, the verl config and the tools.

Plain Python (no torch, no verl) so that a bad value is rejected wherever it is first built: in the verl driver
when Hydra instantiates :class:`mhpo_verl.config.MHPOPolicyLossConfig`, or in a script that calls the core directly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

HAZARD_INPUTS = ("softplus", "relu")
"""``softplus``: the paper's hazard input s(x) = log(1 + e^x). ``relu``: max(x, 0), zero hazard on-policy."""

RATIO_LEVELS = ("token", "sequence")
"""``token``: the paper's per-token ratio. ``sequence``: GSPO-style length-normalised sequence ratio."""

IMPLEMENTATIONS = ("eager", "fused")
"""``eager``: autograd through the formulas of :mod:`mhpo_verl.objective`. ``fused``: same values and gradients from
a hand-written autograd function that keeps only the per-token derivative for the backward pass."""


@dataclass(frozen=True)
class MHPOParams:
    """Hyper-parameters of the MHPO objective; the defaults are the paper's (Section 4.1).

    Attributes:
        c: LFM bound, psi in (-c, c).
        k_pos, lambda_pos: Weibull shape and scale of the hazard on positive shifts (r > 1).
        k_neg, lambda_neg: Weibull shape and scale of the hazard on negative shifts (r < 1).
        hazard_input: transform s(.) applied to the detached psi before the hazard (see ``HAZARD_INPUTS``).
        ratio_level: ``token`` (paper) or ``sequence`` (see ``RATIO_LEVELS``).
        log_ratio_clamp: |log r| is clamped to this before anything else, as verl's built-in losses do (20).
        implementation: ``eager`` or ``fused`` (see ``IMPLEMENTATIONS``); identical values and gradients.
    """

    c: float = 1.5
    k_pos: float = 1.5
    lambda_pos: float = 1.0
    k_neg: float = 2.0
    lambda_neg: float = 0.8
    hazard_input: str = "softplus"
    ratio_level: str = "token"
    log_ratio_clamp: float = 20.0
    implementation: str = "eager"

    def __post_init__(self) -> None:
        for name in ("c", "k_pos", "lambda_pos", "k_neg", "lambda_neg", "log_ratio_clamp"):
            _require_positive_finite(name, getattr(self, name))
        _require_choice("hazard_input", self.hazard_input, HAZARD_INPUTS)
        _require_choice("ratio_level", self.ratio_level, RATIO_LEVELS)
        _require_choice("implementation", self.implementation, IMPLEMENTATIONS)

    @classmethod
    def from_mapping(cls, source: Any) -> MHPOParams:
        """Read the MHPO fields from any object with ``.get`` (a verl config dataclass or a DictConfig) or a dict.

        Fields the source does not have keep their paper defaults, so ``loss_mode=mhpo`` alone works with verl's
        plain ``PolicyLossConfig``.
        """
        if source is None:
            return cls()
        getter = source.get if hasattr(source, "get") else lambda key, default: getattr(source, key, default)
        defaults = cls()
        values = {f.name: getter(f.name, getattr(defaults, f.name)) for f in fields(cls)}
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require_positive_finite(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"MHPO option {name} must be a positive number, got {value!r} ({type(value).__name__})")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"MHPO option {name} must be a positive finite number, got {value!r}")


def _require_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"MHPO option {name} must be one of {list(choices)}, got {value!r}")
