"""What every comparator of ``reward_fns.equivalence`` shares: the state of one comparison.

The comparators are split by the kind of answer they compare (``compare_numbers``, ``compare_sets``,
``compare_relations``, ``compare_matrices``); a comparator that meets a sub-answer of another kind (the items of a
tuple, the cells of a matrix) hands it back through ``State.equal``, the dispatcher in ``equivalence``, so that no
comparator imports another's dispatcher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from reward_fns.expr import Node


class SymbolicTimeout(Exception):
    """The bounded symbolic check ran out of time (raised by the caller's ``symbolic`` callable)."""


SymbolicCheck = Callable[[Node, Node], "bool | None"]


@dataclass
class State:
    """One comparison: its tolerance and options, the dispatcher, and what happened along the way."""

    rel_tol: float
    symbolic: SymbolicCheck | None
    equal: Callable[[Node, Node, State], bool]
    # Whether an inequality (``-2 <= x <= 7``) answers a gold written as an interval (``[-2, 7]``).
    inequality_for_interval: bool = True
    timed_out: bool = False
    undecided: bool = False
    methods: list[str] = field(default_factory=list)
