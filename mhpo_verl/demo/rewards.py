"""Grading the demo's responses with the project's reward functions (``reward_fns``).

The training reward is exactly what ``reward_fns.compute_score`` returns for the same options: 1 for a correct
final answer (found by the lenient extractor: ``\\boxed{}``, "the answer is", or the last number), plus
``format_score`` for a wrong answer that was still given in ``\\boxed{}``. Boxing therefore never lowers the
expected reward and raises it whenever the answer is wrong, so the policy learns both to be right and to box.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mhpo_verl.demo.tasks import DATA_SOURCE

DEFAULT_REWARD_OPTIONS: Mapping[str, Any] = {"format_score": 0.5}
"""``reward_fns`` grading options of the demo (any ``reward_fns.GradingOptions`` field may be given)."""


@dataclass(frozen=True)
class Grade:
    """One response's reward: ``score`` is what the policy is trained on; ``correct`` and ``formatted`` (the final
    answer was given in ``\\boxed{}``) are what a user watches."""

    score: float
    correct: bool
    formatted: bool


def grade_responses(
    responses: Sequence[str], answers: Sequence[str], options: Mapping[str, Any] | None = None
) -> list[Grade]:
    """Grade each response against its reference answer, in this process (the answers are integers: no sympy)."""
    from reward_fns import GradingOptions, grade
    from reward_fns.scoring import reward_of

    if len(responses) != len(answers):
        raise ValueError(f"{len(responses)} responses but {len(answers)} answers")
    grading = GradingOptions.from_kwargs(dict(DEFAULT_REWARD_OPTIONS if options is None else options))
    grades = []
    for response, answer in zip(responses, answers):
        verdict = grade(response, answer, DATA_SOURCE, grading)
        reward = reward_of(verdict, grading, response, None)
        grades.append(Grade(score=float(reward["score"]), correct=bool(reward["acc"]), formatted=verdict.formatted))
    return grades
