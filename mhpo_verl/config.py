"""The verl config dataclass carrying MHPO's hyper-parameters on ``actor_rollout_ref.actor.policy_loss``.

verl builds ``policy_loss`` with Hydra ``instantiate`` from its ``_target_``; its own ``PolicyLossConfig`` rejects
unknown keys, so MHPO's options need a subclass. Select it with
``actor_rollout_ref.actor.policy_loss._target_=mhpo_verl.config.MHPOPolicyLossConfig`` (``configs/mhpo_trainer.yaml``
does this). The driver instantiates the actor config in ``validate_config`` before any worker starts, so a bad value
fails there, with :class:`mhpo_verl.params.MHPOParams`'s message.

:func:`check_mhpo_run` holds the checks of a whole run's config that verl leaves to the first training step or
never makes; :mod:`mhpo_verl.plugin` runs them in the driver, inside verl's ``validate_config``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from verl.workers.config import PolicyLossConfig

from mhpo_verl import ESTIMATOR_NAME, LOSS_NAME
from mhpo_verl.params import MHPOParams

_PAPER = MHPOParams()

logger = logging.getLogger(__name__)


@dataclass
class MHPOPolicyLossConfig(PolicyLossConfig):
    """verl's ``PolicyLossConfig`` plus the MHPO fields (meaning and defaults: :class:`MHPOParams`)."""

    loss_mode: str = LOSS_NAME
    c: float = _PAPER.c
    k_pos: float = _PAPER.k_pos
    lambda_pos: float = _PAPER.lambda_pos
    k_neg: float = _PAPER.k_neg
    lambda_neg: float = _PAPER.lambda_neg
    hazard_input: str = _PAPER.hazard_input
    ratio_level: str = _PAPER.ratio_level
    log_ratio_clamp: float = _PAPER.log_ratio_clamp
    implementation: str = _PAPER.implementation

    def __post_init__(self) -> None:
        parent_post_init = getattr(super(), "__post_init__", None)
        if parent_post_init is not None:
            parent_post_init()
        self.mhpo_params()

    def mhpo_params(self) -> MHPOParams:
        """The validated hyper-parameters; raises ``ValueError`` naming the bad field and value."""
        return MHPOParams.from_mapping(self)


def mhpo_run_problems(config: Any) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` for a composed verl config (``main_ppo``'s DictConfig); both empty unless the run uses
    the ``mhpo`` loss or the ``mhpo`` estimator, so other runs in an environment with the plugin are not affected."""
    actor = config.actor_rollout_ref.actor
    algorithm = config.algorithm
    uses_estimator = algorithm.get("adv_estimator", None) == ESTIMATOR_NAME
    uses_loss = (actor.get("policy_loss", None) or {}).get("loss_mode", None) == LOSS_NAME
    errors: list[str] = []
    cautions: list[str] = []
    if not (uses_estimator or uses_loss):
        return errors, cautions

    group_size = config.actor_rollout_ref.rollout.get("n", 1)
    if uses_estimator and group_size < 2:
        errors.append(
            f"algorithm.adv_estimator={ESTIMATOR_NAME} compares the responses to the same prompt, but "
            f"actor_rollout_ref.rollout.n={group_size} gives each prompt one response: every advantage would be 0 "
            "and nothing would train. Set actor_rollout_ref.rollout.n to 2 or more (GRPO-style runs use 4-16)."
        )

    correction = algorithm.get("rollout_correction", None) or {}
    corrections = {key: correction.get(key, None) for key in ("rollout_is", "rollout_rs")}
    corrections = {key: value for key, value in corrections.items() if value is not None}
    if correction.get("bypass_mode", False) and corrections:
        settings = ", ".join(f"algorithm.rollout_correction.{key}={value}" for key, value in corrections.items())
        errors.append(
            f"algorithm.rollout_correction.bypass_mode=true skips verl's rollout correction step (the V1 trainer uses "
            f"the rollout log-probs as old log-probs and computes no IS weights and no rejection mask), so {settings} "
            "would be silently ignored. Set bypass_mode=false to apply them, or set them to null to run in bypass "
            "mode without them."
        )

    if actor.get("loss_agg_mode", None) == "seq-mean-token-sum-norm" and actor.get("loss_scale_factor", None) is None:
        response_length = config.actor_rollout_ref.rollout.get("response_length", None)
        cautions.append(
            "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum-norm without loss_scale_factor divides each "
            "micro-batch's loss by that micro-batch's padded response length, which with the V1 engine's no-padding "
            "micro-batches is its longest response: the gradient then depends on how the batch is split into "
            "micro-batches. Set actor_rollout_ref.actor.loss_scale_factor to a constant, e.g. the maximum response "
            f"length actor_rollout_ref.rollout.response_length={response_length}."
        )
    return errors, cautions


def check_mhpo_run(config: Any) -> None:
    """Raise ``ValueError`` listing every error of :func:`mhpo_run_problems`; log each caution as a warning."""
    errors, cautions = mhpo_run_problems(config)
    for caution in cautions:
        logger.warning("mhpo-verl: %s", caution)
    if errors:
        raise ValueError("mhpo-verl: this config cannot train as intended:\n- " + "\n- ".join(errors))
