"""vLLM generation (GPU, tensor parallel) through its offline ``LLM`` API.

One request per sample (``n=1``) with that sample's own ``seed``: vLLM then draws each sample from a
per-request generator, so a resumed run asks for exactly the samples that are missing, with the seeds an
uninterrupted run would have used. Prefix caching makes the k requests of a problem share its prompt's KV cache.

A prompt with images is a ``TokensPrompt`` with ``multi_modal_data={"image": [PIL images]}``, its token ids those
the checkpoint's processor expanded (vLLM recognises vision tokens already in place), as verl's vLLM server sends
them in the VL rollout.

The keyword arguments are built by plain functions so that they can be checked without a GPU or vLLM installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mhpo_verl.eval.backends import BackendOptions, Completion, GenerationRequest
from mhpo_verl.eval.errors import EvalInputError


def engine_kwargs(options: BackendOptions) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM``."""
    kwargs: dict[str, Any] = {
        "model": options.model,
        "tokenizer": options.tokenizer,
        "dtype": options.dtype,
        "tensor_parallel_size": options.tensor_parallel_size,
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "trust_remote_code": options.trust_remote_code,
        "seed": options.sampling.seed,
        "enable_prefix_caching": True,
    }
    if options.max_model_len is not None:
        kwargs["max_model_len"] = options.max_model_len
    if options.max_images_per_prompt:
        # vLLM reserves memory for this many images per prompt of a multimodal model (its default is 1 for some).
        kwargs["limit_mm_per_prompt"] = {"image": options.max_images_per_prompt}
    clashes = sorted(set(options.engine_args) & {"model", "tokenizer"})
    if clashes:
        raise EvalInputError(f"--engine-arg cannot set {clashes}; use --model / --tokenizer")
    kwargs.update(options.engine_args)
    return kwargs


def sampling_kwargs(request: GenerationRequest, options: BackendOptions) -> dict[str, Any]:
    """Keyword arguments for the ``vllm.SamplingParams`` of one sample."""
    sampling = options.sampling
    kwargs: dict[str, Any] = {
        "n": 1,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_new_tokens,
        "seed": request.seed,
        # Same stop set as the HF backend (EOS + generation_config eos ids), whatever vLLM's defaults.
        "stop_token_ids": list(options.stop_token_ids),
        "skip_special_tokens": True,
    }
    if sampling.top_k > 0:
        kwargs["top_k"] = sampling.top_k
    return kwargs


def prompt_of(request: GenerationRequest) -> dict[str, Any]:
    """The ``vllm.inputs.TokensPrompt`` (a dict) of one request."""
    prompt: dict[str, Any] = {"prompt_token_ids": list(request.prompt_ids)}
    if request.multi_modal is not None and request.multi_modal.images:
        prompt["multi_modal_data"] = {"image": list(request.multi_modal.images)}
    return prompt


def completion_from_output(request_output: Any) -> Completion:
    """A :class:`Completion` from one ``vllm.RequestOutput`` (its single ``CompletionOutput``)."""
    outputs = request_output.outputs
    if len(outputs) != 1:
        raise RuntimeError(f"vLLM returned {len(outputs)} completions for an n=1 request")
    output = outputs[0]
    if output.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"vLLM finished a request with reason {output.finish_reason!r}; expected 'stop' or 'length'")
    return Completion(text=output.text, n_tokens=len(output.token_ids), truncated=output.finish_reason == "length")


class VLLMBackend:
    name = "vllm"

    def __init__(self, options: BackendOptions) -> None:
        try:
            import vllm
        except ImportError as error:
            raise RuntimeError(
                "--backend vllm needs vLLM (GPU only): pip install 'mhpo-verl[vllm]', or use --backend hf"
            ) from error
        self.options = options
        self._sampling_params_type = vllm.SamplingParams
        self._llm = vllm.LLM(**engine_kwargs(options))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        if not requests:
            return []
        prompts = [prompt_of(request) for request in requests]
        params = [self._sampling_params_type(**sampling_kwargs(request, self.options)) for request in requests]
        outputs = self._llm.generate(prompts, params, use_tqdm=False)
        if len(outputs) != len(requests):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} prompts")
        return [completion_from_output(output) for output in outputs]

    def close(self) -> None:
        del self._llm
