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

_FALLBACK_TIERS = (("bold",), ("inline_math", "conclusion"), ("last_number",))
# An explicit "Final Answer: X" / "the final answer is X" is as strong as the source's own format: in lenient
# extraction it shares the first tier with it, so the later of a box and a final-answer statement wins (a box around
# an intermediate value, then "Final Answer: The final answer is $10,455$").
_FINAL_STATEMENT = ("final_answer",)


@dataclass(frozen=True)
class SourceProfile:
    """How a dataset's responses state their answer: ``own_format`` is the tier of formats its prompt asks for
    (all that strict extraction accepts); lenient extraction continues with ``statements`` ("the answer is",
    "Answer:", "####") and the fallbacks. Within a tier the last match in the response wins."""

    name: str
    own_format: tuple[str, ...]
    statements: tuple[str, ...]

    def tiers(self, strict: bool) -> tuple[tuple[str, ...], ...]:
        if strict:
            return (self.own_format,)
        return ((*self.own_format, *_FINAL_STATEMENT), self.statements, *_FALLBACK_TIERS)

    @property
    def strict_formats(self) -> tuple[str, ...]:
        return self.own_format


_STATEMENTS = ("answer_line", "answer_is", "hash")
GSM8K = SourceProfile("gsm8k", ("hash", "boxed"), ("answer_line", "answer_is"))
MATH = SourceProfile("math", ("boxed",), _STATEMENTS)
# DAPO-Math-17k's prompt asks for a last line "Answer: $Answer".
DAPO = SourceProfile("dapo", ("answer_line", "boxed"), ("answer_is", "hash"))
COMPETITION = SourceProfile("competition", ("boxed",), _STATEMENTS)
GENERAL = SourceProfile("general", ("boxed",), _STATEMENTS)

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
