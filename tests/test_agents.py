"""Agents: word100 and symreg parsing against hand-checked cases, the expression parser's
whitelist (hypothesis fuzz), canonical forms, fitting against the known generating formula,
and user-defined agents."""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detailed_balance.agents import INVALID, Agent, Parsed, letter_sum, load_agent
from detailed_balance.agents import symreg as sr
from detailed_balance.agents import word100 as w
from detailed_balance.features import expressions as ex
from detailed_balance.features import words as wl

ROOT = Path(__file__).resolve().parents[1]


# -- word100 -----------------------------------------------------------------------------------
def test_letter_values_match_hand_sums():
    # B2+U21+Z26+Z26+Y25 = 100; A1+T20+T20+I9+T20+U21+D4+E5 = 100; HELLO = 8+5+12+12+15 = 52.
    assert letter_sum("BUZZY") == 100
    assert letter_sum("attitude") == 100
    assert letter_sum("HELLO") == 52


def test_word_list_is_the_bundled_scowl_list():
    words = wl.word_list()
    assert len(words) == 63_875 + 1  # SCOWL-50 lower-case alphabetic words + BUZZY
    assert {"ATTITUDE", "TURKEY", "PERSONAL", "PROBLEMS", "DISCIPLINE", "BUZZY"} <= words
    hundred = w.words_summing_to_100()
    assert len(hundred) == 758
    assert all(letter_sum(x) == 100 for x in hundred[::37])
    # Brute force on a slice agrees with the vectorised sum.
    sample = sorted(words)[:3000]
    assert [x for x in sample if letter_sum(x) == 100] == [x for x in hundred if x <= sample[-1]]


@pytest.mark.parametrize(
    ("answer", "target", "reason"),
    [
        ("ATTITUDE", "ATTITUDE", None),
        ("  attitude.\n", "ATTITUDE", None),
        ("**Turkey**", "TURKEY", None),
        ("", INVALID, "empty answer"),
        (None, INVALID, "empty answer"),
        ("the word is ATTITUDE", INVALID, "not a single word"),
        ("ATT1TUDE", INVALID, "not alphabetic"),
        ("HELLO", INVALID, "letters sum to 52, not 100"),
        ("ZZZZY", INVALID, "letters sum to 129, not 100"),
        ("BUZZY", INVALID, "same as the prompt word"),
        ("x" * 80, INVALID, "answer longer than 64 characters"),
    ],
)
def test_word100_parse(answer, target, reason):
    parsed = w.parse_answer(answer, "BUZZY")
    assert parsed == Parsed(target, reason is None, reason)


def test_word100_dictionary_option():
    nonsense = "ZZZV"  # 26 * 3 + 22 = 100, not an English word
    assert letter_sum(nonsense) == 100
    assert w.parse_answer(nonsense, "BUZZY") == Parsed(INVALID, False, "not in the word list")
    agent = w.word100_agent(dictionary=False)
    assert agent.parse(nonsense, "BUZZY") == Parsed("ZZZV", True, None)
    assert agent.seed_states == ["BUZZY"]
    assert "BUZZY" in agent.build_messages("BUZZY")[0]["content"]
    with pytest.raises(ValueError, match="does not sum to 100"):
        w.word100_agent(seed="HELLO")


# -- symreg: parsing and safety ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("p1*x+p2", "p1 * x + p2"),
        ("  p2 *x   + p1 ", "p1 * x + p2"),
        ("p3*exp(-p2*x)*cos(p1*x)", "p1 * exp(-p2 * x) * cos(p3 * x)"),
        ("x^2", "x ** 2"),
        ("((p7))", "p1"),
        ("p2 + p2*x + p9", "p1 + p1 * x + p2"),
    ],
)
def test_canonical_forms(text, canonical):
    assert ex.canonicalise(text) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "x.__class__",
        "__import__('os').system('ls')",
        "().__class__.__bases__[0]",
        "open('/etc/passwd')",
        "eval('1')",
        "lambda: 1",
        "[x for x in range(3)]",
        "{1: 2}",
        "x if x else 1",
        "p1 * x ** 99",
        "p1 * x ** -12",
        "1e400",
        "2 ** 10000000",
        "(1 + 2j) * x",
        "True + x",
        "exp(x, 2)",
        "exp(x=1)",
        "sin(*x)",
        "a * x",
        "p10 * x",
        "x[0]",
        "x < 1",
        "x; import os",
        "'abc'",
        "(" * 300 + "x" + ")" * 300,
        "x+" * 200 + "x",
    ],
)
def test_parser_rejects_unsafe_or_oversized(text):
    with pytest.raises(ex.ExpressionError):
        ex.parse_expression(text)


_ALLOWED_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.Call, ast.Name, ast.Constant, ast.Load,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd,
)  # fmt: skip
_FORBIDDEN = ["__", "lambda", "for ", "import", "[", "{", "open(", "eval(", "exec("]
_TOKENS = [
    "x", "p1", "p2", "p9", "1", "2.5", "1e9", "+", "-", "*", "/", "**", "^", "(", ")", "exp(",
    "sin(", "cos(", "log(", "abs(", "__class__", ".", "lambda ", ":", "[", "]", "for ", " in ",
    "import ", "os", "eval(", "open(", ",", "9**9**9", "__import__(", "{", "}", "'", "getattr(",
]  # fmt: skip


def _check_accepted(text: str) -> None:
    """Whatever the parser accepts is inside the whitelist, bounded, and evaluates safely."""
    try:
        tree = ex.parse_expression(text)
    except ex.ExpressionError:
        return
    assert len(text) <= ex.MAX_CHARS
    nodes = list(ast.walk(tree))
    assert len(nodes) <= 2 * ex.MAX_NODES  # ops/contexts are counted loosely; calls strictly
    for node in nodes:
        assert isinstance(node, _ALLOWED_NODES), type(node)
        if isinstance(node, ast.Name):
            assert node.id == "x" or node.id in ex.FUNCTIONS or ex._PARAM.fullmatch(node.id)
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name) and node.func.id in ex.FUNCTIONS
        if isinstance(node, ast.Constant):
            assert isinstance(node.value, int | float) and abs(node.value) <= ex.MAX_CONSTANT
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            right = node.right.operand if isinstance(node.right, ast.UnaryOp) else node.right
            if isinstance(right, ast.Constant):
                assert abs(right.value) <= ex.MAX_EXPONENT
    value = ex.evaluate(tree, np.linspace(0, 1, 5), np.ones(9))
    assert value.shape == (5,)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_TOKENS), max_size=40).map("".join))
def test_fuzz_token_soup_never_escapes_the_whitelist(text):
    _check_accepted(text)
    canonical = None
    try:
        canonical = ex.canonicalise(text)
    except ex.ExpressionError:
        pass
    if canonical is not None:
        assert not any(bad in canonical for bad in _FORBIDDEN)
        assert ex.canonicalise(canonical) == canonical  # canonical forms are fixed points


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_fuzz_arbitrary_text(text):
    _check_accepted(text)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=ex.MAX_EXPONENT + 1, max_value=10**12), st.sampled_from(["**", "^"]))
def test_fuzz_huge_exponents_rejected(power, op):
    for text in (f"x{op}{power}", f"p1*(x+1){op}{power}", f"x{op}-{power}"):
        with pytest.raises(ex.ExpressionError):
            ex.parse_expression(text)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=ex.MAX_CHARS + 1, max_value=5000))
def test_fuzz_oversized_rejected_before_parsing(n):
    with pytest.raises(ex.ExpressionError, match="longer than"):
        ex.parse_expression("x" + "+x" * (n // 2))


# -- symreg: fitting and the agent ---------------------------------------------------------------
def test_bundled_data_is_the_documented_oscillator():
    x, y = sr.load_data()
    expected = sr.damped_oscillator()
    np.testing.assert_allclose(x, expected["x"].to_numpy())
    np.testing.assert_allclose(y, expected["y"].to_numpy(), atol=1e-9)
    # The residual of the true formula is the noise: MSE ≈ 0.02² → log10 ≈ −3.4.
    residual = y - np.exp(-0.3 * x) * np.cos(2.0 * x)
    assert abs(np.std(residual) - 0.02) < 0.004


def test_fit_recovers_the_generating_parameters():
    x, y = sr.load_data()
    fit = sr.fit_expression("p1 * exp(-p2 * x) * cos(p3 * x)", x, y)
    np.testing.assert_allclose(fit.params, [1.0, 0.3, 2.0], atol=0.03)
    assert fit.score == pytest.approx(math.log10(0.02**2), abs=0.1)
    line = sr.fit_expression("p1 * x + p2", x, y)
    # Closed form: ordinary least squares.
    slope, intercept = np.polyfit(x, y, 1)
    np.testing.assert_allclose(line.params, [slope, intercept], atol=1e-6)
    assert line.score == pytest.approx(math.log10(np.mean((slope * x + intercept - y) ** 2)))


def test_symreg_agent_parse_and_prompt(tmp_path):
    agent = sr.symreg_agent()
    assert agent.seed_states == ["p1 * x + p2"]
    content = agent.build_messages("p1 * x + p2")[0]["content"]
    assert "Current formula: p1 * x + p2" in content and "-1.04" in content
    assert agent.parse("```\ny = p2*exp(-p1*x)*cos(p3*x)\n```", "p1 * x + p2") == Parsed(
        "p1 * exp(-p2 * x) * cos(p3 * x)", True, None
    )
    assert agent.parse("p2 * x + p1", "p1 * x + p2").reason == "same as the prompt expression"
    assert agent.parse("p1 / x", "p1 * x + p2").reason == "expression is not finite on the data"
    assert agent.parse("x.__class__", "p1").reason == "Attribute is not allowed in an expression"
    # A user data set: y = 3x + 1 exactly → the line fits to machine precision.
    csv = tmp_path / "line.csv"
    csv.write_text("x,y\n0,1\n1,4\n2,7\n3,10\n")
    line = sr.symreg_agent(data=str(csv))
    assert line.parse("p1*x + p2", "p1").valid
    with pytest.raises(ValueError, match="columns x,y"):
        bad = tmp_path / "bad.csv"
        bad.write_text("a,b\n1,2\n")
        sr.symreg_agent(data=str(bad))


# -- agent spec and custom agents ----------------------------------------------------------------
def test_load_agent_by_name_and_module():
    assert load_agent("word100").name == "word100"
    with pytest.raises(ValueError, match="unknown agent"):
        load_agent("nope")
    with pytest.raises(ValueError, match="cannot import"):
        load_agent("no_such_module_xyz:agent")
    agent = Agent("t", ["A"], lambda s: [], lambda a, s: Parsed(a, True))
    assert load_agent(agent) is agent
    with pytest.raises(ValueError, match="policy"):
        Agent("t", ["A"], lambda s: [], lambda a, s: Parsed(a, True), policy="nope")


def test_custom_agent_example_runs_offline(tmp_path):
    """examples/custom_agent.py collects from the simulated LLM and recovers its landscape."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "custom_agent.py"), "--calls", "600",
         "--store", str(tmp_path / "cities.db")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    spearman = float(out.stdout.strip().splitlines()[-1].split("=")[-1])
    assert spearman >= 0.9


def test_redact_options_redacts_credentials_not_limits_or_prices():
    from detailed_balance.agents.client import REDACTED, redact_options

    options = {
        "api_key": "sk-abc", "access_token": "t0k3n", "extra_headers": {"X-Auth-Token": "x"},
        "Authorization": "Bearer abc", "client_secret": "s", "max_tokens": 64,
        "input_cost_per_token": 1e-6, "output_cost_per_token": None, "temperature": 0.7,
        "note": "uses sk-abcdefghijklmnopqrstuv",
    }  # fmt: skip
    out = redact_options(options)
    for key in ("api_key", "access_token", "Authorization", "client_secret"):
        assert out[key] == REDACTED
    assert out["extra_headers"] == {"X-Auth-Token": REDACTED}
    assert out["max_tokens"] == 64 and out["temperature"] == 0.7
    assert out["input_cost_per_token"] == 1e-6 and out["output_cost_per_token"] is None
    assert "sk-abcdefghijklmnopqrstuv" not in out["note"]
