"""Small input files in the layouts the real datasets ship in, written by the tests themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mhpo_verl.data.catalog import DAPO_PROMPT_TEMPLATE

GSM8K = [
    {"question": "Tom has 3 apples and buys 1,200 more. How many now?", "answer": "3 + 1200 = 1203\n#### 1,203"},
    {"question": "What is 6 times 7?", "answer": "6 * 7 = 42\n#### 42"},
]
MATH = [
    {
        "problem": "Compute $\\frac{1}{4} + \\frac{1}{4}$.",
        "level": "Level 1",
        "type": "Prealgebra",
        "solution": "Adding gives $\\boxed{\\frac{1}{2}}$.",
    },
    {
        "problem": "Find the set $\\{x : x^2 = 4\\}$.",
        "level": "Level 2",
        "type": "Algebra",
        "solution": "Both signs work: $\\boxed{\\{-2, 2\\}}$ is the set.",
    },
]
MATH500 = [
    {
        "problem": "What is $1+1$?",
        "solution": "It is $\\boxed{2}$.",
        "answer": "2",
        "subject": "Prealgebra",
        "level": 1,
        "unique_id": "test/prealgebra/1.json",
    },
]
AIME24 = [  # HuggingFaceH4/aime_2024 layout
    {"id": 60, "problem": "Find the number of ways ... (AIME 2024 I #1)", "solution": "...", "answer": "204"},
    {"id": 61, "problem": "Let $x$ be ... (AIME 2024 I #2)", "solution": "...", "answer": "25"},
]
AIME24_CAPITALISED = [  # another mirror of the same set: capitalised columns, integer answers
    {"ID": "2024-I-1", "Problem": "Find the number of ways ... (AIME 2024 I #1)", "Solution": "...", "Answer": 204},
]
AIME25 = [{"id": "0", "problem": "Find the sum of all integer bases $b>9$ ...", "answer": "70"}]
AMC23 = [{"id": 0, "question": "Cities A and B are 45 miles apart ...", "answer": 27.0, "url": "https://example"}]
HMMT25 = [
    {
        "problem_idx": 1,
        "problem": "Compute the sum of the positive divisors of $9!$ that have units digit $1$.",
        "answer": "103",
        "problem_type": ["Number Theory"],
    }
]
DAPO_PROBLEMS = [("In triangle $ABC$ ... find $m+n$.", "34"), ("How many primes below 20?", "8")]


def dapo_rows(repeats: int = 3) -> list[dict]:
    """The released DAPO-Math-17k layout: verl rows with DAPO's template, each prompt repeated."""
    rows = []
    for _ in range(repeats):
        for problem, answer in DAPO_PROBLEMS:
            rows.append(
                {
                    "data_source": "math_dapo",
                    "prompt": [{"role": "user", "content": DAPO_PROMPT_TEMPLATE.replace("{question}", problem)}],
                    "ability": "MATH",
                    "reward_model": {"ground_truth": answer, "style": "rule-lighteval/MATH_v2"},
                    "extra_info": {"index": f"uuid-{answer}"},
                }
            )
    return rows


SAMPLES = {
    "gsm8k": GSM8K,
    "math": MATH,
    "math500": MATH500,
    "aime24": AIME24,
    "aime25": AIME25,
    "amc23": AMC23,
    "hmmt25": HMMT25,
}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def write_parquet(path: Path, records: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def write_converted_data_dir(root: Path) -> Path:
    """A data folder like `python -m mhpo_verl data all` makes, built from the fixtures with the real converter."""
    from mhpo_verl.data.__main__ import main

    inputs = {name: write_jsonl(root / f"{name}.jsonl", records) for name, records in SAMPLES.items()}
    inputs["dapo_math_17k"] = write_parquet(root / "dapo.parquet", dapo_rows())
    out_dir = root / "converted"
    for name, path in inputs.items():
        split = "train" if name in ("gsm8k", "math", "dapo_math_17k") else "test"
        arguments = ["convert", name, "--input", str(path), "--split", split, "--out-dir", str(out_dir)]
        status = main([*arguments, "--no-progress"])
        assert status == 0, f"fixture conversion of {name} failed"
    return out_dir
