"""Matrices and vectors: cell by cell, after carrying out any matrix arithmetic the answer leaves unevaluated.

``A + B``, ``2A``, ``-A``, ``AB`` and ``A^n`` of written matrices (and the identity ``I`` next to one) are computed
as trees of their cells, so ``\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix} + I`` is the matrix it denotes; the cells are
then compared as scalars. A tuple is a column vector, and a row vector matches a column vector.
"""

from __future__ import annotations

from reward_fns.comparison import State
from reward_fns.expr import ONE, ZERO, Add, Matrix, Mul, Neg, Node, Num, Pow, Seq, Sym, children, contains

MAX_MATRIX_POWER = 8
MAX_CELLS = 256

Rows = tuple[tuple[Node, ...], ...]


def _identity(size: int) -> Matrix:
    return Matrix(tuple(tuple(ONE if i == j else ZERO for j in range(size)) for i in range(size)))


def _shape(rows: Rows) -> tuple[int, int]:
    return len(rows), len(rows[0]) if rows else 0


def _is_identity_symbol(node: Node) -> bool:
    return isinstance(node, Sym) and node.name == "I"


def matrix_value(node: Node) -> Matrix | None:
    """The matrix an expression of written matrices denotes; None when it is not one (or its shapes disagree)."""
    if not contains(node, Matrix):
        return None
    try:
        value = _value(node, size=_first_size(node))
    except _NotAMatrix:
        return None
    return value if isinstance(value, Matrix) else None


class _NotAMatrix(Exception):
    pass


def _first_size(node: Node) -> int:
    """The row count of the first written matrix (the size an identity symbol next to it takes)."""
    if isinstance(node, Matrix):
        return len(node.rows)
    for child in children(node):
        if contains(child, Matrix):
            return _first_size(child)
    raise _NotAMatrix


def _value(node: Node, size: int) -> Node:
    """A Matrix, or a scalar tree (no matrix inside); the identity symbol becomes I of the surrounding size."""
    if isinstance(node, Matrix):
        return node
    if _is_identity_symbol(node):
        return _identity(size)
    if not contains(node, Matrix):
        return node
    if isinstance(node, Neg):
        inner = _value(node.operand, size)
        return _cellwise(inner, Neg) if isinstance(inner, Matrix) else Neg(inner)
    if isinstance(node, Add):
        return _sum([_value(term, size) for term in node.terms])
    if isinstance(node, Mul):
        return _product([_value(factor, size) for factor in node.factors])
    if isinstance(node, Pow) and isinstance(node.exponent, Num):
        exponent = node.exponent.value
        base = _value(node.base, size)
        if not isinstance(base, Matrix) or exponent.denominator != 1 or not 1 <= exponent <= MAX_MATRIX_POWER:
            raise _NotAMatrix
        return _product([base] * int(exponent))
    raise _NotAMatrix


def _cellwise(matrix: Matrix, operation) -> Matrix:
    return Matrix(tuple(tuple(operation(cell) for cell in row) for row in matrix.rows))


def _sum(terms: list[Node]) -> Node:
    matrices = [term for term in terms if isinstance(term, Matrix)]
    if len(matrices) != len(terms):
        raise _NotAMatrix  # a matrix plus a scalar has no meaning
    shape = _shape(matrices[0].rows)
    if any(_shape(m.rows) != shape for m in matrices):
        raise _NotAMatrix
    rows, columns = shape
    return Matrix(tuple(tuple(Add(tuple(m.rows[i][j] for m in matrices)) for j in range(columns)) for i in range(rows)))


def _product(factors: list[Node]) -> Node:
    scalars = [factor for factor in factors if not isinstance(factor, Matrix)]
    matrices = [factor for factor in factors if isinstance(factor, Matrix)]
    result = matrices[0]
    for right in matrices[1:]:
        result = _matrix_product(result, right)
    if scalars:
        scale = scalars[0] if len(scalars) == 1 else Mul(tuple(scalars))
        result = _cellwise(result, lambda cell: Mul((scale, cell)))
    return result


def _matrix_product(left: Matrix, right: Matrix) -> Matrix:
    (rows, inner), (inner_right, columns) = _shape(left.rows), _shape(right.rows)
    if inner != inner_right or rows * columns > MAX_CELLS:
        raise _NotAMatrix
    return Matrix(
        tuple(
            tuple(Add(tuple(Mul((left.rows[i][k], right.rows[k][j])) for k in range(inner))) for j in range(columns))
            for i in range(rows)
        )
    )


def equal_matrices(pred: Node, gold: Node, state: State) -> bool:
    def cells(node: Node) -> Rows | None:
        if isinstance(node, Matrix):
            return node.rows
        if isinstance(node, Seq) and node.opener in ("(", "[", "<"):
            return tuple((item,) for item in node.items)  # a tuple is a column vector
        return None

    pred_rows, gold_rows = cells(pred), cells(gold)
    if pred_rows is None or gold_rows is None:
        return False
    if _shape(pred_rows) != _shape(gold_rows) and 1 in _shape(pred_rows) and 1 in _shape(gold_rows):
        # a row vector written against a column vector (or a tuple)
        pred_rows = tuple((cell,) for row in pred_rows for cell in row)
        gold_rows = tuple((cell,) for row in gold_rows for cell in row)
    if len(pred_rows) != len(gold_rows) or any(len(p) != len(g) for p, g in zip(pred_rows, gold_rows)):
        return False
    state.methods.append("matrix")
    return all(state.equal(p, g, state) for p_row, g_row in zip(pred_rows, gold_rows) for p, g in zip(p_row, g_row))


__all__ = ["equal_matrices", "matrix_value"]
