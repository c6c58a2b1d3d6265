"""The expression language of the symbolic-regression states: whitelist parser, canonical form,
and a numpy evaluator.

Expressions are formulas in ``x`` and parameters ``p1..p9``. An expression is untrusted text:
it is parsed with Python's `ast` and accepted only if every node is on a whitelist (numbers,
``x``, ``p1``..``p9``, ``+ - * / **``, unary ``±``, and calls of ``exp log sqrt sin cos tanh
abs`` with one positional argument), with bounded length, node count, depth, constant size and
constant exponents. The accepted tree is evaluated by our own numpy tree walker. Nothing is ever
passed to `eval`, `exec`, `compile` or sympy.

The canonical form (`canonicalise`): ``^`` read as ``**``, whitespace and parentheses
normalised by `ast.unparse`, parameters renumbered p1..pk by first appearance (left to right).

This is data knowledge (what a state is), shared by the symbolic-regression agent
(`detailed_balance.agents.symreg`) and the expression featuriser (`features.builtin`).
"""

from __future__ import annotations

import ast
import math
import re
import warnings
from collections.abc import Callable

import numpy as np

MAX_CHARS = 300
MAX_NODES = 80
MAX_DEPTH = 16
MAX_CONSTANT = 1e6
MAX_EXPONENT = 8
FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "abs": np.abs,
}
_BINARY = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
}
_UNARY = {ast.USub: np.negative, ast.UAdd: np.positive}
_PARAM = re.compile(r"p([1-9])")


class ExpressionError(ValueError):
    """An answer that is not an acceptable expression; the message is the recorded reason."""


# -- parsing -------------------------------------------------------------------------------------
def parse_expression(text: str) -> ast.Expression:
    """Parse and check an expression against the whitelist; raise ExpressionError with why."""
    if len(text) > MAX_CHARS:
        raise ExpressionError(f"expression longer than {MAX_CHARS} characters")
    if not text.strip():
        raise ExpressionError("empty expression")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # e.g. "1for": not our business
            tree = ast.parse(text.strip().replace("^", "**"), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ExpressionError("not a valid expression") from None
    nodes = 0

    def check(node: ast.AST, depth: int) -> None:
        nonlocal nodes
        nodes += 1
        if nodes > MAX_NODES:
            raise ExpressionError(f"expression has more than {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise ExpressionError(f"expression nested deeper than {MAX_DEPTH}")
        if isinstance(node, ast.Expression):
            check(node.body, depth + 1)
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            if isinstance(node.op, ast.Pow):
                _check_exponent(node.right)
            check(node.left, depth + 1)
            check(node.right, depth + 1)
        elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            check(node.operand, depth + 1)
        elif isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
                raise ExpressionError("call of a function outside the whitelist")
            if len(node.args) != 1 or node.keywords:
                raise ExpressionError("functions take exactly one positional argument")
            if isinstance(node.args[0], ast.Starred):
                raise ExpressionError("starred arguments are not allowed")
            check(node.args[0], depth + 1)
        elif isinstance(node, ast.Name):
            if not (node.id == "x" or _PARAM.fullmatch(node.id)):
                raise ExpressionError(f"unknown name {node.id[:20]!r} (use x and p1..p9)")
        elif isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ExpressionError("only real numbers are allowed as constants")
            if not math.isfinite(float(value)) or abs(value) > MAX_CONSTANT:
                raise ExpressionError(f"constant larger than {MAX_CONSTANT:g}")
        else:
            raise ExpressionError(f"{type(node).__name__} is not allowed in an expression")

    check(tree, 0)
    return tree


def _check_exponent(node: ast.AST) -> None:
    """Constant exponents (also negated ones) must stay within ±MAX_EXPONENT."""
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        node = node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if not isinstance(node.value, bool) and abs(node.value) > MAX_EXPONENT:
            raise ExpressionError(f"exponent larger than {MAX_EXPONENT}")


def canonicalise(text: str) -> str:
    """The canonical state for an expression (raises ExpressionError when not acceptable)."""
    tree = parse_expression(text)
    order: dict[str, str] = {}
    # ast.walk is breadth-first; renumber in source order (line, column) instead.
    names = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and n.id != "x" and n.id not in FUNCTIONS
    ]
    for node in sorted(names, key=lambda n: (n.lineno, n.col_offset)):
        order.setdefault(node.id, f"p{len(order) + 1}")
    for node in names:
        node.id = order[node.id]
    return ast.unparse(tree)


# -- evaluation --------------------------------------------------------------------------------
def evaluate(tree: ast.Expression, x: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Evaluate a whitelisted tree with numpy (our own walker; no eval)."""

    def walk(node: ast.AST) -> np.ndarray | float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](walk(node.operand))
        if isinstance(node, ast.Call):
            return FUNCTIONS[node.func.id](walk(node.args[0]))  # type: ignore[union-attr]
        if isinstance(node, ast.Name):
            return x if node.id == "x" else params[int(node.id[1:]) - 1]
        if isinstance(node, ast.Constant):
            return float(node.value)
        raise ExpressionError(f"{type(node).__name__} is not allowed")  # pragma: no cover

    with np.errstate(all="ignore"):
        return np.broadcast_to(np.asarray(walk(tree), dtype=float), x.shape)


def n_parameters(tree: ast.Expression) -> int:
    ids = {
        int(n.id[1:]) for n in ast.walk(tree) if isinstance(n, ast.Name) and _PARAM.fullmatch(n.id)
    }
    return max(ids, default=0)
