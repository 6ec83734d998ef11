"""The answer tree: what a parsed answer is, independent of how it was written (LaTeX or plain text).

Nodes are frozen dataclasses, so structurally identical answers compare equal with ``==`` and hash alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


class Node:
    """Base class of every answer-tree node."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Num(Node):
    """A numeral. ``decimals`` is the number of digits written after the decimal point (None for integers and
    exact values): a written ``3.14`` is an approximation to two places, which the numeric comparison honours."""

    value: Fraction
    decimals: int | None = None


@dataclass(frozen=True, slots=True)
class Sym(Node):
    """A free variable, e.g. ``x`` or ``a_1``."""

    name: str


@dataclass(frozen=True, slots=True)
class Const(Node):
    """``pi``, ``e`` (Euler's number), ``i`` (imaginary unit) or ``inf``."""

    name: str


@dataclass(frozen=True, slots=True)
class Add(Node):
    terms: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Mul(Node):
    factors: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Pow(Node):
    base: Node
    exponent: Node


@dataclass(frozen=True, slots=True)
class Neg(Node):
    operand: Node


@dataclass(frozen=True, slots=True)
class Func(Node):
    """A named function applied to arguments: sqrt, root (index, radicand), sin, log (base, x), abs, factorial,
    binom, floor, ceil, exp, ..."""

    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class PlusMinus(Node):
    """``a ± b`` (``a`` is ``Num(0)`` for a leading ±); it stands for the two values a+b and a−b."""

    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Percent(Node):
    """``x%``; compared both as x/100 and as x, since datasets write percentages both ways."""

    operand: Node


@dataclass(frozen=True, slots=True)
class Degrees(Node):
    """``x°``; compared both as x and as x·π/180."""

    operand: Node


@dataclass(frozen=True, slots=True)
class Relation(Node):
    """A chain ``a op b op c``: ops are ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``."""

    ops: tuple[str, ...]
    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Seq(Node):
    """A bracketed or bare sequence. ``opener``/``closer``: ``(`` ``)`` tuple or open interval, ``[`` ``]``,
    mixed brackets (half-open interval), ``{`` ``}`` set, ``<`` ``>`` vector; both empty for a bare comma list,
    whose order does not matter ("the solutions are 2, 3")."""

    opener: str
    items: tuple[Node, ...]
    closer: str


@dataclass(frozen=True, slots=True)
class Union(Node):
    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Matrix(Node):
    rows: tuple[tuple[Node, ...], ...]


@dataclass(frozen=True, slots=True)
class Text(Node):
    """Words that are not mathematics: ``yes``, ``east``, a multiple-choice letter."""

    text: str


ZERO = Num(Fraction(0))
ONE = Num(Fraction(1))
MINUS_ONE = Num(Fraction(-1))


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-trees of ``node``."""
    if isinstance(node, Add):
        return node.terms
    if isinstance(node, Mul):
        return node.factors
    if isinstance(node, Pow):
        return (node.base, node.exponent)
    if isinstance(node, (Neg, Percent, Degrees)):
        return (node.operand,)
    if isinstance(node, Func):
        return node.args
    if isinstance(node, PlusMinus):
        return (node.left, node.right)
    if isinstance(node, (Relation, Union)):
        return node.parts
    if isinstance(node, Seq):
        return node.items
    if isinstance(node, Matrix):
        return tuple(cell for row in node.rows for cell in row)
    return ()


def free_symbols(node: Node) -> frozenset[str]:
    if isinstance(node, Sym):
        return frozenset((node.name,))
    found: set[str] = set()
    for child in children(node):
        found |= free_symbols(child)
    return frozenset(found)


def contains(node: Node, kind: type | tuple[type, ...]) -> bool:
    if isinstance(node, kind):
        return True
    return any(contains(child, kind) for child in children(node))


def any_node(node: Node, predicate) -> bool:
    """Whether ``predicate`` holds for ``node`` or any node below it."""
    if predicate(node):
        return True
    return any(any_node(child, predicate) for child in children(node))


def has_decimal(node: Node) -> bool:
    """Whether a written decimal fraction (an approximation) occurs anywhere in the tree."""
    if isinstance(node, Num):
        return bool(node.decimals)
    return any(has_decimal(child) for child in children(node))


def size(node: Node) -> int:
    return 1 + sum(size(child) for child in children(node))


def canonical_order(node: Node) -> Node:
    """``node`` with the terms of every sum and the factors of every product in a fixed order, so that trees that
    differ only by commutativity compare equal with ``==`` (for operators no value can be computed for, such as
    ``\\sum``). Products holding a matrix keep their order: matrix products do not commute."""
    if isinstance(node, Add):
        return Add(tuple(sorted((canonical_order(term) for term in node.terms), key=repr)))
    if isinstance(node, Mul):
        factors = tuple(canonical_order(factor) for factor in node.factors)
        return Mul(factors if contains(node, Matrix) else tuple(sorted(factors, key=repr)))
    if isinstance(node, Pow):
        return Pow(canonical_order(node.base), canonical_order(node.exponent))
    if isinstance(node, (Neg, Percent, Degrees)):
        return type(node)(canonical_order(node.operand))
    if isinstance(node, Func):
        return Func(node.name, tuple(canonical_order(arg) for arg in node.args))
    if isinstance(node, PlusMinus):
        return PlusMinus(canonical_order(node.left), canonical_order(node.right))
    if isinstance(node, Relation):
        return Relation(node.ops, tuple(canonical_order(part) for part in node.parts))
    if isinstance(node, Seq):
        return Seq(node.opener, tuple(canonical_order(item) for item in node.items), node.closer)
    if isinstance(node, Union):
        return Union(tuple(canonical_order(part) for part in node.parts))
    if isinstance(node, Matrix):
        return Matrix(tuple(tuple(canonical_order(cell) for cell in row) for row in node.rows))
    return node
