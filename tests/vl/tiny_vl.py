"""A tiny random Qwen2.5-VL built here: tokenizer (trained on a few sentences), image processor, processor, model.

No downloads. Two things differ from a real checkpoint, both because this machine cannot install torchvision for
its CPU torch (PyPI's torchvision 0.28 wheel is a CUDA build that fails to import against torch 2.13.0+cpu):

- transformers' PIL image processor (``Qwen2VLImageProcessorPil``) stands in for the default torchvision one; it
  computes the same patches and grid;
- ``Qwen2_5_VLProcessor`` insists on a video processor whose transformers class needs torchvision, so the processor
  is built with transformers' ``BaseVideoProcessor`` in that slot (its class check relaxed while constructing). No
  test passes videos; the image path of the processor is transformers' own code.

For the same reason ``AutoProcessor.from_pretrained`` cannot load any Qwen-VL processor here; tests hand the
processor built here to the code under test.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen's layout (``<|im_start|>role\\n ... <|im_end|>``, an image as vision-start, one pad, vision-end)."""
CORPUS = [
    "Find x. Please reason step by step, and put your final answer within \\boxed{}.",
    "Choices: (A) 3 (B) 12 (C) 7. The answer is \\boxed{B}.",
    "The angle is 45 degrees, so the answer is \\boxed{45}.",
]
MIN_PIXELS, MAX_PIXELS = 56 * 56, 112 * 112
"""Small images: 4 to 16 patches of 14 px, 1 to 4 image tokens after the 2 x 2 merge."""


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=360, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=14, merge_size=2, temporal_patch_size=2
    )


@contextmanager
def _video_slot_accepts_base_class():
    from transformers import processing_utils
    from transformers.video_processing_utils import BaseVideoProcessor

    original = processing_utils.ProcessorMixin.check_argument_for_proper_class

    def check(self, name, argument):
        if name == "video_processor" and isinstance(argument, BaseVideoProcessor):
            return type(argument)
        return original(self, name, argument)

    processing_utils.ProcessorMixin.check_argument_for_proper_class = check
    try:
        yield
    finally:
        processing_utils.ProcessorMixin.check_argument_for_proper_class = original


def build_processor(tokenizer=None):
    from transformers import Qwen2_5_VLProcessor
    from transformers.video_processing_utils import BaseVideoProcessor

    tokenizer = tokenizer or build_tokenizer()
    with _video_slot_accepts_base_class():
        return Qwen2_5_VLProcessor(
            image_processor=build_image_processor(),
            tokenizer=tokenizer,
            video_processor=BaseVideoProcessor(merge_size=2, patch_size=14, temporal_patch_size=2),
            chat_template=CHAT_TEMPLATE,
        )


def build_model(folder: Path, processor, seed: int = 0) -> Path:
    """A 2-layer Qwen2.5-VL (vision tower of 2 blocks) with random weights, saved with its tokenizer and image
    processor."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = processor.tokenizer
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=32,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            fullatt_block_indexes=[1],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    # Like a chat checkpoint: sampling defaults the evaluator must ignore.
    model.generation_config = GenerationConfig(
        eos_token_id=[ids["<|im_end|>"]], do_sample=True, temperature=3.0, top_k=2, repetition_penalty=1.3
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor.image_processor.save_pretrained(folder)
    return folder


def png_bytes(width: int, height: int, colour: tuple[int, int, int], mark: int = 0) -> bytes:
    """A synthetic diagram: a filled rectangle with a diagonal line; ``mark`` shifts the line (distinct bytes)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), colour)
    ImageDraw.Draw(image).line((mark, 0, width - 1, height - 1), fill=(0, 0, 0), width=2)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
