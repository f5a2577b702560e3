"""``bounded_minimum`` against SciPy's ``minimize_scalar(method="bounded")``, which it follows
step for step: the same minimum to the last bit, the same evaluations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from quantcore.design.brent import bounded_minimum
from quantcore.design.theory import laplacian_uniform_distortion


def _cases() -> list[tuple[object, tuple[float, float], float]]:
    rng = np.random.default_rng(4)
    cases: list[tuple[object, tuple[float, float], float]] = []
    for _ in range(40):  # smooth, kinked, flat-bottomed, minima at an end
        c, s, p = rng.uniform(-3, 3), rng.uniform(0.1, 5), rng.choice([1.0, 2.0, 4.0])
        cases.append((lambda x, c=c, s=s, p=p: s * abs(x - c) ** p, (-2.0, 2.5), 1e-5))
        cases.append((lambda x, c=c: math.cos(x - c) + 0.1 * x, (-4.0, 4.0), 1e-9))
    cases.append((lambda x: math.log(float(laplacian_uniform_distortion(x, 16))),
                  (1.0, 8.0), 1e-12))  # fmt: skip
    cases.append((lambda x: 1.0, (0.0, 1.0), 1e-5))  # constant
    cases.append((lambda x: x, (3.0, 3.0), 1e-5))  # an empty interval
    return cases


@pytest.mark.parametrize("case", range(len(_cases())))
def test_the_same_minimum_as_scipys_bounded_method(case: int) -> None:
    func, bounds, xatol = _cases()[case]
    ours = bounded_minimum(func, bounds, xatol=xatol)  # type: ignore[arg-type]
    theirs = minimize_scalar(func, bounds=bounds, method="bounded", options={"xatol": xatol})
    assert ours.x == float(theirs.x) and ours.fun == float(theirs.fun)
    assert ours.evaluations == theirs.nfev and ours.success == theirs.success


def test_a_capped_search_says_it_did_not_converge() -> None:
    found = bounded_minimum(lambda x: (x - 0.3) ** 2, (0.0, 1.0), xatol=1e-15, maxiter=5)
    assert not found.success and found.evaluations == 5


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        bounded_minimum(lambda x: x, (0.0, math.inf))
    with pytest.raises(ValueError, match="lower first"):
        bounded_minimum(lambda x: x, (1.0, 0.0))
