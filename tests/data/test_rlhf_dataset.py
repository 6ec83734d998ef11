"""The converters' parquet, loaded by verl's own RLHFDataset with a tokenizer built here (no download)."""

import datasets
import pytest
from omegaconf import OmegaConf
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mhpo_verl.data.schema import DEFAULT_PROMPT_TEMPLATE
from tests.data.fixtures import GSM8K, write_converted_data_dir

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["[UNK]", "[PAD]", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return write_converted_data_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def tokenizer(converted):
    import pyarrow.parquet as pq

    texts = [
        message["content"]
        for path in converted.rglob("*.parquet")
        for row in pq.read_table(path).to_pylist()
        for message in row["prompt"]
    ]
    model = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    model.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(tokenizer_object=model, unk_token="[UNK]", pad_token="[PAD]", eos_token="<|end|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _dataset(files, tokenizer, tmp_path, monkeypatch, max_prompt_length=1024):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    config = OmegaConf.create(
        {
            "prompt_key": "prompt",
            "max_prompt_length": max_prompt_length,
            "filter_overlong_prompts": True,
            "filter_overlong_prompts_workers": 1,
            "truncation": "error",
            "return_raw_chat": True,
            "cache_dir": str(tmp_path / "verl-cache"),
        }
    )
    return RLHFDataset(data_files=[str(path) for path in files], tokenizer=tokenizer, config=config)


def test_train_files_of_different_datasets_load_together(converted, tokenizer, tmp_path, monkeypatch):
    files = [converted / "gsm8k" / "train.parquet", converted / "dapo_math_17k" / "train.parquet",
             converted / "math" / "train.parquet"]
    dataset = _dataset(files, tokenizer, tmp_path, monkeypatch)
    assert len(dataset) == 2 + 2 + 2  # nothing filtered: every prompt tokenized and fits
    first = dataset[0]
    assert first["data_source"] == "gsm8k"
    assert first["raw_prompt"] == [
        {"role": "user", "content": DEFAULT_PROMPT_TEMPLATE.replace("{question}", GSM8K[0]["question"])}
    ]
    assert first["reward_model"]["ground_truth"] == "1203"
    assert first["index"] == first["extra_info"]["index"] == 0
    assert [dataset[i]["data_source"] for i in range(len(dataset))] == ["gsm8k"] * 2 + ["dapo_math_17k"] * 2 + [
        "math"
    ] * 2
    rendered = tokenizer.apply_chat_template(first["raw_prompt"], add_generation_prompt=True, tokenize=False)
    assert rendered.startswith("<|user|> Tom has 3 apples") and "\\boxed{}" in rendered


def test_benchmark_files_load_and_the_length_filter_sees_real_token_counts(converted, tokenizer, tmp_path,
                                                                           monkeypatch):
    from verl.utils.tokenizer import normalize_token_ids

    files = sorted(converted.glob("*/test.parquet"))
    full = _dataset(files, tokenizer, tmp_path, monkeypatch)
    assert sorted({full[i]["data_source"] for i in range(len(full))}) == [
        "aime24", "aime25", "amc23", "hmmt25", "math500"
    ]
    lengths = [
        len(normalize_token_ids(tokenizer.apply_chat_template(full[i]["raw_prompt"], add_generation_prompt=True)))
        for i in range(len(full))
    ]
    limit = sorted(lengths)[len(lengths) // 2]
    short = _dataset(files, tokenizer, tmp_path, monkeypatch, max_prompt_length=limit)
    assert len(short) == sum(length <= limit for length in lengths) < len(full)
