"""verl on a machine with no accelerator: the pieces that let verl's own trainer, workers and engines run on CPUs.

* :mod:`mhpo_verl.cpu_backend.platform` -- a verl platform for plain CPUs (device ``cpu``, ``gloo`` collectives)
  and the FSDP2 engines filed under it; ``VERL_PLATFORM=cpu`` selects it.
* :mod:`mhpo_verl.cpu_backend.hf_rollout` -- the ``hf`` rollout backend (transformers ``generate`` behind verl's
  rollout-replica interface), so that verl's full ``main_ppo`` runs on CPUs.
* :mod:`mhpo_verl.cpu_backend.megatron` -- verl's Megatron engine on CPUs (megatron-core's local layer spec through
  mbridge), for processes that train with ``actor.strategy=megatron`` only.

Importing this package does nothing; each module changes verl only when imported or enabled as its docstring says.
"""

PLATFORM_MODULE = "mhpo_verl.cpu_backend.platform"
"""What ``VERL_USE_EXTERNAL_MODULES`` names so that every verl process enables the CPU platform at ``import verl``."""

HF_ROLLOUT_MODULE = "mhpo_verl.cpu_backend.hf_rollout"
"""What ``VERL_USE_EXTERNAL_MODULES`` names so that every verl process knows the ``hf`` rollout backend."""

MEGATRON_MODULE = "mhpo_verl.cpu_backend.megatron"
"""What ``VERL_USE_EXTERNAL_MODULES`` names (with ``MHPO_VERL_CPU_MEGATRON=1``) for verl's Megatron engine on CPUs."""
