"""Equations and inequalities: labels dropped, chains read, relations compared up to a factor.

- A label names the answer: ``x = 5``, ``(p, q) = (3, 2)``, ``AB:CD = 3:5``, ``\\frac{AE}{EC} = \\frac{2}{7}``,
  ``|PQ| = 13`` are the answers 5, (3, 2), 3/5, 2/7 and 13. A left side that is not a name (``2x + 5 = 0``,
  ``7 = 11a + c``) makes an equation, which is compared as one.
- A chain ``x = 6/2 = 3`` is its last member; a chain of numbers (``180 + 24 = 204``) is its last member when it is
  true, and no answer when it is false. ``\\approx`` ends the exact part: ``x = 1/3 \\approx 0.33`` is 1/3.
- Two relations are equal up to a non-zero factor (a positive one for inequalities).
"""

from __future__ import annotations

import itertools

from reward_fns.compare_numbers import constant_ratio
from reward_fns.comparison import State
from reward_fns.expr import (
    MINUS_ONE,
    Add,
    Func,
    Mul,
    Neg,
    Node,
    Pow,
    Relation,
    Seq,
    Sym,
    free_symbols,
)
from reward_fns.parse import APPROX

MAX_NAME_FACTORS = 6


def is_name(node: Node) -> bool:
    """Whether ``node`` only names a quantity: a variable (``x``, ``a_1``), a product of letters read as one name
    (``AB``, ``f(x)``), a quotient or ratio of names (``AE/EC``, ``V_1:V_2``), ``|PQ|``, or a tuple of names."""
    if isinstance(node, Sym):
        return True
    if isinstance(node, Mul):
        return len(node.factors) <= MAX_NAME_FACTORS and all(_is_name_factor(f) for f in node.factors)
    if isinstance(node, Func) and node.name == "abs":
        return is_name(node.args[0])
    if isinstance(node, Seq) and node.opener in ("(", "<") and node.items:
        return all(is_name(item) for item in node.items)
    return False


def _is_name_factor(node: Node) -> bool:
    if isinstance(node, Pow) and node.exponent == MINUS_ONE:
        return is_name(node.base)
    return is_name(node)


def exact_part(node: Node) -> Node:
    """A chain with ``\\approx`` up to its first ``\\approx`` when an exact value precedes it (``√2 ≈ 1.414`` is
    √2, ``x = 1/3 ≈ 0.33`` is ``x = 1/3``); a bare ``x ≈ 11`` is read as ``x = 11``."""
    if not isinstance(node, Relation) or APPROX not in node.ops:
        return node
    first = node.ops.index(APPROX)
    parts, ops = node.parts[: first + 1], node.ops[:first]
    if len(parts) == 1 and is_name(parts[0]):
        ops = tuple("=" if op == APPROX else op for op in node.ops)
        return Relation(ops, node.parts)
    return parts[0] if len(parts) == 1 else Relation(ops, parts)


def assignment_value(node: Node, state: State) -> Node | None:
    """The value a relation states: ``x = 5`` (or a worked chain ``x = 6/2 = 3``: its last member), or a true
    chain of numbers ``180 + 24 = 204``."""
    if not (isinstance(node, Relation) and set(node.ops) == {"="}):
        return None
    if is_name(node.parts[0]):
        return node.parts[-1]
    if not any(free_symbols(part) for part in node.parts) and _true_chain(node.parts, state):
        return node.parts[-1]
    return None


def _true_chain(parts: tuple[Node, ...], state: State) -> bool:
    return all(state.equal(left, right, state) for left, right in itertools.pairwise(parts))


def strip_assignments(pred: Node, gold: Node, state: State) -> tuple[Node, Node]:
    """``x = 5`` is the answer 5 (and ``x = 2, y = 3`` the pair 2, 3), unless both sides are equations that have
    to be compared as equations (``y = 2x + 3`` against ``2x - y + 3 = 0``)."""
    pred, gold = exact_part(pred), exact_part(gold)
    pred_value, gold_value = assignment_value(pred, state), assignment_value(gold, state)
    if isinstance(pred, Relation) and isinstance(gold, Relation):
        if pred_value is not None and gold_value is not None:
            return pred_value, gold_value
        return pred, gold
    return (pred_value or strip_items(pred, state), gold_value or strip_items(gold, state))


def strip_items(node: Node, state: State) -> Node:
    if not (isinstance(node, Seq) and node.opener == ""):
        return node
    values = [assignment_value(exact_part(item), state) for item in node.items]
    if all(value is None for value in values):
        return node
    return Seq("", tuple(value or item for value, item in zip(values, node.items)), "")


_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "!=": "!="}


def equal_relations(pred: Relation, gold: Relation, state: State) -> bool:
    """Same relation up to a non-zero factor (a positive one for inequalities): ``2x + 2y = 6`` ≡ ``x + y = 3``."""
    if len(pred.ops) != 1 or len(gold.ops) != 1:
        if len(pred.ops) != len(gold.ops) or pred.ops != gold.ops:
            return False
        return all(state.equal(p, g, state) for p, g in zip(pred.parts, gold.parts))
    pred_op, gold_op = pred.ops[0], gold.ops[0]
    pred_f = Add((pred.parts[0], Neg(pred.parts[1])))
    if pred_op != gold_op:
        if _FLIP.get(pred_op) != gold_op:
            return False
        pred_f = Neg(pred_f)  # a > b is -(a - b) < 0
    gold_f = Add((gold.parts[0], Neg(gold.parts[1])))
    symbols = free_symbols(pred_f) | free_symbols(gold_f)
    if not symbols:
        if all(state.equal(p, g, state) for p, g in zip(pred.parts, gold.parts)):
            return True
        swapped = zip(pred.parts[::-1], gold.parts)
        return gold_op in ("=", "!=") and all(state.equal(p, g, state) for p, g in swapped)
    ratio = constant_ratio(pred_f, gold_f, symbols)
    state.methods.append("equation")
    if ratio is None:
        return False
    return ratio > 0 if gold_op not in ("=", "!=") else True


__all__ = ["assignment_value", "equal_relations", "exact_part", "is_name", "strip_assignments", "strip_items"]
