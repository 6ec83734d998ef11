"""The verl adapter: registers the ``mhpo`` policy loss and the ``mhpo`` advantage estimator into verl's registries.

verl imports this module at the end of ``import verl`` in every process (driver, TaskRunner, FSDP and Megatron actor
workers) through the ``verl.plugins`` entry point declared in pyproject.toml. Fallbacks for environments without
the entry point: ``VERL_USE_EXTERNAL_MODULES=mhpo_verl.plugin`` or
``actor_rollout_ref.model.external_lib=mhpo_verl.plugin``.

The loss is called by ``verl.workers.utils.losses.ppo_loss`` once per micro-batch, by keyword, with padded
(batch, response_length) tensors and the actor config dataclass; it returns the policy-gradient term only (verl adds
entropy and KL terms itself).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, POLICY_LOSS_REGISTRY, agg_loss

from mhpo_verl import ESTIMATOR_NAME, LOSS_NAME
from mhpo_verl.advantage import group_relative_advantages
from mhpo_verl.diagnostics import mhpo_metrics
from mhpo_verl.objective import mhpo_loss_matrix
from mhpo_verl.params import MHPOParams

logger = logging.getLogger(__name__)

DEFAULT_LOSS_AGG_MODE = "seq-mean-token-mean"
"""The paper's aggregation: token mean within each response, then mean over responses."""


def mhpo_params_from_actor_config(config: Any) -> MHPOParams:
    """MHPO hyper-parameters from verl's actor config (dataclass or DictConfig); paper defaults where absent."""
    policy_loss = config.get("policy_loss", None) if config is not None else None
    return MHPOParams.from_mapping(policy_loss)


def compute_policy_loss_mhpo(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = DEFAULT_LOSS_AGG_MODE,
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
    **unused: Any,
) -> tuple[torch.Tensor, dict[str, float]]:
    """MHPO policy-gradient loss with verl's policy-loss signature; see :mod:`mhpo_verl.objective` for the math.

    Args:
        old_log_prob, log_prob, advantages, response_mask: (batch, response_length), padded.
        loss_agg_mode: verl aggregation mode, applied by verl's ``agg_loss`` with ``config.global_batch_info``
            (dp_size, global token/sequence counts) so that gradients do not depend on the micro-batch split or
            the data-parallel size.
        config: verl's actor config; MHPO options are read from ``config.policy_loss``.
        rollout_is_weights: verl's rollout-correction importance weights, multiplied into the per-token loss.
        **unused: keywords newer verl versions may add; ignored.

    Returns:
        ``(loss, metrics)``: a scalar tensor and a dict of floats with the same keys on every call.
    """
    if unused:
        logger.debug("mhpo loss ignores keyword arguments %s", sorted(unused))
    params = mhpo_params_from_actor_config(config)
    loss_matrix = _loss_matrix_fn(params.implementation)
    terms = loss_matrix(log_prob, old_log_prob, advantages, response_mask, params, token_weights=rollout_is_weights)
    global_batch_info = dict(config.get("global_batch_info", None) or {}) if config is not None else {}
    loss = agg_loss(loss_mat=terms.loss, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **global_batch_info)
    return loss, mhpo_metrics(terms, response_mask, params)


def _loss_matrix_fn(implementation: str):
    if implementation == "fused":
        from mhpo_verl.fused import mhpo_loss_matrix_fused

        return mhpo_loss_matrix_fused
    return mhpo_loss_matrix


def compute_mhpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    epsilon: float | None = None,
    norm_adv_by_std_in_grpo: bool | None = None,
    config: Any = None,
    **unused: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-relative outcome advantages with verl's estimator signature; returns ``(advantages, returns)``.

    verl calls registered estimators with ``config`` (the ``algorithm`` config) but without ``epsilon`` and
    ``norm_adv_by_std_in_grpo``, so they are read from ``config`` unless passed explicitly.
    """
    if index is None:
        raise ValueError(
            "the mhpo advantage estimator needs `index` (verl's per-prompt `uid`) to form groups; got None"
        )
    config_get = config.get if config is not None else (lambda key, default: default)
    if epsilon is None:
        epsilon = config_get("epsilon", 1e-6)
    if norm_adv_by_std_in_grpo is None:
        norm_adv_by_std_in_grpo = config_get("norm_adv_by_std_in_grpo", True)
    mask = response_mask.bool()
    scores = torch.where(mask, token_level_rewards, 0.0).sum(dim=-1)
    advantages = group_relative_advantages(scores, index, epsilon=epsilon, normalize_by_std=norm_adv_by_std_in_grpo)
    advantages = advantages.unsqueeze(-1) * mask.to(advantages.dtype)
    return advantages, advantages


REGISTRATION_TAG = "_mhpo_verl_registered_as"
"""Attribute set on the functions this module registers: a copy of this module loaded again (``importlib.reload``,
or by file path through verl's ``load_module``) is recognised as ours, whatever its module name."""


def _register(registry: dict[str, Any], name: str, fn: Any, what: str) -> None:
    """Idempotent registration: our own earlier entry is replaced; a *different* function already registered under
    the name is an error, not a silent overwrite (verl's own ``register_policy_loss`` would overwrite it)."""
    setattr(fn, REGISTRATION_TAG, f"{what}:{name}")
    current = registry.get(name)
    if current is not None and getattr(current, REGISTRATION_TAG, None) != f"{what}:{name}":
        message = (
            f"verl already has a {what} named {name!r} ({current.__module__}.{current.__qualname__}); "
            f"mhpo-verl will not overwrite it with {fn.__module__}.{fn.__qualname__}"
        )
        # verl swallows plugin import errors at DEBUG level; say it where users will see it.
        logger.error(message)
        raise RuntimeError(message)
    registry[name] = fn


def register() -> None:
    """Put the mhpo loss and estimator into verl's registries (safe to call any number of times)."""
    _register(POLICY_LOSS_REGISTRY, LOSS_NAME, compute_policy_loss_mhpo, "policy loss")
    _register(ADV_ESTIMATOR_REGISTRY, ESTIMATOR_NAME, compute_mhpo_advantage, "advantage estimator")


register()
