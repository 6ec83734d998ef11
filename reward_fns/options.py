"""Grading options: every knob of the grader, validated once, with the hard caps that keep grading bounded.

verl passes ``reward.custom_reward_function.reward_kwargs`` as keyword arguments to ``compute_score``; they land
here. A misspelt option is an error (a silently ignored ``timeout_sec=1`` would be a surprise in week two of a run),
while the keyword arguments verl itself adds to the call are accepted and ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

# Keyword arguments verl's reward managers add to a compute_score call; they mean nothing to a rule-based grader.
VERL_CALL_KWARGS = frozenset(
    {
        "reward_router_address",
        "reward_model_tokenizer",
        "sandbox_fusion_url",
        "concurrent_semaphore",
        "memory_limit_mb",
    }
)


@dataclass(frozen=True)
class GradingOptions:
    """How answers are extracted, compared and turned into a reward.

    Extraction: ``strict`` accepts only the data source's own answer format (``\\boxed{}``; ``Answer:`` lines for
    DAPO data; ``####`` for GSM8K); otherwise the lenient fallbacks ("the answer is", markdown bold, a trailing
    inline formula, the last number) are tried in that order.

    Comparison: ``rel_tol`` is the relative precision a decimal must reach against an exact gold;
    ``inequality_for_interval`` (default true) lets an inequality (``-2 <= x <= 7``) answer a gold in interval
    notation (``[-2, 7]``); set it false when the problem demands interval notation (an interval always answers an
    inequality gold).

    Reward: ``correct_score`` / ``incorrect_score``; ``no_answer_score`` (defaults to ``incorrect_score``) is given
    when nothing could be extracted, so a format penalty is ``no_answer_score=-1``; ``format_score`` is added to a
    wrong answer that was nevertheless given in the expected format (boxed / Answer line), the classic
    "format reward". DAPO's soft overlong penalty is enabled by ``max_response_length`` and
    ``overlong_buffer_len`` (in tokens; see ``reward_fns.shaping``).
    """

    strict: bool = False
    timeout_s: float = 3.0
    rel_tol: float = 1e-4
    inequality_for_interval: bool = True
    correct_score: float = 1.0
    incorrect_score: float = 0.0
    no_answer_score: float | None = None
    format_score: float = 0.0
    max_response_length: int | None = None
    overlong_buffer_len: int | None = None
    overlong_penalty_factor: float = 1.0
    tokenizer_path: str | None = None
    # Hard caps, applied before any parser or sympy sees the text.
    max_tail_chars: int = 20_000
    max_answer_chars: int = 1_000

    def __post_init__(self) -> None:
        _require(isinstance(self.strict, bool), "strict", self.strict, "a bool")
        _require(
            isinstance(self.inequality_for_interval, bool),
            "inequality_for_interval",
            self.inequality_for_interval,
            "a bool",
        )
        for name in ("timeout_s", "rel_tol", "overlong_penalty_factor"):
            value = getattr(self, name)
            _require(_is_real(value) and value > 0 and math.isfinite(value), name, value, "a finite number > 0")
        for name in ("correct_score", "incorrect_score", "format_score"):
            value = getattr(self, name)
            _require(_is_real(value) and math.isfinite(value), name, value, "a finite number")
        if self.no_answer_score is not None:
            _require(
                _is_real(self.no_answer_score) and math.isfinite(self.no_answer_score),
                "no_answer_score",
                self.no_answer_score,
                "a finite number or None",
            )
        for name in ("max_tail_chars", "max_answer_chars"):
            value = getattr(self, name)
            _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, name, value, "an int > 0")
        self._check_overlong()

    def _check_overlong(self) -> None:
        given = (self.max_response_length is not None, self.overlong_buffer_len is not None)
        if given == (False, False):
            return
        _require(
            all(given),
            "overlong_buffer_len" if given[0] else "max_response_length",
            None,
            "set as well: the overlong penalty needs both max_response_length and overlong_buffer_len",
        )
        for name in ("max_response_length", "overlong_buffer_len"):
            value = getattr(self, name)
            _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, name, value, "an int > 0")
        _require(
            self.overlong_buffer_len < self.max_response_length,
            "overlong_buffer_len",
            self.overlong_buffer_len,
            f"less than max_response_length={self.max_response_length}",
        )

    @property
    def missing_answer_score(self) -> float:
        return self.incorrect_score if self.no_answer_score is None else float(self.no_answer_score)

    @property
    def overlong_enabled(self) -> bool:
        return self.max_response_length is not None

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> GradingOptions:
        """Options from ``compute_score``'s keyword arguments (cached: verl passes the same ones every call)."""
        key = _freeze(kwargs)
        cached = _OPTIONS_CACHE.get(key)
        if cached is not None:
            return cached
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known - VERL_CALL_KWARGS)
        if unknown:
            raise TypeError(f"unknown reward option(s) {unknown}; expected some of {sorted(known)}")
        options = cls(**{name: value for name, value in kwargs.items() if name in known})
        if len(_OPTIONS_CACHE) < 64:
            _OPTIONS_CACHE[key] = options
        return options

    def with_strict(self, strict: bool) -> GradingOptions:
        return replace(self, strict=strict)


_OPTIONS_CACHE: dict[Any, GradingOptions] = {}


def _freeze(kwargs: dict[str, Any]) -> Any:
    key = tuple(sorted((k, v) for k, v in kwargs.items() if k not in VERL_CALL_KWARGS))
    try:
        hash(key)
    except TypeError:  # an unhashable value (a list from Hydra): do not cache, validate every time
        return object()
    return key


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"reward option {name}={value!r} is invalid: expected {expected}")
