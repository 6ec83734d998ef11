"""Training recipes as data: which model, on which engine and cluster layout, trained with which algorithm.

A :class:`Recipe` is one choice along three axes and turns into the Hydra overrides of one verl ``main_ppo`` run:

* **model** (:data:`MODELS`): the paper's two sizes (Qwen2.5-7B-Instruct, Qwen3-4B-Base) and two larger ones
  (Qwen2.5-32B-Instruct dense, Qwen3-30B-A3B mixture-of-experts), each with a single-node FSDP layout and a
  multi-node Megatron layout (tensor / pipeline / context / expert parallel, sequence parallel, vLLM rollout TP);
* **engine**: ``fsdp`` or ``megatron``, which also picks ``configs/mhpo_trainer.yaml`` or
  ``configs/mhpo_megatron_trainer.yaml``;
* **algorithm** (:data:`ALGORITHMS`): MHPO, or one of the baselines it is compared with (GRPO, DAPO, GSPO, SAPO,
  CISPO). A baseline is a handful of overrides on the same recipe, never a separate copy of it.

Settings come from the MHPO paper where it states them (maximum response length 2048 for Qwen2.5, 4096 for Qwen3,
no KL term, the loss hyper-parameters in ``configs/mhpo_paper_defaults.yaml``) and otherwise follow verl's own GRPO
math examples (learning rate 1e-6, dynamic batch size, vLLM rollout, remove-padding, gradient checkpointing).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from mhpo_verl import ESTIMATOR_NAME, LOSS_NAME
from mhpo_verl.data.catalog import DATASETS, DEFAULT_DATA_DIR, dataset_path

ENGINES = ("fsdp", "megatron")
CONFIG_NAMES = {"fsdp": "mhpo_trainer", "megatron": "mhpo_megatron_trainer"}
CONFIG_PATH = "pkg://mhpo_verl.configs"
"""Hydra ``--config-path`` of our configs; a package path, so it resolves on any node where the package is installed."""

PLUGIN_MODULE = "mhpo_verl.plugin"
RAY_RUNTIME_ENV: dict[str, dict[str, str]] = {"env_vars": {"VERL_USE_EXTERNAL_MODULES": PLUGIN_MODULE}}
"""Makes every Ray worker import the plugin even where verl's entry-point discovery is off or the package was put on
``PYTHONPATH`` without pip: verl imports the modules named in ``VERL_USE_EXTERNAL_MODULES`` on ``import verl``."""

REWARD_FUNCTION = ("pkg://reward_fns", "compute_score")
DATA_FILE_SUFFIXES = (".parquet", ".jsonl", ".json")


class RecipeError(ValueError):
    """A recipe choice that does not exist or cannot work; the message names the value and what was expected."""


@dataclass(frozen=True)
class Architecture:
    """The model facts that constrain parallel layouts (from the model's ``config.json``)."""

    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    num_experts: int = 0


@dataclass(frozen=True)
class FsdpLayout:
    """One node of ``gpus_per_node`` GPUs, parameters sharded by FSDP, vLLM rollout with ``rollout_tp`` GPUs."""

    rollout_tp: int
    token_budget: int
    """``ppo_max_token_len_per_gpu``: tokens packed into one micro-batch by dynamic batch sizing."""
    offload: bool = False
    nnodes: int = 1
    gpus_per_node: int = 8


@dataclass(frozen=True)
class MegatronLayout:
    """Megatron-core parallel sizes of the actor (the reference model inherits them) and the rollout TP."""

    nnodes: int
    tp: int
    pp: int
    rollout_tp: int
    token_budget: int
    cp: int = 1
    vpp: int | None = None
    ep: int = 1
    etp: int | None = None
    sequence_parallel: bool = True
    offload: bool = False
    full_recompute: bool = False
    gpus_per_node: int = 8


@dataclass(frozen=True)
class ModelRecipe:
    name: str
    hf_path: str
    architecture: Architecture
    max_response_length: int
    fsdp: FsdpLayout
    megatron: MegatronLayout
    max_prompt_length: int = 1024
    rollout_gpu_memory: float = 0.6


@dataclass(frozen=True)
class Algorithm:
    name: str
    description: str
    overrides: tuple[str, ...]


_ACTOR = "actor_rollout_ref.actor"
_NO_KL = (f"{_ACTOR}.use_kl_loss=False",)
_GROUP_ADVANTAGE = ("algorithm.adv_estimator=grpo",)

ALGORITHMS: dict[str, Algorithm] = {
    algorithm.name: algorithm
    for algorithm in (
        Algorithm(
            "mhpo",
            "MHPO: log-fidelity modulator + decoupled hazard penalty, paper defaults, no KL",
            (
                f"{_ACTOR}.policy_loss.loss_mode={LOSS_NAME}",
                f"algorithm.adv_estimator={ESTIMATOR_NAME}",
                f"{_ACTOR}.loss_agg_mode=seq-mean-token-mean",
                *_NO_KL,
            ),
        ),
        Algorithm(
            "grpo",
            "GRPO: PPO clip 0.2, per-sequence token mean, KL to the reference (low_var_kl 0.001)",
            (
                f"{_ACTOR}.policy_loss.loss_mode=vanilla",
                f"{_ACTOR}.clip_ratio_low=0.2",
                f"{_ACTOR}.clip_ratio_high=0.2",
                f"{_ACTOR}.loss_agg_mode=seq-mean-token-mean",
                f"{_ACTOR}.use_kl_loss=True",
                f"{_ACTOR}.kl_loss_coef=0.001",
                f"{_ACTOR}.kl_loss_type=low_var_kl",
                *_GROUP_ADVANTAGE,
            ),
        ),
        Algorithm(
            "dapo",
            "DAPO clip-higher: PPO clip 0.2 / 0.28, token mean over the batch, no KL",
            (
                f"{_ACTOR}.policy_loss.loss_mode=vanilla",
                f"{_ACTOR}.clip_ratio_low=0.2",
                f"{_ACTOR}.clip_ratio_high=0.28",
                f"{_ACTOR}.loss_agg_mode=token-mean",
                *_NO_KL,
                *_GROUP_ADVANTAGE,
            ),
        ),
        Algorithm(
            "gspo",
            "GSPO: sequence-level ratio clipped to 3e-4 / 4e-4, per-sequence token mean, no KL",
            (
                f"{_ACTOR}.policy_loss.loss_mode=gspo",
                f"{_ACTOR}.clip_ratio_low=0.0003",
                f"{_ACTOR}.clip_ratio_high=0.0004",
                f"{_ACTOR}.loss_agg_mode=seq-mean-token-mean",
                *_NO_KL,
                *_GROUP_ADVANTAGE,
            ),
        ),
        Algorithm(
            "sapo",
            "SAPO: soft sigmoid gate, tau_pos 1.0 / tau_neg 1.05, per-sequence token mean, no KL",
            (
                f"{_ACTOR}.policy_loss.loss_mode=sapo",
                f"{_ACTOR}.tau_pos=1.0",
                f"{_ACTOR}.tau_neg=1.05",
                f"{_ACTOR}.loss_agg_mode=seq-mean-token-mean",
                *_NO_KL,
                *_GROUP_ADVANTAGE,
            ),
        ),
        Algorithm(
            "cispo",
            "CISPO: clipped, detached IS weight on log-prob (upper 0.2, no lower clip), token mean, no KL",
            (
                f"{_ACTOR}.policy_loss.loss_mode=cispo",
                f"{_ACTOR}.clip_ratio_low=10.0",
                f"{_ACTOR}.clip_ratio_high=0.2",
                f"{_ACTOR}.loss_agg_mode=token-mean",
                *_NO_KL,
                *_GROUP_ADVANTAGE,
            ),
        ),
    )
}

MODELS: dict[str, ModelRecipe] = {
    model.name: model
    for model in (
        ModelRecipe(
            name="qwen2.5-7b-instruct",
            hf_path="Qwen/Qwen2.5-7B-Instruct",
            architecture=Architecture(num_layers=28, num_attention_heads=28, num_kv_heads=4),
            max_response_length=2048,
            fsdp=FsdpLayout(rollout_tp=2, token_budget=24576),
            megatron=MegatronLayout(nnodes=2, tp=2, pp=1, rollout_tp=2, token_budget=24576),
        ),
        ModelRecipe(
            name="qwen3-4b-base",
            hf_path="Qwen/Qwen3-4B-Base",
            architecture=Architecture(num_layers=36, num_attention_heads=32, num_kv_heads=8),
            max_response_length=4096,
            fsdp=FsdpLayout(rollout_tp=1, token_budget=32768),
            # Context parallel halves the activation memory of the long (4k) responses.
            megatron=MegatronLayout(nnodes=2, tp=2, pp=1, cp=2, rollout_tp=1, token_budget=32768),
        ),
        ModelRecipe(
            name="qwen2.5-32b-instruct",
            hf_path="Qwen/Qwen2.5-32B-Instruct",
            architecture=Architecture(num_layers=64, num_attention_heads=40, num_kv_heads=8),
            max_response_length=2048,
            rollout_gpu_memory=0.5,
            fsdp=FsdpLayout(rollout_tp=4, token_budget=12288, offload=True),
            megatron=MegatronLayout(
                nnodes=4, tp=8, pp=2, vpp=2, rollout_tp=4, token_budget=16384, full_recompute=True
            ),
        ),
        ModelRecipe(
            name="qwen3-30b-a3b-base",
            hf_path="Qwen/Qwen3-30B-A3B-Base",
            architecture=Architecture(num_layers=48, num_attention_heads=32, num_kv_heads=4, num_experts=128),
            max_response_length=4096,
            rollout_gpu_memory=0.5,
            fsdp=FsdpLayout(rollout_tp=4, token_budget=32768, offload=True),
            # 128 experts over 8 expert-parallel ranks; expert TP 1 keeps each expert's GEMMs whole.
            megatron=MegatronLayout(
                nnodes=4, tp=2, pp=2, ep=8, etp=1, rollout_tp=4, token_budget=32768, full_recompute=True
            ),
        ),
    )
}


@dataclass(frozen=True)
class TrainingSchedule:
    """Batch sizes, sampling and schedule shared by every model (verl's GRPO math examples, 4 updates per batch:
    MHPO acts on the importance ratio, which only leaves 1 when a rollout batch feeds several mini-batches)."""

    train_batch_size: int = 512
    ppo_mini_batch_size: int = 128
    rollout_n: int = 8
    learning_rate: float = 1e-6
    total_epochs: int = 10
    test_freq: int = 10
    save_freq: int = 50
    val_n: int = 8
    val_temperature: float = 0.6
    val_top_p: float = 0.95


DEFAULT_TRAIN_SETS = ("dapo_math_17k",)
DEFAULT_VAL_SETS = ("math500", "aime24", "aime25", "amc23", "hmmt25")


@dataclass(frozen=True)
class Recipe:
    """One run: a model, an engine and an algorithm, on ``nnodes`` x ``gpus_per_node`` GPUs."""

    model: ModelRecipe
    engine: str
    algorithm: Algorithm
    nnodes: int
    gpus_per_node: int
    model_path: str
    data_dir: str = DEFAULT_DATA_DIR
    train_sets: tuple[str, ...] = DEFAULT_TRAIN_SETS
    val_sets: tuple[str, ...] = DEFAULT_VAL_SETS
    schedule: TrainingSchedule = field(default_factory=TrainingSchedule)
    project_name: str = "mhpo"
    experiment_name: str = ""
    pass_plugin_env: bool = True
    """Add :data:`RAY_RUNTIME_ENV` to verl's own ``ray.init``; off under ``ray job submit``, whose job runtime env
    carries it (Ray refuses a driver runtime env that sets the same variable again)."""

    @property
    def config_name(self) -> str:
        return CONFIG_NAMES[self.engine]

    @property
    def n_gpus(self) -> int:
        return self.nnodes * self.gpus_per_node

    @property
    def name(self) -> str:
        return self.experiment_name or f"{self.model.name}-{self.engine}-{self.algorithm.name}"

    def data_files(self, names: Sequence[str], split: str) -> list[str]:
        """Paths of converted splits (``~`` expanded here, where the data was converted), or given file paths."""
        files = []
        for name in names:
            if name in DATASETS:
                wanted = split if split in DATASETS[name].splits else DATASETS[name].splits[0]
                files.append(os.path.expanduser(str(dataset_path(self.data_dir, name, wanted))))
            elif name.endswith(DATA_FILE_SUFFIXES):
                files.append(os.path.expanduser(name))
            else:
                raise RecipeError(
                    f"{name!r} is neither a dataset ({sorted(DATASETS)}) nor a data file ({DATA_FILE_SUFFIXES})"
                )
        return files

    def override_groups(self) -> list[tuple[str, list[str]]]:
        """The Hydra overrides of this run, grouped for reading: data, model, actor, rollout, ref, ... ."""
        model, schedule = self.model, self.schedule
        layout = self.model.fsdp if self.engine == "fsdp" else self.model.megatron
        budget = layout.token_budget
        groups = [
            ("data", self._data_overrides()),
            (
                "model",
                [
                    f"actor_rollout_ref.model.path={self.model_path}",
                    "actor_rollout_ref.model.use_remove_padding=True",
                    "actor_rollout_ref.model.enable_gradient_checkpointing=True",
                ],
            ),
            (
                "actor",
                [
                    f"{_ACTOR}.optim.lr={schedule.learning_rate}",
                    f"{_ACTOR}.ppo_mini_batch_size={schedule.ppo_mini_batch_size}",
                    f"{_ACTOR}.use_dynamic_bsz=True",
                    f"{_ACTOR}.ppo_max_token_len_per_gpu={budget}",
                    f"{_ACTOR}.entropy_coeff=0",
                    *self._engine_overrides(),
                ],
            ),
            (
                "rollout",
                [
                    "actor_rollout_ref.rollout.name=vllm",
                    f"actor_rollout_ref.rollout.tensor_model_parallel_size={layout.rollout_tp}",
                    f"actor_rollout_ref.rollout.gpu_memory_utilization={model.rollout_gpu_memory}",
                    f"actor_rollout_ref.rollout.n={schedule.rollout_n}",
                    "actor_rollout_ref.rollout.temperature=1.0",
                    "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True",
                    f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={budget}",
                    "actor_rollout_ref.rollout.val_kwargs.do_sample=True",
                    f"actor_rollout_ref.rollout.val_kwargs.n={schedule.val_n}",
                    f"actor_rollout_ref.rollout.val_kwargs.temperature={schedule.val_temperature}",
                    f"actor_rollout_ref.rollout.val_kwargs.top_p={schedule.val_top_p}",
                ],
            ),
            (
                "ref",
                [
                    "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True",
                    f"actor_rollout_ref.ref.log_prob_max_token_len_per_gpu={budget}",
                ],
            ),
            (
                "reward",
                [
                    f"reward.custom_reward_function.path={REWARD_FUNCTION[0]}",
                    f"reward.custom_reward_function.name={REWARD_FUNCTION[1]}",
                ],
            ),
            (f"algorithm ({self.algorithm.name})", list(self.algorithm.overrides)),
            (
                "trainer",
                [
                    f"trainer.nnodes={self.nnodes}",
                    f"trainer.n_gpus_per_node={self.gpus_per_node}",
                    f"trainer.project_name={self.project_name}",
                    f"trainer.experiment_name={self.name}",
                    "trainer.logger=[console]",
                    f"trainer.total_epochs={schedule.total_epochs}",
                    f"trainer.test_freq={schedule.test_freq}",
                    f"trainer.save_freq={schedule.save_freq}",
                    "trainer.val_before_train=True",
                ],
            ),
        ]
        if self.pass_plugin_env:
            env = RAY_RUNTIME_ENV["env_vars"]
            groups.append(("ray", [f"+ray_kwargs.ray_init.runtime_env.env_vars.{k}={v}" for k, v in env.items()]))
        return groups

    def overrides(self) -> list[str]:
        return [override for _, group in self.override_groups() for override in group]

    def _data_overrides(self) -> list[str]:
        # Quoted, so that Hydra reads any path as one string.
        train = ",".join(json.dumps(path) for path in self.data_files(self.train_sets, "train"))
        val = ",".join(json.dumps(path) for path in self.data_files(self.val_sets, "test"))
        return [
            f"data.train_files=[{train}]",
            f"data.val_files=[{val}]",
            f"data.train_batch_size={self.schedule.train_batch_size}",
            f"data.max_prompt_length={self.model.max_prompt_length}",
            f"data.max_response_length={self.model.max_response_length}",
            "data.filter_overlong_prompts=True",
            "data.truncation=error",
        ]

    def _engine_overrides(self) -> list[str]:
        if self.engine == "fsdp":
            offload = self.model.fsdp.offload
            return [
                f"{_ACTOR}.fsdp_config.param_offload={offload}",
                f"{_ACTOR}.fsdp_config.optimizer_offload={offload}",
                f"actor_rollout_ref.ref.fsdp_config.param_offload={offload}",
            ]
        layout = self.model.megatron
        megatron = f"{_ACTOR}.megatron"
        overrides = [
            f"{megatron}.tensor_model_parallel_size={layout.tp}",
            f"{megatron}.pipeline_model_parallel_size={layout.pp}",
            f"{megatron}.virtual_pipeline_model_parallel_size={_null(layout.vpp)}",
            f"{megatron}.context_parallel_size={layout.cp}",
            f"{megatron}.expert_model_parallel_size={layout.ep}",
            f"{megatron}.expert_tensor_parallel_size={_null(layout.etp)}",
            f"{megatron}.sequence_parallel={layout.sequence_parallel}",
            f"{megatron}.param_offload={layout.offload}",
            f"{megatron}.optimizer_offload={layout.offload}",
        ]
        if layout.full_recompute:
            overrides += [
                f"{megatron}.override_transformer_config.recompute_granularity=full",
                f"{megatron}.override_transformer_config.recompute_method=uniform",
                f"{megatron}.override_transformer_config.recompute_num_layers=1",
            ]
        return overrides


def _null(value: int | None) -> str:
    return "null" if value is None else str(value)


def build_recipe(
    model: str,
    engine: str,
    algorithm: str = "mhpo",
    *,
    nnodes: int | None = None,
    gpus_per_node: int | None = None,
    model_path: str | None = None,
    **options: object,
) -> Recipe:
    """The recipe for ``model`` / ``engine`` / ``algorithm``; ``nnodes`` and ``gpus_per_node`` default to the
    layout's. Other keyword options set :class:`Recipe` fields (``data_dir``, ``train_sets``, ...)."""
    chosen_model = _pick(MODELS, model, "model")
    _pick(dict.fromkeys(ENGINES), engine, "engine")
    chosen_algorithm = _pick(ALGORITHMS, algorithm, "algorithm")
    layout = chosen_model.fsdp if engine == "fsdp" else chosen_model.megatron
    for name, value in (("nnodes", nnodes), ("gpus_per_node", gpus_per_node)):
        if value is not None and value < 1:
            raise RecipeError(f"{name} must be a positive integer, got {value}")
    recipe = Recipe(
        model=chosen_model,
        engine=engine,
        algorithm=chosen_algorithm,
        nnodes=nnodes or layout.nnodes,
        gpus_per_node=gpus_per_node or layout.gpus_per_node,
        model_path=model_path or chosen_model.hf_path,
    )
    return replace(recipe, **options) if options else recipe


def _pick(choices: dict, name: str, what: str):
    if name not in choices:
        raise RecipeError(f"unknown {what} {name!r}; expected one of {sorted(choices)}")
    return choices[name]
