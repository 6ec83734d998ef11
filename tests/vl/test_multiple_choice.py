"""The VL rewards: their own labelled cases, the verl entry points on mixed batches, and options as parquet gives
them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import reward_fns
from reward_fns.multiple_choice import gold_letter, options_of, read_choice

CASES_PATH = Path(reward_fns.__file__).with_name("multiple_choice_cases.yaml")
CASES = yaml.safe_load(CASES_PATH.read_text(encoding="utf-8"))


def _extra_info(case: dict) -> dict:
    if "options" not in case:
        return {"question_type": "free_form", "options": [], "choices": []}
    options = [{"letter": letter, "text": str(text)} for letter, text in case["options"].items()]
    return {"question_type": "multiple_choice", "options": options, "choices": [o["text"] for o in options]}


def test_the_labelled_set_covers_letters_option_text_free_form_and_non_options():
    ids = [case["id"] for case in CASES]
    assert len(ids) == len(set(ids)) >= 30
    for needed in ("mc-boxed-letter", "mc-text-matches-gold-option", "ff-geometry3k-number", "mc-letter-not-an-option"):
        assert needed in ids
    assert {case["label"] for case in CASES} == {True, False}


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_labelled_case(case):
    result = reward_fns.compute_score(
        case["source"], case["response"], case["gold"], _extra_info(case), **case.get("grading", {})
    )
    assert result["acc"] is case["label"], result
    assert result["score"] == (1.0 if case["label"] else 0.0)
    assert set(result) == {"score", "acc", "pred", "reason"}


def test_a_letter_that_is_no_option_is_wrong_not_an_error():
    result = reward_fns.compute_score("mathvista", "\\boxed{F}", "B", {"choices": ["3", "12", "7", "9"]})
    assert (result["acc"], result["reason"], result["pred"]) == (False, "wrong", "F")


def test_batch_grades_choice_and_math_rows_in_order_with_the_same_keys():
    choice = {"options": [{"letter": "A", "text": "3"}, {"letter": "B", "text": "12"}]}
    results = reward_fns.compute_score_batch(
        ["mathvista", "geometry3k", "mathvista", "math500"],
        ["\\boxed{12}", "$x=\\boxed{5}$", "\\boxed{A}", "\\boxed{\\frac{1}{2}}"],
        ["B", "5", "B", "0.5"],
        [choice, {"question_type": "free_form", "options": []}, choice, None],
        num_workers=0,
    )
    assert [r["acc"] for r in results] == [True, True, False, True]
    assert {frozenset(r) for r in results} == {frozenset({"score", "acc", "pred", "reason"})}
    assert results[0]["pred"] == "B"  # the option the text named


def test_options_arrive_as_numpy_arrays_from_parquet():
    extra = {"options": np.array([{"letter": "A", "text": "3"}, {"letter": "B", "text": "12"}], dtype=object)}
    assert options_of(extra) == {"A": "3", "B": "12"}
    assert options_of({"choices": np.array(["x", "y"], dtype=object)}) == {"A": "x", "B": "y"}
    assert options_of({"question_type": "multiple_choice", "options": np.array([], dtype=object)}) == {}
    assert options_of({"question_type": "free_form", "options": []}) is None
    assert options_of(None) is None


def test_reading_a_choice():
    assert read_choice("(B)") == ("B", "")
    assert read_choice("\\text{Option C}") == ("C", "")
    assert read_choice("B: 45^\\circ") == ("B", "45^\\circ")
    assert read_choice("(D) \\frac{1}{2}") == ("D", "\\frac{1}{2}")
    assert read_choice("12") == (None, "12")
    assert read_choice("2\\sqrt{3}") == (None, "2\\sqrt{3}")


def test_a_ground_truth_that_names_no_option_is_a_data_error():
    with pytest.raises(ValueError, match="neither an option letter nor one option's text"):
        gold_letter("F", {"A": "3", "B": "12"})
    with pytest.raises(ValueError, match="neither an option letter"):
        reward_fns.compute_score("mathvista", "\\boxed{B}", "42", {"choices": ["3", "12"]})
