"""The verl adapter: the ``mhpo`` policy loss and advantage estimator in verl's registries, and two wrappers.

verl imports this module at the end of ``import verl`` in every process (driver, TaskRunner, FSDP and Megatron actor
workers) through the ``verl.plugins`` entry point declared in pyproject.toml. Fallbacks for environments without
the entry point: ``VERL_USE_EXTERNAL_MODULES=mhpo_verl.plugin`` or
``actor_rollout_ref.model.external_lib=mhpo_verl.plugin``.

The loss is called by ``verl.workers.utils.losses.ppo_loss`` once per micro-batch, by keyword, with padded
(batch, response_length) tensors and the actor config dataclass; it returns the policy-gradient term only (verl adds
entropy and KL terms itself).

Two verl functions are wrapped, with no effect on runs that do not use mhpo:

- ``verl.trainer.ppo.v1.utils.compute_advantage_for_multi_trajectories``, which the V1 trainer imports by name:
  agent sessions with several outputs get the treatment verl reserves for grpo (:func:`compute_advantage_for_sessions`);
- ``verl.utils.config.validate_config``, which ``main_ppo`` imports by name and runs in the driver before Ray starts:
  :func:`mhpo_verl.config.check_mhpo_run` runs first.

Each is replaced in its module and in every loaded module that bound it by name, or, if its module is not loaded
yet, the moment it is: before any importer can bind the unwrapped function.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import logging
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np
import torch
from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, POLICY_LOSS_REGISTRY, agg_loss

from mhpo_verl import ESTIMATOR_NAME, LOSS_NAME
from mhpo_verl.advantage import group_relative_advantages, outcome_scores, sessions_of_outputs
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
    return loss, mhpo_metrics(terms, response_mask, params, advantages)


def _loss_matrix_fn(implementation: str):
    if implementation == "fused":
        from mhpo_verl.fused import mhpo_loss_matrix_fused

        return mhpo_loss_matrix_fused
    return mhpo_loss_matrix


def _estimator_options(config: Any, epsilon: float | None, norm_adv_by_std_in_grpo: bool | None) -> tuple[float, bool]:
    """verl calls registered estimators with ``config`` (the ``algorithm`` config) but without ``epsilon`` and
    ``norm_adv_by_std_in_grpo``, so they are read from ``config`` unless passed explicitly."""
    config_get = config.get if config is not None else (lambda key, default: default)
    if epsilon is None:
        epsilon = config_get("epsilon", 1e-6)
    if norm_adv_by_std_in_grpo is None:
        norm_adv_by_std_in_grpo = config_get("norm_adv_by_std_in_grpo", True)
    return epsilon, bool(norm_adv_by_std_in_grpo)


def mhpo_response_advantages(
    token_level_rewards: torch.Tensor,
    index: np.ndarray | None,
    epsilon: float | None = None,
    norm_adv_by_std_in_grpo: bool | None = None,
    config: Any = None,
) -> torch.Tensor:
    """(batch,) advantage of each response: group-relative over ``index`` (verl's ``uid``) of the sum of each whole
    reward row. Masks play no part: a response's reward belongs to the response (see :mod:`mhpo_verl.advantage`)."""
    if index is None:
        raise ValueError(
            "the mhpo advantage estimator needs `index` (verl's per-prompt `uid`) to form groups; got None"
        )
    epsilon, normalize_by_std = _estimator_options(config, epsilon, norm_adv_by_std_in_grpo)
    scores = outcome_scores(token_level_rewards)
    return group_relative_advantages(scores, index, epsilon=epsilon, normalize_by_std=normalize_by_std)


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

    The response's advantage is broadcast over the tokens of ``response_mask`` (zero elsewhere), as verl's grpo does.
    """
    advantages = mhpo_response_advantages(token_level_rewards, index, epsilon, norm_adv_by_std_in_grpo, config)
    advantages = advantages.unsqueeze(-1) * response_mask.bool().to(advantages.dtype)
    return advantages, advantages


def compute_advantage_for_sessions(
    verl_function: Callable[..., Any],
    data: Any,
    batch_keys: Sequence[str],
    adv_estimator: Any,
    gamma: float = 1.0,
    lam: float = 1.0,
    num_repeat: int = 1,
    norm_adv_by_std_in_grpo: bool = True,
    config: Any = None,
) -> Any:
    """verl's ``compute_advantage_for_multi_trajectories`` (V1 trainer) with ``mhpo`` treated as verl treats grpo.

    verl computes grpo's group statistics over each agent session's final output and broadcasts the result to the
    session's other outputs; every other estimator is handed every row. For ``mhpo`` the same holds here: the
    groups are formed from the final outputs only, and each output gets its session's advantage on its own
    ``response_mask``. The session's advantage is the final output's response-level value, so it reaches the
    session's other outputs even when the final output's tokens are all masked (verl's grpo reads it back from the
    final output's first unmasked token, which gives 0 then). Other estimators go to ``verl_function`` unchanged.
    """
    if adv_estimator != ESTIMATOR_NAME:
        return verl_function(
            data,
            batch_keys=batch_keys,
            adv_estimator=adv_estimator,
            gamma=gamma,
            lam=lam,
            num_repeat=num_repeat,
            norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo,
            config=config,
        )
    if len(batch_keys) != len(data):
        raise ValueError(f"got {len(batch_keys)} agent-loop output keys for {len(data)} rows; expected one per row")
    final_rows, session_of_row = sessions_of_outputs(batch_keys)
    final = torch.tensor(final_rows, dtype=torch.long)
    session_advantages = mhpo_response_advantages(
        data.batch["token_level_rewards"][final],
        np.asarray(data.non_tensor_batch["uid"], dtype=object)[final.numpy()],
        norm_adv_by_std_in_grpo=None if config is not None else norm_adv_by_std_in_grpo,
        config=config,
    )
    response_mask = data.batch["response_mask"]
    advantages = session_advantages[torch.tensor(session_of_row, dtype=torch.long)].unsqueeze(-1)
    advantages = advantages * response_mask.bool().to(advantages.dtype)
    data.batch["advantages"] = advantages
    data.batch["returns"] = advantages
    return data


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


WRAPPED_TAG = "_mhpo_verl_wraps"
"""Attribute of the wrappers this module puts around verl functions: the verl function it wraps. A second copy of
this module (reload, load by path) unwraps it first, so wrappers never stack."""

SESSIONS_MODULE, SESSIONS_FUNCTION = "verl.trainer.ppo.v1.utils", "compute_advantage_for_multi_trajectories"
VALIDATE_MODULE, VALIDATE_FUNCTION = "verl.utils.config", "validate_config"


def _with_mhpo_sessions(verl_function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(verl_function)
    def compute_advantage_for_multi_trajectories(*args: Any, **kwargs: Any) -> Any:
        return compute_advantage_for_sessions(verl_function, *args, **kwargs)

    return compute_advantage_for_multi_trajectories


def _with_mhpo_checks(verl_function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(verl_function)
    def validate_config(*args: Any, **kwargs: Any) -> Any:
        # Imported here: mhpo_verl.config imports verl, and `import verl` imports this module (the plugin entry
        # point); a top-level import fails, silently for verl, whenever mhpo_verl.config is imported first.
        from mhpo_verl.config import check_mhpo_run

        config = kwargs["config"] if "config" in kwargs else args[0]
        check_mhpo_run(config)
        return verl_function(*args, **kwargs)

    return validate_config


def _wrap_everywhere(module: ModuleType, name: str, make_wrapper: Callable[[Callable], Callable]) -> None:
    """Replace ``module.name`` by ``make_wrapper(original)``, and the same function in every loaded module that
    imported it by name (``from module import name`` binds the function object at import time)."""
    current = vars(module)[name]
    original = getattr(current, WRAPPED_TAG, current)
    wrapper = make_wrapper(original)
    setattr(wrapper, WRAPPED_TAG, original)
    for loaded in list(sys.modules.values()):
        namespace = getattr(loaded, "__dict__", None)
        if isinstance(namespace, dict) and namespace.get(name) in (original, current):
            namespace[name] = wrapper


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a callback on a module right after it is executed, before whoever imported it binds its names."""

    def __init__(self, module_name: str, callback: Callable[[ModuleType], None]) -> None:
        self.module_name = module_name
        self.callback = callback

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.module_name:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            self.callback(module)

        spec.loader.exec_module = exec_module  # this spec's own loader object: nothing else is affected
        return spec


def _wrap_when_imported(module_name: str, name: str, make_wrapper: Callable[[Callable], Callable]) -> None:
    """Wrap now if ``module_name`` is loaded, else as soon as it is: import order does not matter."""
    module = sys.modules.get(module_name)
    if module is not None:
        _wrap_everywhere(module, name, make_wrapper)
        return
    for finder in list(sys.meta_path):
        # a hook left by an earlier copy of this module (its class is another object after a reload): replace it
        ours = type(finder).__qualname__ == _AfterImport.__qualname__
        if ours and getattr(finder, "module_name", None) == module_name:
            sys.meta_path.remove(finder)
    sys.meta_path.insert(0, _AfterImport(module_name, lambda loaded: _wrap_everywhere(loaded, name, make_wrapper)))


def register() -> None:
    """Put the mhpo loss and estimator into verl's registries and the mhpo treatment into verl's V1 session
    advantages and driver checks (safe to call any number of times).

    ``verl.trainer.ppo.v1.utils`` is heavy (Ray, TransferQueue), so it is not imported here: its function is wrapped
    the moment something imports it, which is before ``trainer_base`` binds it by name.
    """
    _register(POLICY_LOSS_REGISTRY, LOSS_NAME, compute_policy_loss_mhpo, "policy loss")
    _register(ADV_ESTIMATOR_REGISTRY, ESTIMATOR_NAME, compute_mhpo_advantage, "advantage estimator")
    _wrap_when_imported(SESSIONS_MODULE, SESSIONS_FUNCTION, _with_mhpo_sessions)
    _wrap_when_imported(VALIDATE_MODULE, VALIDATE_FUNCTION, _with_mhpo_checks)


def _load_cpu_backend_if_selected() -> None:
    """``VERL_PLATFORM=cpu`` names the project's CPU platform (:mod:`mhpo_verl.cpu_backend`), which verl can create
    only once it is imported. verl imports this module in every process (entry point, or the runtime env of the
    launcher's Ray job), so importing the backend here makes that one variable enough on every node of a CPU
    cluster, whatever else a job's ``VERL_USE_EXTERNAL_MODULES`` says."""
    if os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu":
        from mhpo_verl.cpu_backend import HF_ROLLOUT_MODULE, PLATFORM_MODULE

        for module in (PLATFORM_MODULE, HF_ROLLOUT_MODULE):  # the platform first: it must precede verl's engines
            importlib.import_module(module)


register()
_load_cpu_backend_if_selected()
