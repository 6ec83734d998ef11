"""What a generation backend takes and returns, and how one is chosen.

A backend turns prompt token ids plus a per-sample seed into completions. vLLM (GPU, tensor parallel) is the
default where it is installed and a GPU is visible; HF transformers is the fallback that runs anywhere.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mhpo_verl.eval.errors import EvalInputError
from mhpo_verl.eval.sampling import SamplingSettings

if TYPE_CHECKING:
    from mhpo_verl.eval.vision import MultiModalPrompt

BACKENDS = ("auto", "vllm", "hf")
DEFAULT_BATCH_SIZE = {"vllm": 2048, "hf": 16}
"""Samples per generate call: vLLM schedules a large call better; HF pads a batch to its longest member."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: tuple[int, ...]
    seed: int
    multi_modal: MultiModalPrompt | None = None
    """The prompt's images and their processor outputs (VL benchmarks); ``prompt_ids`` already hold the vision
    tokens the processor expanded."""


@dataclass(frozen=True)
class Completion:
    text: str
    n_tokens: int
    """Generated tokens, the stop token included (verl's response length)."""
    truncated: bool
    """Hit ``max_new_tokens`` before a stop token."""


class Backend(Protocol):
    name: str

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendOptions:
    model: str
    tokenizer: str
    sampling: SamplingSettings
    stop_token_ids: tuple[int, ...]
    dtype: str = "auto"
    trust_remote_code: bool = False
    device: str = "auto"
    """HF only: ``cuda``, ``cpu``, ``cuda:1``...; ``auto`` takes the GPU when there is one."""
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    engine_args: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for ``vllm.LLM`` (``--engine-arg key=value``)."""
    max_images_per_prompt: int = 0
    """The most images one prompt of the data holds (0: a text-only evaluation)."""


def _gpu_visible() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def resolve_backend(name: str) -> str:
    """``auto`` means vLLM when it is importable and a GPU is visible, HF otherwise."""
    if name not in BACKENDS:
        raise EvalInputError(f"--backend must be one of {BACKENDS}, got {name!r}")
    if name != "auto":
        return name
    return "vllm" if importlib.util.find_spec("vllm") is not None and _gpu_visible() else "hf"


def make_backend(name: str, options: BackendOptions) -> Backend:
    if name == "vllm":
        from mhpo_verl.eval.vllm_backend import VLLMBackend

        return VLLMBackend(options)
    if name == "hf":
        from mhpo_verl.eval.hf_backend import HFBackend

        return HFBackend(options)
    raise ValueError(f"backend must be 'vllm' or 'hf' once resolved, got {name!r}")
