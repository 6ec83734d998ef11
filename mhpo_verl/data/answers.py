"""Reference answers out of the fields datasets ship: GSM8K's ``#### 42`` line, MATH's last ``\\boxed{...}``,
and plain answer columns that may hold numbers.

Each function returns the answer as a stripped string, or ``None`` when the field holds no usable answer: the
converter reports such a row as malformed instead of guessing.
"""

from __future__ import annotations

import math
import re
from numbers import Integral, Real

from reward_fns.braces import closing_brace

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)
_BOX_COMMANDS = ("\\boxed", "\\fbox")
_THOUSANDS_SEPARATED = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$")


def answer_text(value: object) -> str | None:
    """A scalar answer as text: strings stripped, integral floats without ``.0``; ``None`` for empty or non-scalar.

    AIME/AMC exports store answers as ints or floats; ground truths are strings in verl's schema.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        number = float(value)
        if not math.isfinite(number):
            return None
        return str(int(number)) if number.is_integer() else repr(number)
    return None


def gsm8k_final_answer(solution: object) -> str | None:
    """The number after GSM8K's ``####`` marker, thousands separators removed (``#### 1,200`` gives ``1200``)."""
    if not isinstance(solution, str):
        return None
    match = _GSM8K_FINAL.search(solution)
    if not match:
        return None
    answer = match.group(1).strip()
    if _THOUSANDS_SEPARATED.match(answer):
        answer = answer.replace(",", "")
    return answer or None


def last_boxed(text: object) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, nested and escaped braces respected.

    Also accepts the brace-less form ``\\boxed 5`` that a few MATH solutions use. ``None`` when there is no box or
    its braces never close.
    """
    if not isinstance(text, str):
        return None
    start = max(text.rfind(command) for command in _BOX_COMMANDS)
    if start < 0:
        return None
    command = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
    rest = text[start + len(command) :]
    if rest.startswith(" "):
        token = re.match(r"\s+([^\s$]+)", rest)
        return token.group(1) if token else None
    if not rest.startswith("{"):
        return None
    end = closing_brace(rest, 0)
    if end is None:
        return None
    return rest[1 : end - 1].strip() or None


def answer_from_field(value: object) -> str | None:
    """An answer column's value: the last boxed expression if it holds one (a full solution), else the text."""
    text = answer_text(value)
    if text is None:
        return None
    if any(command in text for command in _BOX_COMMANDS):
        return last_boxed(text)
    return text
