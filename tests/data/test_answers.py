import math

import pytest

from mhpo_verl.data.answers import answer_from_field, answer_text, gsm8k_final_answer, last_boxed


@pytest.mark.parametrize(
    ("solution", "expected"),
    [
        ("3 + 1200 = 1203\n#### 1,203", "1203"),
        ("#### 42", "42"),
        ("#### -3.5  \n", "-3.5"),
        ("#### 1,2", "1,2"),  # not a thousands separator: left as written, for the grader to judge
        ("no marker, 42", None),
        ("#### ", None),
        (None, None),
    ],
)
def test_gsm8k_final_answer(solution, expected):
    assert gsm8k_final_answer(solution) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("first \\boxed{1}, finally \\boxed{2}", "2"),
        ("nested \\boxed{\\{-2, \\sqrt{4}\\}} end", "\\{-2, \\sqrt{4}\\}"),
        ("\\fbox{7}", "7"),
        ("an escaped brace \\boxed{a \\} b} stays inside", "a \\} b"),
        ("the answer is \\boxed 5$.", "5"),
        ("never closed \\boxed{1 + {2}", None),
        ("empty \\boxed{ }", None),
        ("no box at all", None),
        (17, None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (204, "204"),
        (27.0, "27"),
        (0.5, "0.5"),
        ("  70 ", "70"),
        ("", None),
        (True, None),
        (math.nan, None),
        ([1], None),
    ],
)
def test_answer_text(value, expected):
    assert answer_text(value) == expected


def test_answer_from_field_takes_the_box_of_a_full_solution_and_plain_text_as_is():
    assert answer_from_field("Work... hence $\\boxed{34}$.") == "34"
    assert answer_from_field("34") == "34"
    assert answer_from_field("a box that never closes \\boxed{3") is None
