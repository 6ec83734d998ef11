"""Small VL input files in the layouts the real releases ship in, with synthetic images, written by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.vl.tiny_vl import png_bytes

RED, GREEN, BLUE = (200, 40, 40), (40, 180, 60), (40, 60, 200)


def image_struct(name: str, colour=RED, mark: int = 0, size=(64, 48)) -> dict:
    return {"bytes": png_bytes(*size, colour, mark), "path": name}


def geometry3k_records() -> list[dict]:
    """hiyouga/geometry3k: ``images`` (a list of Image features), ``problem`` with ``<image>``, ``answer``."""
    return [
        {"images": [image_struct("0.png", RED, 0)], "problem": "<image>Find x.", "answer": "3"},
        {"images": [image_struct("1.png", GREEN, 5)], "problem": "<image>Find x.", "answer": "12"},  # same text
        {"images": [image_struct("0.png", RED, 0)], "problem": "<image>Find x.", "answer": "3"},  # duplicate of 0
        {"images": [], "problem": "<image>Find y.", "answer": "2"},  # missing image
        {"images": [{"bytes": b"not a png", "path": "4.png"}], "problem": "<image>Find z.", "answer": "1"},
        {"images": [image_struct("5.png", BLUE, 9)], "problem": "<image>Find the area.", "answer": ""},  # no answer
        {"images": [image_struct("6.png", BLUE, 3)], "problem": "<image>Find m \\angle 2.", "answer": "45"},
    ]


def mathvista_records() -> list[dict]:
    """AI4Math/MathVista testmini: ``choices`` (None for free form), the answer is the option *text*."""
    return [
        {
            "pid": "1",
            "question": "What is the length of side AB?",
            "choices": ["3", "12", "7", "9"],
            "answer": "12",
            "question_type": "multi_choice",
            "answer_type": "text",
            "decoded_image": image_struct("images/1.jpg", RED, 1),
            "image": "images/1.jpg",
        },
        {
            "pid": "2",
            "question": "How many bars are taller than 5?",
            "choices": None,
            "answer": "4",
            "question_type": "free_form",
            "answer_type": "integer",
            "decoded_image": image_struct("images/2.jpg", GREEN, 2),
            "image": "images/2.jpg",
        },
        {
            "pid": "3",
            "question": "Which angle is largest?",
            "choices": ["A", "B", "C"],
            "answer": "D",  # not among the choices
            "question_type": "multi_choice",
            "answer_type": "text",
            "decoded_image": image_struct("images/3.jpg", BLUE, 3),
            "image": "images/3.jpg",
        },
    ]


def mathverse_records(image_dir: Path) -> list[dict]:
    """AI4Math/MathVerse testmini: options written in the question, a letter answer, five problem versions
    (here: image paths relative to the release folder, the layout of the downloaded zip)."""
    (image_dir / "images").mkdir(parents=True, exist_ok=True)
    (image_dir / "images" / "1.png").write_bytes(png_bytes(80, 60, RED, 4))
    (image_dir / "images" / "2.png").write_bytes(png_bytes(80, 60, GREEN, 6))
    question = "As shown in the figure, find the angle ABC.\nChoices:\nA:30°\nB:45°\nC:60°\nD:90°"
    return [
        {
            "sample_index": "1",
            "problem_version": "Text Dominant",
            "question": question,
            "answer": "B",
            "question_type": "multi-choice",
            "image": "images/1.png",
        },
        {
            "sample_index": "2",
            "problem_version": "Vision Only",
            "question": question,
            "answer": "B",
            "question_type": "multi-choice",
            "image": "images/2.png",
        },
        {
            "sample_index": "3",
            "problem_version": "Text Lite",
            "question": "Find the radius.",
            "answer": "2.5",
            "question_type": "free-form",
            "image": "images/1.png",
        },
        {
            "sample_index": "4",
            "problem_version": "Text Lite",
            "question": question,
            "answer": "F",  # no such option
            "question_type": "multi-choice",
            "image": "images/2.png",
        },
    ]


def mathvision_records(image_dir: Path) -> list[dict]:
    """MathLLMs/MathVision test: ``options`` (empty for free form), a letter answer, ``<image1>`` in the text."""
    (image_dir / "images").mkdir(parents=True, exist_ok=True)
    (image_dir / "images" / "1.jpg").write_bytes(png_bytes(70, 70, BLUE, 1))
    (image_dir / "images" / "2.jpg").write_bytes(png_bytes(70, 70, RED, 2))
    return [
        {
            "id": "1",
            "question": "Which cube can be folded from <image1>?",
            "options": ["A", "B", "C", "D", "E"],
            "answer": "C",
            "image": "images/1.jpg",
            "level": 2,
            "subject": "solid geometry",
        },
        {
            "id": "2",
            "question": "How many dots are there in total?",
            "options": [],
            "answer": "12",
            "image": "images/2.jpg",
            "level": 1,
            "subject": "counting",
        },
        {
            "id": "3",
            "question": "What is shown in <image1>?",
            "options": ["1", "2"],
            "answer": "A",
            "image": "images/missing.jpg",
            "level": 1,
            "subject": "counting",
        },
        {
            "id": "4",
            "question": "Compare <image1> and <image2>.",
            "options": ["1", "2"],
            "answer": "B",
            "image": "images/1.jpg",
            "level": 1,
            "subject": "counting",
        },  # two references, one image
    ]


def write_parquet(path: Path, records: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def write_inputs(root: Path) -> dict[str, tuple[Path, str]]:
    """One input file per VL dataset: ``{name: (path, split)}``."""
    root.mkdir(parents=True, exist_ok=True)
    return {
        "geometry3k": (write_parquet(root / "geo3k_train.parquet", geometry3k_records()), "train"),
        "mathvista": (write_parquet(root / "mathvista_testmini.parquet", mathvista_records()), "testmini"),
        "mathverse": (
            write_jsonl(root / "mathverse" / "testmini.jsonl", mathverse_records(root / "mathverse")),
            "testmini",
        ),
        "mathvision": (
            write_jsonl(root / "mathvision" / "test.jsonl", mathvision_records(root / "mathvision")),
            "test",
        ),
    }


def write_converted_vl_dir(root: Path) -> Path:
    """A data folder as ``python -m mhpo_verl data convert`` makes it for the four VL datasets (Geometry3K's test
    split converted from the same fixture as its train split)."""
    from mhpo_verl.data.__main__ import main

    out_dir = root / "converted"
    inputs = write_inputs(root / "inputs")
    for name, (path, split) in [*inputs.items(), ("geometry3k", (inputs["geometry3k"][0], "test"))]:
        status = main(
            ["convert", name, "--input", str(path), "--split", split, "--out-dir", str(out_dir), "--no-progress"]
        )
        assert status == 0, f"fixture conversion of {name} failed"
    return out_dir
