"""Grading responses with the project's math reward functions while the next batch is generated.

``reward_fns.compute_score_batch`` grades in its own pool of worker processes, each response under a hard,
kill-enforced deadline (math grading can hang on a tower of exponents). Here it runs on one background thread: the
main thread goes on generating, and the thread mostly waits on the worker processes, so the two overlap.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mhpo_verl.eval.errors import EvalInputError

logger = logging.getLogger(__name__)

DEFAULT_GRADER = "reward_fns:compute_score_batch"
RESULT_FIELDS = ("score", "acc", "pred", "reason")


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


class Grader:
    """Grades batches on a background thread; ``submit`` returns a future of ``[{pred, score, acc, reason}]``.

    ``workers`` becomes the grader's ``num_workers`` (its process pool size; 0 grades in the calling thread) when
    the grader takes that argument, as ``reward_fns.compute_score_batch`` does; None leaves the grader's default.
    """

    def __init__(self, spec: str = DEFAULT_GRADER, workers: int | None = None) -> None:
        self.spec = spec
        self.function = load_grader(spec)
        if workers is not None and workers < 0:
            raise EvalInputError(f"--grader-workers must be >= 0, got {workers}")
        self.kwargs: dict[str, Any] = {}
        if workers is not None:
            if "num_workers" in inspect.signature(self.function).parameters:
                self.kwargs["num_workers"] = workers
            else:
                logger.warning("--grader-workers ignored: grader %r takes no num_workers argument", spec)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mhpo-eval-grading")

    def grade(self, items: Sequence[GradingItem]) -> list[dict[str, Any]]:
        """Grade in the calling thread."""
        results = self.function(
            [item.data_source for item in items],
            [item.response for item in items],
            [item.ground_truth for item in items],
            [item.extra_info for item in items],
            **self.kwargs,
        )
        if len(results) != len(items):
            raise RuntimeError(f"grader {self.spec!r} returned {len(results)} results for {len(items)} responses")
        return [_checked(result, self.spec, item) for result, item in zip(results, items)]

    def submit(self, items: Sequence[GradingItem]) -> Future:
        return self._thread.submit(self.grade, list(items))

    def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)
