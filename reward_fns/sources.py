"""Dispatch by ``data_source``: which answer formats a dataset's responses use, strict and lenient.

Names are matched case-insensitively: this project's names (``gsm8k``, ``math``, ``math500``, ``dapo_math_17k``,
``aime24``, ``aime25``, ``amc23``, ``hmmt25``), verl's conventional ones (``openai/gsm8k``,
``DigitalLearningGmbH/MATH-lighteval``, ``HuggingFaceH4/MATH-500``, ``math_dapo``,
``BytedTsinghua-SIA/DAPO-Math-17k``) and any ``aime*`` / ``amc*`` / ``hmmt*``. Anything else is graded as general
mathematics with lenient extraction.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

_LENIENT_TAIL = ("answer_is", "bold", "inline_math", "last_number")


@dataclass(frozen=True)
class SourceProfile:
    """``strict_formats``: the dataset's own answer format; ``lenient_formats``: those, then the fallbacks."""

    name: str
    strict_formats: tuple[str, ...]
    lenient_formats: tuple[str, ...]

    def formats(self, strict: bool) -> tuple[str, ...]:
        return self.strict_formats if strict else self.lenient_formats


GSM8K = SourceProfile("gsm8k", ("hash", "boxed"), ("hash", "boxed", "answer_line", *_LENIENT_TAIL))
MATH = SourceProfile("math", ("boxed",), ("boxed", "answer_line", "hash", *_LENIENT_TAIL))
# DAPO-Math-17k's prompt asks for a last line "Answer: $Answer".
DAPO = SourceProfile("dapo", ("answer_line", "boxed"), ("answer_line", "boxed", "hash", *_LENIENT_TAIL))
COMPETITION = SourceProfile("competition", ("boxed",), ("boxed", "answer_line", "hash", *_LENIENT_TAIL))
GENERAL = SourceProfile("general", ("boxed",), ("boxed", "answer_line", "hash", *_LENIENT_TAIL))

_EXACT_NAMES = {
    "gsm8k": GSM8K,
    "openai/gsm8k": GSM8K,
    "math": MATH,
    "math500": MATH,
    "math-500": MATH,
    "math_500": MATH,
    "huggingfaceh4/math-500": MATH,
    "digitallearninggmbh/math-lighteval": MATH,
    "lighteval/math": MATH,
    "hendrycks_math": MATH,
    "hendrycks/competition_math": MATH,
    "dapo_math_17k": DAPO,
    "dapo-math-17k": DAPO,
    "math_dapo": DAPO,
    "math_dapo_reasoning": DAPO,
    "bytedtsinghua-sia/dapo-math-17k": DAPO,
}


@lru_cache(maxsize=256)
def profile_for(data_source: str) -> SourceProfile:
    """The grading profile of a ``data_source`` name (never fails: unknown names get ``GENERAL``)."""
    name = str(data_source).strip().lower()
    if name in _EXACT_NAMES:
        return _EXACT_NAMES[name]
    leaf = name.rsplit("/", 1)[-1]
    if leaf.startswith(("aime", "amc", "hmmt")) or any(key in name for key in ("aime", "amc", "hmmt")):
        return COMPETITION
    if "gsm8k" in name:
        return GSM8K
    if "dapo" in name:
        return DAPO
    if "math-lighteval" in name or leaf in _EXACT_NAMES:
        return _EXACT_NAMES.get(leaf, MATH)
    return GENERAL
