"""Math graders side by side: on the labelled set (agreement with the labels, and speed), and out of sample.

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

Out of sample, on data read from paths given here (nothing of it is copied into the project):

    --suite FILE         a peer's test suite, JSONL of {id, gold, pred, expected, mv} (Math-Verify's own tests),
                         reward_fns against math-verify run as each test ran it; disagreements by side (FP / FN)
    --references DIR     benchmark reference solutions graded against their own answers
    --differential DIR   respellings and near misses of the real answers in DIR, graded by both, triaged

(see ``grader_external`` for the suite mapping and ``grader_differential`` for the generator).
"""

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # worker processes and this one import the helpers next to this file

from grader_runner import HEAD_TO_HEAD, OURS, print_table, run_graders, summarize  # noqa: E402


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graders", nargs="+", default=list(HEAD_TO_HEAD), choices=list(HEAD_TO_HEAD))
    parser.add_argument("--hard-limit", type=float, default=10.0, help="seconds before a case is killed")
    parser.add_argument("--batch-workers", type=int, default=2, help="process-pool size for the batch figure")
    parser.add_argument("--json", type=Path, help="write summaries and per-case results here")
    parser.add_argument("--suite", type=Path, help="a peer's test suite as JSONL (see grader_external)")
    parser.add_argument("--references", type=Path, help="a directory of benchmark JSONL files with solutions")
    parser.add_argument("--differential", type=Path, help="a directory of benchmark JSONL files with answers")
    args = parser.parse_args(argv)

    if args.suite or args.references or args.differential:
        from grader_out_of_sample import run_out_of_sample

        return run_out_of_sample(args)
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
        checks.append((f">= 50x math-verify single-process throughput (x{speedup:.1f})", speedup >= 50))
    checks.append((f"p99 latency <= 5 ms ({ours.p99_ms:.2f} ms wall)", ours.p99_ms <= 5.0))
    checks.append((f"p99 CPU time of the grading call <= 5 ms ({ours.p99_cpu_ms:.2f} ms)", ours.p99_cpu_ms <= 5.0))
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
