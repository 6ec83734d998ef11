"""VL converters: every row accounted for with its reason, options and letters in extra_info, images embedded as
verl expects, and the files loaded by verl's own RLHFDataset with a processor."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest

from mhpo_verl.data.__main__ import main
from mhpo_verl.data.readers import open_local
from mhpo_verl.data.vision import (
    CHOICE_PROMPT_TEMPLATE,
    IMAGE_PLACEHOLDER,
    VISION_DATASETS,
    convert_vision_records,
    options_from_text,
)
from tests.vl import fixtures


def _report(converted, name, split):
    return json.loads((converted / name / f"{split}.report.json").read_text())


def _rows(converted, name, split):
    return pq.read_table(converted / name / f"{split}.parquet").to_pylist()


def test_geometry3k_report_accounts_for_every_row_with_its_reason(converted_vl):
    report = _report(converted_vl, "geometry3k", "train")
    assert report["rows_read"] == 7 and report["rows_written"] == 3
    reasons = {item["source_index"]: item["reason"] for item in report["malformed"]}
    assert sorted(reasons) == [3, 4, 5]
    assert reasons[3].startswith("missing image")
    assert reasons[4].startswith("undecodable image '4.png'")
    assert reasons[5].startswith("no usable answer")
    # Row 1 asks the same "Find x." of another diagram: kept. Row 2 repeats row 0 exactly: a duplicate.
    assert report["duplicates"] == [{"source_index": 2, "kept_index": 0, "answer": "3", "kept_answer": "3"}]
    assert report["rows_read"] == report["rows_written"] + len(report["malformed"]) + len(report["duplicates"])


def test_free_form_row_embeds_its_image_with_one_placeholder(converted_vl):
    from PIL import Image

    rows = _rows(converted_vl, "geometry3k", "train")
    assert [row["reward_model"]["ground_truth"] for row in rows] == ["3", "12", "45"]
    first = rows[0]
    assert first["data_source"] == "geometry3k"
    content = first["prompt"][0]["content"]
    assert content.count(IMAGE_PLACEHOLDER) == len(first["images"]) == 1
    assert content.startswith("<image>Find x.") and content.endswith("within \\boxed{}.")
    assert first["images"][0]["bytes"] == fixtures.geometry3k_records()[0]["images"][0]["bytes"]
    assert Image.open(io.BytesIO(first["images"][0]["bytes"])).size == (64, 48)
    extra = first["extra_info"]
    assert extra["question_type"] == "free_form" and extra["options"] == [] and extra["answer_letter"] == ""
    assert extra["source_index"] == 0 and extra["index"] == 0 and extra["split"] == "train"


def test_mathvista_choice_answer_given_as_text_becomes_its_letter(converted_vl):
    rows = _rows(converted_vl, "mathvista", "testmini")
    choice, free = rows
    assert choice["reward_model"]["ground_truth"] == "B"
    extra = choice["extra_info"]
    assert extra["question_type"] == "multiple_choice"
    assert extra["choices"] == ["3", "12", "7", "9"]
    assert extra["options"] == [
        {"letter": "A", "text": "3"},
        {"letter": "B", "text": "12"},
        {"letter": "C", "text": "7"},
        {"letter": "D", "text": "9"},
    ]
    assert (extra["answer_letter"], extra["answer_text"], extra["id"]) == ("B", "12", "1")
    question = "<image>What is the length of side AB?\n\nChoices:\n(A) 3\n(B) 12\n(C) 7\n(D) 9"
    assert choice["prompt"][0]["content"] == CHOICE_PROMPT_TEMPLATE.replace("{question}", question)
    assert free["reward_model"]["ground_truth"] == "4" and free["extra_info"]["question_type"] == "free_form"
    report = _report(converted_vl, "mathvista", "testmini")
    assert report["malformed"] == [
        {"source_index": 2, "reason": "no usable answer: answer 'D' matches no option among ['A', 'B', 'C']"}
    ]
    assert any("complete split has 1000" in warning for warning in report["warnings"])


def test_mathverse_options_are_read_from_the_question_and_versions_kept_apart(converted_vl):
    rows = _rows(converted_vl, "mathverse", "testmini")
    assert [row["extra_info"]["variant"] for row in rows] == ["Text Dominant", "Vision Only", "Text Lite"]
    first = rows[0]
    assert first["reward_model"]["ground_truth"] == "B"
    assert first["extra_info"]["answer_text"] == "45°"
    assert [option["letter"] for option in first["extra_info"]["options"]] == ["A", "B", "C", "D"]
    assert first["prompt"][0]["content"].count("Choices:") == 1  # already listed: not listed twice
    assert rows[0]["images"][0]["bytes"] != rows[1]["images"][0]["bytes"]  # read from images/ next to the file
    report = _report(converted_vl, "mathverse", "testmini")
    assert report["malformed"] == [
        {"source_index": 3, "reason": "no usable answer: 'F' is not one of the options ['A', 'B', 'C', 'D']"}
    ]


def test_mathvision_numbered_image_references_and_missing_files(converted_vl, tmp_path):
    rows = _rows(converted_vl, "mathvision", "test")
    assert len(rows) == 2
    choice, free = rows
    assert choice["prompt"][0]["content"].startswith("Which cube can be folded from <image>?")
    assert choice["extra_info"]["options"][2] == {"letter": "C", "text": "C"}
    assert choice["extra_info"]["subject"] == "solid geometry" and choice["extra_info"]["level"] == "2"
    assert free["extra_info"]["question_type"] == "free_form" and free["reward_model"]["ground_truth"] == "12"
    malformed = _report(converted_vl, "mathvision", "test")["malformed"]
    reasons = {item["source_index"]: item["reason"] for item in malformed}
    assert reasons[2].startswith("missing image: file ") and "images/missing.jpg" in reasons[2]
    assert reasons[3].startswith("the question's image references do not match its 1 image(s)")


def test_options_parsed_from_text_stop_at_the_first_line_that_is_not_the_next_letter():
    text = "Find it.\nChoices:\nA:1\n(B) 2\nC. 3\nE:5"
    assert options_from_text(text) == (("A", "1"), ("B", "2"), ("C", "3"))
    assert options_from_text("No options here.\nA: 1") == ()


def test_unreadable_records_are_reported_not_fatal(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"question": "x", "answer": "1", "image": "a.png"}\nnot json\n', encoding="utf-8")
    rows, report = convert_vision_records(
        VISION_DATASETS["mathvision"], open_local(path), split="test", image_root=tmp_path, progress=False
    )
    assert rows == [] and report.rows_read == 2 and report.accounted()
    reasons = [m.reason for m in report.malformed]
    assert reasons[0].startswith("missing image: file ")
    assert reasons[1] == "line 2 is not valid JSON (Expecting value at column 1)"


def test_cli_check_accepts_vl_files_and_strict_refuses_malformed_rows(converted_vl, tmp_path, capsys):
    files = sorted(str(path) for path in converted_vl.glob("*/*.parquet"))
    assert main(["check", *files]) == 0
    assert capsys.readouterr().out.count(": ok,") == len(files) == 5  # geometry3k train and test, three benchmarks
    source, split = fixtures.write_inputs(tmp_path / "in")["geometry3k"]
    out = tmp_path / "out"
    status = main(
        [
            "convert",
            "geometry3k",
            "--input",
            str(source),
            "--split",
            split,
            "--out-dir",
            str(out),
            "--strict",
            "--no-progress",
        ]
    )
    assert status == 1 and not out.exists()


def test_exclude_removes_rows_with_the_same_question_and_images(converted_vl, tmp_path):
    source, _ = fixtures.write_inputs(tmp_path / "in")["geometry3k"]
    train = converted_vl / "geometry3k" / "train.parquet"
    out = tmp_path / "out"
    status = main(
        [
            "convert",
            "geometry3k",
            "--input",
            str(source),
            "--split",
            "test",
            "--out-dir",
            str(out),
            "--exclude",
            str(train),
            "--no-progress",
        ]
    )
    assert status == 0
    report = _report(out, "geometry3k", "test")
    assert report["overlap"] == [0, 1, 2, 6] and report["rows_written"] == 0  # overlap is checked first


@pytest.fixture
def rlhf_dataset(converted_vl, vl_processor, tmp_path, monkeypatch):
    import datasets
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))

    def load(files):
        config = OmegaConf.create(
            {
                "prompt_key": "prompt",
                "image_key": "images",
                "max_prompt_length": 1024,
                # The length filter renders through qwen_vl_utils, which imports torchvision (not installable
                # here); the rendering is checked below with the processor itself.
                "filter_overlong_prompts": False,
                "return_raw_chat": True,
                "cache_dir": str(tmp_path / "verl-cache"),
            }
        )
        return RLHFDataset(
            data_files=[str(f) for f in files], tokenizer=vl_processor.tokenizer, config=config, processor=vl_processor
        )

    return load


def test_verl_rlhf_dataset_loads_the_vl_sets_together_with_their_images(converted_vl, vl_processor, rlhf_dataset):
    from PIL import Image

    files = [
        converted_vl / "mathvista" / "testmini.parquet",
        converted_vl / "mathverse" / "testmini.parquet",
        converted_vl / "mathvision" / "test.parquet",
    ]
    dataset = rlhf_dataset(files)
    assert len(dataset) == 2 + 3 + 2
    item = dataset[0]
    assert item["data_source"] == "mathvista" and item["reward_model"]["ground_truth"] == "B"
    content = item["raw_prompt"][0]["content"]
    assert [part["type"] for part in content] == ["image", "text"]
    image = content[0]["image"]
    assert isinstance(image, Image.Image) and image.size == (64, 48)
    assert item["extra_info"]["options"][1] == {"letter": "B", "text": "12"}
    # The processor turns the loaded messages into the prompt the rollout sees: one image, its grid of patches.
    text = vl_processor.apply_chat_template(item["raw_prompt"], add_generation_prompt=True, tokenize=False)
    inputs = vl_processor(text=[text], images=[image.convert("RGB")], return_tensors="pt")
    grid = inputs["image_grid_thw"][0]
    image_token = vl_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((inputs["input_ids"][0] == image_token).sum()) == int(grid.prod()) // 4 > 0


def test_verl_rlhf_dataset_loads_the_geometry3k_training_file(converted_vl, rlhf_dataset):
    dataset = rlhf_dataset([converted_vl / "geometry3k" / "train.parquet"])
    assert len(dataset) == 3
    assert [dataset[i]["reward_model"]["ground_truth"] for i in range(3)] == ["3", "12", "45"]
    assert dataset[2]["raw_prompt"][0]["content"][0]["image"].size == (64, 48)
