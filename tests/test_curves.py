"""unlearn.metrics.curves: line fits, the acceleration check of "linear", local growth exponents, bootstrap
intervals over seeds and the claims they decide, and level crossings on hand-made curves."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearn.metrics.curves import (
    acceleration,
    acceleration_interval,
    bootstrap_interval,
    fit_r2,
    interval_supports,
    local_growth_exponents,
    rate_fits,
    value_at_crossing,
)


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


# ------------------------------------------------------------------ growth exponents and intervals over seeds

WINDOWS = [(10, 30), (30, 100), (100, 300)]


def test_local_growth_exponents_by_hand():
    """t^2 gives 2 in every window. 5 log(1 + t) has d log y / d log t = t / ((1 + t) log(1 + t)), falling from
    100 / (101 ln 101) = 0.215 at t = 100 to 300 / (301 ln 301) = 0.175 at t = 300, so the window's slope lies
    between the two, and each later window's exponent is smaller. Records at y <= 0 are left out; a window with
    fewer than 2 records left, or a flat one, gives None."""
    t = np.arange(1.0, 301.0)
    assert local_growth_exponents(t, 3 * t**2, WINDOWS) == pytest.approx([2.0] * 3, abs=1e-12)
    log_curve = local_growth_exponents(t, 5 * np.log1p(t), WINDOWS)
    ends = [float(x / ((1 + x) * np.log1p(x))) for x in (100.0, 300.0)]
    assert ends[1] < log_curve[2] < ends[0]
    assert log_curve[0] > log_curve[1] > log_curve[2]  # logarithmic: the exponent falls window by window
    below_start = np.where(t < 20, -1.0, t)  # below its start until t = 20: those records are left out
    assert local_growth_exponents(t, below_start, [(10, 19), (10, 300)]) == [None, pytest.approx(1.0)]
    assert local_growth_exponents(t, np.ones_like(t), [(10, 30)]) == [None]
    with pytest.raises(ValueError, match="lo < hi"):
        local_growth_exponents(t, t, [(30, 10)])
    with pytest.raises(ValueError, match="same shape"):
        local_growth_exponents(t, t[:-1], WINDOWS)


@given(power=st.floats(0.1, 3.0), scale=st.floats(1e-3, 1e3), lo=st.floats(1, 100), width=st.floats(1.5, 20))
def test_local_growth_exponents_recover_a_power(power, scale, lo, width):
    """c t^p has d log y / d log t = p exactly in any window holding at least two records."""
    t = np.geomspace(1, 3000, 200)
    hi = min(lo * width, 3000)
    found = local_growth_exponents(t, scale * t**power, [(lo, hi)])[0]
    assert found == pytest.approx(power, rel=1e-9, abs=1e-9)


def seed_units(power: float, n: int, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """n seeds of a curve t^power (growth from 0), each scaled by 1 + N(0, noise^2) (seed-to-seed spread of the
    rate's constant) and jittered by N(0, (noise/5)^2) relative noise at every record."""
    rng = np.random.default_rng(seed)
    y = T**power
    return y * (1 + noise * rng.standard_normal((n, 1))) * (1 + noise / 5 * rng.standard_normal((n, len(T))))


@pytest.mark.parametrize("power", [0.5, 1.0, 1.5])
def test_exponent_intervals_over_seeds_contain_the_truth_and_shrink(power):
    """A 95% interval over 5 seeds holds the true exponent; over 40 seeds it is narrower and still holds it (a
    wrong truth, power + 0.1, lies outside the wide one)."""
    exponent = lambda y: local_growth_exponents(T, y, [(60, 300)])[0]
    few, many = (bootstrap_interval(seed_units(power, n, seed=n), exponent) for n in (5, 40))
    assert interval_supports(few, power) and interval_supports(many, power)
    assert many["ci_high"] - many["ci_low"] < few["ci_high"] - few["ci_low"]
    assert not interval_supports(few, power + 0.1)


def test_bootstrap_intervals_are_reproducible_and_reduce_to_acceleration_interval():
    units = noisy_units("t^1.5")
    statistic = lambda y: acceleration(T, y, 60)
    assert bootstrap_interval(units, statistic, seed=3) == bootstrap_interval(units, statistic, seed=3)
    assert bootstrap_interval(units, statistic) == acceleration_interval(T, units, 60)
    one = bootstrap_interval(units[:1], statistic)
    assert one["ci_low"] == one["ci_high"] == pytest.approx(one["value"])  # one unit: nothing to resample


@pytest.mark.parametrize("shape, side, holds", [
    ("linear", "contains", True), ("t^1.5", "contains", False), ("saturating", "contains", False),
    ("t^1.5", "above", True), ("linear", "above", False), ("log", "below", True), ("saturating", "below", True),
    ("linear", "below", False)])
def test_claims_from_acceleration_intervals_over_seeds(shape, side, holds):
    """Over 5 seeds: "linear" (the interval holds 1) passes for a line and fails for t^1.5 and a saturating
    curve; "accelerating" (above 1) holds for t^1.5 only, "slowing down" (below 1) for log and saturating."""
    found = acceleration_interval(T, noisy_units(shape, n=5, seed=11), start=60)
    assert interval_supports(found, 1.0, side) is holds, found


def test_interval_supports_by_hand():
    interval = {"value": 1.0, "ci_low": 0.9, "ci_high": 1.1}
    assert interval_supports(interval, 1.0) and not interval_supports(interval, 1.2)
    assert interval_supports(interval, 0.8, "above") and not interval_supports(interval, 0.95, "above")
    assert interval_supports(interval, 1.2, "below") and not interval_supports(interval, 1.05, "below")
    assert not interval_supports({"value": None, "ci_low": None, "ci_high": None}, 1.0)
    assert interval_supports(interval, 1.15, tol=0.05) and not interval_supports(interval, 1.16, tol=0.05)
    assert not interval_supports(interval, 0.85, "above", tol=0.05) and interval_supports(interval, 0.84, "above", 0.05)
    assert not interval_supports(interval, 1.15, "below", tol=0.05) and interval_supports(interval, 1.16, "below", 0.05)
    with pytest.raises(ValueError, match="side"):
        interval_supports(interval, 1.0, "inside")
    with pytest.raises(ValueError, match="tol"):
        interval_supports(interval, 1.0, tol=-1)
