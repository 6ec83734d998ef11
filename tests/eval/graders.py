"""Graders with the signature of ``reward_fns.compute_score_batch`` whose verdicts the tests can predict.

The tiny random model never answers correctly, so the real math grader would score every sample 0; these give
mixed, deterministic verdicts, so the summary can be checked against hand-computed values from samples.jsonl.
"""

from __future__ import annotations


def length_parity(data_sources, solution_strs, ground_truths, extra_infos=None, **kwargs):
    """Correct when the response has an even number of characters."""
    return [
        {
            "score": 1.0 if len(text) % 2 == 0 else 0.0,
            "acc": len(text) % 2 == 0,
            "pred": str(len(text)),
            "reason": "correct" if len(text) % 2 == 0 else "wrong",
        }
        for text in solution_strs
    ]


def missing_fields(data_sources, solution_strs, ground_truths, extra_infos=None, **kwargs):
    """Breaks the contract: no 'acc' and no 'reason'."""
    return [{"score": 0.0, "pred": ""} for _ in solution_strs]
