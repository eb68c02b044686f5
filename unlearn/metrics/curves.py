"""Measurements on recorded curves, shared by every experiment: line fits, growth checks and level crossings.

Pure NumPy on plain sequences; each experiment names its metrics, these functions only compute them.

Linear or not. An R^2 race (``rate_fits``: linear_r2 against log_r2) cannot refute "linear": any convex curve
(t^1.5, a run that accelerates into collapse) fits a line better than a log. ``acceleration`` asks the curve
itself: the least-squares slope over the second half of a window over the slope over its first half, 1 for a
line (whatever its offset), about 1.43 for t^1.5 and 0.47 for log t over t in [0.2 T, T], below 1 for anything
saturating. ``acceleration_interval`` gives it a bootstrap interval over the curve's units (the sequences of a
forget set, or seeds): the claim "linear" holds when the interval contains 1.

Power or not. ``local_growth_exponents`` reads the power p of y ~ t^p window by window (d log y / d log t: 1 for
a line through the origin, 2 for a parabola, falling towards 0 for log t), so a rate claim names the window
where it holds. ``bootstrap_interval`` puts a percentile bootstrap interval over units (seeds, sequences) on any
statistic of their mean curve, and ``interval_supports`` decides a claim from an interval: contains the
prediction, or lies above or below it for a one-sided claim.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def bootstrap_interval(units, statistic: Callable[[np.ndarray], float | None],
                       weights: Sequence[float] | None = None, n_boot: int = 1000, level: float = 0.95,
                       seed: int = 0) -> dict[str, float | None]:
    """``statistic`` of the weighted mean curve of ``units`` (n_units, n_records) and its percentile bootstrap
    interval: the units (seeds of a simulation, sequences of a forget set) resampled with replacement ``n_boot``
    times from ``numpy.random.default_rng(seed)`` (so an interval is reproducible), weights resampled with their
    units. Returns {"value", "ci_low", "ci_high"}; draws where the statistic is None are ignored, and the interval
    is None when more than half are, or when the value itself is None.

    Limits: the percentile bootstrap under-covers with few units (with 5 seeds a nominal 95% interval holds the
    truth roughly 80-90% of the time) and cannot be wider than the units' own spread; with one unit every draw
    repeats it, so the interval collapses to the value.
    """
    units = np.atleast_2d(np.asarray(units, float))
    if len(units) < 1:
        raise ValueError("bootstrap_interval needs at least one unit")
    w = np.ones(len(units)) if weights is None else np.asarray(weights, float)
    mean = lambda idx: (w[idx] @ units[idx]) / w[idx].sum()
    value = statistic(mean(np.arange(len(units))))
    rng = np.random.default_rng(seed)
    draws = [statistic(mean(rng.integers(0, len(units), len(units)))) for _ in range(n_boot)]
    found = np.array([d for d in draws if d is not None and np.isfinite(d)])
    if value is None or len(found) < n_boot / 2:
        return {"value": value, "ci_low": None, "ci_high": None}
    low, high = np.quantile(found, [(1 - level) / 2, (1 + level) / 2])
    return {"value": float(value), "ci_low": float(low), "ci_high": float(high)}


def acceleration_interval(t: Sequence[float], units, start: float, weights: Sequence[float] | None = None,
                          n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, float | None]:
    """``acceleration`` of the weighted mean curve of ``units`` (n_units, len(t)) over t >= ``start``, with its
    ``bootstrap_interval`` over units: {"value", "ci_low", "ci_high"}, None where undefined (draws whose early
    slope is <= 0 are ignored; all None when more than half are)."""
    return bootstrap_interval(units, lambda y: acceleration(t, y, start), weights, n_boot, level, seed)


def local_growth_exponents(t: Sequence[float], y: Sequence[float],
                           windows: Sequence[tuple[float, float]]) -> list[float | None]:
    """The local power of y ~ t^p in each window (lo, hi): the least-squares slope of log y against log t over the
    records with lo <= t <= hi, i.e. d log y / d log t averaged over the window.

    y is the growth itself, zero at the start: NLL_t - NLL_0 for a forget loss, ||theta_t - theta_init|| for a
    distance. Then a line a t gives 1 in every window, t^p gives p, and (1/beta) log(1 + c t) gives
    c t / ((1 + c t) log(1 + c t)), near 1 early and falling like 1/log(c t): logarithmic growth. Records with
    t <= 0 or y <= 0 (log undefined: nothing has grown yet, or the curve fell below its start) are left out; a
    window keeping fewer than 2 records, or whose kept y are all equal, gives None.
    """
    t, y = np.asarray(t, float), np.asarray(y, float)
    if t.shape != y.shape:
        raise ValueError(f"t and y must have the same shape, got {t.shape} and {y.shape}")
    exponents = []
    for lo, hi in windows:
        if not lo < hi:
            raise ValueError(f"windows must be (lo, hi) with lo < hi, got ({lo}, {hi})")
        keep = (t >= lo) & (t <= hi) & (t > 0) & (y > 0)
        if keep.sum() < 2 or np.ptp(y[keep]) == 0:
            exponents.append(None)
        else:
            exponents.append(fit_r2(np.log(t[keep]), np.log(y[keep]))[1])
    return exponents


def interval_supports(interval: dict[str, float | None], prediction: float, side: str = "contains",
                      tol: float = 0.0) -> bool:
    """Whether an interval {"ci_low", "ci_high"} supports a claim about ``prediction``:

        "contains"  ci_low - tol <= prediction <= ci_high + tol   (two-sided, e.g. linear: acceleration 1)
        "above"     ci_low > prediction + tol                     (one-sided, e.g. accelerating)
        "below"     ci_high < prediction - tol                    (one-sided, e.g. slowing down)

    ``tol`` >= 0 is the prediction's own stated accuracy (an approximate theory such as a decoupled ODE, or an
    asymptotic rate not yet reached): with near-deterministic runs the interval over seeds can be narrower than
    the theory is exact. An undefined interval (None ends) supports nothing."""
    if side not in ("contains", "above", "below"):
        raise ValueError(f"side must be 'contains', 'above' or 'below', got {side!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    low, high = interval.get("ci_low"), interval.get("ci_high")
    if low is None or high is None:
        return False
    return {"contains": low - tol <= prediction <= high + tol, "above": low > prediction + tol,
            "below": high < prediction - tol}[side]


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
