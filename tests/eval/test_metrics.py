"""avg@k and pass@k against hand-computed values and a brute-force count over subsets."""

from __future__ import annotations

import itertools
import math

import pytest

from mhpo_verl.eval.metrics import SampleOutcome, default_pass_ks, pass_at_k, summarize


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of the k-subsets of n samples (the first c correct) that hold a correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (4, 1, 1, 0.25),
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (4, 1, 4, 1.0),
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (4, 0, 4, 0.0),
        (4, 4, 1, 1.0),
        (10, 3, 5, 1 - 21 / 252),  # C(7,5)=21, C(10,5)=252
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_equals_subset_count_everywhere_small():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_large_n_is_finite_and_monotone():
    values = [pass_at_k(1024, 3, k) for k in (1, 8, 64, 512, 1024)]
    assert all(math.isfinite(v) for v in values)
    assert values == sorted(values)
    assert values[0] == pytest.approx(3 / 1024)
    assert values[-1] == 1.0


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k needs"):
        pass_at_k(n, c, k)


def test_default_pass_ks():
    assert default_pass_ks(1) == [1]
    assert default_pass_ks(6) == [1, 2, 4, 6]
    assert default_pass_ks(32) == [1, 2, 4, 8, 16, 32]


def outcomes(benchmark: str, pattern: dict[str, list[int]], tokens: int = 10, truncated_every: int = 0):
    result = []
    for problem_id, verdicts in pattern.items():
        for idx, verdict in enumerate(verdicts):
            truncated = bool(truncated_every) and idx % truncated_every == 0
            result.append(
                SampleOutcome(
                    benchmark,
                    problem_id,
                    idx,
                    bool(verdict),
                    float(verdict),
                    tokens + idx,
                    truncated,
                    "correct" if verdict else "wrong",
                )
            )
    return result


def test_summary_matches_hand_computed_values():
    aime = outcomes("aime24", {"0": [1, 0, 0, 0], "1": [1, 1, 1, 1], "2": [0, 0, 0, 0]}, tokens=10)
    math500 = outcomes("math500", {"7": [0, 1, 0, 1]}, tokens=100, truncated_every=2)
    summary = summarize(aime + math500, {"aime24": ["0", "1", "2"], "math500": ["7"]}, k=4)

    assert summary["pass_ks"] == [1, 2, 4]
    assert summary["complete"] is True
    assert list(summary["benchmarks"]) == ["math500", "aime24"]  # the paper's column order
    a = summary["benchmarks"]["aime24"]
    assert a["n_problems"] == 3 and a["n_samples"] == 12
    assert a["avg@4"] == pytest.approx((0.25 + 1 + 0) / 3)
    assert a["pass@1"] == pytest.approx(a["avg@4"])
    assert a["pass@2"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert a["pass@4"] == pytest.approx(2 / 3)
    assert a["avg@k"] == a["avg@4"] and a["pass@k"] == a["pass@4"]
    assert a["mean_response_tokens"] == pytest.approx(11.5)  # 10, 11, 12, 13 for each problem
    assert a["truncated_frac"] == 0.0
    assert a["reasons"] == {"correct": 5, "wrong": 7}
    m = summary["benchmarks"]["math500"]
    assert m["avg@4"] == pytest.approx(0.5)
    assert m["pass@2"] == pytest.approx(1 - 1 / 6)
    assert m["pass@4"] == 1.0
    assert m["truncated_frac"] == pytest.approx(0.5)
    average = summary["average"]
    assert average["avg@4"] == pytest.approx((a["avg@4"] + 0.5) / 2)  # unweighted over benchmarks
    assert average["pass@4"] == pytest.approx((2 / 3 + 1) / 2)
    assert average["n_problems"] == 4 and average["n_benchmarks"] == 2


def test_summary_ignores_extra_samples_and_excludes_incomplete_problems():
    samples = outcomes("amc23", {"0": [1, 0, 1, 1, 1, 1], "1": [1, 1]})  # problem 1 has 2 of the 4 samples
    summary = summarize(samples, {"amc23": ["0", "1"]}, k=4)
    amc = summary["benchmarks"]["amc23"]
    assert summary["complete"] is False
    assert amc["n_problems"] == 1 and amc["n_problems_expected"] == 2
    assert amc["avg@4"] == pytest.approx(0.75)  # samples 4 and 5 of problem 0 are beyond k


def test_summary_of_a_benchmark_without_finished_problems_has_no_numbers():
    summary = summarize(outcomes("aime25", {"0": [1]}), {"aime25": ["0"], "amc23": []}, k=2)
    assert summary["benchmarks"]["aime25"]["avg@2"] is None
    assert summary["average"]["avg@2"] is None and summary["average"]["n_benchmarks"] == 0


def test_summary_rejects_pass_k_above_k():
    with pytest.raises(ValueError, match="pass@j needs 1 <= j <= k=4"):
        summarize([], {"aime24": []}, k=4, pass_ks=[8])


def test_mean_score_is_the_mean_over_samples_of_the_reward_not_of_accuracy():
    """Rewards differ from accuracy (a format bonus, a penalty for no answer); mean_score averages the k samples of
    every problem, so dividing by the number of problems, or reading acc, would show."""
    rewards = {"0": [1.0, 0.1, -1.0, 0.1], "1": [1.0, 1.0, 0.1, -1.0], "2": [-1.0, -1.0, -1.0, 0.1]}
    samples = [
        SampleOutcome("amc23", problem_id, idx, score == 1.0, score, 10, False, "correct" if score == 1.0 else "wrong")
        for problem_id, scores in rewards.items()
        for idx, score in enumerate(scores)
    ]
    other = outcomes("aime25", {"0": [1, 1, 0, 0]})  # score = acc here: mean 0.5
    summary = summarize(samples + other, {"amc23": ["0", "1", "2"], "aime25": ["0"]}, k=4)
    amc = summary["benchmarks"]["amc23"]
    assert amc["n_samples"] == 12
    assert amc["mean_score"] == pytest.approx((0.2 + 1.1 - 2.9) / 12)  # -0.1333, while avg@4 is 0.25
    assert amc["avg@4"] == pytest.approx(3 / 12)
    assert summary["benchmarks"]["aime25"]["mean_score"] == pytest.approx(0.5)
    assert summary["average"]["mean_score"] == pytest.approx((amc["mean_score"] + 0.5) / 2)  # over benchmarks
