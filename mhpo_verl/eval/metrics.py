"""avg@k, unbiased pass@k and the per-benchmark summary computed from graded samples.

avg@k is the mean over problems of the fraction of a problem's k samples that are correct (the paper's Avg@32;
it equals the unbiased pass@1). pass@j uses the estimator of Chen et al. (2021),
``1 - C(n - c, j) / C(n, j)`` for a problem with ``c`` correct out of ``n`` samples, averaged over problems.
Summary values are fractions in [0, 1]; the Markdown tables show them as percentages.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mhpo_verl.eval.benchmarks import table_order


@dataclass(frozen=True)
class SampleOutcome:
    """What the summary needs from one graded sample (the response text stays on disk)."""

    benchmark: str
    problem_id: str
    sample_idx: int
    acc: bool
    score: float
    n_tokens: int
    truncated: bool
    reason: str


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chance that ``k`` of ``n`` samples (``c`` correct), drawn without replacement, include a correct one."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def default_pass_ks(k: int) -> list[int]:
    """1, 2, 4, ... up to k, and k itself: the pass@k curve at the usual points."""
    ks = {k}
    power = 1
    while power <= k:
        ks.add(power)
        power *= 2
    return sorted(ks)


def _benchmark_summary(problems: Mapping[str, Sequence[SampleOutcome]], n_expected: int, k: int, pass_ks: list[int]):
    complete = {pid: samples for pid, samples in problems.items() if len(samples) == k}
    samples = [s for group in complete.values() for s in group]
    summary: dict = {"n_problems": len(complete), "n_problems_expected": n_expected, "n_samples": len(samples)}
    if not complete:
        metric_names = [f"avg@{k}", *(f"pass@{j}" for j in pass_ks), "avg@k", "pass@k"]
        summary.update(dict.fromkeys(metric_names))
        summary.update(mean_score=None, mean_response_tokens=None, truncated_frac=None, reasons={})
        return summary
    correct_counts = [sum(s.acc for s in group) for group in complete.values()]
    summary[f"avg@{k}"] = sum(c / k for c in correct_counts) / len(complete)
    for j in pass_ks:
        summary[f"pass@{j}"] = sum(pass_at_k(k, c, j) for c in correct_counts) / len(complete)
    summary["avg@k"] = summary[f"avg@{k}"]
    summary["pass@k"] = summary[f"pass@{k}"]
    summary["mean_score"] = sum(s.score for s in samples) / len(samples)
    summary["mean_response_tokens"] = sum(s.n_tokens for s in samples) / len(samples)
    summary["truncated_frac"] = sum(s.truncated for s in samples) / len(samples)
    summary["reasons"] = dict(sorted(Counter(s.reason for s in samples).items()))
    return summary


AVERAGED_METRICS_EXTRA = ("mean_score", "mean_response_tokens", "truncated_frac")


def summarize(
    outcomes: Iterable[SampleOutcome],
    expected_problems: Mapping[str, Iterable[str]],
    k: int,
    pass_ks: Sequence[int] | None = None,
) -> dict:
    """Per-benchmark metrics over the problems in ``expected_problems`` ({benchmark: problem ids}).

    Only samples with ``sample_idx < k`` count, and only problems with all k of them: a partial problem would bias
    pass@k. ``average`` is the unweighted mean over benchmarks (the paper's Avg column); ``complete`` says whether
    every expected problem had its k samples.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    pass_ks = sorted(set(pass_ks or default_pass_ks(k)) | {k})
    if pass_ks[0] < 1:
        raise ValueError(f"pass@j needs 1 <= j <= k={k}, got j={pass_ks[0]}")
    if pass_ks[-1] > k:
        raise ValueError(f"pass@j needs 1 <= j <= k={k}, got j={pass_ks[-1]}")
    wanted = {benchmark: set(ids) for benchmark, ids in expected_problems.items()}
    grouped: dict[str, dict[str, list[SampleOutcome]]] = {benchmark: defaultdict(list) for benchmark in wanted}
    for outcome in outcomes:
        if outcome.sample_idx < k and outcome.problem_id in wanted.get(outcome.benchmark, ()):
            grouped[outcome.benchmark][outcome.problem_id].append(outcome)

    benchmarks = {
        name: _benchmark_summary(grouped[name], len(wanted[name]), k, pass_ks) for name in table_order(set(wanted))
    }
    scored = [b for b in benchmarks.values() if b["n_problems"] > 0]
    metric_names = [f"avg@{k}", *(f"pass@{j}" for j in pass_ks), "avg@k", "pass@k", *AVERAGED_METRICS_EXTRA]
    average: dict = {
        "n_benchmarks": len(scored),
        "n_problems": sum(b["n_problems"] for b in benchmarks.values()),
        "n_samples": sum(b["n_samples"] for b in benchmarks.values()),
    }
    for name in metric_names:
        average[name] = sum(b[name] for b in scored) / len(scored) if scored else None
    return {
        "k": k,
        "pass_ks": pass_ks,
        "complete": all(b["n_problems"] == b["n_problems_expected"] for b in benchmarks.values()),
        "benchmarks": benchmarks,
        "average": average,
    }
