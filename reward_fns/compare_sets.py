"""Answers with several parts: tuples, sets, bare lists, ± and intervals.

Tuples are ordered; sets and bare lists ("the solutions are 2, 3") are sets: every gold member matched by a pred
member and nothing left over (a subset of a multi-answer gold is wrong), a member written twice counted once. ``±``
stands for its two values. Intervals keep their brackets, and an inequality on one variable or named quantity
(``0 < f(x) < 1``) is the interval it describes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from reward_fns.compare_numbers import equal_scalars
from reward_fns.compare_relations import assignment_value, is_name
from reward_fns.comparison import State
from reward_fns.expr import (
    Add,
    Const,
    Degrees,
    Func,
    Mul,
    Neg,
    Node,
    Percent,
    PlusMinus,
    Pow,
    Relation,
    Seq,
    Union,
    any_node,
    children,
    contains,
    free_symbols,
)

MAX_ITEMS = 64
MAX_DEDUPLICATED = 16  # repeated members are looked for (pairwise, so quadratic) in lists up to this long
MAX_PLUS_MINUS_EXPANSION = 16


# -- plus/minus ----------------------------------------------------------------------------------------------------
class TooComplex(Exception):
    """More sign choices than ``MAX_PLUS_MINUS_EXPANSION``."""


def _expand_plus_minus(node: Node) -> list[Node]:
    """All sign choices of the ± in ``node`` (``2 ± √3`` → [2 + √3, 2 − √3])."""
    if isinstance(node, PlusMinus):
        lefts, rights = _expand_plus_minus(node.left), _expand_plus_minus(node.right)
        return [Add((left, sign(right))) for left in lefts for right in rights for sign in (_identity, Neg)]
    parts = children(node)
    if not parts or not contains(node, PlusMinus):
        return [node]
    options = [_expand_plus_minus(part) for part in parts]
    combos = list(itertools.islice(itertools.product(*options), MAX_PLUS_MINUS_EXPANSION + 1))
    if len(combos) > MAX_PLUS_MINUS_EXPANSION:
        raise TooComplex
    return [_rebuild(node, combo) for combo in combos]


def _identity(node: Node) -> Node:
    return node


def _rebuild(node: Node, parts: tuple[Node, ...]) -> Node:
    if isinstance(node, Add):
        return Add(parts)
    if isinstance(node, Mul):
        return Mul(parts)
    if isinstance(node, Neg):
        return Neg(parts[0])
    if isinstance(node, Func):
        return Func(node.name, parts)
    if isinstance(node, Percent):
        return Percent(parts[0])
    if isinstance(node, Degrees):
        return Degrees(parts[0])
    if isinstance(node, Relation):
        return Relation(node.ops, parts)
    if isinstance(node, Seq):
        return Seq(node.opener, parts, node.closer)
    if isinstance(node, Union):
        return Union(parts)
    if isinstance(node, Pow):
        return Pow(parts[0], parts[1])
    raise TooComplex


def _as_value_set(node: Node, state: State) -> list[Node]:
    if isinstance(node, Seq) and node.opener in ("{", ""):
        values: list[Node] = []
        for item in node.items:
            values.extend(_expand_plus_minus(assignment_value(item, state) or item))
        return values
    return _expand_plus_minus(node)


def equal_plus_minus(pred: Node, gold: Node, state: State) -> bool:
    """± stands for two values: compare the complete sets of values, in any order."""
    try:
        pred_values, gold_values = _as_value_set(pred, state), _as_value_set(gold, state)
    except TooComplex:
        return False
    state.methods.append("plus_minus")
    return match_unordered(pred_values, gold_values, state)


# -- sequences and sets --------------------------------------------------------------------------------------------
def distinct(items, state: State) -> list[Node]:
    """The members of a set, each once (``{a, a}`` is ``{a}``; a repeated tuple in a list of solutions is one)."""
    kept: list[Node] = []
    for item in items:
        if not any(state.equal(item, seen, state) for seen in kept):
            kept.append(item)
    return kept


def match_unordered(pred_items, gold_items, state: State) -> bool:
    """The same set: every gold member matched by a distinct pred member and nothing left over."""
    if len(gold_items) > MAX_ITEMS or len(pred_items) > MAX_ITEMS:
        return False
    if len(pred_items) != len(gold_items) and max(len(pred_items), len(gold_items)) <= MAX_DEDUPLICATED:
        pred_items, gold_items = distinct(pred_items, state), distinct(gold_items, state)
        if len(pred_items) != len(gold_items):
            return False
    remaining = list(pred_items)
    for gold_item in gold_items:
        for index, pred_item in enumerate(remaining):
            if state.equal(pred_item, gold_item, state):
                del remaining[index]
                break
        else:
            return False
    return True


def match_ordered(pred_items, gold_items, state: State) -> bool:
    if len(pred_items) != len(gold_items) or len(gold_items) > MAX_ITEMS:
        return False
    return all(state.equal(p, g, state) for p, g in zip(pred_items, gold_items))


def equal_sequences(pred: Node, gold: Node, state: State) -> bool:
    if not (isinstance(pred, Seq) and isinstance(gold, Seq)):
        return False
    unordered_kinds = ("{", "")
    if gold.opener in unordered_kinds and pred.opener in unordered_kinds:
        return match_unordered(pred.items, gold.items, state)
    if gold.opener == "" or pred.opener == "":
        # A bare list against a bracketed one: the model dropped (or added) the brackets of a tuple.
        ordered = gold if gold.opener else pred
        if ordered.opener == "{":
            return match_unordered(pred.items, gold.items, state)
        return match_ordered(pred.items, gold.items, state)
    if gold.opener == "{" or pred.opener == "{":
        return False
    same_brackets = _bracket_kind(pred) == _bracket_kind(gold)
    return same_brackets and match_ordered(pred.items, gold.items, state)


def _bracket_kind(node: Seq) -> str:
    # A vector <a, b> and a tuple (a, b) are the same ordered pair.
    return {"<": "(", ">": ")"}.get(node.opener, node.opener) + {">": ")"}.get(node.closer, node.closer)


# -- intervals and inequalities ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    low: Node
    low_closed: bool
    high: Node
    high_closed: bool


_NEG_INF = Neg(Const("inf"))
_POS_INF = Const("inf")


def is_set_like(node: Node) -> bool:
    """Trees that must be read as sets of reals: unions, inequalities, half-open or mixed intervals."""
    if isinstance(node, (Union, Relation)):
        return True
    if isinstance(node, Seq):
        if node.opener == "" and node.items and all(isinstance(i, (Relation, Union)) for i in node.items):
            return True
        return len(node.items) == 2 and (
            node.opener + node.closer in ("(]", "[)") or any(any_node(item, _is_infinity) for item in node.items)
        )
    return False


def is_inequality(node: Node) -> bool:
    """An inequality, or a list/union made only of them ("x < -2 or x > 2")."""
    if isinstance(node, Relation):
        return True
    parts = node.items if isinstance(node, Seq) and node.opener == "" else node.parts if isinstance(node, Union) else ()
    return bool(parts) and all(is_inequality(part) for part in parts)


def _is_infinity(node: Node) -> bool:
    return isinstance(node, Const) and node.name == "inf"


def as_interval_set(node: Node) -> list[Interval] | None:
    """The node as a union of intervals, or None when it is not one."""
    if isinstance(node, Union):
        intervals: list[Interval] = []
        for part in node.parts:
            converted = as_interval_set(part)
            if converted is None:
                return None
            intervals.extend(converted)
        return intervals
    if isinstance(node, Seq):
        if node.opener in ("(", "[") and node.closer in (")", "]") and len(node.items) == 2:
            low, high = node.items
            return [Interval(low, node.opener == "[", high, node.closer == "]")]
        if node.opener == "" and node.items:
            parts = [as_interval_set(item) for item in node.items]
            if all(part is not None for part in parts):
                return [interval for part in parts for interval in part]
        return None
    if isinstance(node, Relation):
        return _relation_interval(node)
    return None


def _relation_interval(node: Relation) -> list[Interval] | None:
    """``x > 3`` → (3, ∞); ``-2 < x <= 5`` → (-2, 5]; ``0 < f(x) < 1`` → (0, 1): one variable or named quantity
    between constants."""
    if any(op in ("=", "!=") for op in node.ops):
        return None
    variables = [index for index, part in enumerate(node.parts) if free_symbols(part)]
    if len(variables) != 1 or not is_name(node.parts[variables[0]]):
        return None
    position = variables[0]
    low, low_closed, high, high_closed = _NEG_INF, False, _POS_INF, False
    for index, op in enumerate(node.ops):
        left, right = index, index + 1
        if position not in (left, right):
            continue
        other = node.parts[right if position == left else left]
        closed = op in ("<=", ">=")
        # Normalise to "variable < other" (upper bound) or "variable > other" (lower bound).
        variable_is_smaller = (op in ("<", "<=")) == (position == left)
        if variable_is_smaller:
            high, high_closed = other, closed
        else:
            low, low_closed = other, closed
    return [Interval(low, low_closed, high, high_closed)]


def equal_interval_sets(pred: list[Interval], gold: list[Interval], state: State) -> bool:
    state.methods.append("interval")

    def same(a: Interval, b: Interval) -> bool:
        return (
            a.low_closed == b.low_closed
            and a.high_closed == b.high_closed
            and equal_scalars(a.low, b.low, state)
            and equal_scalars(a.high, b.high, state)
        )

    if len(pred) != len(gold):
        return False
    remaining = list(pred)
    for interval in gold:
        match = next((i for i, candidate in enumerate(remaining) if same(candidate, interval)), None)
        if match is None:
            return False
        del remaining[match]
    return True


__all__ = [
    "MAX_ITEMS",
    "Interval",
    "as_interval_set",
    "distinct",
    "equal_interval_sets",
    "equal_plus_minus",
    "equal_sequences",
    "is_inequality",
    "is_set_like",
    "match_ordered",
    "match_unordered",
]
