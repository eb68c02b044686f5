"""One visual language for every figure: a colour per method (``unlearn.objectives.METHODS`` rows), shared across
panels and experiments, and one math-text style (``MATHTEXT``, set on import)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from unlearn.objectives import METHODS

METHOD_COLORS = {name: m.color for name, m in METHODS.items()}  # set in the METHODS rows

# Math text (every log axis's tick labels are $\mathdefault{10^{k}}$) in DejaVu Sans, matplotlib's default text
# font, named face by face. The default "dejavusans" set also asks for 'DejaVu Sans Display' (display-size
# symbols, a font of matplotlib's own that some installs lack: findfont then warns on every run, the README's
# first command included); this set asks only for DejaVu Sans and Computer Modern (the ex font and the fallback
# for symbols DejaVu Sans lacks), and the labels look the same.
MATHTEXT = {"mathtext.fontset": "custom", "mathtext.rm": "DejaVu Sans", "mathtext.sf": "DejaVu Sans",
            "mathtext.it": "DejaVu Sans:italic", "mathtext.bf": "DejaVu Sans:bold",
            "mathtext.bfit": "DejaVu Sans:italic:bold", "mathtext.cal": "DejaVu Sans:italic",
            "mathtext.tt": "DejaVu Sans Mono", "mathtext.fallback": "cm"}
plt.rcParams.update(MATHTEXT)


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


def note(ax, x: float, y: float, text: str, **kwargs) -> None:
    """``text`` at (x, y) in axes coordinates, on a white box that curves pass under rather than through."""
    ax.text(x, y, text, transform=ax.transAxes, bbox=dict(facecolor="white", edgecolor="none", alpha=0.85, pad=1.5),
            zorder=5, **kwargs)
