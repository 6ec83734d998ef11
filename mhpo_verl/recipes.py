"""Training recipes as data: which model, on which engine and cluster layout, trained with which algorithm.

A :class:`Recipe` is one choice along three axes and turns into the Hydra overrides of one verl ``main_ppo`` run:

* **model** (:data:`MODELS`): the paper's two sizes (Qwen2.5-7B-Instruct, Qwen3-4B-Base) and two larger ones
  (Qwen2.5-32B-Instruct dense, Qwen3-30B-A3B mixture-of-experts), each with a single-node FSDP layout and a
  multi-node Megatron layout (tensor / pipeline / context / expert parallel, sequence parallel, vLLM rollout TP);
* **engine**: ``fsdp`` or ``megatron``, which also picks ``configs/mhpo_trainer.yaml`` or
  ``configs/mhpo_megatron_trainer.yaml``;
* **algorithm** (:data:`ALGORITHMS`): MHPO, or one of the baselines it is compared with (GRPO, clip-higher,
  GSPO, SAPO, CISPO). A baseline is a handful of overrides on the same recipe, never a separate copy of it;
* **mode** (:data:`MODES`): verl's synchronous ``main_ppo``, or one of its two asynchronous entry points,
  ``verl.experimental.one_step_off_policy`` and ``verl.experimental.fully_async_policy``, where the rollout runs
  on GPUs of its own and the ratio is taken against the sampler's log-probabilities.

Settings come from the MHPO paper where it states them (maximum response length 2048 for Qwen2.5, 4096 for Qwen3,
no KL term, the loss hyper-parameters in ``configs/mhpo_paper_defaults.yaml``) and otherwise follow verl's own GRPO
math examples (learning rate 1e-6, dynamic batch size, vLLM rollout, remove-padding, activation recompute: gradient
checkpointing for FSDP, Megatron's ``recompute_granularity=full`` for Megatron). The per-GPU memory of every layout
is estimated by :mod:`mhpo_verl.memory` and kept under 80 GB.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from mhpo_verl import ESTIMATOR_NAME, LOSS_NAME
from mhpo_verl.data.catalog import DEFAULT_DATA_DIR, dataset_path
from mhpo_verl.data.vision import ALL_DATASETS as DATASETS

ENGINES = ("fsdp", "megatron")
MODES = ("sync", "one-step-off", "fully-async")
CONFIG_NAMES = {
    ("sync", "fsdp"): "mhpo_trainer",
    ("sync", "megatron"): "mhpo_megatron_trainer",
    ("one-step-off", "fsdp"): "one_step_off_ppo_trainer",
    ("one-step-off", "megatron"): "one_step_off_ppo_megatron_trainer",
    ("fully-async", "fsdp"): "fully_async_ppo_trainer",
    ("fully-async", "megatron"): "fully_async_ppo_megatron_trainer",
}
"""The primary config of each (mode, engine). The asynchronous ones are verl's own, read from the entry point's
``config`` folder: they set ``hydra.searchpath``, which Hydra only takes from a primary config, so they cannot be
included under ours. :data:`ASYNC_CONFIG_OVERRIDES` adds MHPO to them instead."""
ASYNC_CONFIG_OVERRIDES = ("hydra.searchpath=[pkg://verl.trainer.config,pkg://mhpo_verl.configs]", "+mhpo=paper")
"""Package search paths in place of the entry configs' ``file://verl/trainer/config`` (which resolves only inside a
verl checkout), and ``configs/mhpo/paper.yaml``: the same MHPO defaults as ``mhpo_trainer``."""
ENTRY_MODULES = {
    "sync": "verl.trainer.main_ppo",
    "one-step-off": "verl.experimental.one_step_off_policy.main_ppo",
    "fully-async": "verl.experimental.fully_async_policy.fully_async_main",
}
CONFIG_PATH = "pkg://mhpo_verl.configs"
"""Hydra ``--config-path`` of our configs; a package path, so it resolves on any node where the package is installed."""

PLUGIN_MODULE = "mhpo_verl.plugin"
RAY_RUNTIME_ENV: dict[str, dict[str, str]] = {"env_vars": {"VERL_USE_EXTERNAL_MODULES": PLUGIN_MODULE}}
"""Makes every Ray worker import the plugin even where verl's entry-point discovery is off or the package was put on
``PYTHONPATH`` without pip: verl imports the modules named in ``VERL_USE_EXTERNAL_MODULES`` on ``import verl``.
:meth:`Recipe.runtime_env` adds the run's log folders to it."""
DEFAULT_OUTPUT_DIR = "outputs"
"""Checkpoints and logs go under ``<output dir>/{checkpoints,logs,tensorboard}/<project>/<experiment>``; made
absolute where the launcher runs, because verl's workers resolve a relative path against their own working folder."""
DEFAULT_LOGGERS = ("console", "file", "tensorboard")
"""Metrics to the console, a JSON-lines file and TensorBoard (which also shows the logged validation generations:
verl writes those to tensorboard/wandb/... only, never to the file or console loggers)."""

REWARD_FUNCTION = ("pkg://reward_fns", "compute_score")
DATA_FILE_SUFFIXES = (".parquet", ".jsonl", ".json")


class RecipeError(ValueError):
    """A recipe choice that does not exist or cannot work; the message names the value and what was expected."""


@dataclass(frozen=True)
class Architecture:
    """The model facts that constrain parallel layouts and size its memory (from the model's ``config.json``).

    The sizes (hidden, intermediate, vocabulary, ...) are 0 where unknown; the memory estimate is then skipped."""

    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    num_experts: int = 0
    hidden_size: int = 0
    intermediate_size: int = 0
    vocab_size: int = 0
    head_dim: int = 0
    """0: ``hidden_size // num_attention_heads``."""
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    moe_intermediate_size: int = 0
    experts_per_token: int = 0
    vision_parameters: int = 0
    """A vision-language model's vision tower (and projector), counted with the embeddings: not in the layers."""


@dataclass(frozen=True)
class FsdpLayout:
    """One node of ``gpus_per_node`` GPUs, parameters sharded by FSDP, vLLM rollout with ``rollout_tp`` GPUs."""

    rollout_tp: int
    token_budget: int
    """``ppo_max_token_len_per_gpu``: tokens packed into one micro-batch by dynamic batch sizing."""
    offload: bool = False
    strategy: str = "fsdp"
    """``fsdp`` (FSDP1) or ``fsdp2``."""
    rollout_gpu_memory: float = 0.6
    """vLLM's ``gpu_memory_utilization``: the share of each GPU vLLM takes while it generates."""
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
    full_recompute: bool = True
    """Megatron's full activation recompute, one layer per checkpoint (as in verl's Megatron examples): verl's
    Megatron engine ignores ``model.enable_gradient_checkpointing``, and its default recomputes nothing."""
    rollout_gpu_memory: float = 0.6
    """vLLM's ``gpu_memory_utilization``. Without offload the actor's weights, gradients and optimizer state stay
    on the GPU beside vLLM, so the non-offloaded layouts give vLLM less (see :mod:`mhpo_verl.memory`)."""
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
    train_sets: tuple[str, ...] | None = None
    """The datasets this model trains and validates on by default (None: the shared math sets)."""
    val_sets: tuple[str, ...] | None = None
    extra_overrides: tuple[str, ...] = ()
    """What the model needs beyond the shared recipe: a vision-language model's image column."""


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
            "clip-higher",
            "clip-higher: PPO clip 0.2 / 0.28 (DAPO's decoupled clip) and token mean over the batch, no KL; not "
            "full DAPO (no dynamic sampling, overlong shaping, warm-up or weight decay)",
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

RENAMED_ALGORITHMS = {
    "dapo": (
        "'dapo' is now called 'clip-higher': it is DAPO's clip 0.2 / 0.28 with token-mean only. Full DAPO also "
        "needs dynamic sampling (verl-recipe's DAPO trainer filters zero-variance groups and regenerates), which "
        "verl's main_ppo does not run; use --algorithm clip-higher"
    )
}
"""Former names, refused with the reason instead of silently meaning something else."""

VISION_TRAIN_SETS = ("geometry3k",)
VISION_VAL_SETS = ("geometry3k", "mathvista", "mathverse", "mathvision")

MODELS: dict[str, ModelRecipe] = {
    model.name: model
    for model in (
        ModelRecipe(
            name="qwen2.5-7b-instruct",
            hf_path="Qwen/Qwen2.5-7B-Instruct",
            architecture=Architecture(
                num_layers=28,
                num_attention_heads=28,
                num_kv_heads=4,
                hidden_size=3584,
                intermediate_size=18944,
                vocab_size=152064,
                attention_bias=True,
            ),
            max_response_length=2048,
            fsdp=FsdpLayout(rollout_tp=2, token_budget=24576),
            # Actor state stays on the GPU (~28 GB) beside vLLM: vLLM gets 0.4 of the GPU instead of 0.6.
            megatron=MegatronLayout(nnodes=2, tp=2, pp=1, rollout_tp=2, token_budget=24576, rollout_gpu_memory=0.4),
        ),
        ModelRecipe(
            # The paper's VL setting, as verl's Geometry3K example trains it (geometry3k train, `images` column,
            # the processor picked up from the checkpoint by verl in the rollout and the actor). The language model
            # is Qwen2.5-7B's; the vision tower adds 32 blocks of 19.70M parameters (hidden 1280, MLP 3420), the
            # patch embedding (1.51M) and the merger into the LM (44.57M): 676.5M, 8.29B in all as published.
            name="qwen2.5-vl-7b-instruct",
            hf_path="Qwen/Qwen2.5-VL-7B-Instruct",
            architecture=Architecture(
                num_layers=28,
                num_attention_heads=28,
                num_kv_heads=4,
                hidden_size=3584,
                intermediate_size=18944,
                vocab_size=152064,
                attention_bias=True,
                vision_parameters=32 * 19_702_200 + 1_505_280 + 44_574_464,
            ),
            max_response_length=2048,
            max_prompt_length=2048,  # a diagram is up to ~1,000 vision tokens at the processor's default bounds
            fsdp=FsdpLayout(rollout_tp=2, token_budget=24576),
            megatron=MegatronLayout(nnodes=2, tp=2, pp=1, rollout_tp=2, token_budget=24576, rollout_gpu_memory=0.4),
            train_sets=VISION_TRAIN_SETS,
            val_sets=VISION_VAL_SETS,
            extra_overrides=("data.image_key=images",),
        ),
        ModelRecipe(
            name="qwen3-4b-base",
            hf_path="Qwen/Qwen3-4B-Base",
            architecture=Architecture(
                num_layers=36,
                num_attention_heads=32,
                num_kv_heads=8,
                hidden_size=2560,
                intermediate_size=9728,
                vocab_size=151936,
                head_dim=128,
                tie_word_embeddings=True,
            ),
            max_response_length=4096,
            fsdp=FsdpLayout(rollout_tp=1, token_budget=32768),
            # No context parallel: verl's Megatron engine packs budget x CP tokens into a micro-batch and splits them
            # over the CP ranks, so per-GPU activations stay those of the budget; CP only pays for sequences longer
            # than one GPU can hold, and a 5k-token prompt + response is far from that.
            megatron=MegatronLayout(nnodes=2, tp=2, pp=1, rollout_tp=1, token_budget=32768, rollout_gpu_memory=0.5),
        ),
        ModelRecipe(
            name="qwen2.5-32b-instruct",
            hf_path="Qwen/Qwen2.5-32B-Instruct",
            architecture=Architecture(
                num_layers=64,
                num_attention_heads=40,
                num_kv_heads=8,
                hidden_size=5120,
                intermediate_size=27648,
                vocab_size=152064,
                attention_bias=True,
            ),
            max_response_length=2048,
            fsdp=FsdpLayout(rollout_tp=4, token_budget=12288, offload=True, rollout_gpu_memory=0.5),
            megatron=MegatronLayout(
                nnodes=4, tp=8, pp=2, vpp=2, rollout_tp=4, token_budget=16384, rollout_gpu_memory=0.5
            ),
        ),
        ModelRecipe(
            name="qwen3-30b-a3b-base",
            hf_path="Qwen/Qwen3-30B-A3B-Base",
            architecture=Architecture(
                num_layers=48,
                num_attention_heads=32,
                num_kv_heads=4,
                num_experts=128,
                hidden_size=2048,
                intermediate_size=6144,
                vocab_size=151936,
                head_dim=128,
                moe_intermediate_size=768,
                experts_per_token=8,
            ),
            max_response_length=4096,
            # FSDP2, as verl's own run_qwen3_30b_a3b_fsdp.sh.
            fsdp=FsdpLayout(rollout_tp=4, token_budget=32768, offload=True, strategy="fsdp2", rollout_gpu_memory=0.5),
            # 128 experts over 8 expert-parallel ranks; expert TP 1 keeps each expert's GEMMs whole.
            megatron=MegatronLayout(
                nnodes=4, tp=2, pp=2, ep=8, etp=1, rollout_tp=4, token_budget=32768, rollout_gpu_memory=0.5
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
    checkpoints_kept: int = 2
    """``max_actor_ckpt_to_keep``: a 32B / 30B-A3B checkpoint with optimizer state is hundreds of GB."""
    val_n: int = 8
    val_temperature: float = 0.6
    val_top_p: float = 0.95
    val_generations_logged: int = 8
    async_staleness_threshold: float = 0.1
    """fully-async: share of a step's samples that may come from weights older than the last sync (verl's default)."""
    async_sync_every: int = 1
    """fully-async: trainer steps between weight pushes to the rollout (1: as close to one-step-off as it gets)."""


DEFAULT_TRAIN_SETS = ("dapo_math_17k",)
DEFAULT_VAL_SETS = ("math500", "aime24", "aime25", "amc23", "hmmt25")


@dataclass(frozen=True)
class Recipe:
    """One run: a model, an engine, an algorithm and a mode, on ``nnodes`` x ``gpus_per_node`` training GPUs (plus
    ``rollout_nnodes`` x ``rollout_gpus_per_node`` rollout GPUs in the asynchronous modes)."""

    model: ModelRecipe
    engine: str
    algorithm: Algorithm
    nnodes: int
    gpus_per_node: int
    model_path: str
    mode: str = "sync"
    rollout_nnodes: int = 0
    rollout_gpus_per_node: int = 0
    data_dir: str = DEFAULT_DATA_DIR
    train_sets: tuple[str, ...] = DEFAULT_TRAIN_SETS
    val_sets: tuple[str, ...] = DEFAULT_VAL_SETS
    schedule: TrainingSchedule = field(default_factory=TrainingSchedule)
    project_name: str = "mhpo"
    experiment_name: str = ""
    output_dir: str = DEFAULT_OUTPUT_DIR
    loggers: tuple[str, ...] = DEFAULT_LOGGERS
    pass_plugin_env: bool = True
    """Add :meth:`runtime_env` to verl's own ``ray.init``; off under ``ray job submit``, whose job runtime env
    carries it (Ray refuses a driver runtime env that sets the same variable again)."""

    @property
    def config_name(self) -> str:
        return CONFIG_NAMES[self.mode, self.engine]

    @property
    def entry_module(self) -> str:
        return ENTRY_MODULES[self.mode]

    @property
    def config_dir(self) -> str | None:
        """Folder of the primary config for the asynchronous modes (the entry point's own); None: ours."""
        if self.mode == "sync":
            return None
        import importlib.util

        package = self.entry_module.rsplit(".", 1)[0]
        (folder,) = importlib.util.find_spec(package).submodule_search_locations
        return os.path.join(folder, "config")

    @property
    def layout(self) -> FsdpLayout | MegatronLayout:
        return self.model.fsdp if self.engine == "fsdp" else self.model.megatron

    @property
    def n_gpus(self) -> int:
        """Every GPU the run takes: the trainer's and, in the asynchronous modes, the rollout's."""
        return self.nnodes * self.gpus_per_node + self.rollout_nnodes * self.rollout_gpus_per_node

    @property
    def total_nnodes(self) -> int:
        return self.nnodes + self.rollout_nnodes

    @property
    def name(self) -> str:
        suffix = "" if self.mode == "sync" else f"-{self.mode}"
        return self.experiment_name or f"{self.model.name}-{self.engine}-{self.algorithm.name}{suffix}"

    @property
    def run_dirs(self) -> dict[str, str]:
        """Absolute checkpoint, metrics-file and TensorBoard folders of this run."""
        root = os.path.abspath(os.path.expanduser(self.output_dir))
        return {
            kind: os.path.join(root, kind, self.project_name, self.name)
            for kind in ("checkpoints", "logs", "tensorboard")
        }

    def runtime_env(self) -> dict[str, dict[str, str]]:
        """The Ray runtime env of every worker: the plugin, and where verl's file and TensorBoard loggers write
        (by default they write under each worker's own working folder)."""
        dirs = self.run_dirs
        env = {
            **RAY_RUNTIME_ENV["env_vars"],
            "VERL_FILE_LOGGER_PATH": os.path.join(dirs["logs"], "metrics.jsonl"),
            "TENSORBOARD_DIR": dirs["tensorboard"],
        }
        return {"env_vars": env}

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
        schedule, layout = self.schedule, self.layout
        budget = layout.token_budget
        groups = [("config", list(ASYNC_CONFIG_OVERRIDES))] if self.mode != "sync" else []
        groups += [
            ("data", [*self._data_overrides(), *self.model.extra_overrides]),
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
                    f"actor_rollout_ref.rollout.gpu_memory_utilization={layout.rollout_gpu_memory}",
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
                    f"trainer.logger=[{','.join(self.loggers)}]",
                    f"trainer.log_val_generations={schedule.val_generations_logged}",
                    f"trainer.total_epochs={schedule.total_epochs}",
                    f"trainer.test_freq={schedule.test_freq}",
                    f"trainer.save_freq={schedule.save_freq}",
                    f"trainer.default_local_dir={json.dumps(self.run_dirs['checkpoints'])}",
                    f"trainer.max_actor_ckpt_to_keep={schedule.checkpoints_kept}",
                    f"trainer.max_critic_ckpt_to_keep={schedule.checkpoints_kept}",
                    "trainer.val_before_train=True",
                ],
            ),
        ]
        if self.mode != "sync":
            groups.append((f"mode ({self.mode})", self._mode_overrides()))
        if self.pass_plugin_env:
            env = self.runtime_env()["env_vars"]
            groups.append(
                ("ray", [f"+ray_kwargs.ray_init.runtime_env.env_vars.{k}={json.dumps(v)}" for k, v in env.items()])
            )
        return groups

    def overrides(self) -> list[str]:
        return [override for _, group in self.override_groups() for override in group]

    def _data_overrides(self) -> list[str]:
        # Quoted, so that Hydra reads any path as one string.
        train = ",".join(json.dumps(path) for path in self.data_files(self.train_sets, "train"))
        val = ",".join(json.dumps(path) for path in self.data_files(self.val_sets, "test"))
        # fully-async: the rollouter streams one prompt at a time and verl asserts a zero train batch; the trainer's
        # step is `async_training.require_batches` mini-batches instead (see _mode_overrides).
        batch = (
            ["data.train_batch_size=0", "data.gen_batch_size=1"]
            if self.mode == "fully-async"
            else [f"data.train_batch_size={self.schedule.train_batch_size}"]
        )
        return [
            f"data.train_files=[{train}]",
            f"data.val_files=[{val}]",
            *batch,
            f"data.max_prompt_length={self.model.max_prompt_length}",
            f"data.max_response_length={self.model.max_response_length}",
            "data.filter_overlong_prompts=True",
            "data.truncation=error",
        ]

    def _engine_overrides(self) -> list[str]:
        if self.engine == "fsdp":
            layout = self.model.fsdp
            return [
                f"{_ACTOR}.strategy={layout.strategy}",
                f"{_ACTOR}.fsdp_config.param_offload={layout.offload}",
                f"{_ACTOR}.fsdp_config.optimizer_offload={layout.offload}",
                f"actor_rollout_ref.ref.fsdp_config.param_offload={layout.offload}",
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

    def _mode_overrides(self) -> list[str]:
        """What verl's asynchronous entry points need beyond their own configs (as in their example scripts):
        trainer and rollout on separate GPUs (no hybrid engine) and the rollout's pool size."""
        overrides = [
            "actor_rollout_ref.hybrid_engine=False",
            f"rollout.nnodes={self.rollout_nnodes}",
            f"rollout.n_gpus_per_node={self.rollout_gpus_per_node}",
        ]
        if self.mode == "fully-async":
            schedule = self.schedule
            overrides += [
                # The trainer takes `require_batches` mini-batches a step: 4 x 128 prompts, the synchronous recipe's
                # 512 prompts in 4 updates. No cap on the prompts streamed (verl's config default is 100).
                "rollout.total_rollout_steps=null",
                f"async_training.require_batches={schedule.train_batch_size // schedule.ppo_mini_batch_size}",
                f"async_training.staleness_threshold={schedule.async_staleness_threshold}",
                f"async_training.trigger_parameter_sync_step={schedule.async_sync_every}",
                "async_training.partial_rollout=True",
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
    mode: str = "sync",
    rollout_nnodes: int | None = None,
    rollout_gpus_per_node: int | None = None,
    resize: bool = False,
    **options: object,
) -> Recipe:
    """The recipe for ``model`` / ``engine`` / ``algorithm`` / ``mode``.

    ``nnodes`` and ``gpus_per_node`` default to the layout's; another size is refused unless ``resize`` is set,
    which keeps the layout's model-parallel sizes and re-derives only the data-parallel size (the dry run shows it,
    with the memory estimate). The asynchronous modes add a rollout pool of ``rollout_nnodes`` (default 1) x
    ``rollout_gpus_per_node`` (default: ``gpus_per_node``) GPUs. Other keyword options set :class:`Recipe` fields
    (``data_dir``, ``train_sets``, ``output_dir``, ...)."""
    chosen_model = _pick(MODELS, model, "model")
    _pick(dict.fromkeys(ENGINES), engine, "engine")
    if algorithm in RENAMED_ALGORITHMS:
        raise RecipeError(RENAMED_ALGORITHMS[algorithm])
    chosen_algorithm = _pick(ALGORITHMS, algorithm, "algorithm")
    _pick(dict.fromkeys(MODES), mode, "mode")
    layout = chosen_model.fsdp if engine == "fsdp" else chosen_model.megatron
    sizes = (
        ("nnodes", nnodes),
        ("gpus_per_node", gpus_per_node),
        ("rollout_nnodes", rollout_nnodes),
        ("rollout_gpus_per_node", rollout_gpus_per_node),
    )
    for name, value in sizes:
        if value is not None and value < 1:
            raise RecipeError(f"{name} must be a positive integer, got {value}")
    if mode == "sync" and (rollout_nnodes or rollout_gpus_per_node):
        raise RecipeError(
            "a rollout pool (rollout_nnodes / rollout_gpus_per_node) needs --mode one-step-off or "
            f"fully-async; the sync mode shares the training GPUs, got rollout_nnodes={rollout_nnodes}"
        )
    nnodes, gpus_per_node = nnodes or layout.nnodes, gpus_per_node or layout.gpus_per_node
    if (nnodes, gpus_per_node) != (layout.nnodes, layout.gpus_per_node) and not resize:
        raise RecipeError(
            f"{model} on {engine} is laid out for {layout.nnodes} node(s) x {layout.gpus_per_node} GPUs, got "
            f"{nnodes} x {gpus_per_node}: its parallel sizes and memory were chosen for that count. Allocate "
            f"{layout.nnodes} node(s), or pass --resize (NNODES with RESIZE=1 in the scripts) to keep the "
            "model-parallel sizes and re-derive data parallelism (check the dry run's memory estimate)"
        )
    asynchronous = mode != "sync"
    recipe = Recipe(
        model=chosen_model,
        engine=engine,
        algorithm=chosen_algorithm,
        nnodes=nnodes,
        gpus_per_node=gpus_per_node,
        model_path=model_path or chosen_model.hf_path,
        mode=mode,
        rollout_nnodes=(rollout_nnodes or 1) if asynchronous else 0,
        rollout_gpus_per_node=(rollout_gpus_per_node or gpus_per_node) if asynchronous else 0,
        train_sets=chosen_model.train_sets or DEFAULT_TRAIN_SETS,
        val_sets=chosen_model.val_sets or DEFAULT_VAL_SETS,
    )
    return replace(recipe, **options) if options else recipe


def _pick(choices: dict, name: str, what: str):
    if name not in choices:
        raise RecipeError(f"unknown {what} {name!r}; expected one of {sorted(choices)}")
    return choices[name]
