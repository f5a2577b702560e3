"""The compiled lockstep Brent searches ask for the generator's points and end on its result."""

from __future__ import annotations

import numpy as np
import pytest

from quantcore.design import support_rows
from quantcore.design.brent import bounded_search
from quantcore.design.brent_rows import BrentRows


def curves(x: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Row-dependent functions: smooth bowls, ripples, plateaus (a quantizer's MSE is
    piecewise), a constant row and a monotone one."""
    kind = row % 6
    bowl = (x - 0.3 - 0.01 * row) ** 2
    out = np.where(kind == 0, bowl, bowl + 0.05 * np.sin(40.0 * x + row))
    out = np.where(kind == 2, np.floor(bowl * 50.0) / 50.0, out)
    out = np.where(kind == 3, 1.25, out)
    out = np.where(kind == 5, np.round(np.abs(np.sin(30.0 * x)) * 3.0), out)  # many ties
    return np.where(kind == 4, x, out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_points_and_results_equal_the_generators(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    lower = rng.uniform(0.0, 0.5, n)
    upper = lower + rng.choice([1e-9, 1e-3, 0.1, 0.7], n)
    xatol = rng.choice([1e-12, 1e-6, 1e-4, 0.05], n)
    # The reference: one generator per row, every point it asks for.
    want_points: list[list[float]] = []
    want = []
    for i in range(n):
        search, asked = bounded_search(float(lower[i]), float(upper[i]), float(xatol[i])), []
        x = next(search)
        try:
            while True:
                asked.append(x)
                x = search.send(float(curves(np.array([x]), np.array([i]))[0]))
        except StopIteration as done:
            want.append(done.value)
        want_points.append(asked)
    got_points: list[list[float]] = [[] for _ in range(n)]
    searches = BrentRows(lower, upper, xatol)
    while (which := searches.pending()).size:
        points = searches.points(which)
        for i, x in zip(which, points, strict=True):
            got_points[i].append(float(x))
        searches.give(which, curves(points, which))
    assert got_points == want_points
    assert max(len(p) for p in want_points) > 10
    x, fx = searches.best()
    assert list(zip(x.tolist(), fx.tolist(), strict=True)) == want


def test_mse_rows_equal_with_either_search(monkeypatch: pytest.MonkeyPatch) -> None:
    def errors_at(xmax: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return curves(xmax / (1.0 + rows), rows) + 1.0

    tops = np.array([1.0, 0.0, 2.5, 7.0, 0.2, 3.0, 1e-3])
    fast = support_rows._mse_rows(errors_at, tops)
    monkeypatch.setattr(support_rows, "COMPILED_BRENT", False)
    assert np.array_equal(support_rows._mse_rows(errors_at, tops), fast)
    assert fast[1] == 0.0 and np.all(fast[tops > 0] > 0)
