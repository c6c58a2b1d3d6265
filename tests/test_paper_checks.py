"""The paper's checks against hand-computed small cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from detailed_balance.data import Transitions
from detailed_balance.diagnostics import (
    action_size,
    checks_json,
    db_scatter,
    downhill_fraction,
    loop_balance,
    potential_fit,
)

# Three states a, b, c, all six edges; visits 100 each; plus one rarely seen pair (a, d).
COUNTS = pd.DataFrame(
    {
        "source": ["a", "b", "b", "c", "a", "c", "a", "d", "d"],
        "target": ["b", "a", "c", "b", "c", "a", "d", "a", "d"],
        "count": [20, 5, 10, 8, 4, 12, 3, 1, 50],
    }
)
VISITS = pd.DataFrame({"source": ["a", "b", "c", "d"], "visits": [100, 100, 100, 100]})
V = pd.Series({"a": 1.0, "b": -0.5, "c": 0.2, "d": 3.0})


@pytest.fixture
def data() -> Transitions:
    return Transitions.from_counts(COUNTS, VISITS)


def test_db_scatter_by_hand(data):
    check = db_scatter(data, V)
    # (a, d) is seen 3 and 1 times: below the paper's ≥ 2-each-way filter
    assert set(zip(check.points["f"], check.points["g"], strict=True)) == {
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
    }
    row = check.points.set_index(["f", "g"]).loc[("a", "b")]
    assert row["log_ratio"] == pytest.approx(math.log(0.20 / 0.05))
    assert row["delta_v"] == pytest.approx(1.5)
    assert row["sigma"] == pytest.approx(math.sqrt(1 / 20 + 1 / 100 + 1 / 5 + 1 / 100))
    y = np.log([20 / 5, 4 / 12, 10 / 8])
    x = np.array([1.5, 0.8, -0.7])
    s = np.sqrt([1 / 20 + 1 / 5 + 0.02, 1 / 4 + 1 / 12 + 0.02, 1 / 10 + 1 / 8 + 0.02])
    assert check["n"] == 3
    assert check["chi2_ndf"] == pytest.approx(np.sum(((y - x) / s) ** 2) / 3)
    assert check["pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1])


def test_db_scatter_drops_gaps_beyond_log_total(data):
    far = V.copy()
    far["a"] = 200.0  # |ΔV| > log(63 moves) for every pair with a
    assert db_scatter(data, far)["n"] == 1


def test_loop_balance_by_hand(data):
    check = loop_balance(data)
    assert check["n"] == 1
    row = check.points.iloc[0]
    forward = math.log(0.20) + math.log(0.10) + math.log(0.12)  # a→b→c→a
    backward = math.log(0.04) + math.log(0.08) + math.log(0.05)  # a→c→b→a
    var_f = (1 / 20 + 1 / 10 + 1 / 12) + 3 / 100
    var_b = (1 / 4 + 1 / 8 + 1 / 5) + 3 / 100
    assert row["forward"] == pytest.approx(forward)
    assert row["backward"] == pytest.approx(backward)
    assert check["chi2_ndf"] == pytest.approx((backward - forward) ** 2 / (var_f + var_b))
    assert loop_balance(data, min_count=5)["n"] == 0
    assert checks_json({"loops": loop_balance(data, min_count=5)})["loops"] is None


def test_downhill_fraction_by_hand(data):
    # moves with T > 0.05: a→b (0.20, down 1→-0.5), b→c (0.10, up), c→b (0.08, down),
    # c→a (0.12, up); a→d 0.03, c→a... a→c 0.04 and b→a 0.05 are not above the threshold
    check = downhill_fraction(data, V)
    assert (check["n"], check["down"], check["up"], check["flat"]) == (4, 2, 2, 0)
    assert check["fraction_down"] == 0.5
    flat = V.copy()
    flat["c"] = flat["b"]
    assert downhill_fraction(data, flat)["flat"] == 2


def test_potential_fit_and_action_size(data):
    fit = potential_fit(data, V)
    assert fit["mu"] == pytest.approx(V.mean())
    assert fit["sigma"] == pytest.approx(V.std(ddof=0))
    size = action_size(0.15, fit["sigma"])
    assert size["expected"] == pytest.approx(1 / (math.sqrt(math.pi) * V.std(ddof=0)))
    # states sampled fewer than `min_visits` times are left out of the distribution
    fewer = Transitions.from_counts(COUNTS, VISITS.assign(visits=[100, 100, 100, 60]))
    assert potential_fit(fewer, V, min_visits=80)["n"] == 3
