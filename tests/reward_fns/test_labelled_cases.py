"""Every labelled case (reward_fns/labelled_cases.yaml) graded by compute_score must agree with its label, and
the adversarial ones must finish within the time bound."""

from __future__ import annotations

import time

import pytest

from reward_fns import compute_score
from reward_fns.labelled import CASES_PATH, load_cases
from reward_fns.options import GradingOptions

CASES = load_cases()


def test_the_set_is_large_and_balanced():
    assert len(CASES) >= 300
    positives = sum(case.label for case in CASES)
    assert 0.3 < positives / len(CASES) < 0.8
    assert {"adversarial", "trap", "extraction", "structure", "numeric", "symbolic"} <= {
        tag for case in CASES for tag in case.tags
    }


def test_the_file_cites_its_sources():
    header = CASES_PATH.read_text(encoding="utf-8").split("\n- ", 1)[0]
    for source in ("Math-Verify", "#14", "#41", "#47", "#65", "#69", "#76", "PR #5635", "TinyV"):
        assert source in header


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case_matches_its_label(case):
    result = compute_score(case.source, case.response, case.gold, **case.options)
    assert result["acc"] is case.label, f"{case.id}: {result} (gold {case.gold!r}; {case.note})"
    assert result["score"] == (1.0 if case.label else 0.0)
    assert result["reason"] == ("correct" if case.label else result["reason"])
    assert result["reason"] != "grader_error"


ADVERSARIAL = [case for case in CASES if "adversarial" in case.tags]


@pytest.mark.parametrize("case", ADVERSARIAL, ids=[case.id for case in ADVERSARIAL])
def test_adversarial_case_finishes_within_the_bound(case):
    bound = GradingOptions().timeout_s + 1.0
    started = time.perf_counter()
    result = compute_score(case.source, case.response, case.gold)
    elapsed = time.perf_counter() - started
    assert elapsed < bound, f"{case.id} took {elapsed:.2f}s"
    if not case.label:
        assert result["score"] == 0.0
