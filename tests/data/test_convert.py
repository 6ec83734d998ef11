import pyarrow.parquet as pq
import pytest

from mhpo_verl.data.catalog import DATASETS, get_spec, read_problem, strip_template
from mhpo_verl.data.convert import convert_records, questions_in_parquet, write_parquet
from mhpo_verl.data.readers import open_local
from mhpo_verl.data.schema import DEFAULT_PROMPT_TEMPLATE, check_table, rows_to_table
from tests.data.fixtures import AIME24_CAPITALISED, DAPO_PROBLEMS, SAMPLES, dapo_rows, write_jsonl
from tests.data.fixtures import write_parquet as fixture_parquet

EXPECTED_ANSWERS = {
    "gsm8k": ["1203", "42"],
    "math": ["\\frac{1}{2}", "\\{-2, 2\\}"],
    "math500": ["2"],
    "aime24": ["204", "25"],
    "aime25": ["70"],
    "amc23": ["27"],
    "hmmt25": ["103"],
}


def _convert(tmp_path, name, records, **options):
    source = open_local(write_jsonl(tmp_path / f"{name}.jsonl", records))
    split = DATASETS[name].splits[0]
    return convert_records(get_spec(name), source, split=split, progress=False, **options)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_dataset_layout_converts_to_verl_rows(tmp_path, name):
    rows, report = _convert(tmp_path, name, SAMPLES[name])
    assert [row["reward_model"]["ground_truth"] for row in rows] == EXPECTED_ANSWERS[name]
    assert all(row["data_source"] == name for row in rows)
    assert [row["extra_info"]["index"] for row in rows] == list(range(len(rows)))
    assert report.rows_read == report.rows_written == len(SAMPLES[name]) and report.accounted()
    assert check_table(rows_to_table(rows)) == []
    first_question = rows[0]["extra_info"]["question"]
    assert rows[0]["prompt"][0]["content"] == DEFAULT_PROMPT_TEMPLATE.replace("{question}", first_question)


def test_metadata_is_carried_as_strings(tmp_path):
    (row,) = _convert(tmp_path, "math500", SAMPLES["math500"])[0]
    info = row["extra_info"]
    assert (info["id"], info["subject"], info["level"]) == ("test/prealgebra/1.json", "Prealgebra", "1")
    assert info["reference_solution"] == "It is $\\boxed{2}$." and info["origin"] == "math500.jsonl"
    (hmmt,) = _convert(tmp_path, "hmmt25", SAMPLES["hmmt25"])[0]
    assert hmmt["extra_info"]["subject"] == "Number Theory" and hmmt["extra_info"]["id"] == "1"


def test_capitalised_mirror_of_aime_reads_the_same(tmp_path):
    (row,) = _convert(tmp_path, "aime24", AIME24_CAPITALISED)[0]
    assert row["reward_model"]["ground_truth"] == "204" and row["extra_info"]["id"] == "2024-I-1"


def test_dapo_release_loses_its_template_and_its_repeats(tmp_path):
    source = open_local(fixture_parquet(tmp_path / "dapo.parquet", dapo_rows(repeats=3)))
    rows, report = convert_records(get_spec("dapo_math_17k"), source, split="train", progress=False)
    assert [row["extra_info"]["question"] for row in rows] == [problem for problem, _ in DAPO_PROBLEMS]
    assert [row["reward_model"]["ground_truth"] for row in rows] == [answer for _, answer in DAPO_PROBLEMS]
    assert "Answer:" not in rows[0]["prompt"][0]["content"] and "\\boxed{}" in rows[0]["prompt"][0]["content"]
    assert report.rows_read == 6 and report.rows_written == 2 and len(report.duplicates) == 4
    assert {(d.source_index, d.kept_index) for d in report.duplicates} == {(2, 0), (3, 1), (4, 0), (5, 1)}
    assert report.conflicting_duplicates == [] and report.accounted()


def test_every_bad_row_is_reported_with_its_index_and_nothing_else_is_lost(tmp_path):
    records = [
        {"question": "Good one?", "answer": "#### 1"},
        {"question": "   ", "answer": "#### 2"},
        {"question": "No marker", "answer": "2"},
        {"question": "Good   one?", "answer": "#### 5"},  # same problem, whitespace aside, other answer
        {"question": 12, "answer": "#### 3"},
        {"question": "Second good", "answer": "#### 4"},
        {"question": "Second good", "answer": "#### 4"},
    ]
    rows, report = _convert(tmp_path, "gsm8k", records)
    assert [row["extra_info"]["source_index"] for row in rows] == [0, 5]
    assert [m.source_index for m in report.malformed] == [1, 2, 4]
    assert "no problem text" in report.malformed[0].reason
    assert "'#### <number>'" in report.malformed[1].reason
    assert [(d.source_index, d.kept_index, d.conflicting) for d in report.duplicates] == [(3, 0, True), (6, 5, False)]
    assert report.accounted() and report.rows_read == 7
    assert "malformed 3, duplicates 2 [1 with a different answer]" in report.summary()


def test_excluded_problems_are_counted_as_overlap(tmp_path):
    records = SAMPLES["gsm8k"]
    rows, report = _convert(tmp_path, "gsm8k", records, exclude_questions=[f"  {records[1]['question']}  "])
    assert len(rows) == 1 and report.overlap == [1] and report.accounted()


def test_questions_of_converted_parquet_feed_decontamination(tmp_path):
    rows, _ = _convert(tmp_path, "math500", SAMPLES["math500"])
    path = write_parquet(rows, tmp_path / "out" / "test.parquet")
    assert questions_in_parquet([path]) == {SAMPLES["math500"][0]["problem"]}
    verl_style = [{"prompt": [{"role": "user", "content": DEFAULT_PROMPT_TEMPLATE.replace("{question}", "Q?")}]}]
    assert questions_in_parquet([fixture_parquet(tmp_path / "verl.parquet", verl_style)]) == {"Q?"}


def test_short_file_warns_that_the_split_looks_incomplete(tmp_path):
    _, report = _convert(tmp_path, "aime25", SAMPLES["aime25"])
    (warning,) = report.warnings
    assert "1 rows after cleaning, a complete split has 30" in warning


def test_custom_template_is_applied_and_checked(tmp_path):
    rows, _ = _convert(tmp_path, "aime25", SAMPLES["aime25"], template="Problem: {question}\nBox it: \\boxed{}")
    assert rows[0]["prompt"][0]["content"].startswith("Problem: Find the sum")
    with pytest.raises(ValueError, match="exactly once"):
        _convert(tmp_path, "aime25", SAMPLES["aime25"], template="no placeholder")


def test_strip_template_recovers_the_problem_only_for_that_template():
    content = DEFAULT_PROMPT_TEMPLATE.replace("{question}", "What is 1+1?")
    assert strip_template(content, DEFAULT_PROMPT_TEMPLATE) == "What is 1+1?"
    assert strip_template("What is 1+1?", DEFAULT_PROMPT_TEMPLATE) is None


def test_verl_rows_from_other_tools_are_accepted():
    record = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
              "reward_model": {"ground_truth": 4}}
    problem = read_problem(get_spec("aime24"), record)
    assert (problem.question, problem.answer) == ("2+2?", "4")


def test_written_parquet_is_atomic_and_complete(tmp_path):
    rows, _ = _convert(tmp_path, "gsm8k", SAMPLES["gsm8k"])
    path = write_parquet(rows, tmp_path / "deep" / "train.parquet")
    assert path.exists() and [p.name for p in path.parent.iterdir()] == ["train.parquet"]
    assert pq.read_table(path).to_pylist() == rows
