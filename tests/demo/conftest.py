"""Models for the demo tests: the real SmolLM2 conversion (once per session) and a tiny random Llama that shares
its tokenizer, so the verl training path can be exercised in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mhpo_verl.demo.model import CACHE_ENV, prepare_model


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """Where converted models live: ``$MHPO_VERL_CACHE`` when set (reuse across runs), else a session folder."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else tmp_path_factory.mktemp("model_cache")


@pytest.fixture(scope="session")
def smollm2_dir(model_cache) -> Path:
    return prepare_model(model_cache)


@pytest.fixture(scope="session")
def tiny_model_dir(smollm2_dir, tmp_path_factory) -> Path:
    """A 2-layer, 64-wide random Llama with SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
