"""Built-in featurisers: numbers that describe a state, for the feature potential V = x·θ + ε.

Two families, one per built-in agent (`detailed_balance.agents`):

**words** (`word_features`) — a state is a word (case ignored; letters A..Z are worth 1..26 as
in the word-sum-100 task):

========================  =====================================================================
``length``                number of letters
``vowel_share``           share of the letters that are A, E, I, O or U
``letter_mean``           mean letter value (1..26)
``letter_sd``             standard deviation of the letter values (population, ddof 0)
``letter_min``            smallest letter value
``letter_max``            largest letter value
``letter_sum``            sum of the letter values (100 for every valid word of the paper's task)
``distinct_share``        distinct letters / length (1 = no letter repeats)
``in_dictionary``         1 if the word is in the bundled English word list
                          (`features.words.word_list`), else 0
``invalid``               1 for the pooled `INVALID` state (and anything that is not alphabetic)
========================  =====================================================================

Non-letters are ignored in the letter statistics; a state without letters gets 0 for them.

**expressions** (`expression_features`) — a state is a formula in ``x`` and parameters
``p1..p9`` (the symbolic-regression agent). It is parsed with the safe whitelist parser
(`detailed_balance.features.expressions.parse_expression`: Python's `ast`, never `eval`):

========================  =====================================================================
``length``                characters, spaces removed
``depth``                 depth of the expression tree (a bare ``x`` has depth 1); for text
                          that does not parse: the deepest bracket nesting + 1
``n_add`` ``n_sub``       binary ``+`` / ``-``
``n_mul`` ``n_div``       ``*`` / ``/``
``n_pow``                 ``**`` (``^`` counts too)
``n_neg``                 unary minus
``n_exp`` ``n_log``       calls of exp / log
``n_sqrt``                calls of sqrt
``n_trig``                calls of sin and cos
``n_other_func``          calls of tanh and abs
``n_constants``           numeric literals
``n_parameters``          distinct parameters p1..p9
``n_x``                   occurrences of ``x``
``brackets_valid``        1 if every ``(`` is closed in order, else 0
``parses``                1 if the agent's parser accepts the text, else 0
========================  =====================================================================

For text the parser rejects, the counts come from its tokens (a regular expression over the
text: ``-`` after an operator or ``(`` counts as unary), so a nearly valid formula still gets
sensible numbers. The pooled `INVALID` state gets zeros and ``parses = 0``.

Both return a `pandas.DataFrame` indexed by state name with float columns. They cost a few
microseconds per state: the word statistics are vectorised over a byte matrix; expression
parsing is per string (there is no vectorised parser), ≈ 25 µs each.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from .expressions import ExpressionError, parse_expression
from .words import word_list

WORD_FEATURES = (
    "length",
    "vowel_share",
    "letter_mean",
    "letter_sd",
    "letter_min",
    "letter_max",
    "letter_sum",
    "distinct_share",
    "in_dictionary",
    "invalid",
)
EXPRESSION_FEATURES = (
    "length",
    "depth",
    "n_add",
    "n_sub",
    "n_mul",
    "n_div",
    "n_pow",
    "n_neg",
    "n_exp",
    "n_log",
    "n_sqrt",
    "n_trig",
    "n_other_func",
    "n_constants",
    "n_parameters",
    "n_x",
    "brackets_valid",
    "parses",
)
_VOWELS = np.array([c in "AEIOU" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"])
_BINOPS = {
    ast.Add: "n_add",
    ast.Sub: "n_sub",
    ast.Mult: "n_mul",
    ast.Div: "n_div",
    ast.Pow: "n_pow",
}
_FUNCS = {
    "exp": "n_exp",
    "log": "n_log",
    "sqrt": "n_sqrt",
    "sin": "n_trig",
    "cos": "n_trig",
    "tanh": "n_other_func",
    "abs": "n_other_func",
}
_TOKEN = re.compile(
    r"(?P<pow>\*\*|\^)|(?P<num>\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+)|(?P<name>[A-Za-z_]\w*)"
    r"|(?P<op>[-+*/])|(?P<open>\()|(?P<close>\))"
)


def _names(states: Iterable) -> np.ndarray:
    return np.asarray([str(s) for s in states], dtype=object)


# -- words -------------------------------------------------------------------------------------
def word_features(states: Iterable, *, invalid_state: str = "INVALID") -> pd.DataFrame:
    """The word features of each state (see the module docstring), indexed by state."""
    names = _names(states)
    upper = np.char.upper(names.astype(str)) if len(names) else np.array([], dtype=str)
    width = max(int(np.char.str_len(upper).max()) if len(upper) else 1, 1)
    # One byte row per word; non-ASCII text is replaced so the byte view stays one per char.
    encoded = np.array([w.encode("ascii", "replace") for w in upper], dtype=f"S{width}")
    codes = np.frombuffer(encoded.tobytes(), dtype=np.uint8).reshape(len(upper), width)
    is_letter = (codes >= 65) & (codes <= 90)
    value = np.where(is_letter, codes.astype(np.int64) - 64, 0)
    n_letters = is_letter.sum(axis=1)
    safe_n = np.maximum(n_letters, 1)
    total = value.sum(axis=1)
    mean = total / safe_n
    sq = np.where(is_letter, (value - mean[:, None]) ** 2, 0.0).sum(axis=1)
    vowels = (is_letter & _VOWELS[np.clip(value - 1, 0, 25)]).sum(axis=1)
    present = np.zeros((len(upper), 27), dtype=bool)
    present[np.arange(len(upper))[:, None], value] = True
    distinct = present[:, 1:].sum(axis=1)
    alphabetic = (n_letters == np.char.str_len(upper)) & (n_letters > 0)
    invalid = (~alphabetic) | (upper == invalid_state.upper())
    dictionary = _dictionary()
    in_dict = np.array([w in dictionary for w in upper], dtype=float) * (~invalid)
    table = pd.DataFrame(
        {
            "length": n_letters.astype(float),
            "vowel_share": vowels / safe_n,
            "letter_mean": mean,
            "letter_sd": np.sqrt(sq / safe_n),
            "letter_min": np.where(is_letter, value, 99).min(axis=1, initial=99).astype(float),
            "letter_max": value.max(axis=1, initial=0).astype(float),
            "letter_sum": total.astype(float),
            "distinct_share": distinct / safe_n,
            "in_dictionary": in_dict,
            "invalid": invalid.astype(float),
        },
        index=pd.Index(names, name="state"),
    )
    table.loc[n_letters == 0, "letter_min"] = 0.0
    return table


def _dictionary() -> frozenset[str]:
    return word_list()  # the bundled list (also the word agent's)


# -- expressions ---------------------------------------------------------------------------------
def expression_features(states: Iterable, *, invalid_state: str = "INVALID") -> pd.DataFrame:
    """The expression features of each state (see the module docstring), indexed by state."""
    names = _names(states)
    rows = np.zeros((len(names), len(EXPRESSION_FEATURES)))
    column = {name: k for k, name in enumerate(EXPRESSION_FEATURES)}
    for r, text in enumerate(names):  # one parse per string: there is no vectorised parser
        if text == invalid_state:
            continue
        counts = _expression_counts(text)
        for key, value in counts.items():
            rows[r, column[key]] = value
    return pd.DataFrame(
        rows, columns=list(EXPRESSION_FEATURES), index=pd.Index(names, name="state")
    )


def _expression_counts(text: str) -> dict[str, float]:
    counts: dict[str, float] = {
        "length": float(len(re.sub(r"\s+", "", text))),
        "brackets_valid": float(_brackets_valid(text)),
    }
    try:
        tree = parse_expression(text)
    except ExpressionError:
        counts.update(_token_counts(text))
        counts["parses"] = 0.0
        return counts
    counts["parses"] = 1.0
    counts["depth"] = float(_depth(tree.body))
    params: set[str] = set()
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.BinOp):
            key = _BINOPS.get(type(node.op))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            key = "n_neg"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            key = _FUNCS.get(node.func.id)
        elif isinstance(node, ast.Constant):
            key = "n_constants"
        elif isinstance(node, ast.Name):
            if node.id == "x":
                key = "n_x"
            elif node.id not in _FUNCS:
                params.add(node.id)
        if key is not None:
            counts[key] = counts.get(key, 0.0) + 1.0
    counts["n_parameters"] = float(len(params))
    return counts


def _depth(node: ast.AST) -> int:
    """Height of the expression tree: leaves are 1; a call counts as one level."""
    children = [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr)]
    if isinstance(node, ast.Call):
        children = list(node.args)
    return 1 + max((_depth(c) for c in children), default=0)


def _brackets_valid(text: str) -> bool:
    opens = np.cumsum([1 if c == "(" else -1 if c == ")" else 0 for c in text])
    return bool(len(opens) == 0 or (opens.min() >= 0 and opens[-1] == 0))


def _token_counts(text: str) -> dict[str, float]:
    """Counts from tokens, for text the parser rejects."""
    counts: dict[str, float] = {}
    params: set[str] = set()
    previous = None
    level = deepest = 0
    for match in _TOKEN.finditer(text):
        kind, token = match.lastgroup, match.group()
        key = None
        if kind == "pow":
            key = "n_pow"
        elif kind == "num":
            key = "n_constants"
        elif kind == "name":
            if token in _FUNCS:
                key = _FUNCS[token]
            elif token == "x":
                key = "n_x"
            elif re.fullmatch(r"p[1-9]", token):
                params.add(token)
        elif kind == "op":
            unary = token == "-" and previous in (None, "op", "pow", "open")
            key = (
                "n_neg"
                if unary
                else {"+": "n_add", "-": "n_sub", "*": "n_mul", "/": "n_div"}[token]
            )
            if token == "+" and previous in (None, "op", "pow", "open"):
                key = None  # unary plus
        elif kind == "open":
            level += 1
            deepest = max(deepest, level)
        elif kind == "close":
            level -= 1
        if key is not None:
            counts[key] = counts.get(key, 0.0) + 1.0
        previous = kind
    counts["n_parameters"] = float(len(params))
    counts["depth"] = float(deepest + 1)
    return counts


BUILTIN = {"words": word_features, "expressions": expression_features}
