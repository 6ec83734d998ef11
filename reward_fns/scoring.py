"""The verl-facing entry points: ``compute_score`` (one response) and ``compute_score_batch`` (a process pool).

``grade`` runs extract → normalize → equivalence for one response in this process; only an undecided comparison
is sent to sympy in a bounded worker. ``compute_score_batch`` sends whole responses to a pool of workers, each
under a hard per-response deadline. Neither raises for anything a model writes: a timeout, a parse failure or an
internal error is a score of ``incorrect_score`` with the reason in the result, and every result dict has the same
keys (verl stacks them into per-key columns).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from reward_fns import bounded
from reward_fns.equivalence import SymbolicTimeout, Verdict, answers_equivalent
from reward_fns.expr import Node
from reward_fns.extract import answer_of_ground_truth, extract_answer
from reward_fns.options import GradingOptions
from reward_fns.sources import profile_for

logger = logging.getLogger("reward_fns")

SYMBOLIC_TASK = "reward_fns.symbolic:symbolic_equal"
GRADE_TASK = "reward_fns.scoring:grade_in_worker"
SYMBOLIC_WORKERS = 2
MAX_PRED_CHARS = 100
# Extra time a batch worker gets on top of timeout_s for the round trip and everything before sympy.
BATCH_GRACE_S = 0.5

RESULT_KEYS = ("score", "acc", "pred", "reason")
NO_ANSWER_REASONS = frozenset({"no_answer", "unfinished_think", "truncated_answer", "answer_too_long"})


@dataclass(frozen=True)
class Grade:
    """The verdict on one response, before it becomes a reward.

    ``reason``: "correct", "wrong", "no_answer", "unfinished_think", "truncated_answer", "answer_too_long",
    "parse_error", "timeout", "undecided" or "grader_error". ``formatted``: the answer was given in the data
    source's own format (the strict formats).
    """

    acc: bool
    pred: str
    reason: str
    method: str = ""
    formatted: bool = False


def ground_truth_answers(ground_truth: Any) -> list[str]:
    """The accepted answers: a string, a number, or a list/tuple/array of them."""
    if hasattr(ground_truth, "tolist") and not isinstance(ground_truth, (str, bytes)):
        ground_truth = ground_truth.tolist()  # numpy arrays and scalars from parquet
    if isinstance(ground_truth, (list, tuple)):
        answers = [answer for item in ground_truth for answer in ground_truth_answers(item)]
        if not answers:
            raise ValueError("ground_truth is an empty list: expected at least one accepted answer")
        return answers
    if isinstance(ground_truth, bool) or not isinstance(ground_truth, (str, int, float)):
        raise TypeError(
            f"ground_truth={ground_truth!r} has type {type(ground_truth).__name__}: "
            "expected a string, a number, or a list of them"
        )
    text = str(ground_truth).strip()
    if not text:
        raise ValueError("ground_truth is empty: expected the reference answer")
    return [answer_of_ground_truth(text)]


def grade(
    solution_str: str,
    ground_truth: Any,
    data_source: str = "",
    options: GradingOptions | None = None,
    symbolic_in_process: bool = False,
) -> Grade:
    """Grade one response. ``symbolic_in_process`` runs sympy here instead of in a bounded worker (only for code
    that is itself inside a worker with a hard deadline)."""
    options = options or GradingOptions()
    if not isinstance(solution_str, str):
        raise TypeError(f"solution_str has type {type(solution_str).__name__}: expected str")
    golds = ground_truth_answers(ground_truth)
    profile = profile_for(data_source)
    tiers = profile.tiers(options.strict)
    try:
        extraction = extract_answer(solution_str, tiers, options.max_tail_chars, options.max_answer_chars)
        if extraction.answer is None:
            return Grade(False, "", extraction.method)
        pred = extraction.answer
        formatted = extraction.method in profile.strict_formats
        deadline = time.monotonic() + options.timeout_s
        check = _inline_symbolic(deadline) if symbolic_in_process else _pooled_symbolic(deadline)
        verdict = _best_verdict(pred, golds, options, check)
        return Grade(verdict.equal, pred[:MAX_PRED_CHARS], verdict.reason, verdict.method, formatted)
    except Exception:  # a grader bug must cost one reward, not the training run; it is logged, not hidden
        logger.warning("reward_fns: grader error on data_source=%r", data_source, exc_info=True)
        return Grade(False, "", "grader_error")


def _best_verdict(pred: str, golds: list[str], options: GradingOptions, symbolic) -> Verdict:
    verdicts = []
    for gold in golds:
        verdict = answers_equivalent(pred, gold, options.rel_tol, symbolic, options.inequality_for_interval)
        if verdict.equal:
            return verdict
        verdicts.append(verdict)
    # Report the most informative failure: a timeout or parse error says more than "wrong".
    priority = {"timeout": 0, "undecided": 1, "parse_error": 2}
    return min(verdicts, key=lambda v: priority.get(v.reason, 3))


def _pooled_symbolic(deadline: float):
    def check(pred: Node, gold: Node) -> bool | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SymbolicTimeout
        try:
            return bounded.shared_pool(SYMBOLIC_WORKERS).call(SYMBOLIC_TASK, (pred, gold), remaining)
        except bounded.WorkerTimeout as error:
            raise SymbolicTimeout from error
        except (bounded.WorkerFailed, bounded.TaskError):
            logger.warning("reward_fns: symbolic check failed", exc_info=True)
            return None

    return check


def _inline_symbolic(deadline: float):
    def check(pred: Node, gold: Node) -> bool | None:
        if time.monotonic() >= deadline:
            raise SymbolicTimeout
        from reward_fns.symbolic import symbolic_equal

        return symbolic_equal(pred, gold)

    return check


def grade_in_worker(data_source: str, solution_str: str, golds: list[str], options: GradingOptions) -> Grade:
    """The batch task run inside a worker process (the parent enforces the deadline by killing it)."""
    return grade(solution_str, golds, data_source, options, symbolic_in_process=True)


# -- rewards -------------------------------------------------------------------------------------------------------
def reward_of(result: Grade, options: GradingOptions, solution_str: str, extra_info: Any) -> dict[str, Any]:
    if result.acc:
        score = options.correct_score
    elif result.reason in NO_ANSWER_REASONS:
        score = options.missing_answer_score
    else:
        score = options.incorrect_score + (options.format_score if result.formatted else 0.0)
    reward: dict[str, Any] = {"score": float(score), "acc": bool(result.acc), "pred": result.pred}
    reward["reason"] = result.reason
    if options.overlong_enabled:
        penalty = overlong_penalty(response_length(solution_str, extra_info, options), options)
        reward["score"] = float(score + penalty)
        reward["overlong_penalty"] = float(penalty)
    return reward


def overlong_penalty(length: int, options: GradingOptions) -> float:
    """DAPO's soft overlong punishment: 0 up to max_response_length - overlong_buffer_len tokens, then falling
    linearly to -overlong_penalty_factor at max_response_length."""
    assert options.max_response_length is not None and options.overlong_buffer_len is not None
    expected = options.max_response_length - options.overlong_buffer_len
    exceeded = length - expected
    return min(-exceeded / options.overlong_buffer_len * options.overlong_penalty_factor, 0.0)


def response_length(solution_str: str, extra_info: Any, options: GradingOptions) -> int:
    """Response length in tokens: ``extra_info["response_length"]`` if the caller provides it, else counted with
    the tokenizer at ``tokenizer_path``."""
    if isinstance(extra_info, dict) and isinstance(extra_info.get("response_length"), int):
        return extra_info["response_length"]
    if options.tokenizer_path is None:
        raise ValueError(
            "the overlong penalty needs the response length in tokens: set reward option tokenizer_path=<local "
            "tokenizer dir> or pass extra_info['response_length'] (or use verl's `dapo` reward manager, which "
            "applies the same penalty from token counts)"
        )
    return len(_tokenizer(options.tokenizer_path).encode(solution_str, add_special_tokens=False))


@lru_cache(maxsize=4)
def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


# -- verl entry points -------------------------------------------------------------------------------------------
def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None, **kwargs: Any
) -> dict[str, Any]:
    """verl's ``custom_reward_function`` signature. Returns ``{"score", "acc", "pred", "reason"}`` (plus
    ``"overlong_penalty"`` when that is enabled). ``kwargs`` are reward options (``reward_fns.options``)."""
    options = GradingOptions.from_kwargs(kwargs)
    result = grade(solution_str, ground_truth, data_source, options)
    return reward_of(result, options, solution_str, extra_info)


def compute_score_batch(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Any] | None = None,
    num_workers: int | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Grade many responses in a pool of ``num_workers`` worker processes (default: min(8, CPUs); 0 grades in
    this process), each response under a hard deadline of ``timeout_s`` (+0.5 s)."""
    options = GradingOptions.from_kwargs(kwargs)
    count = len(solution_strs)
    if len(data_sources) != count or len(ground_truths) != count:
        raise ValueError(
            f"batch lengths differ: {len(data_sources)} data_sources, {count} solution_strs, "
            f"{len(ground_truths)} ground_truths"
        )
    if extra_infos is not None and len(extra_infos) != count:
        raise ValueError(f"batch lengths differ: {len(extra_infos)} extra_infos for {count} solution_strs")
    extras = list(extra_infos) if extra_infos is not None else [None] * count
    workers = default_workers() if num_workers is None else num_workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"num_workers={num_workers!r} is invalid: expected an int >= 0")
    for solution in solution_strs:
        if not isinstance(solution, str):
            raise TypeError(f"solution_strs contains a {type(solution).__name__}: expected str")
    golds = [ground_truth_answers(truth) for truth in ground_truths]
    sources = [str(source) for source in data_sources]
    if workers == 0 or count == 1:
        items = zip(sources, solution_strs, golds)
        results = [grade(solution, gold, source, options) for source, solution, gold in items]
    else:
        results = _grade_in_pool(sources, solution_strs, golds, options, workers)
    return [
        reward_of(result, options, solution, extra) for result, solution, extra in zip(results, solution_strs, extras)
    ]


def _grade_in_pool(
    sources: list[str], solutions: Sequence[str], golds: list[list[str]], options: GradingOptions, workers: int
) -> list[Grade]:
    pool = bounded.shared_pool(workers)
    outcomes = pool.map(
        GRADE_TASK,
        [(source, solution, gold, options) for source, solution, gold in zip(sources, solutions, golds)],
        options.timeout_s + BATCH_GRACE_S,
    )
    results = []
    for outcome in outcomes:
        if isinstance(outcome, Grade):
            results.append(outcome)
        elif isinstance(outcome, bounded.WorkerTimeout):
            results.append(Grade(False, "", "timeout", "worker"))
        else:
            logger.warning("reward_fns: batch grading failed for one response: %s", outcome)
            results.append(Grade(False, "", "grader_error", "worker"))
    return results


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def warm_up(num_workers: int | None = None) -> None:
    """Start the grading workers now rather than on first use (each takes about a second to import sympy)."""
    bounded.shared_pool(SYMBOLIC_WORKERS).warm_up()
    if num_workers != 0:
        bounded.shared_pool(default_workers() if num_workers is None else num_workers).warm_up()
