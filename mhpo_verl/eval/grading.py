"""Grading responses with the project's math reward functions, in a pool of worker processes.

Math grading (parsing LaTeX, SymPy equivalence) is CPU-bound and sometimes slow; worker processes keep it off
the generation loop and let a batch be graded while the next one is generated. Workers are spawned, not forked:
the parent may hold CUDA or many threads, which a fork copies badly.
"""

from __future__ import annotations

import importlib
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from mhpo_verl.eval.errors import EvalInputError

DEFAULT_GRADER = "reward_fns:compute_score_batch"
RESULT_FIELDS = ("score", "acc", "pred", "reason")


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) // 2))


@dataclass(frozen=True)
class GradingItem:
    data_source: str
    response: str
    ground_truth: Any
    extra_info: dict[str, Any]


def load_grader(spec: str) -> Callable[..., list[dict]]:
    """``module:function`` with the signature of ``reward_fns.compute_score_batch``."""
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise EvalInputError(f"--grader must look like 'module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise EvalInputError(f"--grader {spec!r}: cannot import {module_name!r} ({error})") from error
    function = getattr(module, function_name, None)
    if not callable(function):
        raise EvalInputError(f"--grader {spec!r}: {module_name!r} has no function {function_name!r}")
    return function


def _checked(result: Any, spec: str, item: GradingItem) -> dict[str, Any]:
    if not isinstance(result, dict) or any(name not in result for name in RESULT_FIELDS):
        raise RuntimeError(f"grader {spec!r} returned {result!r}; expected a dict with {RESULT_FIELDS}")
    score = float(result["score"])
    if not math.isfinite(score):
        raise RuntimeError(f"grader {spec!r} returned score {score} for ground truth {item.ground_truth!r}")
    return {"pred": str(result["pred"]), "score": score, "acc": bool(result["acc"]), "reason": str(result["reason"])}


def grade_batch(spec: str, items: Sequence[GradingItem]) -> list[dict[str, Any]]:
    """Grade in this process: ``{pred, score, acc, reason}`` per item, in order."""
    grader = load_grader(spec)
    results = grader(
        [item.data_source for item in items],
        [item.response for item in items],
        [item.ground_truth for item in items],
        [item.extra_info for item in items],
    )
    if len(results) != len(items):
        raise RuntimeError(f"grader {spec!r} returned {len(results)} results for {len(items)} responses")
    return [_checked(result, spec, item) for result, item in zip(results, items)]


class GradingJob:
    """The pending grades of one batch, spread over the pool in slices."""

    def __init__(self, futures: list[Future]) -> None:
        self._futures = futures

    def done(self) -> bool:
        return all(future.done() for future in self._futures)

    def result(self) -> list[dict[str, Any]]:
        return [grade for future in self._futures for grade in future.result()]


class Grader:
    """``workers=0`` grades in the calling process (debugging, tiny runs); otherwise a spawned process pool."""

    def __init__(self, spec: str = DEFAULT_GRADER, workers: int | None = None) -> None:
        load_grader(spec)  # fail now, in the parent, on a bad spec or an import error
        self.spec = spec
        self.workers = default_workers() if workers is None else workers
        if self.workers < 0:
            raise EvalInputError(f"--grader-workers must be >= 0, got {self.workers}")
        self._pool = None
        if self.workers > 0:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, items: Sequence[GradingItem]) -> GradingJob:
        if self._pool is None:
            future: Future = Future()
            try:
                future.set_result(grade_batch(self.spec, items))
            except Exception as error:
                future.set_exception(error)
            return GradingJob([future])
        slice_size = max(1, math.ceil(len(items) / self.workers))
        slices = [list(items[i : i + slice_size]) for i in range(0, len(items), slice_size)]
        return GradingJob([self._pool.submit(grade_batch, self.spec, part) for part in slices])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
