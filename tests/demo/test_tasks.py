"""The demo's offline problem generator."""

from __future__ import annotations

import re

import pytest

from mhpo_verl.demo.tasks import DATA_SOURCE, GENERATORS, INSTRUCTION, WORKED_EXAMPLE, TaskGenerator


def _solve(question: str) -> int:
    equation = re.fullmatch(r"Solve for x: (\d+)x \+ (\d+) = (\d+)\.", question)
    if equation:
        a, b, c = map(int, equation.groups())
        assert (c - b) % a == 0, question
        return (c - b) // a
    expression = re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\?", question)
    assert expression, question
    left, operator, right = expression.groups()
    return {"+": int.__add__, "-": int.__sub__, "*": int.__mul__}[operator](int(left), int(right))


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_every_kind_states_a_problem_whose_answer_is_right(kind):
    problems = TaskGenerator((kind,), seed=3).problems(step=0, count=200)
    for problem in problems:
        assert problem.kind == kind
        assert str(_solve(problem.question)) == problem.answer
        assert problem.prompt.endswith(INSTRUCTION)
        assert int(problem.answer) >= 0


def test_problems_depend_only_on_seed_and_step():
    generator = TaskGenerator(("add_1d", "linear_equation"), seed=7)
    first = generator.problems(step=4, count=16)
    assert TaskGenerator(("add_1d", "linear_equation"), seed=7).problems(step=4, count=16) == first
    assert generator.problems(step=5, count=16) != first
    assert TaskGenerator(("add_1d", "linear_equation"), seed=8).problems(step=4, count=16) != first
    assert {p.kind for p in generator.problems(step=0, count=64)} == {"add_1d", "linear_equation"}


def test_rows_follow_verls_rl_parquet_schema():
    problem = TaskGenerator(("add_2d",), seed=0).problems(step=0, count=1)[0]
    row = problem.as_verl_row(index=3, split="test")
    assert row["data_source"] == DATA_SOURCE
    assert row["prompt"] == [*WORKED_EXAMPLE, {"role": "user", "content": problem.prompt}]
    assert problem.as_verl_row(index=0, worked_example=False)["prompt"] == [{"role": "user", "content": problem.prompt}]
    assert row["reward_model"] == {"style": "rule", "ground_truth": problem.answer}
    assert row["extra_info"] == {"split": "test", "index": 3, "kind": "add_2d"}


def test_worked_example_shows_the_answer_format_on_a_correct_sum():
    question, answer = WORKED_EXAMPLE
    assert question["role"] == "user" and question["content"].endswith(INSTRUCTION)
    left, right = map(int, re.fullmatch(r"What is (\d+) \+ (\d+)\? .*", question["content"]).groups())
    assert answer["role"] == "assistant" and answer["content"].endswith(f"\\boxed{{{left + right}}}.")


@pytest.mark.parametrize("kinds", [(), ("add_1d", "division")])
def test_unknown_or_missing_kinds_are_rejected_by_name(kinds):
    with pytest.raises(ValueError, match="task kinds must be a non-empty subset"):
        TaskGenerator(kinds)


def test_count_must_be_positive():
    with pytest.raises(ValueError, match="count must be >= 1, got 0"):
        TaskGenerator().problems(step=0, count=0)
