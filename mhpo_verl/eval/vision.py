"""Prompts with images: the checkpoint's processor turns chat messages with ``<image>`` placeholders and the row's
embedded images into what each backend needs.

This is the rendering verl's agent loop does before its rollout: the ``<image>`` placeholders become image items
of the messages (as ``RLHFDataset`` builds them), the processor's chat template renders them, and the processor
expands each image into its vision tokens and computes the patches. The HF backend feeds the token ids, the
patches (``pixel_values``, ``image_grid_thw``) and the per-token modality ids (``mm_token_type_ids``, which
Qwen2.5-VL's rotary positions need); vLLM gets the same token ids and the images as ``multi_modal_data``, as
verl's vLLM server passes them.

Images are given to the processor as decoded, and it resizes them within its own pixel bounds. verl's rollout first
resizes them with ``qwen_vl_utils`` (default bounds 3,136 to 12.8 M pixels): both give the same grid for any image
inside both bounds, which covers the VL benchmarks' diagrams at the Qwen2.5-VL processor's defaults.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mhpo_verl.eval.errors import EvalInputError

IMAGE_PLACEHOLDER = "<image>"
TOKEN_ALIGNED_KEYS = ("mm_token_type_ids",)
"""Processor outputs with one value per prompt token (besides input_ids / attention_mask): padded with the prompt."""
IMAGE_KEYS = ("pixel_values", "image_grid_thw")
"""Processor outputs per image: concatenated along the first dimension when prompts are batched."""


@dataclass(frozen=True, eq=False)  # holds tensors and images: identity, not value, equality
class MultiModalPrompt:
    images: tuple[Any, ...]
    """Decoded ``PIL.Image`` objects, in prompt order (vLLM's ``multi_modal_data["image"]``)."""
    token_inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    image_inputs: dict[str, Any] = field(default_factory=dict)
    """Tensors the HF model takes with the token ids (``pixel_values``, ``image_grid_thw``)."""


@dataclass(frozen=True, eq=False)
class RenderedPrompt:
    prompt_ids: tuple[int, ...]
    multi_modal: MultiModalPrompt


def load_processor(path: str, trust_remote_code: bool = False) -> Any:
    """The checkpoint's multimodal processor (``AutoProcessor``); a clear error when it has none or cannot load."""
    from transformers import AutoProcessor, PreTrainedTokenizerBase

    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ImportError, TypeError) as error:
        raise EvalInputError(
            f"the data has images but no multimodal processor loads from {path!r}: {type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else ''} (Qwen-VL processors need torchvision)"
        ) from error
    if isinstance(processor, PreTrainedTokenizerBase) or not hasattr(processor, "image_processor"):
        raise EvalInputError(
            f"the data has images but {path!r} is a text-only checkpoint (its processor is a "
            f"{type(processor).__name__}); evaluate VL benchmarks with a vision-language model"
        )
    return processor


def decode_images(images: Sequence[bytes], source: str) -> list[Any]:
    from PIL import Image

    decoded = []
    for number, data in enumerate(images):
        try:
            with Image.open(io.BytesIO(data)) as image:
                decoded.append(image.convert("RGB"))
        except Exception as error:  # PIL raises several types for a damaged image
            kind = type(error).__name__
            raise EvalInputError(f"{source}: image {number} does not decode ({kind}: {error})") from None
    return decoded


def vision_messages(messages: Sequence[dict[str, str]], images: Sequence[Any]) -> list[dict[str, Any]]:
    """Messages whose ``<image>`` placeholders are image items, in order (what ``RLHFDataset`` hands the rollout)."""
    structured = []
    remaining = list(images)
    for message in messages:
        parts = [part for part in re.split(f"({re.escape(IMAGE_PLACEHOLDER)})", message["content"]) if part]
        content: list[dict[str, Any]] = []
        for part in parts:
            if part == IMAGE_PLACEHOLDER:
                content.append({"type": "image", "image": remaining.pop(0)})
            else:
                content.append({"type": "text", "text": part})
        structured.append({"role": message["role"], "content": content})
    return structured


def render_vision_prompt(
    processor: Any,
    messages: Sequence[dict[str, str]],
    images: Sequence[bytes],
    system_prompt: str | None = None,
    source: str = "",
) -> RenderedPrompt:
    """Token ids and multimodal inputs of one prompt with images (chat template with the assistant turn opened)."""
    messages = [dict(message) for message in messages]
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    decoded = decode_images(images, source)
    structured = vision_messages(messages, decoded)
    text = processor.apply_chat_template(structured, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=decoded, return_tensors="pt")
    prompt_ids = tuple(int(token) for token in inputs["input_ids"][0])
    token_inputs = {
        key: tuple(int(value) for value in inputs[key][0]) for key in TOKEN_ALIGNED_KEYS if inputs.get(key) is not None
    }
    image_inputs = {key: inputs[key] for key in IMAGE_KEYS if inputs.get(key) is not None}
    return RenderedPrompt(prompt_ids, MultiModalPrompt(tuple(decoded), token_inputs, image_inputs))


def is_vision_language_model(model_path: str, trust_remote_code: bool = False) -> bool:
    """Whether the checkpoint's config has a vision tower (it then loads as an image-text-to-text model)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    return getattr(config, "vision_config", None) is not None
