"""unlearn.metrics.curves: line fits and level crossings on hand-made curves."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from unlearn.metrics.curves import fit_r2, rate_fits, value_at_crossing


def test_fit_r2_of_an_exact_line_and_of_noise():
    x = np.arange(10.0)
    assert fit_r2(x, 3.0 - 2.0 * x) == (pytest.approx(1.0), pytest.approx(-2.0))
    r2, slope = fit_r2(x, (x - 4.5) ** 2)  # symmetric about the mean of x: no linear trend to explain
    assert r2 == pytest.approx(0.0, abs=1e-12) and slope == pytest.approx(0.0, abs=1e-12)


@given(a=st.floats(-5, 5), b=st.floats(0.1, 5))
def test_rate_fits_tell_linear_from_logarithmic(a, b):
    t = np.geomspace(1, 1e4, 60)
    linear, log = rate_fits(t, a + b * t), rate_fits(t, a + b * np.log(t))
    assert linear["linear_r2"] == pytest.approx(1.0) and linear["log_r2"] < 0.8
    assert log["log_r2"] == pytest.approx(1.0) and log["linear_r2"] < 0.8
    assert linear["linear_slope"] == pytest.approx(b) and log["log_slope"] == pytest.approx(b)


def test_rate_fits_refuse_nonpositive_t():
    with pytest.raises(ValueError, match="positive t"):
        rate_fits([0.0, 1.0, 2.0], [0.0, 1.0, 2.0])


def test_value_at_crossing_interpolates_falling_and_rising_curves():
    """Falling 1.0 -> 0.5 -> 0.1 reaches 0.3 halfway between the last two records, where the value is
    0.2 + 0.5 (0.6 - 0.2) = 0.4; the rising mirror image crosses at the same place."""
    assert value_at_crossing([1.0, 0.5, 0.1], [0.0, 0.2, 0.6], 0.3) == pytest.approx(0.4)
    assert value_at_crossing([-1.0, -0.5, -0.1], [0.0, 0.2, 0.6], -0.3, rising=True) == pytest.approx(0.4)
    assert value_at_crossing([1.0, 0.5], [0.0, 0.2], 0.3) is None
    assert value_at_crossing([0.1, 0.5], [7.0, 0.2], 0.3, rising=False) == 7.0
