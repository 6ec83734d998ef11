"""From chat messages to prompt token ids, and which tokens end a response.

Both backends get token ids rendered here with the checkpoint's own tokenizer, so vLLM and HF see exactly the
same prompt, and the same prompt verl's rollout saw during training (chat template with the generation prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mhpo_verl.eval.errors import EvalInputError

PROMPT_FORMATS = ("chat", "raw")


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise EvalInputError(f"cannot load a tokenizer from {path!r}: {error}") from error


def render_prompt_ids(
    tokenizer: Any, messages: Sequence[dict[str, str]], prompt_format: str = "chat", system_prompt: str | None = None
) -> list[int]:
    """Token ids of the prompt the model continues.

    ``chat`` applies the tokenizer's chat template with the assistant turn opened; ``raw`` joins the message
    contents with blank lines (for base models without a template). A ``system_prompt`` is added as a system
    message unless the data already starts with one.
    """
    messages = [dict(message) for message in messages]
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    if prompt_format == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise EvalInputError(
                f"the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
                "pass --prompt-format raw to feed the message text as is"
            )
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # The template already holds any BOS; adding special tokens again would double it.
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if prompt_format == "raw":
        text = "\n\n".join(message["content"] for message in messages)
        return list(tokenizer(text, add_special_tokens=True)["input_ids"])
    raise EvalInputError(f"--prompt-format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def stop_token_ids(model_path: str, tokenizer: Any, trust_remote_code: bool = False) -> list[int]:
    """The tokenizer's EOS plus the checkpoint's ``generation_config.eos_token_id`` list.

    Chat models often end a turn with a token other than the tokenizer's EOS (Qwen2.5: ``<|im_end|>`` and
    ``<|endoftext|>``); missing one makes every response run to the length limit.
    """
    from transformers import GenerationConfig

    ids = set(_as_list(tokenizer.eos_token_id))
    try:
        generation_config = GenerationConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        ids.update(_as_list(generation_config.eos_token_id))
    except OSError:  # no generation_config.json: the tokenizer's EOS is all there is
        pass
    if not ids:
        raise EvalInputError(f"neither the tokenizer nor the generation config of {model_path!r} names an EOS token")
    return sorted(ids)
