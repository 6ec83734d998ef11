"""Checks that a composed verl config can start, run on a machine without GPUs before a job ever queues for them.

:func:`compose` builds the config exactly as ``python -m verl.trainer.main_ppo --config-path=pkg://mhpo_verl.configs
--config-name=... <overrides>`` would. :func:`preflight` then runs, in order:

1. verl's own conversion of the actor, rollout, reference and algorithm parts to its config dataclasses
   (``omega_conf_to_dataclass``, which also validates them);
2. verl's ``validate_config``, as the driver runs it first thing;
3. checks verl leaves to the first training step or to the workers on the GPUs: the loss and advantage estimator
   names are registered, Megatron's parallel sizes divide the GPUs and the model (layers, heads, experts), the
   rollout tensor parallel size fits, batch sizes split evenly over data-parallel ranks, a whole prompt plus
   response fits the dynamic-batch token budgets, the reward function imports, and the data files exist;
4. the per-GPU memory estimate of :mod:`mhpo_verl.memory` against ``gpu_memory_gb`` (a warning above it), and the
   checkpoint folder: absolute on a multi-node run (workers resolve a relative one against their own folder).

The asynchronous modes compose verl's own entry config (:func:`compose` with ``config_dir``), apply what their
``main`` does to it before training (:func:`prepare_for_entry`) and add the asserts their trainers make.

Each check yields :class:`Finding` lines; an ``error`` means the run would fail, a ``warning`` that it may not do
what was meant.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mhpo_verl import memory
from mhpo_verl.recipes import Architecture

CONFIG_MODULE = "mhpo_verl.configs"
DEFAULT_GPU_MEMORY_GB = 80.0
BUILT_IN_ESTIMATORS = ("gae", "grpo")
"""Estimators verl's trainer dispatches before looking at its registry."""


@dataclass(frozen=True)
class Finding:
    level: str  # "ok", "warning" or "error"
    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.level:<7} {self.check}: {self.message}"


def compose(config_name: str, overrides: Sequence[str], config_dir: str | None = None) -> DictConfig:
    """The config ``main_ppo`` would receive for ``--config-path=pkg://mhpo_verl.configs --config-name=config_name``,
    or, with ``config_dir``, the config an entry point whose ``@hydra.main`` reads that folder would receive."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    if config_dir is None:
        context = initialize_config_module(config_module=CONFIG_MODULE, version_base=None)
    else:
        context = initialize_config_dir(config_dir=config_dir, version_base=None)
    with context:
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def prepare_for_entry(config: DictConfig, mode: str) -> DictConfig:
    """What the asynchronous entry points' ``main`` does to the composed config before training: copy the rollout
    pool's size into the rollout config (both), and migrate legacy reward settings (fully-async)."""
    if mode == "sync":
        return config
    config.actor_rollout_ref.rollout.nnodes = config.rollout.nnodes
    config.actor_rollout_ref.rollout.n_gpus_per_node = config.rollout.n_gpus_per_node
    if mode == "fully-async":
        from verl.experimental.reward_loop import migrate_legacy_reward_impl

        config = migrate_legacy_reward_impl(config)
    return config


def architecture_from_model_dir(path: str) -> Architecture | None:
    """Layer, head and expert counts from a local Hugging Face model folder's ``config.json``; None when there is no
    such file or it lacks the counts (the shape checks are then skipped with a warning)."""
    config_file = Path(path).expanduser() / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config = config.get("text_config", config)
    try:
        heads = int(config["num_attention_heads"])
        expert_keys = ("num_experts", "num_local_experts", "n_routed_experts")
        experts = next((config[key] for key in expert_keys if config.get(key)), 0)
        return Architecture(
            num_layers=int(config["num_hidden_layers"]),
            num_attention_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            num_experts=int(experts),
            hidden_size=int(config.get("hidden_size") or 0),
            intermediate_size=int(config.get("intermediate_size") or 0),
            vocab_size=int(config.get("vocab_size") or 0),
            head_dim=int(config.get("head_dim") or 0),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            attention_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
            moe_intermediate_size=int(config.get("moe_intermediate_size") or 0),
            experts_per_token=int(config.get("num_experts_per_tok") or 0),
        )
    except (KeyError, TypeError, ValueError):
        return None


def preflight(
    config: DictConfig,
    architecture: Architecture | None,
    *,
    mode: str = "sync",
    gpu_memory_gb: float = DEFAULT_GPU_MEMORY_GB,
) -> list[Finding]:
    """All findings for ``config`` (as :func:`prepare_for_entry` left it for ``mode``); ``architecture`` (None when
    unknown) enables the model-shape checks and the memory estimate."""
    from verl.trainer.ppo.utils import need_reference_policy

    uses_reference = bool(need_reference_policy(config))
    with warnings.catch_warnings():
        # verl warns about settings it adjusts (critic off for GRPO-style estimators, SP off at TP 1); the checks
        # below report what matters in their own words.
        warnings.simplefilter("ignore")
        findings = list(_dataclasses(config, uses_reference))
        if mode != "fully-async":  # fully_async_main never calls validate_config; its trainers assert instead
            findings += _verl_validate(config)
        findings += _entry_asserts(config, mode)
        findings += _registries(config)
        findings += _layout(config, architecture, uses_reference)
        findings += _batches(config, mode)
        findings += _token_budgets(config, uses_reference)
        findings += _memory(config, architecture, uses_reference, gpu_memory_gb)
        findings += _checkpoints(config)
        findings += _reward_function(config)
        findings += _data_files(config)
        return findings


def _entry_asserts(config: DictConfig, mode: str) -> list[Finding]:
    """The asserts verl's asynchronous trainers make when they start (one_step_off_policy/ray_trainer.py,
    fully_async_policy/fully_async_{trainer,rollouter}.py, separation/utils.py), as findings."""
    if mode == "sync":
        return []
    rollout = config.actor_rollout_ref.rollout
    wanted = [
        ("actor_rollout_ref.hybrid_engine", not config.actor_rollout_ref.hybrid_engine, "False"),
        ("actor_rollout_ref.rollout.mode", rollout.mode == "async", "async"),
        ("actor_rollout_ref.rollout.calculate_log_probs", bool(rollout.calculate_log_probs), "True"),
        ("rollout.nnodes", config.rollout.nnodes > 0, "> 0"),
        ("rollout.n_gpus_per_node", config.rollout.n_gpus_per_node > 0, "> 0"),
    ]
    if mode == "fully-async":
        training = config.async_training
        wanted += [
            ("data.train_batch_size", config.data.train_batch_size == 0, "0 (the rollouter streams prompts)"),
            ("data.gen_batch_size", config.data.gen_batch_size == 1, "1"),
            ("async_training.staleness_threshold", training.staleness_threshold >= 0, ">= 0"),
            ("async_training.trigger_parameter_sync_step", training.trigger_parameter_sync_step >= 1, ">= 1"),
            ("async_training.require_batches", training.require_batches >= 1, ">= 1"),
        ]
    problems = [
        Finding("error", mode, f"{key} = {OmegaConf.select(config, key)} but verl's {mode} trainer needs {need}")
        for key, ok, need in wanted
        if not ok
    ]
    return problems or [Finding("ok", mode, "verl's asynchronous trainer settings hold (separate rollout pool)")]


def errors(findings: Sequence[Finding]) -> list[Finding]:
    return [finding for finding in findings if finding.level == "error"]


def _first_line(error: BaseException) -> str:
    cause = error.__cause__ or error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"


def _dataclasses(config: DictConfig, uses_reference: bool) -> Iterator[Finding]:
    from verl.utils.config import omega_conf_to_dataclass

    parts = {
        "actor": config.actor_rollout_ref.actor,
        "rollout": config.actor_rollout_ref.rollout,
        "algorithm": config.algorithm,
    }
    if uses_reference:
        parts["ref"] = _reference_as_actor_config(config)
    built = []
    for name, part in parts.items():
        try:
            built.append(f"{name}={type(omega_conf_to_dataclass(part)).__name__}")
        except Exception as error:  # Hydra wraps the dataclass's own ValueError/AssertionError
            yield Finding("error", "dataclasses", f"{name}: {_first_line(error)}")
            return
    yield Finding("ok", "dataclasses", ", ".join(built))


_REFERENCE_TO_ACTOR_KEYS = {
    "log_prob_micro_batch_size": "ppo_micro_batch_size",
    "log_prob_micro_batch_size_per_gpu": "ppo_micro_batch_size_per_gpu",
    "log_prob_use_dynamic_bsz": "use_dynamic_bsz",
    "log_prob_max_token_len_per_gpu": "ppo_max_token_len_per_gpu",
}
"""verl's worker renames these reference keys to the actor's names before building the reference's ActorConfig."""


def _reference_as_actor_config(config: DictConfig) -> DictConfig:
    reference = OmegaConf.to_container(config.actor_rollout_ref.ref, resolve=True)
    for old, new in _REFERENCE_TO_ACTOR_KEYS.items():
        reference[new] = reference.pop(old, None)
    reference["ppo_mini_batch_size"] = config.actor_rollout_ref.actor.ppo_mini_batch_size
    return OmegaConf.create(reference)


def _verl_validate(config: DictConfig) -> list[Finding]:
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            validate_config(
                config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config)
            )
    except Exception as error:  # verl signals failures with AssertionError, ValueError and Hydra errors
        return [Finding("error", "verl validate_config", _first_line(error))]
    return [Finding("ok", "verl validate_config", "passed")]


def _registries(config: DictConfig) -> list[Finding]:
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, POLICY_LOSS_REGISTRY

    findings = []
    loss_mode = config.actor_rollout_ref.actor.policy_loss.loss_mode
    if loss_mode in POLICY_LOSS_REGISTRY:
        findings.append(Finding("ok", "policy loss", f"loss_mode={loss_mode} is registered"))
    else:
        findings.append(
            Finding(
                "error",
                "policy loss",
                f"loss_mode={loss_mode!r} is not registered in this process (have {sorted(POLICY_LOSS_REGISTRY)}); "
                "for mhpo, check `python -m mhpo_verl doctor`",
            )
        )
    estimator = config.algorithm.adv_estimator
    if estimator in ADV_ESTIMATOR_REGISTRY or estimator in BUILT_IN_ESTIMATORS:
        findings.append(Finding("ok", "advantage estimator", f"adv_estimator={estimator} is registered"))
    else:
        findings.append(
            Finding(
                "error",
                "advantage estimator",
                f"adv_estimator={estimator!r} is not registered (have {sorted(ADV_ESTIMATOR_REGISTRY)}); verl "
                "would only fail at the first training step",
            )
        )
    return findings


def n_gpus(config: DictConfig) -> int:
    """Training GPUs (the actor's world size)."""
    return int(config.trainer.nnodes) * int(config.trainer.n_gpus_per_node)


def rollout_gpus(config: DictConfig) -> int:
    """GPUs vLLM runs on: the training GPUs (hybrid engine), or the rollout pool of the asynchronous modes."""
    if config.actor_rollout_ref.hybrid_engine:
        return n_gpus(config)
    return int(config.rollout.nnodes) * int(config.rollout.n_gpus_per_node)


def data_parallel_size(config: DictConfig) -> int:
    """Data-parallel ranks of the actor: GPUs over the model-parallel group (TP x PP x CP, or Ulysses SP)."""
    actor = config.actor_rollout_ref.actor
    if actor.strategy == "megatron":
        group = actor.megatron.tensor_model_parallel_size * actor.megatron.pipeline_model_parallel_size
        group *= actor.megatron.context_parallel_size
    else:
        group = ulysses_size(actor)
    return max(n_gpus(config) // group, 1)


def ulysses_size(actor: Any) -> int:
    """Ulysses sequence-parallel size of an FSDP actor: ``fsdp_config``'s, or the deprecated top-level key's."""
    key = "ulysses_sequence_parallel_size"
    sizes = [actor.get(key), actor.get("fsdp_config", {}).get(key)]
    return max([int(size) for size in sizes if size] or [1])


def _layout(config: DictConfig, architecture: Architecture | None, uses_reference: bool) -> list[Finding]:
    findings: list[Finding] = []
    gpus = n_gpus(config)
    actor = config.actor_rollout_ref.actor
    if actor.strategy == "megatron":
        roles = [("actor", actor.megatron)]
        if uses_reference:
            roles.append(("ref", config.actor_rollout_ref.ref.megatron))
        for role, megatron in roles:
            findings += _megatron_layout(role, megatron, gpus, architecture)
    else:
        findings += _ulysses_layout(actor, gpus, architecture)
    findings += _rollout_layout(config, rollout_gpus(config), architecture)
    if architecture is None:
        findings.append(
            Finding("warning", "model shape", "unknown architecture: layer/head/expert divisibility not checked")
        )
    if not any(finding.level == "error" for finding in findings):
        findings.append(Finding("ok", "parallel layout", _layout_summary(config)))
    return findings


def _layout_summary(config: DictConfig) -> str:
    actor, rollout = config.actor_rollout_ref.actor, config.actor_rollout_ref.rollout
    text = f"{config.trainer.nnodes} node(s) x {config.trainer.n_gpus_per_node} GPUs, "
    if actor.strategy == "megatron":
        m = actor.megatron
        vpp = m.virtual_pipeline_model_parallel_size
        text += (
            f"Megatron TP {m.tensor_model_parallel_size} PP {m.pipeline_model_parallel_size}"
            f"{f' (VPP {vpp})' if vpp else ''} CP {m.context_parallel_size} EP {m.expert_model_parallel_size}"
            f" SP {m.sequence_parallel and m.tensor_model_parallel_size > 1}, "
        )
    else:
        text += f"{actor.strategy.upper()}, "
    text += f"DP {data_parallel_size(config)}, rollout TP {rollout.tensor_model_parallel_size}"
    if not config.actor_rollout_ref.hybrid_engine:
        text += f" on a separate pool of {config.rollout.nnodes} node(s) x {config.rollout.n_gpus_per_node} GPUs"
    return text


def _megatron_layout(role: str, megatron: Any, gpus: int, arch: Architecture | None) -> list[Finding]:
    tp, pp = megatron.tensor_model_parallel_size, megatron.pipeline_model_parallel_size
    cp, ep = megatron.context_parallel_size, megatron.expert_model_parallel_size
    vpp = megatron.virtual_pipeline_model_parallel_size
    etp = megatron.expert_tensor_parallel_size or tp  # Megatron-core's default for an unset expert TP
    problems = []
    sizes = {"tensor": tp, "pipeline": pp, "context": cp, "expert": ep, "expert tensor": etp}
    problems += [f"{name} parallel size must be >= 1, got {size}" for name, size in sizes.items() if size < 1]
    if problems:
        return [Finding("error", f"{role} megatron", problem) for problem in problems]
    if gpus % (tp * pp * cp):
        problems.append(f"world size {gpus} is not divisible by TP*PP*CP = {tp}*{pp}*{cp} = {tp * pp * cp}")
    if ep > 1 and gpus % (etp * ep * pp):
        problems.append(f"world size {gpus} is not divisible by ETP*EP*PP = {etp}*{ep}*{pp} = {etp * ep * pp}")
    if vpp and pp == 1:
        problems.append(f"virtual pipeline size {vpp} needs pipeline parallel size > 1, got PP {pp}")
    if arch is not None:
        stages = pp * (vpp or 1)
        if arch.num_layers % stages:
            problems.append(f"{arch.num_layers} layers do not split into PP*VPP = {stages} equal stages")
        if arch.num_attention_heads % tp or arch.num_kv_heads % tp:
            problems.append(
                f"TP {tp} must divide the {arch.num_attention_heads} attention heads and {arch.num_kv_heads} KV heads"
            )
        if ep > 1 and not arch.num_experts:
            problems.append(f"expert parallel size {ep} on a dense model (no experts)")
        elif arch.num_experts and arch.num_experts % ep:
            problems.append(f"EP {ep} must divide the {arch.num_experts} experts")
    findings = [Finding("error", f"{role} megatron", problem) for problem in problems]
    if megatron.sequence_parallel and tp == 1:
        findings.append(Finding("warning", f"{role} megatron", "sequence_parallel has no effect with TP 1"))
    return findings


def _ulysses_layout(actor: Any, gpus: int, arch: Architecture | None) -> list[Finding]:
    sp = ulysses_size(actor)
    problems = []
    if gpus % sp:
        problems.append(f"world size {gpus} is not divisible by Ulysses SP {sp}")
    if arch is not None and sp > 1 and arch.num_attention_heads % sp:
        problems.append(f"Ulysses SP {sp} must divide the {arch.num_attention_heads} attention heads")
    return [Finding("error", "actor fsdp", problem) for problem in problems]


def _rollout_layout(config: DictConfig, gpus: int, arch: Architecture | None) -> list[Finding]:
    rollout = config.actor_rollout_ref.rollout
    tp = rollout.tensor_model_parallel_size
    replica = tp * rollout.data_parallel_size * rollout.pipeline_model_parallel_size
    findings = []
    if replica < 1 or gpus % replica:
        findings.append(Finding("error", "rollout", f"world size {gpus} is not divisible by one replica's {replica}"))
    hybrid = config.actor_rollout_ref.hybrid_engine
    per_node = config.trainer.n_gpus_per_node if hybrid else config.rollout.n_gpus_per_node
    if tp > per_node:
        findings.append(Finding("warning", "rollout", f"rollout TP {tp} spans nodes ({per_node} GPUs each)"))
    if arch is not None and arch.num_attention_heads % tp:
        findings.append(
            Finding("error", "rollout", f"vLLM TP {tp} must divide the {arch.num_attention_heads} attention heads")
        )
    return findings


def _batches(config: DictConfig, mode: str = "sync") -> list[Finding]:
    actor = config.actor_rollout_ref.actor
    train, mini, n = config.data.train_batch_size, actor.ppo_mini_batch_size, config.actor_rollout_ref.rollout.n
    if mode == "fully-async":  # a trainer step is require_batches mini-batches of streamed prompts
        train = mini * config.async_training.require_batches
    dp = data_parallel_size(config)
    problems = []
    if mini < 1 or train % mini:
        problems.append(f"data.train_batch_size {train} is not a multiple of actor.ppo_mini_batch_size {mini}")
    elif (mini * n) % dp:
        problems.append(
            f"a mini-batch of {mini} prompts x {n} responses = {mini * n} does not split over {dp} data-parallel ranks"
        )
    elif not actor.use_dynamic_bsz:
        micro = actor.ppo_micro_batch_size_per_gpu
        if micro and (mini * n // dp) % micro:
            problems.append(
                f"{mini * n // dp} responses per rank per mini-batch is not a multiple of "
                f"ppo_micro_batch_size_per_gpu {micro}"
            )
    if problems:
        return [Finding("error", "batch sizes", problem) for problem in problems]
    updates = train // mini
    return [
        Finding(
            "ok",
            "batch sizes",
            f"{train} prompts x {n} responses per step, {updates} updates of {mini * n // dp} responses per rank",
        )
    ]


def _token_budgets(config: DictConfig, uses_reference: bool) -> list[Finding]:
    longest = config.data.max_prompt_length + config.data.max_response_length
    ref = config.actor_rollout_ref
    budgets = []
    if ref.actor.use_dynamic_bsz:
        budgets.append(("actor.ppo_max_token_len_per_gpu", ref.actor.ppo_max_token_len_per_gpu))
    if ref.rollout.log_prob_use_dynamic_bsz:
        budgets.append(("rollout.log_prob_max_token_len_per_gpu", ref.rollout.log_prob_max_token_len_per_gpu))
    if uses_reference and ref.ref.log_prob_use_dynamic_bsz:
        budgets.append(("ref.log_prob_max_token_len_per_gpu", ref.ref.log_prob_max_token_len_per_gpu))
    findings = [
        Finding("error", "token budget", f"{name} = {value} is below one prompt + response = {longest} tokens")
        for name, value in budgets
        if value < longest
    ]
    if not ref.rollout.enable_chunked_prefill and ref.rollout.max_num_batched_tokens < longest:
        findings.append(
            Finding(
                "error",
                "token budget",
                f"rollout.max_num_batched_tokens {ref.rollout.max_num_batched_tokens} < {longest} without chunked "
                "prefill",
            )
        )
    if ref.rollout.max_model_len is not None and ref.rollout.max_model_len < longest:
        findings.append(
            Finding("error", "token budget", f"rollout.max_model_len {ref.rollout.max_model_len} < {longest}")
        )
    if not findings:
        findings.append(Finding("ok", "token budget", f"prompt + response = {longest} tokens fit every budget"))
    return findings


def _memory(
    config: DictConfig, architecture: Architecture | None, uses_reference: bool, gpu_memory_gb: float
) -> list[Finding]:
    if not memory.can_estimate(architecture):
        return [Finding("warning", "memory", "model sizes unknown (hidden/intermediate/vocab): no estimate")]
    estimate = memory.estimate(config, architecture, gpu_memory_gb, uses_reference)
    if estimate.peak > gpu_memory_gb:
        return [
            Finding(
                "warning",
                "memory",
                f"{estimate.summary()} is above the {gpu_memory_gb:g} GB GPU: offload "
                "(param_offload/optimizer_offload), lower rollout.gpu_memory_utilization or the token budget, or "
                "add model parallelism",
            )
        ]
    return [Finding("ok", "memory", f"{estimate.summary()}, within {gpu_memory_gb:g} GB")]


def _checkpoints(config: DictConfig) -> list[Finding]:
    folder = str(config.trainer.default_local_dir)
    kept = config.trainer.max_actor_ckpt_to_keep
    multi_node = config.trainer.nnodes > 1 or not config.actor_rollout_ref.hybrid_engine
    if multi_node and not Path(folder).is_absolute():
        return [
            Finding(
                "error",
                "checkpoints",
                f"trainer.default_local_dir={folder!r} is relative: on a multi-node run each worker resolves it "
                "in its own working folder; give an absolute path on storage every node shares (--output-dir)",
            )
        ]
    findings = [Finding("ok", "checkpoints", f"{folder} (keeping the last {kept})")]
    if kept is None and config.trainer.save_freq > 0:
        findings = [Finding("warning", "checkpoints", f"{folder}: max_actor_ckpt_to_keep unset, every checkpoint kept")]
    return findings


def _reward_function(config: DictConfig) -> list[Finding]:
    from verl.utils.import_utils import load_extern_object

    reward = config.reward.custom_reward_function
    if not reward.path:
        return [Finding("warning", "reward function", "none set: verl's default scorers by data_source apply")]
    try:
        load_extern_object(module_path=reward.path, object_name=reward.name)
    except Exception as error:  # import errors of any kind in the user's module
        return [Finding("error", "reward function", f"{reward.path}:{reward.name} does not load: {_first_line(error)}")]
    return [Finding("ok", "reward function", f"{reward.path}:{reward.name} loads")]


def _data_files(config: DictConfig) -> list[Finding]:
    findings = []
    for key in ("train_files", "val_files"):
        files = config.data[key]
        files = [files] if isinstance(files, str) else list(OmegaConf.to_container(files))
        missing = [path for path in files if not Path(path).expanduser().exists()]
        if missing:
            findings.append(
                Finding(
                    "warning",
                    f"data.{key}",
                    f"not found here: {', '.join(missing)} (make them with `python -m mhpo_verl data convert "
                    "<dataset>`; fine if they exist on the cluster)",
                )
            )
        else:
            findings.append(Finding("ok", f"data.{key}", f"{len(files)} file(s) present"))
    return findings
