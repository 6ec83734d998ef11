"""HF transformers generation, batched, on CPU or one GPU.

``model.generate`` does the decoding (caches, padding, stop tokens); the token choice is ours, made by
:class:`SeededTokenChooser`, because HF samples every row from one global random stream: a sample would then
depend on its batch neighbours and a resumed run would draw different samples than an uninterrupted one. Here
each row has its own stream seeded per sample, and the chooser hands ``generate`` a one-hot score row that its
greedy step picks.

A vision-language checkpoint (its config has a ``vision_config``) loads as an image-text-to-text model; its requests
carry the processor's outputs (:mod:`mhpo_verl.eval.vision`), which are batched here: per-token inputs padded on the
left with the prompts, per-image inputs concatenated in request order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
)

from mhpo_verl.eval.backends import BackendOptions, Completion, GenerationRequest
from mhpo_verl.eval.errors import EvalInputError
from mhpo_verl.eval.sampling import SamplingSettings


def choose_tokens(
    logits: torch.Tensor, uniforms: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0
) -> torch.Tensor:
    """Token per row by inverse-CDF sampling with one uniform draw in [0, 1) per row.

    Greedy when ``temperature`` is 0. Top-k then top-p (nucleus: the smallest set of most likely tokens whose mass
    reaches ``top_p``) restrict the candidates; the most likely token always stays one.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)
    if top_k > 0:
        sorted_probs[:, top_k:] = 0.0
    if top_p < 1.0:
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = torch.where(mass_before < top_p, sorted_probs, torch.zeros_like(sorted_probs))
    cdf = sorted_probs.cumsum(dim=-1)
    targets = uniforms.to(cdf.device, cdf.dtype).unsqueeze(-1) * cdf[:, -1:]
    positions = torch.searchsorted(cdf, targets, right=True).clamp(max=cdf.shape[-1] - 1)
    return order.gather(-1, positions).squeeze(-1)


class SeededTokenChooser(LogitsProcessor):
    """Picks each row's next token from that row's own seeded stream; ``generate`` then takes it greedily."""

    def __init__(self, seeds: Sequence[int], sampling: SamplingSettings) -> None:
        self.sampling = sampling
        self.streams = [np.random.Generator(np.random.PCG64(seed)) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # One draw per row per step, finished rows included, so a row's stream never depends on the others.
        uniforms = torch.tensor([stream.random() for stream in self.streams], dtype=torch.float64)
        s = self.sampling
        tokens = choose_tokens(scores, uniforms, s.temperature, s.top_p, s.top_k)
        chosen = torch.full_like(scores, float("-inf"))
        return chosen.scatter_(-1, tokens.unsqueeze(-1), 0.0)


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if device.type == "cuda" else torch.float32
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in names:
        raise EvalInputError(f"--dtype must be one of {['auto', *names]}, got {dtype!r}")
    return names[dtype]


class HFBackend:
    name = "hf"

    def __init__(self, options: BackendOptions) -> None:
        from mhpo_verl.eval.tokenization import load_tokenizer

        self.options = options
        self.device = _resolve_device(options.device)
        from mhpo_verl.eval.vision import is_vision_language_model

        self.tokenizer = load_tokenizer(options.tokenizer, options.trust_remote_code)
        self.vision_language = is_vision_language_model(options.model, options.trust_remote_code)
        model_class = AutoModelForImageTextToText if self.vision_language else AutoModelForCausalLM
        self.model = model_class.from_pretrained(
            options.model,
            dtype=_resolve_dtype(options.dtype, self.device),
            trust_remote_code=options.trust_remote_code,
        ).to(self.device)
        self.model.eval()
        # generate() fills every setting we leave unset from the checkpoint's generation_config (Qwen's ships
        # do_sample/temperature/top_k/repetition_penalty); a blank one keeps decoding exactly as configured here.
        self.model.generation_config = GenerationConfig()
        self.stop_ids = set(options.stop_token_ids)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else min(self.stop_ids)

    def _left_padded(self, requests: Sequence[GenerationRequest]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(request.prompt_ids) for request in requests)
        input_ids = torch.full((len(requests), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, request in enumerate(requests):
            length = len(request.prompt_ids)
            input_ids[row, width - length :] = torch.tensor(request.prompt_ids, dtype=torch.long)
            attention_mask[row, width - length :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _multi_modal_inputs(self, requests: Sequence[GenerationRequest], width: int) -> dict[str, torch.Tensor]:
        with_images = [request for request in requests if request.multi_modal is not None]
        if not with_images:
            return {}
        if not self.vision_language:
            raise EvalInputError(
                f"the data has images but {self.options.model!r} is not a vision-language model (no vision_config)"
            )
        inputs: dict[str, torch.Tensor] = {}
        for key in with_images[0].multi_modal.image_inputs:
            inputs[key] = torch.cat([request.multi_modal.image_inputs[key] for request in with_images]).to(self.device)
        for key in with_images[0].multi_modal.token_inputs:
            padded = torch.zeros((len(requests), width), dtype=torch.long)  # 0: a text token
            for row, request in enumerate(requests):
                if request.multi_modal is not None:
                    values = request.multi_modal.token_inputs[key]
                    padded[row, width - len(values) :] = torch.tensor(values, dtype=torch.long)
            inputs[key] = padded.to(self.device)
        return inputs

    def _completion(self, generated: list[int]) -> Completion:
        stop_at = next((i for i, token in enumerate(generated) if token in self.stop_ids), None)
        if stop_at is None:
            return Completion(self.tokenizer.decode(generated, skip_special_tokens=True), len(generated), True)
        return Completion(self.tokenizer.decode(generated[:stop_at], skip_special_tokens=True), stop_at + 1, False)

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        if not requests:
            return []
        input_ids, attention_mask = self._left_padded(requests)
        config = GenerationConfig(
            max_new_tokens=self.options.sampling.max_new_tokens,
            do_sample=False,  # the chooser has already sampled; generate's greedy step only reads its choice
            num_beams=1,
            eos_token_id=sorted(self.stop_ids),
            pad_token_id=self.pad_id,
        )
        chooser = SeededTokenChooser([request.seed for request in requests], self.options.sampling)
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            logits_processor=LogitsProcessorList([chooser]),
            **self._multi_modal_inputs(requests, input_ids.shape[1]),
        )
        new_tokens = output[:, input_ids.shape[1] :].tolist()
        return [self._completion(tokens) for tokens in new_tokens]

    def close(self) -> None:
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
