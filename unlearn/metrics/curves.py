"""Measurements on recorded curves, shared by every experiment: line fits and level crossings.

Pure NumPy on plain sequences; each experiment names its metrics, these functions only compute them.
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
