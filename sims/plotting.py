"""One visual language for every figure: a colour per method (``unlearn.objectives.METHODS`` rows), shared across
panels and experiments."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from unlearn.objectives import METHODS

METHOD_COLORS = {name: m.color for name, m in METHODS.items()}  # set in the METHODS rows


def beta_colors(betas) -> dict[float, tuple]:
    """A sequential colour per beta (viridis: small beta dark purple, large beta yellow-green)."""
    cmap = plt.get_cmap("viridis")
    return {b: cmap(0.15 + 0.75 * i / max(1, len(betas) - 1)) for i, b in enumerate(sorted(betas))}


def band(ax, x, curve: dict, color, label: str, **kwargs) -> None:
    """Plot {"mean": [...], "std": [...]} as a line with a +-1 std band (band drawn only when std > 0)."""
    mean = np.asarray(curve["mean"], dtype=float)
    ax.plot(x, mean, color=color, label=label, lw=1.6, **kwargs)
    std = np.asarray(curve.get("std") or np.zeros_like(mean), dtype=float)
    if np.any(std > 0):
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.18, lw=0)


def path(ax, x_curve: dict, y_curve: dict, color, label: str, **kwargs) -> None:
    """A parametric path (x(t), y(t)) from two mean curves, with a marker at its start."""
    x, y = np.asarray(x_curve["mean"], float), np.asarray(y_curve["mean"], float)
    ax.plot(x, y, color=color, label=label, lw=1.6, **kwargs)
    ax.plot(x[:1], y[:1], "o", color=color, ms=3)


def panel_label(ax, text: str) -> None:
    ax.set_title(text, loc="left", fontsize=10)
