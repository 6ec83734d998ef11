"""Math-reasoning reward functions for verl: right, fast, and bounded in time.

Use with verl as ``reward.custom_reward_function.path=pkg://reward_fns`` (or the path of this file) and
``reward.custom_reward_function.name=compute_score`` (``compute_score_batch`` for verl's ``batch`` reward manager).
Options go in ``+reward.custom_reward_function.reward_kwargs.<name>=...`` (see ``reward_fns.options``).

Pipeline: ``extract`` (final answer from the response) → ``normalize`` (canonical spelling) → ``equivalence``
(parsed trees compared structurally, exactly, numerically, and as a last resort with sympy in a ``bounded``
worker process that is killed on timeout).
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

if __name__ != "reward_fns":  # loaded by file path (verl's custom-reward loader): make the package importable
    _parent = str(_Path(__file__).resolve().parent.parent)
    if _parent not in _sys.path:
        _sys.path.append(_parent)

from reward_fns.equivalence import Verdict, answers_equivalent
from reward_fns.extract import Extraction, extract_answer
from reward_fns.multiple_choice import compute_score, compute_score_batch  # multiple choice, else math
from reward_fns.options import GradingOptions
from reward_fns.scoring import Grade, grade, warm_up
from reward_fns.sources import profile_for

__all__ = [
    "Extraction",
    "Grade",
    "GradingOptions",
    "Verdict",
    "answers_equivalent",
    "compute_score",
    "compute_score_batch",
    "extract_answer",
    "grade",
    "profile_for",
    "warm_up",
]
