"""MHPO RL on the CPU through verl's own actor update: ``python -m mhpo_verl.demo``.

* :mod:`mhpo_verl.demo.loop`: :class:`~mhpo_verl.demo.loop.DemoConfig` and
  :class:`~mhpo_verl.demo.loop.CPURLTrainer`, the reusable loop (any registered loss mode, PPO epochs and
  mini-batches, per-step metrics);
* :mod:`mhpo_verl.demo.model`: SmolLM2-135M-Instruct from its GGUF file on PyPI, converted once and cached;
* :mod:`mhpo_verl.demo.tasks`: offline arithmetic / algebra problems with ``\\boxed{}`` answers;
* :mod:`mhpo_verl.demo.rollout`: sampling with transformers ``generate``;
* :mod:`mhpo_verl.demo.rewards`: grading with ``reward_fns``;
* :mod:`mhpo_verl.demo.report`: ``metrics.jsonl``, ``curves.png`` and the summary.

Importing this package is cheap (no torch): the command sets OpenMP's wait policy before torch is loaded.
"""
