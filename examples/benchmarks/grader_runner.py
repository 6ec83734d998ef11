"""The graders the benchmarks compare and the machinery that runs them: each grader in its own worker process, case by
case, every grader on the same case in turn, the latency measured inside the worker around the grading call only; a
case that runs past the hard limit is killed and counted as a wrong verdict at the limit.

Used by ``grader_benchmark.py`` (labelled set, speed) and ``grader_out_of_sample.py`` (external data); worker
processes import this module as ``grader_runner``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
OURS = "reward_fns"
OURS_DEFAULTS = "reward_fns (default options)"
MATH_VERIFY_AS_TESTED = "math-verify (as tested)"
HEAD_TO_HEAD = ("reward_fns", "math-verify", "verl math_reward", "verl math_dapo", "verl prime_math")


# -- graders (run inside worker processes) ------------------------------------------------------------------------
def _ours(source: str, response: str, golds: list[str], options: dict) -> bool:
    from reward_fns import compute_score

    return bool(compute_score(source, response, golds, **options)["acc"])


def _math_verify(source: str, response: str, golds: list[str], options: dict) -> bool:
    from math_verify import parse, verify

    prediction = parse(response)
    return any(verify(parse("\\boxed{" + gold + "}"), prediction) for gold in golds)


def _math_verify_as_tested(source: str, response: str, golds: list[str], options: dict) -> bool:
    """math-verify called the way one of its own tests called it (``options`` is the suite's ``mv`` field)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    call = options.get("call", "parse_verify_default")
    if call == "compare_strings":
        targets = {"latex": LatexExtractionConfig, "expr": ExprExtractionConfig}
        configs = [targets[name]() for name in options.get("match_types", ("latex", "expr"))]
        return verify(
            parse(golds[0], configs),
            parse(response, configs),
            float_rounding=options.get("precision", 6),
            strict=options.get("strict", True),
            allow_set_relation_comp=options.get("allow_set_relation_comp", False),
        )
    if call == "sympy_expr_eq":
        return verify(parse(golds[0]), parse(response), float_rounding=options.get("float_rounding", 6))
    return verify(parse(golds[0]), parse(response))


def _verl_math_reward(source: str, response: str, golds: list[str], options: dict) -> bool:
    from verl.utils.reward_score import math_reward

    return any(math_reward.compute_score(response, gold) == 1.0 for gold in golds)


def _verl_math_dapo(source: str, response: str, golds: list[str], options: dict) -> bool:
    from verl.utils.reward_score import math_dapo

    return any(bool(math_dapo.compute_score(response, gold)["acc"]) for gold in golds)


def _verl_prime_math(source: str, response: str, golds: list[str], options: dict) -> bool:
    from verl.utils.reward_score import prime_math

    return any(bool(prime_math.compute_score(response, gold)[0]) for gold in golds)


GRADERS: dict[str, Callable[[str, str, list[str], dict], bool]] = {
    OURS: _ours,
    OURS_DEFAULTS: lambda source, response, golds, options: _ours(source, response, golds, {}),
    "math-verify": _math_verify,
    MATH_VERIFY_AS_TESTED: _math_verify_as_tested,
    "verl math_reward": _verl_math_reward,
    "verl math_dapo": _verl_math_dapo,
    "verl prime_math": _verl_prime_math,
}


def timed_grade(grader: str, source: str, response: str, golds: list[str], options: dict) -> tuple:
    """Worker task: (verdict, wall seconds, error, CPU seconds) for one case; exceptions are a wrong verdict, as in
    training. CPU seconds are this thread's (other processes' load does not inflate them; work a grader hands to
    another process, such as reward_fns' sympy worker, is not in them)."""
    started, started_cpu = time.perf_counter(), time.thread_time()
    try:
        verdict, error = GRADERS[grader](source, response, golds, options), ""
    except Exception as exc:  # a peer's exception is its verdict "not correct"; recorded, not hidden
        verdict, error = False, f"{type(exc).__name__}: {exc}"[:200]
    return verdict, time.perf_counter() - started, error, time.thread_time() - started_cpu


# -- driver -------------------------------------------------------------------------------------------------------
@dataclass
class CaseResult:
    case_id: str
    label: bool
    verdict: bool
    seconds: float
    error: str = ""
    killed: bool = False
    cpu_seconds: float = 0.0


@dataclass
class Summary:
    grader: str
    cases: int
    disagreements: int
    false_positives: int
    false_negatives: int
    answers_per_s: float
    p50_ms: float
    p99_ms: float
    p99_cpu_ms: float
    max_ms: float
    slowest_case: str
    killed: int
    errors: int


def warm_up(grader: str) -> None:
    """Worker task: import everything a grader needs (and start reward_fns' sympy worker) before timing; keep the
    peers' per-case log lines (math-verify logs every timeout with the whole input) out of the report."""
    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    timed_grade(grader, "math", r"\boxed{\frac{1}{2}}", ["0.5"], {})
    if grader == OURS:
        from reward_fns import warm_up as start_workers

        start_workers(num_workers=0)


class GraderProcess:
    """One grader's worker process; a killed case is replaced by a fresh, warmed-up worker."""

    TASK = "grader_runner:timed_grade"

    def __init__(self, grader: str, hard_limit_s: float) -> None:
        from reward_fns.bounded import Worker

        self.grader, self.hard_limit_s = grader, hard_limit_s
        self.worker = Worker(extra_paths=[str(HERE)])
        self.worker.call("grader_runner:warm_up", (grader,), timeout_s=300)

    def grade(self, case) -> CaseResult:
        from reward_fns.bounded import WorkerFailed, WorkerTimeout

        args = (self.grader, *grader_inputs(self.grader, case))
        try:
            verdict, seconds, error, cpu_seconds = self.worker.call(self.TASK, args, self.hard_limit_s)
            return CaseResult(case.id, case.label, bool(verdict), seconds, error, cpu_seconds=cpu_seconds)
        except (WorkerTimeout, WorkerFailed) as exc:
            self.worker.call("grader_runner:warm_up", (self.grader,), timeout_s=300)
            limit = self.hard_limit_s
            return CaseResult(case.id, case.label, False, limit, type(exc).__name__, True, cpu_seconds=limit)

    def close(self) -> None:
        self.worker.close()


def grader_inputs(grader: str, case) -> tuple[str, str, list[str], dict]:
    """(data source, response, golds, options) as ``grader`` sees ``case``: a peer run "as tested" gets the strings
    and options of the peer's own test, every other grader the mapped response and ground truth."""
    if grader == MATH_VERIFY_AS_TESTED:
        return case.source, case.peer_pred, [case.peer_gold], case.peer_options
    golds = case.gold if isinstance(case.gold, list) else [case.gold]
    return case.source, case.response, golds, case.options


def run_graders(graders: Sequence[str], cases: Sequence, hard_limit_s: float) -> dict[str, list[CaseResult]]:
    """Case by case, every grader in turn (rotating the order), so that all see the same machine load."""
    processes = [GraderProcess(grader, hard_limit_s) for grader in graders]
    results: dict[str, list[CaseResult]] = {grader: [] for grader in graders}
    try:
        for index, case in enumerate(cases):
            shift = index % len(processes)
            for process in processes[shift:] + processes[:shift]:
                results[process.grader].append(process.grade(case))
    finally:
        for process in processes:
            process.close()
    return results


def _p99(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def summarize(grader: str, results: list[CaseResult]) -> Summary:
    latencies = sorted(result.seconds for result in results)
    slowest = max(results, key=lambda result: result.seconds)
    return Summary(
        grader=grader,
        cases=len(results),
        disagreements=sum(result.verdict != result.label for result in results),
        false_positives=sum(result.verdict and not result.label for result in results),
        false_negatives=sum(result.label and not result.verdict for result in results),
        answers_per_s=len(results) / max(sum(latencies), 1e-12),
        p50_ms=1000 * statistics.median(latencies),
        p99_ms=1000 * _p99(latencies),
        p99_cpu_ms=1000 * _p99(sorted(result.cpu_seconds for result in results)),
        max_ms=1000 * slowest.seconds,
        slowest_case=slowest.case_id,
        killed=sum(result.killed for result in results),
        errors=sum(bool(result.error) and not result.killed for result in results),
    )


def print_table(summaries: list[Summary]) -> None:
    header = (
        f"{'grader':<18}{'cases':>6}{'disagree':>9}{'FP':>4}{'FN':>4}{'answers/s':>11}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'p99 cpu':>9}{'max ms':>9}  {'killed':>6}{'errors':>7}  slowest case"
    )
    print(header)
    print("-" * len(header))
    for s in summaries:
        print(
            f"{s.grader:<18}{s.cases:>6}{s.disagreements:>9}{s.false_positives:>4}{s.false_negatives:>4}"
            f"{s.answers_per_s:>11.1f}{s.p50_ms:>9.2f}{s.p99_ms:>9.1f}{s.p99_cpu_ms:>9.2f}{s.max_ms:>9.1f}"
            f"  {s.killed:>6}{s.errors:>7}"
            f"  {s.slowest_case}"
        )
