"""The grader benchmark's out-of-sample tools (``examples/benchmarks/grader_*.py``) on data these tests make: the
suite mapping, the reference-solution loader, the differential generator's labels and the triage."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from reward_fns import compute_score

BENCHMARKS = Path(__file__).resolve().parents[2] / "examples" / "benchmarks"


@pytest.fixture(scope="module")
def tools():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import grader_differential
        import grader_external

        yield grader_external, grader_differential
    finally:
        sys.path.remove(str(BENCHMARKS))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_suite_mapping(tools, tmp_path):
    external, _ = tools
    rows = [
        {"id": "a", "gold": "$7$", "pred": "$3+4$", "expected": True, "mv": {"precision": 3}},
        {"id": "b", "gold": "The work... so the final answer is $12$.", "pred": "We get 12 apples", "expected": True},
        {"id": "c", "gold": "\\\\boxed{5}", "pred": "we see\\nthat x \\\\neq 4", "expected": False},
    ]
    cases = external.load_suite(write_jsonl(tmp_path / "suite.jsonl", rows))
    assert [case.gold for case in cases] == ["7", "12", "\\boxed{5}"]
    assert cases[0].response == "The answer is \\boxed{3+4}"  # one formula gets a box
    assert cases[1].response == "We get 12 apples"  # prose stays as written
    assert cases[2].response == "we see\nthat x \\neq 4"  # a literal \n becomes a newline, a \neq stays a command
    assert cases[0].options == {"inequality_for_interval": False, "rel_tol": 1e-3}  # looser than ours: taken
    assert external.suite_options({"precision": 6}) == {"inequality_for_interval": False}  # tighter: not taken


def test_a_malformed_suite_line_names_the_line(tools, tmp_path):
    external, _ = tools
    path = tmp_path / "bad.jsonl"
    path.write_text('{"gold": "1", "pred": "1", "expected": true}\n{"gold": "1"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        external.load_suite(path)


def test_reference_solutions(tools, tmp_path):
    external, _ = tools
    write_jsonl(tmp_path / "math500.jsonl", [{"solution": "So it is $\\boxed{\\frac{1}{2}}$.", "answer": "\\frac12"}])
    write_jsonl(tmp_path / "gsm8k.jsonl", [{"answer": "3 + 4 = 7 apples.\n#### 7"}])
    write_jsonl(tmp_path / "minerva_math.jsonl", [{"solution": "Thus $x=\\boxed{2.5} \\mathrm{~m}$."}])
    benchmarks = external.load_references(tmp_path)
    assert {name: [case.gold for case in cases] for name, cases in benchmarks.items()} == {
        "math500": ["\\frac12"],
        "gsm8k": ["7"],
        "minerva": ["2.5"],
    }
    for cases in benchmarks.values():
        assert all(compute_score(case.source, case.response, case.gold)["acc"] for case in cases)


def test_differential_labels_hold_by_construction(tools, tmp_path):
    _, differential = tools
    write_jsonl(tmp_path / "math500.jsonl", [{"answer": "\\frac{7}{4}"}, {"answer": "(3, 8)"}, {"answer": "2, 5, 9"}])
    write_jsonl(tmp_path / "gsm8k.jsonl", [{"answer": "work\n#### 1250"}, {"answer": "more work\n#### 1250"}])
    answers = differential.read_answers(tmp_path)
    assert [answer.text for answer in answers] == ["\\frac{7}{4}", "(3, 8)", "2, 5, 9", "1250"]  # distinct only
    cases = differential.generate(tmp_path)
    kinds = {case.note for case in cases}
    assert {"thousands", "mixed_number", "decimal", "swapped_tuple", "subset", "extra_member", "several_boxes"} <= kinds
    assert kinds <= set(differential.RESPELLINGS) | set(differential.NEAR_MISSES)
    for case in cases:
        assert case.label == (case.note in differential.RESPELLINGS)
        assert compute_score(case.source, case.response, case.gold)["acc"] == case.label, (case.note, case.response)


def test_triage(tools):
    external, differential = tools

    def case(kind: str, label: bool):
        return external.ExternalCase(kind, "math", "r", "g", label, note=kind)

    cases = [case("boxed", True), case("percent", True), case("subset", False), case("sign", False)]
    ours, theirs = [True, True, False, True], [False, False, True, True]
    triaged = differential.triage(cases, ours, theirs)
    assert [(t.case.note, t.verdict) for t in triaged] == [
        ("boxed", "theirs-wrong"),
        ("percent", "policy"),
        ("subset", "theirs-wrong"),
        ("sign", "ours-wrong"),
    ]
    assert triaged[1].reason == differential.POLICY_REASONS["percent"]
