"""Reading benchmark files: schema checks, benchmark names, problem ids."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mhpo_verl.eval.benchmarks import resolve_benchmark
from mhpo_verl.eval.errors import EvalInputError
from mhpo_verl.eval.problems import load_problems
from tests.eval.conftest import benchmark_rows, write_benchmark


@pytest.mark.parametrize(
    ("data_source", "expected"),
    [
        ("math500", "math500"),
        ("HuggingFaceH4/MATH-500", "math500"),
        ("AIME_2024", "aime24"),
        ("aime-2025", "aime25"),
        ("amc2023", "amc23"),
        ("MathArena/hmmt_feb_2025", "hmmt25"),
        ("openai/gsm8k", "gsm8k"),
    ],
)
def test_known_benchmark_spellings(data_source, expected):
    assert resolve_benchmark(data_source) == expected


def test_unknown_benchmark_is_an_error_unless_allowed():
    with pytest.raises(EvalInputError, match=r"unknown benchmark data_source 'aime2023'.*math500, hmmt25"):
        resolve_benchmark("aime2023")
    assert resolve_benchmark(" olympiadbench ", allow_unknown=True) == "olympiadbench"


def test_loads_rows_in_order_with_ids_and_canonical_names(benchmark_files):
    problems = load_problems(benchmark_files)
    assert [(p.benchmark, p.problem_id) for p in problems] == [
        ("math500", 0), ("math500", 1), ("math500", 2), ("aime24", 0), ("aime24", 1), ("amc23", 0), ("amc23", 1),
    ]
    first = problems[0]
    assert first.data_source == "HuggingFaceH4/MATH-500"  # kept for the grader's dispatch
    assert first.ground_truth == "4"
    assert first.messages == ({"role": "user", "content": "Problem 0 of HuggingFaceH4/MATH-500: what is 4? Box it."},)
    assert first.extra_info == {"split": "test", "index": 0}


def test_folder_and_limit(benchmark_files):
    (benchmark_files[0].parent / "test.report.json").write_text("{}")  # the data step's report is not data
    problems = load_problems([benchmark_files[0].parent], limit=1)
    assert sorted(p.benchmark for p in problems) == ["aime24", "amc23", "math500"]


def test_row_number_is_the_id_without_extra_info(tmp_path):
    path = tmp_path / "b.parquet"
    rows = benchmark_rows("aime25", ["1", "2"])
    for row in rows:
        del row["extra_info"]
    pd.DataFrame(rows).to_parquet(path)
    assert [p.problem_id for p in load_problems([path])] == [0, 1]


def test_jsonl_and_a_plain_string_prompt(tmp_path):
    path = tmp_path / "b.jsonl"
    row = {"data_source": "amc23", "prompt": "What is 2+2?", "reward_model": {"ground_truth": "4"}}
    path.write_text(json.dumps(row) + "\n")
    (problem,) = load_problems([path])
    assert problem.messages == ({"role": "user", "content": "What is 2+2?"},)


def test_missing_column_names_the_column(tmp_path):
    path = tmp_path / "b.parquet"
    pd.DataFrame([{"data_source": "aime24", "prompt": [{"role": "user", "content": "q"}]}]).to_parquet(path)
    with pytest.raises(EvalInputError, match=r"lacks column\(s\) \['reward_model'\]"):
        load_problems([path])


def test_unknown_data_source_in_a_file(tmp_path):
    path = write_benchmark(tmp_path / "b.parquet", "my_bench", ["1"])
    with pytest.raises(EvalInputError, match="unknown benchmark data_source 'my_bench'"):
        load_problems([path])
    assert load_problems([path], allow_unknown_benchmarks=True)[0].benchmark == "my_bench"


def test_duplicate_problem_ids_across_files(tmp_path):
    a = write_benchmark(tmp_path / "a.parquet", "aime24", ["1", "2"])
    b = write_benchmark(tmp_path / "b.parquet", "aime_2024", ["3"])
    with pytest.raises(EvalInputError, match="problem id 0 of benchmark 'aime24' appears twice"):
        load_problems([a, b])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"reward_model": {"style": "rule", "ground_truth": ""}}, "non-empty 'ground_truth'"),
        ({"prompt": []}, "'prompt' must be a non-empty list"),
        ({"prompt": [{"role": "user", "content": None}]}, "lacks a string 'content'"),
        ({"data_source": ""}, "'data_source' must be a non-empty string"),
    ],
)
def test_bad_rows_name_file_and_row(tmp_path, override, message):
    path = write_benchmark(tmp_path / "bad.parquet", "aime24", ["1"], override)
    with pytest.raises(EvalInputError, match=message) as error:
        load_problems([path])
    assert "bad.parquet:row 0" in str(error.value)


def test_missing_file_and_bad_limit(tmp_path):
    with pytest.raises(EvalInputError, match="does not exist"):
        load_problems([tmp_path / "nope.parquet"])
    with pytest.raises(EvalInputError, match="holds no"):
        load_problems([tmp_path])
    with pytest.raises(EvalInputError, match="--limit must be >= 1, got 0"):
        load_problems([tmp_path], limit=0)
