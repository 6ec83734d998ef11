"""A tiny causal LM with its own tokenizer and chat template, and verl-format benchmark files, all made here.

The model is a 2-layer Llama with random weights: it writes gibberish, fast, which is all the pipeline needs
(real grading of real answers is the reward functions' tests' job).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
PAD_ID, BOS_ID, EOS_ID, END_TURN_ID = 0, 1, 2, 6
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [
    "What is 1 + 1? Please reason step by step, and put your final answer within \\boxed{}.",
    "Compute 3 * 4 = 12. The answer is \\boxed{12}.",
    "Find x such that 2x + 3 = 7. So x = 2 and the final answer is \\boxed{2}.",
    "The sum of the first 10 positive integers is 55, so \\boxed{55}.",
]


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Like a chat checkpoint: an end-of-turn token besides EOS, and sampling defaults the evaluator must ignore.
    model.generation_config = GenerationConfig(
        eos_token_id=[EOS_ID, END_TURN_ID], do_sample=True, temperature=3.0, top_k=2, repetition_penalty=1.3
    )
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_lm"))


def benchmark_rows(data_source: str, answers: list[str], first_index: int = 0) -> list[dict]:
    return [
        {
            "data_source": data_source,
            "prompt": [{"role": "user", "content": f"Problem {i} of {data_source}: what is {answer}? Box it."}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": answer},
            "extra_info": {"split": "test", "index": first_index + i},
        }
        for i, answer in enumerate(answers)
    ]


def write_benchmark(path: Path, data_source: str, answers: list[str], overrides: dict | None = None) -> Path:
    rows = benchmark_rows(data_source, answers)
    for row in rows:
        row.update(overrides or {})
    pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.fixture
def benchmark_files(tmp_path) -> list[Path]:
    """Three benchmarks, one of them under verl's long data_source name."""
    return [
        write_benchmark(tmp_path / "math500.parquet", "HuggingFaceH4/MATH-500", ["4", "\\frac{1}{2}", "12"]),
        write_benchmark(tmp_path / "aime24.parquet", "aime24", ["204", "25"]),
        write_benchmark(tmp_path / "amc23.parquet", "amc23", ["7", "3"]),
    ]
