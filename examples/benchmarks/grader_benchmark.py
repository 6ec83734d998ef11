"""Math graders side by side on the labelled set: agreement with the labels, and speed.

Graders: ``reward_fns`` (this project), math-verify (``verify(parse("\\boxed{gold}"), parse(response))``, its
documented use) and verl's built-in scorers ``math_reward``, ``math_dapo`` and ``prime_math``, each called the way
verl calls it. Every grader runs in its own worker process, one case at a time, the latency measured inside the
worker around the grading call only; a case that runs past ``--hard-limit`` seconds is killed and counted as a
wrong verdict at the limit (math-verify is known to hang on towers of exponents). Throughput is single-process:
cases / sum of latencies. The head-to-head uses the cases without grader options (the strict-extraction cases only
make sense for reward_fns); reward_fns is also reported on the full set, and in a process pool
(``compute_score_batch``).

    python examples/benchmarks/grader_benchmark.py                      # all graders (a few minutes)
    python examples/benchmarks/grader_benchmark.py --graders reward_fns math-verify --json results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
OURS = "reward_fns"


# -- graders (run inside worker processes) ------------------------------------------------------------------------
def _ours(source: str, response: str, golds: list[str], options: dict) -> bool:
    from reward_fns import compute_score

    return bool(compute_score(source, response, golds, **options)["acc"])


def _math_verify(source: str, response: str, golds: list[str], options: dict) -> bool:
    from math_verify import parse, verify

    prediction = parse(response)
    return any(verify(parse("\\boxed{" + gold + "}"), prediction) for gold in golds)


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
    "math-verify": _math_verify,
    "verl math_reward": _verl_math_reward,
    "verl math_dapo": _verl_math_dapo,
    "verl prime_math": _verl_prime_math,
}


def timed_grade(grader: str, source: str, response: str, golds: list[str], options: dict) -> tuple:
    """Worker task: (verdict, seconds, error) for one case; exceptions are a wrong verdict, as in training."""
    started = time.perf_counter()
    try:
        verdict, error = GRADERS[grader](source, response, golds, options), ""
    except Exception as exc:  # a peer's exception is its verdict "not correct"; recorded, not hidden
        verdict, error = False, f"{type(exc).__name__}: {exc}"[:200]
    return verdict, time.perf_counter() - started, error


# -- driver -------------------------------------------------------------------------------------------------------
@dataclass
class CaseResult:
    case_id: str
    label: bool
    verdict: bool
    seconds: float
    error: str = ""
    killed: bool = False


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

    TASK = "grader_benchmark:timed_grade"

    def __init__(self, grader: str, hard_limit_s: float) -> None:
        from reward_fns.bounded import Worker

        self.grader, self.hard_limit_s = grader, hard_limit_s
        self.worker = Worker(extra_paths=[str(HERE)])
        self.worker.call("grader_benchmark:warm_up", (grader,), timeout_s=300)

    def grade(self, case) -> CaseResult:
        from reward_fns.bounded import WorkerFailed, WorkerTimeout

        golds = case.gold if isinstance(case.gold, list) else [case.gold]
        args = (self.grader, case.source, case.response, golds, case.options)
        try:
            verdict, seconds, error = self.worker.call(self.TASK, args, self.hard_limit_s)
            return CaseResult(case.id, case.label, bool(verdict), seconds, error)
        except (WorkerTimeout, WorkerFailed) as exc:
            self.worker.call("grader_benchmark:warm_up", (self.grader,), timeout_s=300)
            return CaseResult(case.id, case.label, False, self.hard_limit_s, type(exc).__name__, True)

    def close(self) -> None:
        self.worker.close()


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
        p99_ms=1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        max_ms=1000 * slowest.seconds,
        slowest_case=slowest.case_id,
        killed=sum(result.killed for result in results),
        errors=sum(bool(result.error) and not result.killed for result in results),
    )


def batch_throughput(cases: Sequence, workers: int) -> tuple[float, float]:
    """reward_fns.compute_score_batch over all cases: (answers per second of wall time, wall seconds)."""
    from reward_fns import compute_score_batch, warm_up

    warm_up(workers)
    plain = [case for case in cases if not case.options]
    started = time.perf_counter()
    compute_score_batch(
        [case.source for case in plain],
        [case.response for case in plain],
        [case.gold for case in plain],
        num_workers=workers,
    )
    wall = time.perf_counter() - started
    return len(plain) / wall, wall


def print_table(summaries: list[Summary]) -> None:
    header = (
        f"{'grader':<18}{'cases':>6}{'disagree':>9}{'FP':>4}{'FN':>4}{'answers/s':>11}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'max ms':>9}  {'killed':>6}{'errors':>7}  slowest case"
    )
    print(header)
    print("-" * len(header))
    for s in summaries:
        print(
            f"{s.grader:<18}{s.cases:>6}{s.disagreements:>9}{s.false_positives:>4}{s.false_negatives:>4}"
            f"{s.answers_per_s:>11.1f}{s.p50_ms:>9.2f}{s.p99_ms:>9.1f}{s.max_ms:>9.1f}  {s.killed:>6}{s.errors:>7}"
            f"  {s.slowest_case}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graders", nargs="+", default=list(GRADERS), choices=list(GRADERS))
    parser.add_argument("--hard-limit", type=float, default=10.0, help="seconds before a case is killed")
    parser.add_argument("--batch-workers", type=int, default=2, help="process-pool size for the batch figure")
    parser.add_argument("--json", type=Path, help="write summaries and per-case results here")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))  # so that worker processes and this one import this file as `grader_benchmark`
    from reward_fns.labelled import load_cases
    from reward_fns.options import GradingOptions

    cases = load_cases()
    plain = [case for case in cases if not case.options]
    print(f"{len(cases)} labelled cases ({len(plain)} without grader options, used head to head)\n")

    started = time.perf_counter()
    per_case = run_graders(args.graders, plain, args.hard_limit)
    print(f"  graded in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    summaries = [summarize(grader, results) for grader, results in per_case.items()]
    print_table(summaries)

    if OURS not in args.graders:
        return 0
    full = run_graders([OURS], cases, args.hard_limit)[OURS]
    per_case[OURS + " (all cases)"] = full
    full_summary = summarize(OURS, full)
    print(
        f"\n{OURS} on all {len(cases)} cases (strict-extraction cases included): "
        f"{full_summary.disagreements} disagreements, max latency {full_summary.max_ms:.1f} ms"
    )
    batch_rate, batch_wall = batch_throughput(cases, args.batch_workers)
    print(f"{OURS} compute_score_batch, {args.batch_workers} worker processes: {batch_rate:.0f} answers/s wall")

    ours = next(s for s in summaries if s.grader == OURS)
    peers = [s for s in summaries if s.grader != OURS]
    print("\nratios (side by side, same run):")
    for peer in peers:
        print(
            f"  vs {peer.grader:<17} throughput x{ours.answers_per_s / peer.answers_per_s:<9.3g} "
            f"disagreements {ours.disagreements} vs {peer.disagreements}"
        )
    bound_ms = 1000 * (GradingOptions().timeout_s + 1.0)
    checks = [(f"no case slower than timeout_s + 1 s ({bound_ms:.0f} ms)", full_summary.max_ms <= bound_ms)]
    if peers:
        checks.append(("fewer disagreements than every peer", all(ours.disagreements < p.disagreements for p in peers)))
    math_verify = next((s for s in peers if s.grader == "math-verify"), None)
    if math_verify is not None:
        speedup = ours.answers_per_s / math_verify.answers_per_s
        checks.append((f">= 3x math-verify single-process throughput (x{speedup:.1f})", speedup >= 3))
    print("\ntargets:")
    for description, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {description}")

    if args.json:
        payload = {
            "summaries": [asdict(s) for s in summaries],
            "all_cases": asdict(full_summary),
            "batch_answers_per_s": batch_rate,
            "batch_wall_s": batch_wall,
            "per_case": {grader: [asdict(r) for r in results] for grader, results in per_case.items()},
        }
        args.json.write_text(json.dumps(payload, indent=1))
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
