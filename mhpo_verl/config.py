"""The verl config dataclass carrying MHPO's hyper-parameters on ``actor_rollout_ref.actor.policy_loss``.

verl builds ``policy_loss`` with Hydra ``instantiate`` from its ``_target_``; its own ``PolicyLossConfig`` rejects
unknown keys, so MHPO's options need a subclass. Select it with
``actor_rollout_ref.actor.policy_loss._target_=mhpo_verl.config.MHPOPolicyLossConfig`` (``configs/mhpo_trainer.yaml``
does this). The driver instantiates the actor config in ``validate_config`` before any worker starts, so a bad value
fails there, with :class:`mhpo_verl.params.MHPOParams`'s message.
"""

from __future__ import annotations

from dataclasses import dataclass

from verl.workers.config import PolicyLossConfig

from mhpo_verl import LOSS_NAME
from mhpo_verl.params import MHPOParams

_PAPER = MHPOParams()


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
