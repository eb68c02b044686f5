"""Measurements on recorded curves, shared by every experiment: line fits, growth checks and level crossings.

Pure NumPy on plain sequences; each experiment names its metrics, these functions only compute them.

Linear or not. An R^2 race (``rate_fits``: linear_r2 against log_r2) cannot refute "linear": any convex curve
(t^1.5, a run that accelerates into collapse) fits a line better than a log. ``acceleration`` asks the curve
itself: the least-squares slope over the second half of a window over the slope over its first half, 1 for a
line (whatever its offset), about 1.43 for t^1.5 and 0.47 for log t over t in [0.2 T, T], below 1 for anything
saturating. ``acceleration_interval`` gives it a bootstrap interval over the curve's units (the sequences of a
forget set, or seeds): the claim "linear" holds when the interval contains 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fit_r2(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(R^2, slope) of the least-squares line y = a + slope x. R^2 = 1 - SS_res / SS_tot (NaN for constant y)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    design = np.stack([np.ones_like(x), x], axis=1)
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    residual = y - design @ coef
    total = np.sum((y - y.mean()) ** 2)
    return (float(1.0 - residual @ residual / total) if total > 0 else float("nan")), float(coef[1])


def rate_fits(t: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Linear-in-t and linear-in-log-t fits of y: {"linear_r2", "log_r2", "linear_slope", "log_slope"}.

    The test of "linear vs logarithmic growth" (NPO paper Theorem 2): GA's curves fit t, NPO's fit log t.
    t must be positive.
    """
    t = np.asarray(t, float)
    if (t <= 0).any():
        raise ValueError("rate_fits needs positive t (log t is fitted)")
    linear_r2, linear_slope = fit_r2(t, y)
    log_r2, log_slope = fit_r2(np.log(t), y)
    return {"linear_r2": linear_r2, "log_r2": log_r2, "linear_slope": linear_slope, "log_slope": log_slope}


def acceleration(t: Sequence[float], y: Sequence[float], start: float) -> float | None:
    """late slope / early slope of y over the recorded t >= start, split at the window's middle t (least-squares
    slopes; each half holds at least 2 records). None when a half has too few records or the early slope is <= 0
    (nothing grew to compare with)."""
    t, y = np.asarray(t, float), np.asarray(y, float)
    keep = t >= start
    t, y = t[keep], y[keep]
    if len(t) < 4:
        return None
    middle = (t[0] + t[-1]) / 2
    early, late = t <= middle, t >= middle
    if early.sum() < 2 or late.sum() < 2:
        return None
    slope = lambda m: fit_r2(t[m], y[m])[1] if np.ptp(y[m]) > 0 else 0.0
    first = slope(early)
    return None if first <= 0 else float(slope(late) / first)


def acceleration_interval(t: Sequence[float], units, start: float, weights: Sequence[float] | None = None,
                          n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, float | None]:
    """``acceleration`` of the weighted mean curve of ``units`` (n_units, len(t)), and its percentile bootstrap
    interval over units resampled with replacement (``n_boot`` draws of a seeded generator, weights resampled
    with their units): {"value", "ci_low", "ci_high"}, None where undefined (ignored draws are those whose early
    slope is <= 0; all None when more than half are)."""
    units = np.atleast_2d(np.asarray(units, float))
    w = np.ones(len(units)) if weights is None else np.asarray(weights, float)
    mean = lambda idx: (w[idx] @ units[idx]) / w[idx].sum()
    value = acceleration(t, mean(np.arange(len(units))), start)
    rng = np.random.default_rng(seed)
    draws = [acceleration(t, mean(rng.integers(0, len(units), len(units))), start) for _ in range(n_boot)]
    found = np.array([d for d in draws if d is not None])
    if value is None or len(found) < n_boot / 2:
        return {"value": value, "ci_low": None, "ci_high": None}
    low, high = np.quantile(found, [(1 - level) / 2, (1 + level) / 2])
    return {"value": value, "ci_low": float(low), "ci_high": float(high)}


def value_at_crossing(level_curve: Sequence[float], value_curve: Sequence[float], level: float,
                      rising: bool = False) -> float | None:
    """value_curve where level_curve first reaches ``level``, linearly interpolated between records.

    rising=False: the first point with level_curve <= level (e.g. a forget distance falling to a target);
    rising=True: the first with level_curve >= level (e.g. a forget KL rising to the retrained model's).
    None if the curve never gets there; the value at the start if it starts there.
    """
    f, v = np.asarray(level_curve, float), np.asarray(value_curve, float)
    if rising:
        f, level = -f, -level
    reached = np.flatnonzero(f <= level)
    if reached.size == 0:
        return None
    i = reached[0]
    if i == 0:
        return float(v[0])
    w = (f[i - 1] - level) / (f[i - 1] - f[i])
    return float(v[i - 1] + w * (v[i] - v[i - 1]))
