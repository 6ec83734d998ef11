"""The out-of-sample reports of ``grader_benchmark.py``: a peer's test suite, benchmark reference solutions, and the
differential run against math-verify. Every grader runs in its own worker process, case by case
(``grader_runner``); the data is read from the paths given on the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict

from grader_differential import NEAR_MISSES, RESPELLINGS, generate, triage
from grader_external import ExternalCase, load_references, load_suite
from grader_runner import MATH_VERIFY_AS_TESTED, OURS, OURS_DEFAULTS, CaseResult, print_table, run_graders, summarize

SUITE_MAX_DISAGREEMENTS = 12
REFERENCES_MAX_WRONG = 2


def _our_reading(case: ExternalCase) -> str:
    """What reward_fns extracted and why it decided as it did (graded again here, for the report only)."""
    from reward_fns import grade
    from reward_fns.options import GradingOptions

    result = grade(case.response, case.gold, case.source, GradingOptions.from_kwargs(case.options))
    return f"pred={result.pred!r} reason={result.reason}"


def _side(verdict: bool) -> str:
    return "FP" if verdict else "FN"


def _run(graders: list[str], cases: list[ExternalCase], hard_limit_s: float) -> dict[str, list[CaseResult]]:
    started = time.perf_counter()
    results = run_graders(graders, cases, hard_limit_s)
    print(f"  ({len(cases)} cases x {len(graders)} graders in {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return results


def suite_report(path, hard_limit_s: float) -> tuple[dict, list[tuple[str, bool]]]:
    cases = load_suite(path)
    print(f"\n== suite {path}: {len(cases)} cases ==")
    results = _run([OURS, OURS_DEFAULTS, MATH_VERIFY_AS_TESTED], cases, hard_limit_s)
    summaries = [summarize(grader, per_case) for grader, per_case in results.items()]
    print_table(summaries)
    print(f"\n{OURS} disagreements (options of each test mapped to ours where we have the knob):")
    disagreements = []
    for case, result in zip(cases, results[OURS]):
        if result.verdict != case.label:
            reading = _our_reading(case)
            disagreements.append({"id": case.id, "side": _side(result.verdict), "note": case.note, "ours": reading})
            print(f"  {_side(result.verdict)} {case.id}  [{case.note}]  {reading}")
    peer = [
        f"{_side(r.verdict)} {case.id}"
        for case, r in zip(cases, results[MATH_VERIFY_AS_TESTED])
        if r.verdict != case.label
    ]
    print(f"{MATH_VERIFY_AS_TESTED} disagreements: {', '.join(peer) or 'none'}")
    ours = summaries[0]
    most = SUITE_MAX_DISAGREEMENTS
    checks = [
        (f"suite: at most {most} disagreements ({ours.disagreements})", ours.disagreements <= most),
        (f"suite: no false positives ({ours.false_positives})", ours.false_positives == 0),
    ]
    payload = {"summaries": [asdict(s) for s in summaries], "disagreements": disagreements, "peer": peer}
    return payload, checks


def references_report(directory, hard_limit_s: float) -> tuple[dict, list[tuple[str, bool]]]:
    benchmarks = load_references(directory)
    cases = [case for per_benchmark in benchmarks.values() for case in per_benchmark]
    print(f"\n== reference solutions in {directory}: {len(cases)} ==")
    results = _run([OURS, "math-verify"], cases, hard_limit_s)
    print(f"{'benchmark':<12}{'solutions':>10}{OURS + ' wrong':>18}{'math-verify wrong':>19}")
    for name, per_benchmark in benchmarks.items():
        ids = {case.id for case in per_benchmark}
        wrong = {grader: sum(not r.verdict for r in rs if r.case_id in ids) for grader, rs in results.items()}
        print(f"{name:<12}{len(per_benchmark):>10}{wrong[OURS]:>18}{wrong['math-verify']:>19}")
    summaries = [summarize(grader, per_case) for grader, per_case in results.items()]
    print_table(summaries)
    wrong_cases = [(case, r) for case, r in zip(cases, results[OURS]) if not r.verdict]
    for case, _ in wrong_cases:
        print(f"  {OURS} wrong: {case.id} gold={case.gold!r} {_our_reading(case)}")
    checks = [
        (
            f"references: at most {REFERENCES_MAX_WRONG} of {len(cases)} wrong ({len(wrong_cases)})",
            len(wrong_cases) <= REFERENCES_MAX_WRONG,
        )
    ]
    payload = {"summaries": [asdict(s) for s in summaries], "wrong": [case.id for case, _ in wrong_cases]}
    return payload, checks


def differential_report(directory, hard_limit_s: float) -> tuple[dict, list[tuple[str, bool]]]:
    cases = generate(directory)
    print(f"\n== differential run on the answers in {directory}: {len(cases)} variants ==")
    results = _run([OURS, "math-verify"], cases, hard_limit_s)
    ours = [r.verdict for r in results[OURS]]
    theirs = [r.verdict for r in results["math-verify"]]
    triaged = triage(cases, ours, theirs)
    per_kind: dict[str, Counter] = defaultdict(Counter)
    for case in cases:
        per_kind[case.note]["variants"] += 1
    for item in triaged:
        per_kind[item.case.note][item.verdict] += 1
    print(f"{'kind':<20}{'label':>7}{'variants':>10}{'ours-wrong':>12}{'theirs-wrong':>14}{'policy':>8}")
    for kind in (*RESPELLINGS, *NEAR_MISSES):
        counts = per_kind.get(kind, Counter())
        label = "equal" if kind in RESPELLINGS else "differ"
        print(
            f"{kind:<20}{label:>7}{counts['variants']:>10}{counts['ours-wrong']:>12}"
            f"{counts['theirs-wrong']:>14}{counts['policy']:>8}"
        )
    verdicts = Counter(item.verdict for item in triaged)
    our_false_positives = sum(1 for item in triaged if item.verdict == "ours-wrong" and item.ours)
    print(f"triage: {dict(verdicts)}; {OURS} false positives {our_false_positives}")
    for item in triaged:
        if item.verdict == "ours-wrong":
            side, kind, gold = _side(item.ours), item.case.note, item.case.gold
            print(f"  ours-wrong {side} [{kind}] gold={gold!r} {_our_reading(item.case)}")
    policy = Counter(item.case.note for item in triaged if item.verdict == "policy")
    for kind, count in policy.items():
        print(f"  policy x{count} [{kind}]: {triaged_reason(triaged, kind)}")
    shown: Counter = Counter()
    for item in triaged:
        if item.verdict == "theirs-wrong" and shown[item.case.note] < 2:
            shown[item.case.note] += 1
            print(f"  e.g. theirs-wrong {_side(item.theirs)} [{item.case.note}] gold={item.case.gold!r}")
    summaries = [summarize(grader, per_case) for grader, per_case in results.items()]
    print_table(summaries)
    checks = [
        (f"differential: 0 ours-wrong after triage ({verdicts['ours-wrong']})", verdicts["ours-wrong"] == 0),
        (f"differential: 0 false positives ({our_false_positives})", our_false_positives == 0),
    ]
    payload = {
        "variants": len(cases),
        "per_kind": {kind: dict(counts) for kind, counts in per_kind.items()},
        "triage": dict(verdicts),
        "summaries": [asdict(s) for s in summaries],
    }
    return payload, checks


def triaged_reason(triaged, kind: str) -> str:
    return next(item.reason for item in triaged if item.case.note == kind and item.verdict == "policy")


def run_out_of_sample(args: argparse.Namespace) -> int:
    payload, checks = {}, []
    for name, report, source in (
        ("suite", suite_report, args.suite),
        ("references", references_report, args.references),
        ("differential", differential_report, args.differential),
    ):
        if source is not None:
            payload[name], more = report(source, args.hard_limit)
            checks.extend(more)
    print("\ntargets:")
    for description, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {description}")
    if args.json:
        args.json.write_text(json.dumps(payload, indent=1))
    return 0 if all(ok for _, ok in checks) else 1


__all__ = ["differential_report", "references_report", "run_out_of_sample", "suite_report"]
