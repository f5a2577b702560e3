"""``P(3, x)`` without SciPy (``quantcore.design.gamma3``) against SciPy's ``gammainc`` and
the series' first term."""

from __future__ import annotations

import numpy as np
from scipy.special import gammainc

from quantcore.design.gamma3 import SERIES_BELOW, gamma3


def test_gamma3_is_scipys_regularised_gamma_of_order_3() -> None:
    x = np.concatenate([np.geomspace(1e-4, 60.0, 50_000), [0.0, SERIES_BELOW, 700.0]])
    expected = gammainc(3.0, x)
    np.testing.assert_allclose(gamma3(x), expected, rtol=1e-13, atol=0)
    assert gamma3(x).shape == x.shape and gamma3(x).dtype == np.float64


def test_small_arguments_keep_their_relative_accuracy() -> None:
    # P(3, x) = x³/6 · (1 - 3x/4 + ...): the closed form would give 0 or noise here.
    x = np.geomspace(1e-12, 1e-5, 200)
    np.testing.assert_allclose(gamma3(x), x**3 / 6 * (1 - 0.75 * x), rtol=1e-9)
    assert (gamma3(x) > 0).all()


def test_either_side_of_the_switch_agree() -> None:
    below, above = np.nextafter(SERIES_BELOW, 0.0), SERIES_BELOW
    assert abs(gamma3(below) - gamma3(above)) < 1e-14
