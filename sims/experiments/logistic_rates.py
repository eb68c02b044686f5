"""logistic-rates: Theorem 2 of the NPO paper made visible (Zhang et al. 2024, Sec. 5, App. A.2-A.4).

Claim: on a high-dimensional logistic forget set that meets the theorem's assumptions, gradient descent on
GA moves ||theta_t - theta_init||_{X^T X} linearly in t, on NPO only logarithmically, with slope sqrt(n_f)/beta
in log t; the simulated distances stay inside explicit envelopes whose constants are computed from the data
(``theory.logistic.rate_constants``), and the decoupled per-coordinate ODE predicts them to a few percent.
A second row repeats the measurement on the random-features model of ``npo-synthetic``, which is outside the
theorem's assumptions (n_f > p features, strongly correlated), to show whether the rates persist there.

Setting. Theorem row: n_f = 32 Gaussian features x_i ~ N(0, I_d / d) (norms ~1), random labels, small random
theta_init (||theta_init|| ~ 0.1), eta = 1, GA and NPO (beta in {0.5, 1, 2, 4}) for 20000 steps, distances
recorded on a log-spaced grid. The simulated runs go through the shared loop (``sims.logistic.unlearn``,
``unlearn.train``) as the five members of one ``LogisticHead`` that reads the raw x as its features.
d = 32768 rather than the issue's example 4096: at d = 4096 the largest off-diagonal row sum of X X^T is
~0.48, above the near-orthogonality threshold C0 ~ 0.25 for which explicit constants exist (and
n_f max|<x_i, x_j>| ~ 1.7); at d = 32768 it is ~0.15 (see ``theory.logistic.check_assumptions``).
RF row: the npo-synthetic world (alpha = 1, d = 16, p = 128 ReLU features, n_f = 200, pi_ref pretrained and
cached as there), GA and NPO at every beta with learning rate 5e-3 (Table 1's NPO rate); the distance is
||Phi_f (theta_t - theta_ref)||, Phi_f the forget set's features.

Fits (metrics): over the last 90% of the log-spaced grid, distance against t (linear_r2) and against log t
(log_r2). ga.slope_ratio divides GA's fitted slope by eta mean_i ||x_i||^2 / sqrt(n_f);
npo.beta=B.log_slope_ratio divides NPO's slope against log t by sqrt(n_f)/B. inside_bounds_frac: share of
recorded t >= 1 inside the Theorem-2 envelope; ode_max_rel_err: largest relative gap between the ODE and the
run over recorded t >= 100. rf.npo.log_r2 is the NPO run at the paper's beta = 1 (Table 1, alpha = 1); every
beta's fits are in series["rf"]["fits"].
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch

from sims import logistic
from sims.experiment import Experiment, Result
from sims.experiments import npo_synthetic
from sims.plotting import METHOD_COLORS, beta_colors, panel_label
from theory import logistic as theory
from unlearn.config import require_at_least_one, require_positive
from unlearn.metrics.curves import acceleration, fit_r2, rate_fits
from unlearn.objectives import MethodParams
from unlearn.rng import generator
from unlearn.train import resolve_device

FIT_FROM = 0.1  # fits use the last 90% of the record grid
ODE_FROM = 100  # the ODE is compared with the run after this many steps
RF_NPO_BETA = 1.0  # npo-synthetic's Table-1 beta at alpha = 1: the beta of rf.npo.log_r2


@dataclass(frozen=True)
class Config:
    """Settings of ``logistic-rates``; defaults are the full preset."""

    seed: int = 0
    n_forget: int = 32
    d: int = 32768
    theta_init_norm: float = 0.1
    eta: float = 1.0
    betas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    steps: int = 20000
    n_record: int = 150  # log-spaced record points (fewer once rounded to distinct integer steps)
    rf_lr: float = 5e-3
    rf_steps: int = 20000
    rf_pretrain_steps: int = 20000  # npo-synthetic's 20000 shares its cached pi_ref
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self):
        if not self.betas:
            raise ValueError("betas must name at least one beta")
        for beta in self.betas:
            if not (np.isfinite(beta) and beta > 0):
                raise ValueError(f"betas: every beta must be a finite number > 0, got {beta!r}")
        if len(set(self.betas)) != len(self.betas):
            raise ValueError(f"betas must be distinct, got {self.betas}")
        require_at_least_one(self, "n_forget", "d", "steps", "rf_steps", "rf_pretrain_steps")
        if self.n_forget > self.d:
            raise ValueError(f"n_forget must be <= d (Theorem 2 is high-dimensional), got {self.n_forget} > {self.d}")
        if self.n_record < 10:
            raise ValueError(f"n_record must be >= 10, got {self.n_record}")
        require_positive(self, "eta", "rf_lr")
        if not self.theta_init_norm >= 0:
            raise ValueError(f"theta_init_norm must be >= 0, got {self.theta_init_norm!r}")


PRESETS = {
    "full": Config(),
    "fast": Config(steps=2000, n_record=80, rf_steps=2000, rf_pretrain_steps=3000),
}


# ------------------------------------------------------------------ helpers -------------------------------------


def record_grid(steps: int, points: int) -> np.ndarray:
    """Distinct integer steps 1..steps, log-spaced (about ``points`` of them; both ends included)."""
    return np.unique(np.round(np.geomspace(1, steps, points)).astype(int))


def runs_for(betas: tuple[float, ...], lr: float) -> list[logistic.Run]:
    """GA and NPO at each beta, all at learning rate ``lr``; labels "GA", "NPO beta=B"."""
    return [logistic.Run("GA", "GA", MethodParams(), lr)] + [
        logistic.Run(f"NPO beta={beta:g}", "NPO", MethodParams(beta=beta), lr) for beta in betas]


def distance_evaluator(features: torch.Tensor, theta0: torch.Tensor):
    """evaluate(model, step) -> {"distance": ||Phi (theta_m - theta0_w)||_2 per member m}: the X^T X-norm
    of Theorem 2 (Phi = X) or its random-features analogue. features (W, n, p), theta0 (W, p)."""

    def evaluate(model, step):
        moved = model.theta - theta0.unsqueeze(1)  # (W, K, p)
        return {"distance": torch.bmm(moved, features.transpose(1, 2)).norm(dim=-1).flatten()}

    return evaluate


def rate_fits_after(t: np.ndarray, distance: np.ndarray) -> dict[str, float]:
    """``unlearn.metrics.curves.rate_fits`` over the last 90% of the grid (R^2 and slopes against t and log t) and
    the acceleration there (late/early slope ratio: 1 linear, below 1 slowing down; the check of the claim)."""
    start = int(np.ceil(FIT_FROM * len(t)))
    distance = np.asarray(distance, float)
    return {**rate_fits(t[start:], distance[start:]), "acceleration": acceleration(t, distance, t[start])}


def _simulate(runs, world, theta0, steps, grid, cfg: Config, name: str):
    """Every run from theta0 through the shared loop; distances (len(grid), len(runs)) at the grid steps."""
    theta0 = theta0.reshape(1, -1)
    history = logistic.unlearn(runs, [world], theta0, theta0, steps, 0, cfg.progress, name, eval_at=tuple(grid),
                               evaluate=distance_evaluator(world.x_forget.unsqueeze(0), theta0))
    at = {step: i for i, step in enumerate(history.eval_steps)}
    return np.asarray(history.evals["distance"])[[at[int(s)] for s in grid]]


# ------------------------------------------------------------------ the theorem's world --------------------------


def theorem_world(cfg: Config, device: torch.device):
    """X (n_f, d) with rows ~ N(0, I_d/d), labels ~ Bern(1/2), theta_init ~ N(0, theta_init_norm^2 I_d / d),
    as a ``LogisticData`` whose features are the raw x (no retain or evaluation sets: GA and NPO read none)."""
    g = generator(cfg.seed, "logistic-rates", cfg.n_forget, cfg.d)
    X = torch.randn(cfg.n_forget, cfg.d, generator=g, dtype=torch.float64) / cfg.d**0.5
    y = torch.randint(0, 2, (cfg.n_forget,), generator=g)
    theta_init = torch.randn(cfg.d, generator=g, dtype=torch.float64) * cfg.theta_init_norm / cfg.d**0.5
    empty = torch.zeros(0, cfg.d, dtype=torch.float64)
    world = logistic.LogisticData(X, y, torch.zeros_like(y), empty, torch.zeros(0, dtype=torch.long), empty, empty)
    return world.to(device), theta_init.to(device)


def theorem_row(cfg: Config, device: torch.device) -> tuple[dict, dict]:
    world, theta_init = theorem_world(cfg, device)
    X, y, th = (v.cpu().numpy() for v in (world.x_forget, world.y_forget, theta_init))
    report = theory.check_assumptions(X, th, cfg.eta, cfg.betas)  # label-free: the theorem's worst case
    labelled = theory.forget_geometry(X, th, y)
    grid = record_grid(cfg.steps, cfg.n_record)
    runs = runs_for(cfg.betas, cfg.eta)
    distance = _simulate(runs, world, theta_init, cfg.steps, grid, cfg, "logistic-rates: GA and NPO")

    n_f, eta, mean_sq_norm = cfg.n_forget, cfg.eta, float(labelled.gamma.mean())
    metrics = {"assumptions.offdiag_times_nf": report.geometry.offdiag_max * n_f,
               "assumptions.hold": 1.0 if report.hold else 0.0}
    series = {"t": grid.tolist(), "n_f": n_f, "eta": eta, "d": cfg.d, "mean_sq_norm": mean_sq_norm,
              "betas": list(cfg.betas), "labels": [r.label for r in runs],
              "distance": {}, "ode": {}, "lower": {}, "upper": {}, "constants": {}, "fits": {},
              "assumptions": [vars(c) for c in report.checks],
              "row_sum": report.geometry.row_sum, "recursion_max_abs_err": 0.0}
    late = grid >= ODE_FROM
    for j, run in enumerate(runs):
        method, beta = ("GA", None) if run.method == "GA" else ("NPO", run.params.beta)
        dist = distance[:, j]
        constants = theory.rate_constants(report.geometry, eta, method, beta)
        lower, upper = theory.envelope(grid, constants, n_f, eta)
        ode = theory.ode_distance(grid, labelled, eta, method, beta)
        exact = np.linalg.norm(theory.reduced_recursion(X, y, th, eta, cfg.steps, method, beta, grid), axis=1)
        fits = rate_fits_after(grid, dist)
        key = "ga" if method == "GA" else f"npo.beta={beta:g}"
        inside = (dist >= lower * (1 - 1e-9)) & (dist <= upper * (1 + 1e-9))
        metrics[f"{key}.linear_r2"], metrics[f"{key}.log_r2"] = fits["linear_r2"], fits["log_r2"]
        metrics[f"{key}.acceleration"] = fits["acceleration"]
        if method == "GA":
            metrics["ga.slope_ratio"] = fits["linear_slope"] / (eta * mean_sq_norm / np.sqrt(n_f))
        else:
            metrics[f"{key}.log_slope_ratio"] = fits["log_slope"] / (np.sqrt(n_f) / beta)
        metrics[f"{key}.inside_bounds_frac"] = float(inside.mean()) if constants.holds else None
        metrics[f"{key}.ode_max_rel_err"] = float(np.max(np.abs(ode[late] - dist[late]) / dist[late])) \
            if late.any() else None
        series["distance"][run.label], series["ode"][run.label] = dist.tolist(), ode.tolist()
        series["lower"][run.label], series["upper"][run.label] = lower.tolist(), upper.tolist()
        series["constants"][run.label] = {k: getattr(constants, k) for k in ("L", "H", "nu", "kappa", "C_lo",
                                                                               "C_hi", "holds", "reason")}
        series["fits"][run.label] = fits
        series["recursion_max_abs_err"] = max(series["recursion_max_abs_err"], float(np.max(np.abs(exact - dist))))
    return metrics, series


# ------------------------------------------------------------------ the random-features world --------------------


def rf_row(cfg: Config, device: torch.device) -> tuple[dict, dict]:
    """The npo-synthetic world (alpha = 1, replicate 0, this seed), pi_ref through the shared model cache."""
    rf_cfg = npo_synthetic.Config(seed=cfg.seed, seeds=1, alphas=(1.0,), pretrain_steps=cfg.rf_pretrain_steps,
                                  progress=cfg.progress)
    draws, theta_ref, *_ = npo_synthetic.pretrained_worlds(rf_cfg, device)
    worlds = [w for _, _, w in draws]
    grid = record_grid(cfg.rf_steps, cfg.n_record)
    runs = runs_for(cfg.betas, cfg.rf_lr)
    distance = _simulate(runs, worlds[0], theta_ref[0], cfg.rf_steps, grid, cfg, "logistic-rates: random features")
    features = worlds[0].x_forget
    series = {"t": grid.tolist(), "n_f": features.shape[0], "p": features.shape[1], "lr": cfg.rf_lr,
              "mean_sq_norm": float((features**2).sum(1).mean()), "betas": list(cfg.betas),
              "labels": [r.label for r in runs], "distance": {}, "fits": {}}
    for j, run in enumerate(runs):
        series["distance"][run.label] = distance[:, j].tolist()
        series["fits"][run.label] = rate_fits_after(grid, distance[:, j])
    npo_label = f"NPO beta={RF_NPO_BETA:g}" if RF_NPO_BETA in cfg.betas else runs[1].label
    metrics = {"rf.ga.linear_r2": series["fits"]["GA"]["linear_r2"],
               "rf.npo.log_r2": series["fits"][npo_label]["log_r2"]}
    series["npo_label"] = npo_label
    return metrics, series


def run(cfg: Config) -> Result:
    device = resolve_device(cfg.device)
    metrics, theorem = theorem_row(cfg, device)
    rf_metrics, rf = rf_row(cfg, device)
    return Result(metrics={**metrics, **rf_metrics}, series={"theorem": theorem, "rf": rf})


# ------------------------------------------------------------------ figure --------------------------------------


def _colors(betas) -> dict[str, tuple]:
    by_beta = beta_colors(betas)
    return {"GA": METHOD_COLORS["GA"], **{f"NPO beta={b:g}": by_beta[b] for b in betas}}


def _beta(label: str) -> float:
    return float(label.split("=")[1])


def _rate_panels(axes, w: dict, theory_row: bool) -> None:
    """Distance against t (linear axes), against log t, and beta * distance / sqrt(n_f) against log t."""
    ax_lin, ax_log, ax_col = axes
    t, colors, fits = np.asarray(w["t"], float), _colors(w["betas"]), w["fits"]
    npo = [label for label in w["labels"] if label != "GA"]
    for label in w["labels"]:
        dist = np.asarray(w["distance"][label], float)
        for ax in (ax_lin, ax_log):
            ax.plot(t, dist, color=colors[label], lw=2.0, label=label)
            if theory_row:
                ax.plot(t, w["ode"][label], color="k", lw=0.9, ls="--")
                if ax is ax_lin or label != "GA":  # GA's cone would cover the NPO panel
                    ax.fill_between(t, w["lower"][label], w["upper"][label], color=colors[label], alpha=0.13, lw=0)
    last_decade = t >= t[-1] / 10
    for label in npo:
        beta = _beta(label)
        scaled = beta * np.asarray(w["distance"][label], float) / np.sqrt(w["n_f"])
        slope = fit_r2(np.log(t[last_decade]), scaled[last_decade])[1]
        ax_col.plot(t, scaled, color=colors[label], lw=2.0, label=f"{label}: slope {slope:.2f} over the last decade")
        if theory_row:  # NPO's asymptotic ODE per coordinate, beta u = log(1 + beta 2^(beta+1) eta gamma t / n_f)
            scale = beta * 2.0 ** (beta + 1) * w["eta"] * w["mean_sq_norm"] / w["n_f"]
            ax_col.plot(t, np.log1p(scale * t), color=colors[label], lw=1.0, ls=":")
    top = max(max(w["upper"][label] if theory_row else w["distance"][label]) for label in npo)
    ax_log.set(xscale="log", xlabel="step t (log scale)", ylim=(0, 1.12 * top),
               ylabel="distance (zoomed on NPO: GA leaves the panel)")
    ax_col.set(xscale="log", xlabel="step t (log scale)", ylabel="beta * distance / sqrt(n_f)")
    ax_lin.set(xlabel="step t")
    ga_text = f"GA: R^2 {fits['GA']['linear_r2']:.3f} against t, {fits['GA']['log_r2']:.3f} against log t"
    ax_lin.text(0.98, 0.30, ga_text, transform=ax_lin.transAxes, ha="right", fontsize=8)
    npo_text = "\n".join(f"{label}: R^2 {fits[label]['log_r2']:.3f} against log t, {fits[label]['linear_r2']:.3f} "
                         f"against t" for label in npo)
    ax_log.text(0.02, 0.97, npo_text, transform=ax_log.transAxes, va="top", fontsize=7.5)
    handles, _ = ax_lin.get_legend_handles_labels()
    if theory_row:
        handles += [plt.Line2D([], [], color="k", lw=0.9, ls="--", label="per-coordinate ODE"),
                    plt.Rectangle((0, 0), 1, 1, color="0.5", alpha=0.25, label="Theorem-2 envelope (explicit)")]
        ax_col.plot([], [], color="0.3", lw=1.0, ls=":", label="asymptotic ODE (slope 1)")
    ax_lin.legend(handles=handles, fontsize=8, loc="upper left")
    ax_col.legend(fontsize=8, loc="upper left")


def plot(result: Result):
    """Row a: the theorem's world (envelopes shaded, ODE dashed); row b: the random-features world."""
    th, rf = result.series["theorem"], result.series["rf"]
    fig, axes = plt.subplots(2, 3, figsize=(17, 10.5), constrained_layout=True)
    _rate_panels(axes[0], th, theory_row=True)
    _rate_panels(axes[1], rf, theory_row=False)
    axes[0][0].set_ylabel("||theta_t - theta_init||_{X^T X}")
    axes[1][0].set_ylabel("||Phi_f (theta_t - theta_ref)||")
    hold = "hold" if result.metrics.get("assumptions.hold") else "FAIL"
    C0 = min(c["bound"] for c in th["assumptions"] if c["name"].startswith("near_orthogonality"))
    entrywise = result.metrics["assumptions.offdiag_times_nf"]
    axes[0][0].text(0.98, 0.15, f"assumptions {hold}: largest off-diagonal row sum {th['row_sum']:.3f} vs "
                    f"C0 = {C0:.3f}\n(stricter entrywise form, unused: n_f max|<x_i,x_j>| = {entrywise:.3f})",
                    transform=axes[0][0].transAxes, ha="right", fontsize=8)
    panel_label(axes[0][0], f"(a1) Theorem-2 world (n_f={th['n_f']}, d={th['d']}): distance vs t")
    panel_label(axes[0][1], "(a2) against log t: NPO turns into a straight line")
    panel_label(axes[0][2], "(a3) beta * distance / sqrt(n_f): every NPO curve ends at slope 1")
    panel_label(axes[1][0], f"(b1) random features (npo-synthetic, n_f={rf['n_f']}, p={rf['p']}, lr {rf['lr']:g})")
    panel_label(axes[1][1], "(b2) against log t (outside the theorem: no envelope)")
    panel_label(axes[1][2], "(b3) beta * distance / sqrt(n_f) vs log t")
    fig.suptitle(f"NPO paper Theorem 2: GA moves linearly, NPO logarithmically (eta={th['eta']:g}; "
                 f"rows: the theorem's setting, then the npo-synthetic model)", fontsize=12)
    return fig


EXPERIMENT = Experiment(
    name="logistic-rates",
    claim="Logistic forget set meeting Theorem 2's assumptions: ||theta_t - theta_init||_{X^T X} grows linearly "
          "for GA and like (sqrt(n_f)/beta) log t for NPO, inside explicit data-computed envelopes and on the "
          "per-coordinate ODE (NPO paper Theorem 2); a random-features row shows the rates outside it.",
    presets=PRESETS, run=run, plot=plot,
)
