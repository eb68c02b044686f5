"""unlearn.metrics.curves: line fits, the acceleration check of "linear" and level crossings on hand-made curves."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearn.metrics.curves import acceleration, acceleration_interval, fit_r2, rate_fits, value_at_crossing


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


# ------------------------------------------------------------------------------------- can "linear" fail?

T = np.linspace(1, 300, 61)
SHAPES = {"linear": lambda t: 0.02 * t + 3.0, "t^1.5": lambda t: 1e-3 * t**1.5,
          "log": lambda t: np.log(t), "saturating": lambda t: 5 * (1 - np.exp(-t / 100))}


def noisy_units(shape: str, n: int = 8, noise: float = 0.03, seed: int = 0) -> np.ndarray:
    """n units (sequences, seeds) of one curve shape, each scaled by 1 + N(0, noise^2) and jittered by N(0, noise^2)
    relative to the curve's range at every record."""
    rng = np.random.default_rng(seed)
    y = SHAPES[shape](T)
    return y * (1 + noise * rng.standard_normal((n, 1))) + noise * np.ptp(y) * rng.standard_normal((n, len(T)))


def test_acceleration_by_hand():
    """A line gives 1 whatever its offset; a line whose slope doubles (halves) at the window's middle (the mean of
    its first and last records, ~180 for [60, 300]) gives exactly 2 (0.5); t^1.5 and log t lie near the ratios of
    their halves' secant slopes, (300^1.5 - 180^1.5) / (180^1.5 - 60^1.5) = 1.35 and ln(300/180) / ln(180/60) = 0.46."""
    assert acceleration(T, SHAPES["linear"](T), 60) == pytest.approx(1.0, abs=1e-12)
    middle = (T[T >= 60][0] + T[-1]) / 2
    for ratio in (2.0, 0.5):
        kinked = np.where(T <= middle, T, middle + ratio * (T - middle))
        assert acceleration(T, kinked, 60) == pytest.approx(ratio, abs=1e-12)
    assert acceleration(T, SHAPES["t^1.5"](T), 60) == pytest.approx(1.35, abs=0.1)
    assert acceleration(T, SHAPES["log"](T), 60) == pytest.approx(0.46, abs=0.1)
    assert acceleration(T, -SHAPES["linear"](T), 60) is None  # nothing grew
    assert acceleration(T[:3], SHAPES["linear"](T[:3]), 0) is None  # too few records


@pytest.mark.parametrize("shape, holds", [("linear", True), ("t^1.5", False), ("log", False), ("saturating", False)])
def test_the_linear_claim_passes_only_for_a_line(shape, holds):
    """The claim "linear" (a 95% interval over 8 noisy units that contains 1) holds for a line and fails for a
    convex t^1.5 and for saturating curves, which an R^2 race would call linear or could not tell apart."""
    found = acceleration_interval(T, noisy_units(shape), start=60)
    assert (found["ci_low"] <= 1 <= found["ci_high"]) is holds, found
    if shape == "t^1.5":  # the race it replaces: the line wins, so "linear" would have passed
        fits = rate_fits(T[12:], noisy_units(shape).mean(0)[12:])
        assert fits["linear_r2"] > fits["log_r2"]


@settings(max_examples=30)
@given(slope=st.floats(1e-3, 10), offset=st.floats(-100, 100), power=st.floats(0.3, 2.5))
def test_acceleration_properties(slope, offset, power):
    """Offsets never matter; a power t^p accelerates exactly when p > 1."""
    assert acceleration(T, slope * T + offset, 60) == pytest.approx(1.0, abs=1e-9)
    found = acceleration(T, slope * T**power + offset, 60)
    assert (found > 1) == (power > 1) or abs(power - 1) < 1e-9
