"""Hydra configs of mhpo-verl, importable as ``mhpo_verl.configs`` (see pyproject's package-dir).

Use them with verl's own entry point::

    python -m verl.trainer.main_ppo --config-path=pkg://mhpo_verl.configs --config-name=mhpo_trainer
"""
