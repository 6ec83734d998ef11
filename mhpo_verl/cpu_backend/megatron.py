"""verl's Megatron engine on CPUs: megatron-core's local (non-Transformer-Engine) layers, built through mbridge.

verl 0.9.1 trains with Megatron through ``MegatronEngineWithLMHead``; megatron-core and mbridge assume CUDA in
places that do not go through verl's platform. :func:`enable` adapts them, process-wide, in seven steps:

1. device arguments that name CUDA (``"cuda"``, ``"cuda:N"``, an integer, ``torch.device("cuda")``) are redirected
   to the CPU, ``Tensor.cuda()`` / ``Tensor.pin_memory()`` return the tensor, and ``Tensor.type()`` reports the
   ``torch.cuda.*Tensor`` names megatron's optimizer asserts (a ``TorchFunctionMode`` entered for good);
2. the ``torch.cuda`` calls megatron makes (current device, synchronize, streams and events, RNG state, memory
   statistics) answer for the CPU, and ``torch.compile`` runs eagerly (verl compiles one small helper);
3. megatron's CUDA RNG-state helpers read and write the CPU generator;
4. verl's Megatron engines are filed under the ``cpu`` device of verl's ``EngineRegistry`` (verl lists them only
   for ``cuda``), and verl's FSDP engines are refused in the same process (the redirection of step 1 is no place
   for them);
5. mbridge builds the decoder from megatron's local layer spec (it forces Transformer Engine);
6. mbridge's megatron-to-HF weight names cover the local spec's norms (``input_layernorm`` / ``pre_mlp_layernorm``
   are fused into the TE linears' ``layer_norm_weight`` in the names mbridge knows);
7. megatron's local attention gets the masks verl's two input layouts mean: packed sequences (``thd``, which the
   local attention refuses) are attended one sequence at a time (bounds from ``cu_seqlens``), causally; the padded
   layout's ``[b, s]`` mask of valid tokens becomes a causal-and-valid ``[b, 1, s, s]`` mask.

Steps 3, 5, 6 and 7 replace private functions, so :func:`enable` checks the versions it was written against
(:data:`SUPPORTED_VERSIONS`). It refuses where torch sees an accelerator (the CPU platform refuses there too).

Enable it only in processes that train with ``actor.strategy=megatron``. ``VERL_PLATFORM=cpu`` together with
``MHPO_VERL_CPU_MEGATRON=1`` enables it when verl imports this module through ``VERL_USE_EXTERNAL_MODULES`` (what
:func:`enable` exports for processes it starts). Config overrides it needs: :func:`megatron_actor_overrides`.

What this proves on CPUs: verl's Megatron control flow, data layout, parallel groups (DP, TP through gloo) and the
loss plumbing. Not Transformer Engine kernels, NCCL, sequence parallelism or fused softmax.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import itertools
import logging
import os
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from mhpo_verl.cpu_backend import platform

__all__ = [
    "ENABLE_VARIABLE",
    "SUPPORTED_VERSIONS",
    "causal_mask",
    "check_versions",
    "enable",
    "is_enabled",
    "megatron_actor_overrides",
    "padded_causal_mask",
]

SUPPORTED_VERSIONS = {"megatron-core": "0.16.1", "mbridge": "0.15.1"}
"""Exact versions whose private functions the adaptations replace (``pip install '.[megatron-cpu]'``)."""

ENABLE_VARIABLE = "MHPO_VERL_CPU_MEGATRON"
"""Set to ``1`` (with ``VERL_PLATFORM=cpu``) to enable the backend in processes that import this module."""

_THIS_MODULE = __name__
_state: dict[str, Any] = {"enabled": False}


def check_versions() -> None:
    """Raise if megatron-core or mbridge is missing or not the version the adaptations were written against."""
    problems = []
    for package, expected in SUPPORTED_VERSIONS.items():
        try:
            found = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found = None
        if found != expected:
            problems.append(f"{package} {found or 'not installed'} (expected {expected})")
    if problems:
        wanted = " ".join(f"{name}=={version}" for name, version in SUPPORTED_VERSIONS.items())
        raise RuntimeError(
            "the CPU Megatron backend adapts private functions of megatron-core and mbridge and supports exactly "
            f"{wanted}; found {', '.join(problems)}. Install them with: pip install '.[megatron-cpu]'"
        )


def is_enabled() -> bool:
    return _state["enabled"]


def megatron_actor_overrides(prefix: str = "actor_rollout_ref.actor", total_training_steps: int = 1) -> list[str]:
    """Hydra overrides a Megatron actor needs on the CPU (on top of ``model_engine=megatron``).

    mbridge (not Megatron-Bridge: its CPU-installable release needs Transformer Engine) in bf16 (verl's
    McoreEngineConfig accepts bf16/fp16 only), the local attention without the fused softmax kernel, no sequence
    parallelism (megatron's torch norms refuse it), no recomputation; verl's lr scheduler asserts
    ``total_training_steps > 0``.
    """
    megatron = f"{prefix}.megatron"
    transformer = f"++{megatron}.override_transformer_config"
    return [
        f"{prefix}.strategy=megatron",
        f"{megatron}.use_mbridge=True",
        f"{megatron}.vanilla_mbridge=True",
        f"{megatron}.dtype=bfloat16",
        f"{megatron}.sequence_parallel=False",
        f"{transformer}.attention_backend=local",
        f"{transformer}.masked_softmax_fusion=False",
        f"{transformer}.sequence_parallel=False",
        f"{transformer}.recompute_modules=[]",
        f"{prefix}.optim.total_training_steps={total_training_steps}",
    ]


def enable() -> None:
    """Enable the CPU platform and the seven adaptations in this process (and processes it starts). Idempotent.

    Raises:
        RuntimeError: torch sees an accelerator, megatron-core / mbridge are not the supported versions, or verl's
            FSDP engine was already built in this process.
    """
    platform.enable()
    if _state["enabled"]:
        return
    check_versions()
    _redirect_cuda_device_arguments()
    _answer_torch_cuda_calls_for_the_cpu()
    _cpu_rng_for_megatron()
    _file_megatron_engines_under_cpu()
    _local_layer_spec_in_mbridge()
    _local_norm_names_in_mbridge()
    _local_attention_masks()
    os.environ[ENABLE_VARIABLE] = "1"
    modules = [name for name in os.environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if name]
    if _THIS_MODULE not in modules:
        os.environ["VERL_USE_EXTERNAL_MODULES"] = ",".join([*modules, _THIS_MODULE])
    _state["enabled"] = True


# 1. Device arguments -------------------------------------------------------------------------------------------


def _names_cuda(device: Any) -> bool:
    if isinstance(device, bool):
        return False
    if isinstance(device, int):
        return True  # megatron passes torch.cuda.current_device(), an index, as device=
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, torch.device) and device.type == "cuda"


class _CUDAArgumentsToCPU(TorchFunctionMode):
    """Redirects CUDA device arguments of torch functions and tensor methods to the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in (torch.Tensor.cuda, torch.Tensor.pin_memory):
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            # megatron's optimizer and clip_grads assert 'torch.cuda.FloatTensor' / BFloat16Tensor names.
            return name if name.startswith("torch.cuda.") else name.replace("torch.", "torch.cuda.", 1)
        if "device" in kwargs and _names_cuda(kwargs["device"]):
            kwargs["device"] = "cpu"
        if func is torch.Tensor.to and len(args) > 1 and _names_cuda(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


def _redirect_cuda_device_arguments() -> None:
    # Torch function modes are per thread: entered here, in the thread that builds and trains the engine (the main
    # thread of a torchrun process or of a Ray actor with the default concurrency).
    mode = _CUDAArgumentsToCPU()
    mode.__enter__()
    _state["mode"] = mode


# 2. torch.cuda calls ---------------------------------------------------------------------------------------------


class _Stream:
    """A CUDA stream stand-in: the CPU runs everything in order, so waits and queries are immediate."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def wait_stream(self, stream: Any) -> None: ...
    def wait_event(self, event: Any) -> None: ...
    def synchronize(self) -> None: ...
    def record_event(self, event: Any = None) -> Any:
        return event if event is not None else _Event()

    def query(self) -> bool:
        return True


class _Event:
    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def record(self, stream: Any = None) -> None: ...
    def wait(self, stream: Any = None) -> None: ...
    def synchronize(self) -> None: ...
    def query(self) -> bool:
        return True

    def elapsed_time(self, other: Any) -> float:
        return 0.0


_DEFAULT_STREAM = _Stream()


def _answer_torch_cuda_calls_for_the_cpu() -> None:
    device = platform.CPUDeviceModule()
    answers = {
        "current_device": lambda: 0,  # an index, as on a GPU; step 1 maps it to the CPU wherever it is used
        "device_count": lambda: 1,
        "set_device": lambda device_index: None,
        "synchronize": lambda device=None: None,
        "empty_cache": lambda: None,
        "Stream": _Stream,
        "Event": _Event,
        "current_stream": lambda device=None: _DEFAULT_STREAM,
        "default_stream": lambda device=None: _DEFAULT_STREAM,
        "stream": lambda stream=None: contextlib.nullcontext(stream),
        "get_rng_state": lambda device="cuda": torch.get_rng_state(),
        "set_rng_state": lambda new_state, device="cuda": torch.set_rng_state(new_state),
        # the CPU generator itself: torch.manual_seed calls torch.cuda.manual_seed_all
        "manual_seed": lambda seed: torch.default_generator.manual_seed(int(seed)),
        "manual_seed_all": lambda seed: torch.default_generator.manual_seed(int(seed)),
        "memory_allocated": device.memory_allocated,
        "memory_reserved": device.memory_reserved,
        "max_memory_allocated": device.max_memory_allocated,
        "max_memory_reserved": device.max_memory_reserved,
        "mem_get_info": device.mem_get_info,
    }
    for name, answer in answers.items():
        setattr(torch.cuda, name, answer)
    torch.cuda.random.get_rng_state = answers["get_rng_state"]
    torch.cuda.random.set_rng_state = answers["set_rng_state"]
    # verl's vocab-parallel entropy wraps a two-op helper in torch.compile; inductor's CPU build of it costs a C++
    # compile in every process and changes no result (the FSDP path on CPU runs eagerly too).
    torch._dynamo.config.disable = True


# 3. megatron's RNG state -----------------------------------------------------------------------------------------


def _cpu_rng_for_megatron() -> None:
    from megatron.core.tensor_parallel import random

    def get_rng_state(device: Any = -1, clone: bool = False, graph_safe: bool = False) -> torch.Tensor:
        return torch.get_rng_state()

    def set_rng_state(new_state: torch.Tensor, device: Any = -1, graph_safe: bool = False) -> None:
        torch.set_rng_state(new_state)

    random._get_cuda_rng_state = get_rng_state
    random._set_cuda_rng_state = set_rng_state
    # The tracker's fork() warns when the CPU generator changes inside a forked "CUDA" state: here the two are one
    # generator, so every fork that draws numbers would warn.
    logging.getLogger(random.__name__).addFilter(
        lambda record: "CPU RNG state changed within GPU RNG context" not in record.getMessage()
    )


# 4. verl's engine registry ---------------------------------------------------------------------------------------


def _file_megatron_engines_under_cpu() -> None:
    from verl.workers.engine import EngineRegistry
    from verl.workers.engine.megatron import MegatronEngineWithLMHead, MegatronEngineWithValueHead

    for model_type, engine_class in {
        "language_model": MegatronEngineWithLMHead,
        "value_model": MegatronEngineWithValueHead,
    }.items():
        backends = EngineRegistry._engines.setdefault(model_type, {})
        backends.setdefault("megatron", {})[platform.PLATFORM_NAME] = engine_class
        for strategy in ("fsdp", "fsdp2"):
            fsdp_engine = backends.get(strategy, {}).get(platform.PLATFORM_NAME)
            if fsdp_engine is not None:
                backends[strategy][platform.PLATFORM_NAME] = _refusing(fsdp_engine)


def _refusing(engine_class: type) -> type:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            f"{engine_class.__name__} cannot run in a process with the CPU Megatron backend enabled (it redirects "
            "CUDA device arguments process-wide); run the FSDP engine in a separate process"
        )

    return type(engine_class.__name__, (engine_class,), {"__init__": __init__})


# 5. mbridge's layer spec -----------------------------------------------------------------------------------------


def _local_layer_spec_in_mbridge() -> None:
    from mbridge.core import llm_bridge

    original = llm_bridge.get_gpt_decoder_block_spec
    if getattr(original, "_cpu_local_spec", False):
        return

    @functools.wraps(original)  # keeps the signature mbridge inspects for vp_stage
    def local_decoder_block_spec(config: Any, use_transformer_engine: bool = True, **kwargs: Any) -> Any:
        return original(config, use_transformer_engine=False, **kwargs)

    local_decoder_block_spec._cpu_local_spec = True
    llm_bridge.get_gpt_decoder_block_spec = local_decoder_block_spec


# 6. mbridge's weight names ---------------------------------------------------------------------------------------

_LOCAL_TO_TE_NAMES = {
    ".input_layernorm.weight": ".self_attention.linear_qkv.layer_norm_weight",
    ".pre_mlp_layernorm.weight": ".mlp.linear_fc1.layer_norm_weight",
}


def _local_norm_names_in_mbridge() -> None:
    from mbridge.core.bridge import Bridge

    original = Bridge._weight_name_mapping_mcore_to_hf
    if getattr(original, "_cpu_local_names", False):
        return

    @functools.wraps(original)
    def mcore_to_hf(self: Any, mcore_weights_name: str) -> list[str]:
        for local, fused in _LOCAL_TO_TE_NAMES.items():
            if mcore_weights_name.endswith(local):
                mcore_weights_name = mcore_weights_name[: -len(local)] + fused
        return original(self, mcore_weights_name)

    mcore_to_hf._cpu_local_names = True
    Bridge._weight_name_mapping_mcore_to_hf = mcore_to_hf


# 7. masks for megatron's local attention ---------------------------------------------------------------------------


def causal_mask(length: int, device: Any = None) -> torch.Tensor:
    """``[1, 1, length, length]`` mask, True where attention is forbidden (the future)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(1)[None, None]


def padded_causal_mask(valid: torch.Tensor) -> torch.Tensor:
    """``[b, 1, s, s]`` mask, True where forbidden, from verl's ``[b, s]`` mask of valid tokens: causal, valid
    keys only; a padding query also sees itself, so no row is empty and its softmax stays finite (its output is
    never read)."""
    valid = valid.bool()
    length = valid.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    allowed = causal[None] & valid[:, None, :]
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=valid.device)[None]
    return ~allowed[:, None]


def _local_attention_masks() -> None:
    from megatron.core.transformer.dot_product_attention import DotProductAttention

    original = DotProductAttention.forward
    if getattr(original, "_cpu_masks", False):
        return

    @functools.wraps(original)
    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):  # fmt: skip
        if packed_seq_params is not None:
            if packed_seq_params.qkv_format != "thd":
                raise ValueError(f"packed sequences in {packed_seq_params.qkv_format!r} format; expected 'thd'")
            cu_seqlens = packed_seq_params.cu_seqlens_q_padded
            if cu_seqlens is None:
                cu_seqlens = packed_seq_params.cu_seqlens_q
            # thd tensors are [t, heads, dim]; the local attention wants [s, b, heads, dim]. One call per packed
            # sequence (b = 1, causal): O(sum of s_i^2) work, where one block-diagonal mask over all t tokens would
            # cost O(t^2) memory and time in every layer.
            bounds = cu_seqlens.tolist()
            outputs = [
                original(self, query[start:end].unsqueeze(1), key[start:end].unsqueeze(1),
                         value[start:end].unsqueeze(1), causal_mask(end - start, query.device), attn_mask_type,
                         attention_bias, None)
                for start, end in itertools.pairwise(bounds) if end > start
            ]  # fmt: skip
            padding = query.shape[0] - bounds[-1]  # tokens past the last sequence: no output is read from them
            if padding:
                outputs.append(query.new_zeros(padding, 1, self.hidden_size_per_partition))
            return torch.cat(outputs).squeeze(1)
        if attention_mask is not None and attention_mask.dim() == 2:
            attention_mask = padded_causal_mask(attention_mask)
        return original(self, query, key, value, attention_mask, attn_mask_type, attention_bias, None)

    forward._cpu_masks = True
    DotProductAttention.forward = forward


# A process started with VERL_PLATFORM=cpu and MHPO_VERL_CPU_MEGATRON=1 that imports this module (through
# VERL_USE_EXTERNAL_MODULES at `import verl`) is a Megatron worker of a process that enabled the backend.
if (
    os.environ.get("VERL_PLATFORM", "").strip().lower() == platform.PLATFORM_NAME
    and os.environ.get(ENABLE_VARIABLE) == "1"
    and not is_enabled()
):
    enable()
