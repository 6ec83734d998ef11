"""mhpo-verl: MHPO (Modulated Hazard-aware Policy Optimization, arXiv 2603.16929) as a verl plugin.

Importing this package is cheap and does not import verl. The pure-PyTorch core lives in
:mod:`mhpo_verl.objective`; the verl adapter in :mod:`mhpo_verl.plugin` is loaded by verl itself through the
``verl.plugins`` entry point.
"""

from __future__ import annotations

from importlib import metadata as _metadata
from pathlib import Path

try:
    __version__ = _metadata.version("mhpo-verl")
except _metadata.PackageNotFoundError:  # running from a source tree that was never pip-installed
    __version__ = "0+unknown"

LOSS_NAME = "mhpo"
"""Name of the policy loss in verl's registry (``actor_rollout_ref.actor.policy_loss.loss_mode``)."""

ESTIMATOR_NAME = "mhpo"
"""Name of the advantage estimator in verl's registry (``algorithm.adv_estimator``)."""


def configs_dir() -> Path:
    """Folder holding the Hydra configs (``mhpo_trainer.yaml`` and friends)."""
    from mhpo_verl import configs

    return Path(configs.__file__).parent


__all__ = ["ESTIMATOR_NAME", "LOSS_NAME", "__version__", "configs_dir"]
