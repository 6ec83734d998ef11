"""The RL loop on the CPU: sample, grade, estimate advantages, and update the policy through verl's own actor worker.

Per step, the same stages and the same verl code as one step of verl's V1 PPO trainer, in one process:

1. prompts from :mod:`mhpo_verl.demo.tasks`; ``n`` responses each from :class:`~mhpo_verl.demo.rollout.HFSampler`;
2. rewards from ``reward_fns`` (the project's graders), placed on each response's last token as verl's reward loop
   does;
3. old log-probs and entropy from ``ActorRolloutRefWorker.compute_log_prob`` (verl's FSDP2 engine);
4. advantages from verl's ``compute_advantage_for_multi_trajectories`` with the configured estimator (``mhpo``: the
   project's registered group-relative estimator);
5. the update from ``ActorRolloutRefWorker.update_actor``: verl's ``TrainingWorker.train_mini_batch`` splits the batch
   into PPO mini-batches and epochs and calls verl's ``ppo_loss``, which dispatches to the registered policy loss
   (``mhpo`` by default);
6. the new weights from the engine are copied into the sampler.

Stale rollouts (:attr:`DemoConfig.rollout_staleness` = k > 0) delay stage 6: the sampler gets the weights the engine
had k optimizer updates earlier, as in asynchronous RL where rollouts come from a policy several updates old. With
:attr:`DemoConfig.old_log_probs_from_sampler`, stage 3 is what verl's ``algorithm.rollout_correction.bypass_mode`` does:
the old log-probs are the sampler's own log-probs of the sampled tokens (no recomputation), so the importance ratio
is taken against the behaviour policy and carries the staleness.

The worker is built from a verl Hydra config composed exactly as ``main_ppo`` composes it (the project's
``mhpo_trainer`` for ``loss_mode=mhpo``, verl's ``ppo_trainer`` otherwise), so every verl actor option is reachable
through :attr:`DemoConfig.overrides`.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mhpo_verl import LOSS_NAME, configs_dir
from mhpo_verl.demo.model import prepare_model
from mhpo_verl.demo.rewards import DEFAULT_REWARD_OPTIONS, Grade, grade_responses
from mhpo_verl.demo.rollout import HFSampler, Rollout
from mhpo_verl.demo.tasks import DEFAULT_KINDS, Problem, TaskGenerator
from reward_fns import GradingOptions

LOG_RATIO_THRESHOLD = 0.5
"""Tokens with |log r| above this count as far off-policy in the ``diag/log_ratio_over_0.5`` metric."""

_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}

ENGINES = ("fsdp", "megatron")
"""verl training engines the CPU loop can train with (:attr:`DemoConfig.engine`)."""


@dataclass
class DemoConfig:
    """Everything one CPU training run depends on. Batch sizes follow verl's meaning.

    Attributes:
        steps: training steps (one batch of prompts each).
        loss_mode: any policy loss registered in verl (``mhpo``, ``vanilla``, ``gspo``, ...).
        adv_estimator: verl advantage estimator; None means ``mhpo`` (same as ``grpo`` for groups of >= 2).
        loss_agg_mode: verl's ``actor.loss_agg_mode``; None keeps the loss mode's config default
            (``seq-mean-token-mean`` for mhpo, ``token-mean`` otherwise).
        prompts_per_step: verl's ``data.train_batch_size``.
        samples_per_prompt: verl's ``rollout.n`` (the group size).
        ppo_mini_batch_size: prompts per PPO mini-batch (verl's ``actor.ppo_mini_batch_size``; times n sequences).
        ppo_epochs: passes over each batch (verl's ``actor.ppo_epochs``).
        micro_batch_size: sequences per forward/backward (``ppo_micro_batch_size_per_gpu``, also for log-probs).
        lr: AdamW learning rate (constant schedule).
        max_new_tokens: response length limit (verl's ``rollout.response_length``).
        temperature, top_p: sampling settings (temperature also scales the training log-probs, as in verl).
        train_dtype: compute precision of the training engine (``bf16`` autocast, ~2x faster on CPU, or ``fp32``);
            parameters and optimizer state stay fp32 either way.
        rollout_dtype: precision of the sampling copy.
        task_kinds: problem kinds from :data:`mhpo_verl.demo.tasks.GENERATORS`.
        worked_example: show :data:`mhpo_verl.demo.tasks.WORKED_EXAMPLE` before each question.
        seed: seeds the problems, the sampling and verl's mini-batch shuffling.
        model_path: a local HF model folder; None converts the bundled SmolLM2-135M-Instruct (cached).
        cache_dir: where the converted model is cached; None means ``$MHPO_VERL_CACHE`` or ``~/.cache/mhpo_verl``.
        gradient_checkpointing: recompute activations in the backward pass (less memory, ~30% slower).
        engine: verl's training engine, ``fsdp`` (FSDP2) or ``megatron`` (megatron-core through mbridge, on the CPU
            via :mod:`mhpo_verl.cpu_backend.megatron`; bf16 only, as verl's McoreEngineConfig requires).
        rollout_staleness: optimizer updates the sampler's weights lag behind the engine's (0: pushed after every
            step). Must be a multiple of the updates per step, :attr:`updates_per_step`; until that many updates have
            happened the sampler keeps the initial weights.
        old_log_probs_from_sampler: take the old log-probs from the sampler (verl's ``rollout_correction.bypass_mode``)
            instead of recomputing them with the engine; the reported entropy is then the sampler's.
        reward_options: ``reward_fns`` grading options (verl's ``reward_kwargs``); see
            :data:`mhpo_verl.demo.rewards.DEFAULT_REWARD_OPTIONS`.
        overrides: extra Hydra overrides on the verl config, e.g.
            ``("actor_rollout_ref.actor.policy_loss.k_neg=3.0", "actor_rollout_ref.actor.clip_ratio_high=0.28")``.
    """

    steps: int = 25
    loss_mode: str = LOSS_NAME
    adv_estimator: str | None = None
    loss_agg_mode: str | None = None
    prompts_per_step: int = 8
    samples_per_prompt: int = 4
    ppo_mini_batch_size: int = 4
    ppo_epochs: int = 1
    micro_batch_size: int = 16
    lr: float = 1e-5
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    train_dtype: str = "bf16"
    rollout_dtype: str = "bf16"
    task_kinds: tuple[str, ...] = DEFAULT_KINDS
    worked_example: bool = True
    seed: int = 0
    model_path: str | None = None
    cache_dir: str | None = None
    gradient_checkpointing: bool = False
    engine: str = "fsdp"
    rollout_staleness: int = 0
    old_log_probs_from_sampler: bool = False
    reward_options: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_REWARD_OPTIONS))
    overrides: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        positive = ("steps", "prompts_per_step", "samples_per_prompt", "ppo_mini_batch_size", "ppo_epochs")
        for name in (*positive, "micro_batch_size", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DemoConfig.{name} must be a positive integer, got {value!r}")
        if self.prompts_per_step % self.ppo_mini_batch_size:
            raise ValueError(
                f"DemoConfig.prompts_per_step ({self.prompts_per_step}) must be a multiple of ppo_mini_batch_size "
                f"({self.ppo_mini_batch_size}), as in verl"
            )
        mini_batch_sequences = self.ppo_mini_batch_size * self.samples_per_prompt
        if mini_batch_sequences % self.micro_batch_size:
            raise ValueError(
                f"DemoConfig.micro_batch_size ({self.micro_batch_size}) must divide the sequences of a mini-batch "
                f"(ppo_mini_batch_size x samples_per_prompt = {mini_batch_sequences}), as verl's engine requires"
            )
        staleness = self.rollout_staleness
        if isinstance(staleness, bool) or not isinstance(staleness, int) or staleness < 0:
            raise ValueError(f"DemoConfig.rollout_staleness must be an integer >= 0, got {staleness!r}")
        if staleness % self.updates_per_step:
            raise ValueError(
                f"DemoConfig.rollout_staleness ({staleness}) must be a multiple of the optimizer updates per step "
                f"({self.updates_per_step} = prompts_per_step / ppo_mini_batch_size x ppo_epochs): weights are pushed "
                f"to the sampler between steps"
            )
        if self.old_log_probs_from_sampler and self.top_p != 1.0:
            raise ValueError(f"DemoConfig.old_log_probs_from_sampler needs top_p = 1 (got {self.top_p!r}): the sampler "
                             f"reports log-probs of the untruncated distribution")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"DemoConfig.lr must be a finite number >= 0, got {self.lr!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"DemoConfig.temperature must be > 0 (the loop samples), got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"DemoConfig.top_p must be in (0, 1], got {self.top_p!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"DemoConfig.engine must be one of {ENGINES}, got {self.engine!r}")
        if self.engine == "megatron" and self.train_dtype != "bf16":
            raise ValueError(
                f"DemoConfig.train_dtype={self.train_dtype!r} with engine='megatron': verl's McoreEngineConfig "
                "accepts only bfloat16/float16, so the Megatron engine trains in bf16"
            )
        for name in ("train_dtype", "rollout_dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ValueError(f"DemoConfig.{name} must be one of {sorted(_DTYPES)}, got {getattr(self, name)!r}")
        self.task_kinds = tuple(self.task_kinds)
        self.overrides = tuple(self.overrides)
        TaskGenerator(self.task_kinds)  # validates the kinds
        self.reward_options = dict(self.reward_options)
        try:
            GradingOptions.from_kwargs(dict(self.reward_options))
        except (TypeError, ValueError) as error:
            raise ValueError(f"DemoConfig.reward_options: {error}") from error

    @property
    def sequences_per_step(self) -> int:
        return self.prompts_per_step * self.samples_per_prompt

    @property
    def updates_per_step(self) -> int:
        """Optimizer updates per step: one per PPO mini-batch per epoch, as verl's actor makes them."""
        return self.prompts_per_step // self.ppo_mini_batch_size * self.ppo_epochs


def cpu_actor_overrides(config: DemoConfig, model_path: Path) -> list[str]:
    """Hydra overrides that turn verl's PPO config into this run's CPU actor (without ``config.overrides``)."""
    actor = "actor_rollout_ref.actor"
    estimator = config.adv_estimator or LOSS_NAME
    overrides = [
        f"actor_rollout_ref.model.path={model_path}",
        # flash-attention does not exist on CPU; sdpa handles verl's packed (padding-free) sequences.
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        f"actor_rollout_ref.model.enable_gradient_checkpointing={config.gradient_checkpointing}",
        *engine_overrides(config),
        f"{actor}.optim.lr={config.lr}",
        f"{actor}.ppo_mini_batch_size={config.ppo_mini_batch_size}",
        f"{actor}.ppo_micro_batch_size_per_gpu={config.micro_batch_size}",
        f"{actor}.ppo_epochs={config.ppo_epochs}",
        f"{actor}.data_loader_seed={config.seed}",
        f"{actor}.policy_loss.loss_mode={config.loss_mode}",
        f"actor_rollout_ref.rollout.n={config.samples_per_prompt}",
        f"actor_rollout_ref.rollout.temperature={config.temperature}",
        f"actor_rollout_ref.rollout.top_p={config.top_p}",
        f"actor_rollout_ref.rollout.response_length={config.max_new_tokens}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={config.micro_batch_size}",
        f"algorithm.adv_estimator={estimator}",
        f"data.train_batch_size={config.prompts_per_step}",
        "trainer.device=cpu",
        "trainer.n_gpus_per_node=1",
        "trainer.nnodes=1",
    ]
    if config.loss_agg_mode is not None:
        overrides.append(f"{actor}.loss_agg_mode={config.loss_agg_mode}")
    return overrides


def engine_overrides(config: DemoConfig) -> list[str]:
    """The overrides that select and configure the training engine on the CPU."""
    actor = "actor_rollout_ref.actor"
    if config.engine == "megatron":
        from mhpo_verl.cpu_backend.megatron import megatron_actor_overrides

        return ["model_engine=megatron", *megatron_actor_overrides(actor, total_training_steps=config.steps)]
    return [
        # FSDP1 needs a GPU (verl sets sync_module_states=True); FSDP2 runs on gloo.
        f"{actor}.strategy=fsdp2",
        f"{actor}.use_torch_compile=False",
        f"{actor}.fsdp_config.use_torch_compile=False",
        f"+{actor}.fsdp_config.mixed_precision.param_dtype={config.train_dtype}",
    ]


def verl_overrides(config: DemoConfig, model_path: Path) -> list[str]:
    """All Hydra overrides of the run: the CPU actor's, then the user's (which therefore win)."""
    return [*cpu_actor_overrides(config, model_path), *config.overrides]


def verl_config_source(loss_mode: str) -> tuple[Path, str]:
    """(folder, name) of the Hydra config a run starts from: the project's ``mhpo_trainer`` for the mhpo loss
    (the paper's settings), verl's own ``ppo_trainer`` for any other loss."""
    import verl

    if loss_mode == LOSS_NAME:
        return configs_dir(), "mhpo_trainer"
    return Path(verl.__file__).parent / "trainer" / "config", "ppo_trainer"


def compose_verl_config(config: DemoConfig, model_path: Path) -> Any:
    """verl's full trainer config for this run (see :func:`verl_config_source`)."""
    from hydra import compose, initialize_config_dir

    config_dir, config_name = verl_config_source(config.loss_mode)
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(config_name=config_name, overrides=verl_overrides(config, model_path))


ScoreFn = Callable[[Sequence[str], Sequence[str]], list[Grade]]


class CPURLTrainer:
    """One CPU RL run: build with a :class:`DemoConfig`, call :meth:`step` per training step.

    Args:
        config: the run's settings.
        score_fn: ``(responses, answers) -> grades``; defaults to :func:`mhpo_verl.demo.rewards.grade_responses`
            with ``config.reward_options``.
    """

    def __init__(self, config: DemoConfig, score_fn: ScoreFn | None = None):
        from mhpo_verl.cpu_backend import megatron as megatron_cpu
        from mhpo_verl.cpu_backend import platform as platform_cpu

        # The platform must be in place before verl's engine package is imported (it reads the device at import).
        # The Megatron adaptations are process-wide, so only a Megatron run enables them.
        if config.engine == "megatron":
            megatron_cpu.enable()
        else:
            platform_cpu.enable()
        platform_cpu.init_process_group()

        from transformers import AutoTokenizer
        from verl.workers.engine_workers import ActorRolloutRefWorker

        self.config = config
        self.score_fn = score_fn or functools.partial(grade_responses, options=config.reward_options)
        self.model_path = Path(config.model_path) if config.model_path else prepare_model(config.cache_dir)
        self.verl_config = compose_verl_config(config, self.model_path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        if self.tokenizer.eos_token_id is None or self.tokenizer.pad_token_id is None:
            raise ValueError(f"{self.model_path}: the tokenizer needs eos and pad tokens")
        self.tasks = TaskGenerator(config.task_kinds, seed=config.seed)

        self.worker = ActorRolloutRefWorker(config=self.verl_config.actor_rollout_ref, role="actor")
        self.worker.init_model()
        self.worker.set_loss_fn(with_log_ratio_diagnostics(self.worker.loss_fn))
        self.sampler = HFSampler(
            self.model_path,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            dtype=_DTYPES[config.rollout_dtype],
        )
        self.updates_done = 0
        self.sampler_weights_at = 0
        """Optimizer updates the engine had made when the sampler's current weights were taken."""
        self._pending_weights: list[tuple[int, list[tuple[str, torch.Tensor]]]] = []
        self.sync_weights()

    @property
    def engine(self) -> Any:
        """verl's training engine (``FSDPEngineWithLMHead`` or ``MegatronEngineWithLMHead``) in the actor's
        ``TrainingWorker``."""
        return self.worker.actor.engine

    def step(self, step: int) -> dict[str, Any]:
        """Run training step ``step`` (0-based) and return its metrics (plain floats, plus ``samples``)."""
        timing: dict[str, float] = {}
        staleness = self.updates_done - self.sampler_weights_at
        with _timer(timing, "gen"):
            problems, rollouts = self.generate(step)
        with _timer(timing, "reward"):
            texts, grades = self.grade(problems, rollouts)
        batch = build_batch(rollouts, [g.score for g in grades], uids=[f"{step}-{r.prompt_index}" for r in rollouts])
        with _timer(timing, "old_log_prob"):
            if self.config.old_log_probs_from_sampler:
                entropy = self.use_sampler_log_probs(batch, rollouts)
            else:
                entropy = self.compute_old_log_prob(batch)
        with _timer(timing, "adv"):
            self.compute_advantage(batch)
        with _timer(timing, "update_actor"):
            update_metrics = self.update_actor(batch)
        with _timer(timing, "sync_weights"):
            self.sync_weights()

        metrics = {
            "step": step,
            **rollout_metrics(rollouts, grades),
            "actor/entropy": entropy,
            "rollout/staleness_updates": float(staleness),
            **update_metrics,
            **{f"timing_s/{name}": seconds for name, seconds in timing.items()},
        }
        metrics["timing_s/step"] = sum(timing.values())
        first_of_each_group = slice(None, None, self.config.samples_per_prompt)
        metrics["samples"] = [
            {"prompt": problems[r.prompt_index].prompt, "answer": problems[r.prompt_index].answer, "response": text}
            for r, text in zip(rollouts[first_of_each_group], texts[first_of_each_group])
        ][:2]
        return metrics

    def generate(self, step: int) -> tuple[list[Problem], list[Rollout]]:
        """Stage 1: the step's problems and ``samples_per_prompt`` sampled responses to each."""
        problems = self.tasks.problems(step, self.config.prompts_per_step)
        rollouts = self.sampler.sample(
            [self._encode_prompt(problem) for problem in problems],
            n=self.config.samples_per_prompt,
            max_new_tokens=self.config.max_new_tokens,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            seed=_mix_seed(self.config.seed, step),
            with_log_probs=self.config.old_log_probs_from_sampler,
        )
        return problems, rollouts

    def grade(self, problems: Sequence[Problem], rollouts: Sequence[Rollout]) -> tuple[list[str], list[Grade]]:
        """Stage 2: decoded responses and their grades."""
        texts = self.tokenizer.batch_decode(
            [r.response_ids for r in rollouts], skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        grades = self.score_fn(texts, [problems[r.prompt_index].answer for r in rollouts])
        if len(grades) != len(rollouts):
            raise ValueError(f"score_fn returned {len(grades)} grades for {len(rollouts)} responses")
        return texts, grades

    def _encode_prompt(self, problem: Problem) -> list[int]:
        return self.tokenizer.apply_chat_template(
            problem.messages(self.config.worked_example), add_generation_prompt=True, tokenize=True, return_dict=False
        )

    def compute_old_log_prob(self, batch: Any) -> float:
        """Stage 3: adds ``old_log_probs`` to ``batch`` (verl's actor forward); returns the mean entropy."""
        from verl.trainer.ppo.core_algos import agg_loss
        from verl.utils import tensordict_utils as tu
        from verl.workers.utils.padding import response_from_nested

        request = batch.select(*_MODEL_INPUTS)
        tu.assign_non_tensor(
            request, calculate_entropy=True, compute_loss=False, temperature=self.config.temperature
        )
        output = self.worker.compute_log_prob(request)
        batch["old_log_probs"] = response_from_nested(output["log_probs"], batch["response_mask"])
        entropy = response_from_nested(output["entropy"], batch["response_mask"])
        padded = torch.nested.to_padded_tensor(entropy, 0.0)
        mask = torch.nested.to_padded_tensor(batch["response_mask"], 0).bool()
        actor = self.verl_config.actor_rollout_ref.actor
        return agg_loss(loss_mat=padded, loss_mask=mask, loss_agg_mode=actor.loss_agg_mode).item()

    def use_sampler_log_probs(self, batch: Any, rollouts: Sequence[Rollout]) -> float:
        """Stage 3 in bypass mode: ``old_log_probs`` are the sampler's log-probs of the sampled tokens (the behaviour
        policy, ``k`` updates old when rollouts are stale); returns the sampler's mean entropy over response tokens,
        aggregated as the actor's loss is."""
        from verl.trainer.ppo.core_algos import agg_loss

        log_probs = [torch.tensor(r.log_probs, dtype=torch.float32) for r in rollouts]
        entropies = [torch.tensor(r.entropies, dtype=torch.float32) for r in rollouts]
        batch["old_log_probs"] = torch.nested.as_nested_tensor(log_probs, layout=torch.jagged)
        padded = torch.nested.to_padded_tensor(torch.nested.as_nested_tensor(entropies, layout=torch.jagged), 0.0)
        mask = torch.nested.to_padded_tensor(batch["response_mask"], 0).bool()
        actor = self.verl_config.actor_rollout_ref.actor
        return agg_loss(loss_mat=padded, loss_mask=mask, loss_agg_mode=actor.loss_agg_mode).item()

    def compute_advantage(self, batch: Any) -> None:
        """Stage 4: adds ``advantages`` to ``batch`` with the configured verl estimator."""
        from verl import DataProto
        from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories
        from verl.workers.utils.padding import response_to_nested

        algorithm = self.verl_config.algorithm
        padded = batch.select("response_mask", "rm_scores").to_padded_tensor()
        data = DataProto.from_dict(
            tensors={"response_mask": padded["response_mask"], "token_level_rewards": padded["rm_scores"]},
            non_tensors={"uid": np.array(batch["uid"], dtype=object)},
        )
        # verl's V1 trainer keys each trajectory "{uid}_{session}_{turn}"; every response here is one session.
        keys = [f"{uid}_{row}_0" for row, uid in enumerate(batch["uid"])]
        data = compute_advantage_for_multi_trajectories(
            data,
            batch_keys=keys,
            adv_estimator=algorithm.adv_estimator,
            gamma=algorithm.gamma,
            lam=algorithm.lam,
            num_repeat=self.config.samples_per_prompt,
            norm_adv_by_std_in_grpo=algorithm.get("norm_adv_by_std_in_grpo", True),
            config=algorithm,
        )
        batch["advantages"] = response_to_nested(data.batch["advantages"], batch["response_mask"])

    def update_actor(self, batch: Any) -> dict[str, float]:
        """Stage 5: PPO epochs over mini-batches through verl's actor update; returns the reduced metrics."""
        from verl.utils import tensordict_utils as tu

        actor = self.verl_config.actor_rollout_ref.actor
        sequences_per_mini_batch = actor.ppo_mini_batch_size * self.config.samples_per_prompt
        request = batch.select(*_MODEL_INPUTS, "old_log_probs", "advantages")
        tu.assign_non_tensor(
            request,
            calculate_entropy=bool(actor.calculate_entropy or actor.entropy_coeff != 0),
            global_batch_size=sequences_per_mini_batch,
            mini_batch_size=sequences_per_mini_batch,
            epochs=actor.ppo_epochs,
            seed=actor.data_loader_seed,
            dataloader_kwargs={"shuffle": actor.shuffle},
            temperature=self.config.temperature,
        )
        output = self.worker.update_actor(request)
        self.updates_done += self.config.updates_per_step
        return reduce_update_metrics(tu.get(output, "metrics"))

    def sync_weights(self) -> None:
        """Stage 6: give the sampler the engine's weights of ``rollout_staleness`` updates ago (now, if 0).

        With staleness, each step's weights are kept (a copy in the sampler's dtype) until they are due.
        """
        named_tensors, _ = self.engine.get_per_tensor_param()
        if self.config.rollout_staleness == 0:
            self.sampler.load_weights(named_tensors)
            self.sampler_weights_at = self.updates_done
            return
        dtype = _DTYPES[self.config.rollout_dtype]
        snapshot = [(name, tensor.detach().to(dtype=dtype, copy=True)) for name, tensor in named_tensors]
        self._pending_weights.append((self.updates_done, snapshot))
        due = max(0, self.updates_done - self.config.rollout_staleness)
        while self._pending_weights and self._pending_weights[0][0] <= due:
            taken_at, weights = self._pending_weights.pop(0)
            if taken_at == due:
                self.sampler.load_weights(weights)
                self.sampler_weights_at = taken_at


_MODEL_INPUTS = ("prompts", "responses", "input_ids", "attention_mask", "position_ids", "response_mask", "loss_mask")


def build_batch(rollouts: Sequence[Rollout], scores: Sequence[float], uids: Sequence[str]) -> Any:
    """The rollouts in the layout verl's V1 trainer stores them: one jagged (nested) tensor per field, no padding.

    The reward sits on each response's last token (``rm_scores``), where verl's reward loop puts it.
    """
    from tensordict import TensorDict

    if not (len(rollouts) == len(scores) == len(uids)) or not rollouts:
        raise ValueError(f"need equally many rollouts, scores and uids (>= 1); got {len(rollouts)}, {len(scores)}, "
                         f"{len(uids)}")
    columns: dict[str, list[torch.Tensor]] = {name: [] for name in (*_MODEL_INPUTS, "rm_scores")}
    for rollout, score in zip(rollouts, scores):
        if not rollout.response_ids:
            raise ValueError(f"rollout of prompt {rollout.prompt_index} has an empty response")
        if not math.isfinite(score):
            raise ValueError(f"reward {score!r} for prompt {rollout.prompt_index} is not finite")
        prompt = torch.tensor(rollout.prompt_ids, dtype=torch.long)
        response = torch.tensor(rollout.response_ids, dtype=torch.long)
        sequence = torch.cat([prompt, response])
        response_mask = torch.ones_like(response)
        reward = torch.zeros(len(response), dtype=torch.float32)
        reward[-1] = score
        for name, value in (
            ("prompts", prompt),
            ("responses", response),
            ("input_ids", sequence),
            ("attention_mask", torch.ones_like(sequence)),
            ("position_ids", torch.arange(len(sequence))),
            ("response_mask", response_mask),
            ("loss_mask", response_mask),
            ("rm_scores", reward),
        ):
            columns[name].append(value)
    batch = TensorDict(
        {name: torch.nested.as_nested_tensor(values, layout=torch.jagged) for name, values in columns.items()},
        batch_size=[len(rollouts)],
    )
    batch["uid"] = list(uids)
    return batch


def with_log_ratio_diagnostics(loss_fn: Callable, threshold: float = LOG_RATIO_THRESHOLD) -> Callable:
    """Wrap verl's bound ``ppo_loss`` to also report, per micro-batch, how far the policy has moved.

    Adds ``diag/log_ratio_over_<threshold>`` (fraction of response tokens with |log r| > threshold),
    ``diag/log_ratio_abs_max``, ``diag/nonfinite_log_prob_tokens`` and ``diag/nonfinite_loss``; the loss and its
    gradient are verl's, untouched.
    """
    from verl.workers.utils.padding import no_padding_2_padding

    def loss_with_diagnostics(model_output: dict, data: Any, dp_group: Any = None) -> tuple[torch.Tensor, dict]:
        loss, metrics = loss_fn(model_output=model_output, data=data, dp_group=dp_group)
        with torch.no_grad():
            log_prob = no_padding_2_padding(model_output["log_probs"], data).float()
            padded = data.select("response_mask", "old_log_probs").to_padded_tensor()
            mask = padded["response_mask"].bool()
            log_ratio = torch.where(mask, log_prob - padded["old_log_probs"].float(), 0.0)
            finite = torch.isfinite(log_ratio)
            far_off_policy = (log_ratio.abs() > threshold) & mask
            metrics[f"diag/log_ratio_over_{threshold:g}"] = far_off_policy.sum().item() / max(mask.sum().item(), 1)
            metrics["diag/log_ratio_abs_max"] = torch.where(finite, log_ratio.abs(), 0.0).max().item()
            metrics["diag/nonfinite_log_prob_tokens"] = float((~torch.isfinite(log_prob) & mask).sum().item())
            metrics["diag/nonfinite_loss"] = float(not torch.isfinite(loss.detach()).item())
        return loss, metrics

    return loss_with_diagnostics


def reduce_update_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """verl returns one value per micro-batch (or per mini-batch, for grad_norm, lr and the loss); reduce them per
    step: ``*_max`` keys take the max, ``diag/nonfinite*`` counters the sum, everything else the mean.

    Non-finite gradient norms are counted (verl skips the optimizer step for them). verl's ``mfu`` is dropped: it
    divides by a GPU's peak FLOP rate, which means nothing on a CPU.
    """
    from verl.utils.metric.utils import Metric

    reduced: dict[str, float] = {}
    for key, values in metrics.items():
        if key == "mfu":
            continue
        values = [values.aggregate()] if isinstance(values, Metric) else values
        values = values if isinstance(values, list) else [values]
        numbers = np.array([float(v.item() if isinstance(v, torch.Tensor) else v) for v in values], dtype=np.float64)
        name = key if key.startswith(("actor/", "diag/", "perf/")) else f"actor/{key}"
        if key == "grad_norm":
            reduced["actor/grad_norm_max"] = float(np.max(numbers))
            reduced["diag/nonfinite_grad_norm_steps"] = float(np.sum(~np.isfinite(numbers)))
        if key.startswith("diag/nonfinite"):
            reduced[name] = float(np.sum(numbers))
        elif key.endswith("_max"):
            reduced[name] = float(np.max(numbers))
        else:
            reduced[name] = float(np.mean(numbers))
    return reduced


def rollout_metrics(rollouts: Sequence[Rollout], grades: Sequence[Grade]) -> dict[str, float]:
    """Reward, accuracy, format and length statistics of one step's responses."""
    lengths = np.array([len(r.response_ids) for r in rollouts], dtype=np.float64)
    return {
        "reward/mean": float(np.mean([g.score for g in grades])),
        "reward/accuracy": float(np.mean([g.correct for g in grades])),
        "reward/format": float(np.mean([g.formatted for g in grades])),
        "response_length/mean": float(lengths.mean()),
        "response_length/max": float(lengths.max()),
        "response_length/clip_ratio": float(np.mean([r.truncated for r in rollouts])),
    }


def _mix_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**31)


class _timer:
    def __init__(self, sink: dict[str, float], name: str):
        self.sink, self.name = sink, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.sink[self.name] = time.perf_counter() - self.start


def configure_threads(threads: int | None = None) -> int:
    """Use all cores for intra-op parallelism (torch's default can be fewer in containers); returns the count."""
    count = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(count)
    return count
