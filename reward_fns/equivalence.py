"""Stage 3: decide whether an extracted answer is equivalent to a ground truth.

Order of checks, cheapest first: identical canonical strings; word answers and multiple-choice letters; then the
parsed trees: identical up to the order of sums and products, then compared by the kind of answer, each kind in its
own module:

- ``compare_relations``: labels dropped (``(p, q) = (3, 2)`` is (3, 2)), chains read, equations and inequalities
  compared up to a factor;
- ``compare_matrices``: unevaluated matrix arithmetic carried out, then cell by cell;
- ``compare_sets``: ±, tuples, sets, bare lists and intervals (an inequality is the interval it describes);
- ``compare_numbers``: scalars, exactly, numerically, by identity testing, and as a last resort with sympy through
  the caller's bounded ``symbolic`` check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reward_fns.compare_matrices import equal_matrices, matrix_value
from reward_fns.compare_numbers import equal_scalars
from reward_fns.compare_relations import equal_relations, strip_assignments
from reward_fns.compare_sets import (
    as_interval_set,
    distinct,
    equal_interval_sets,
    equal_plus_minus,
    equal_sequences,
    is_inequality,
    is_set_like,
)
from reward_fns.comparison import State, SymbolicCheck, SymbolicTimeout
from reward_fns.expr import Matrix, Node, PlusMinus, Relation, Seq, Union, canonical_order, contains
from reward_fns.normalize import choice_letter, normalize_answer, normalize_text
from reward_fns.parse import AnswerParseError, parse_answer


@dataclass(frozen=True)
class Verdict:
    """The outcome of one comparison: ``reason`` is "correct", "wrong", "parse_error", "timeout" or
    "undecided"; ``method`` names the check that decided it."""

    equal: bool
    reason: str
    method: str = ""


def parse_cached(text: str) -> Node:
    """Parse a normalised answer, remembering recent results (ground truths repeat across a group of samples)."""
    cached = _PARSE_CACHE.get(text)
    if cached is not None:
        if isinstance(cached, AnswerParseError):
            raise cached
        return cached
    try:
        node: Node | AnswerParseError = parse_answer(text)
    except AnswerParseError as error:
        node = error
    except RecursionError:
        node = AnswerParseError("answer is nested too deeply")
    if len(_PARSE_CACHE) >= 4096:
        _PARSE_CACHE.clear()
    _PARSE_CACHE[text] = node
    if isinstance(node, AnswerParseError):
        raise node
    return node


_PARSE_CACHE: dict[str, Node | AnswerParseError] = {}


def answers_equivalent(
    pred: str,
    gold: str,
    rel_tol: float = 1e-4,
    symbolic: SymbolicCheck | None = None,
    inequality_for_interval: bool = True,
) -> Verdict:
    """Whether the answer string ``pred`` is equivalent to the ground-truth answer string ``gold``."""
    pred_norm, gold_norm = normalize_answer(pred), normalize_answer(gold)
    if not pred_norm:
        return Verdict(False, "no_answer", "empty")
    pred_norm = _decimal_comma(pred_norm, gold_norm)
    if pred_norm == gold_norm:
        return Verdict(True, "correct", "string")
    word_verdict = _compare_words(pred_norm, gold_norm)
    if word_verdict is not None:
        return word_verdict
    try:
        gold_tree = parse_cached(gold_norm)
    except AnswerParseError:
        # A gold that is not mathematics ("east", "no solution"): only a word match counts ("x = east" is labelled).
        equal = normalize_text(_LABEL.sub("", pred_norm)) == normalize_text(gold_norm)
        return Verdict(equal, "correct" if equal else "wrong", "text")
    try:
        pred_tree = parse_cached(pred_norm)
    except AnswerParseError:
        return Verdict(False, "parse_error", "parse")
    state = State(rel_tol=rel_tol, symbolic=symbolic, equal=_equal, inequality_for_interval=inequality_for_interval)
    try:
        if canonical_order(pred_tree) == canonical_order(gold_tree):
            return Verdict(True, "correct", "structure")
        equal = _equal(pred_tree, gold_tree, state)
    except RecursionError:
        return Verdict(False, "parse_error", "too_deep")
    if equal:
        return Verdict(True, "correct", "+".join(dict.fromkeys(state.methods)) or "structure")
    if state.timed_out:
        return Verdict(False, "timeout", "symbolic")
    if state.undecided:
        return Verdict(False, "undecided", "symbolic")
    return Verdict(False, "wrong", "+".join(dict.fromkeys(state.methods)) or "structure")


_LABEL = re.compile(r"^\s*[a-zA-Z](?:_\{?\w+\}?)?\s*=(?!=)\s*")
_DECIMAL = re.compile(r"-?\d+\.\d+")
_COMMA_BETWEEN_DIGITS = re.compile(r"(-?\d+),(\d+)")


def _decimal_comma(pred: str, gold: str) -> str:
    """``2,74`` against a gold of ``2.74`` is a decimal comma (a thousands separator was already removed, so what
    is left between digits is not one); against any other gold the comma separates answers."""
    match = _COMMA_BETWEEN_DIGITS.fullmatch(pred)
    if match is None or not _DECIMAL.fullmatch(gold):
        return pred
    whole, fraction = match.groups()
    if len(fraction) == 3 and whole.lstrip("-") != "0":
        return pred  # "1,500" left ungrouped is ambiguous: leave it a list
    return f"{whole}.{fraction}"


def _compare_words(pred: str, gold: str) -> Verdict | None:
    """Multiple-choice letters and yes/no style answers, decided before any parsing."""
    gold_letter = choice_letter(gold)
    if gold_letter is not None and len(gold.strip("() ")) == 1:
        pred_letter = choice_letter(pred)
        if pred_letter is not None:
            return Verdict(pred_letter == gold_letter, "correct" if pred_letter == gold_letter else "wrong", "choice")
    gold_words = normalize_text(gold)
    if gold_words in _WORD_ANSWERS:
        equal = normalize_text(pred) == gold_words
        return Verdict(equal, "correct" if equal else "wrong", "text")
    return None


_WORD_ANSWERS = frozenset({"yes", "no", "true", "false", "none", "odd", "even", "neither", "both"})


# -- the dispatcher --------------------------------------------------------------------------------------------------
def _equal(pred: Node, gold: Node, state: State) -> bool:
    """Whether two answer trees are equal, by the kind of answer they are (each comparator recurses through here)."""
    if pred == gold:
        state.methods.append("structure")
        return True
    pred, gold = _unwrap(pred), _unwrap(gold)
    pred, gold = strip_assignments(pred, gold, state)
    if isinstance(pred, Seq) != isinstance(gold, Seq):
        pred, gold = _one_value(pred, state), _one_value(gold, state)
    if pred == gold:  # the same once labels are dropped ("x = t(0, 4]" and "t(0, 4]")
        state.methods.append("structure")
        return True
    if contains(gold, Matrix) or contains(pred, Matrix):
        pred, gold = matrix_value(pred) or pred, matrix_value(gold) or gold
    if contains(gold, PlusMinus) or contains(pred, PlusMinus):
        return equal_plus_minus(pred, gold, state)
    gold_intervals, pred_intervals = as_interval_set(gold), as_interval_set(pred)
    if gold_intervals is not None and pred_intervals is not None and (is_set_like(gold) or is_set_like(pred)):
        if not state.inequality_for_interval and is_inequality(pred) and not is_inequality(gold):
            return False
        return equal_interval_sets(pred_intervals, gold_intervals, state)
    if isinstance(gold, Relation) or isinstance(pred, Relation):
        if isinstance(gold, Relation) and isinstance(pred, Relation):
            return equal_relations(pred, gold, state)
        return False
    if isinstance(gold, Matrix) or isinstance(pred, Matrix):
        return equal_matrices(pred, gold, state)
    if isinstance(gold, Seq) or isinstance(pred, Seq):
        return equal_sequences(pred, gold, state)
    if isinstance(gold, Union) or isinstance(pred, Union):
        return False
    return equal_scalars(pred, gold, state)


def _one_value(node: Node, state: State) -> Node:
    """A list that states one value several ways (``\\boxed{15\\frac{39}{40}}`` or ``\\boxed{\\frac{639}{40}}``) is
    that value, when the other side is a single value."""
    if isinstance(node, Seq) and node.opener in ("{", "") and 1 < len(node.items) <= 4:
        values = distinct(node.items, state)
        if len(values) == 1:
            return values[0]
    return node


def _unwrap(node: Node) -> Node:
    """A one-element set is its element for comparison purposes ({5} vs 5)."""
    if isinstance(node, Seq) and node.opener in ("{", "") and len(node.items) == 1:
        return node.items[0]
    return node


__all__ = ["SymbolicTimeout", "Verdict", "answers_equivalent", "parse_cached"]
