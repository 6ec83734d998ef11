import pyarrow as pa
import pytest

from mhpo_verl.data.schema import (
    ARROW_SCHEMA,
    DEFAULT_PROMPT_TEMPLATE,
    EXTRA_INFO_FIELDS,
    SchemaError,
    build_prompt,
    check_table,
    make_row,
    rows_to_table,
)


def _row(**changes):
    row = make_row(data_source="aime24", question=" What is 2+2? ", ground_truth="4", split="test", index=0,
                   source_index=7, extra={"id": "p1"})
    row.update(changes)
    return row


def test_default_prompt_asks_for_a_boxed_answer_after_the_problem():
    (message,) = build_prompt("What is 2+2?")
    assert message["role"] == "user"
    assert message["content"].startswith("What is 2+2?\n\n")
    assert "\\boxed{}" in message["content"]


def test_template_braces_are_not_format_fields():
    (message,) = build_prompt("x", template="Q: {question} -- answer in \\boxed{} please {}")
    assert message["content"] == "Q: x -- answer in \\boxed{} please {}"


@pytest.mark.parametrize("template", ["no placeholder", "{question} and {question}"])
def test_template_needs_exactly_one_placeholder(template):
    with pytest.raises(SchemaError, match="exactly once") as error:
        build_prompt("x", template=template)
    assert repr(template) in str(error.value)


def test_row_has_verl_fields_and_every_extra_info_field():
    row = _row()
    assert row["data_source"] == "aime24"
    assert row["ability"] == "math"
    assert row["reward_model"] == {"style": "rule", "ground_truth": "4"}
    assert set(row["extra_info"]) == set(EXTRA_INFO_FIELDS)
    assert row["extra_info"]["question"] == "What is 2+2?"
    assert (row["extra_info"]["index"], row["extra_info"]["source_index"]) == (0, 7)
    assert row["extra_info"]["id"] == "p1" and row["extra_info"]["subject"] == ""
    assert row["prompt"] == build_prompt("What is 2+2?", DEFAULT_PROMPT_TEMPLATE)


def test_unknown_extra_field_is_rejected_by_name():
    with pytest.raises(SchemaError, match="difficulty"):
        make_row(data_source="x", question="q", ground_truth="1", split="test", index=0, source_index=0,
                 extra={"difficulty": "hard"})


def test_tables_of_different_datasets_share_one_schema():
    first = rows_to_table([_row()])
    second = rows_to_table([_row(data_source="gsm8k")])
    assert first.schema == second.schema == ARROW_SCHEMA
    assert pa.concat_tables([first, second]).num_rows == 2
    assert check_table(first) == []


def test_check_table_names_the_broken_row():
    good, bad = _row(), _row(reward_model={"style": "rule", "ground_truth": ""})
    problems = check_table(rows_to_table([good, bad]))
    assert len(problems) == 1 and problems[0].startswith("row 1: reward_model.ground_truth")


def test_check_table_reports_missing_columns():
    table = pa.table({"data_source": ["x"], "prompt": [[{"role": "user", "content": "q"}]]})
    (problem,) = check_table(table)
    assert "missing columns" in problem and "reward_model" in problem
