"""adam-rates: Theorem 2's setting under gradient descent, Adam and sign descent (``theory.adam``).

Claim: on Theorem 2's logistic forget set, the optimizer decides the shape of NPO's divergence. Gradient descent
gives the theorem's (sqrt(n_f)/beta) log t. Adam gives a log-like start that crosses over, after
t_c = x_c / -ln(beta2) steps whatever beta and lr are (x_c = 5.62 for a rate within 10%), to linear growth at
sqrt(n_f) (-ln beta2) / (2 beta) per step, whatever the learning rate. Once the gradient falls below Adam's eps the
growth is logarithmic again, at gradient descent's slope. Sign descent, and Adam on GA, move linearly at
lr ||X sign(X^T w)||. Per token, Adam's late rate falls like 1/|y| for NPO and does not depend on |y| for SimNPO.

Setting. This is logistic-rates' theorem world (``logistic_rates.theorem_world``): n_f = 32 features
x_i ~ N(0, I_d / d) (norms ~1, near-orthogonal), random labels, ||theta_init|| ~ 0.1. The runs go through the
shared loop (``unlearn.train`` with ``unlearn.optim``), and the members of one ``LogisticHead`` train side by
side: GA and NPO at every beta share each optimizer setting. The loop's optimizer settings (beta2, eps) are
global, so each setting is one run of the loop:
- gradient descent ("sgd", lr ``gd_lr``);
- sign descent ("signsgd", ``sign_lr``);
- Adam (beta1 0.9, eps 0, ``adam_lr``) at each beta2 in ``beta2s``, for the matching ``adam_steps``: T =
  12 / (1 - beta2) (1,200, 12,000 and 120,000 steps), so that the late window [T/2, T] starts at -ln(beta2) t ~ 6,
  past the predicted crossover x_c = 5.62, and T >= 2 t_c. A run shorter than that leaves its late and crossover
  metrics None (below);
- Adam at each eps in ``eps_values`` for NPO at beta 1. These runs use beta2 ``eps_beta2``, so that the gradient
  meets eps within ``eps_steps``. The mean loss's coordinate gradient is ~ 2 e^{beta r} / sqrt(n_f d), so eps
  meets it where the per-token analysis of ``theory.adam`` meets eps sqrt(n_f d): the onset estimate drawn is
  ``adam_eps_onset_step`` at that eps.
The per-token rates come from the "sequence" model of ``sims.logistic_sequences``: two sequences of each length
in ``sequence_lengths``, NPO and SimNPO at beta 1, Adam at ``sequence_beta2`` and ``sequence_lr``, for
``sequence_steps`` steps.

Metrics. D_t = ||theta_t - theta_init||_{X^T X}; "late" is the least-squares slope over the records in
[T/2, T] of a run of T steps. Each metric but the R^2 and the per-token ratios is measured / predicted, and
``series["claims"]`` keeps both numbers beside every metric but the R^2.
- adam.npo.beta=B.beta2=K.late_slope_ratio: late dD/dt over ``npo_adam_distance_rate``. None unless T/2 is past
  the predicted crossover.
- adam.npo.beta=B.beta2=K.crossover_ratio: the measured crossover (the first record after which the local slope
  between records stays within ``within`` of that rate) over ``npo_adam_crossover_step``. None unless
  T >= 2 t_c.
- adam.ga.slope_ratio: Adam's GA (at beta2s[0]), late slope over ``sign_descent_distance_rate`` with the GA
  weights (2y - 1) / n_f. adam.ga.linear_r2 (against t, over t >= T/10) is information only.
- gd.npo.beta=B.log_slope_ratio: dD/d ln t over t >= T/10, divided by sqrt(n_f)/B (as in logistic-rates).
- signsgd.npo.beta=B.late_slope_ratio: late slope over the same sign-descent rate as GA's.
- adam.eps=E.npo.beta=1.third_regime_log_slope_ratio: dD/d ln t over [T/2, T], divided by sqrt(n_f). With
  eps = 0 there is no third regime: the ratio measures linear growth, and it is large.
- simnpo.adam / npo.adam.per_token_rate_ratio_short_over_long: the short tokens' late rate over the long
  tokens' (the ratio itself). Predicted: 1 for SimNPO, |y|_long / |y|_short for NPO.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import NullFormatter

from sims import logistic, logistic_sequences
from sims.experiment import Experiment, Result
from sims.experiments.logistic_rates import distance_evaluator, record_grid, runs_for, theorem_world
from sims.plotting import METHOD_COLORS, beta_colors, note, panel_label
from theory import adam as theory
from unlearn.config import require_at_least_one, require_positive
from unlearn.metrics.curves import fit_r2
from unlearn.objectives import MethodParams
from unlearn.train import resolve_device

EPS_BETA = 1.0  # the eps sweep's NPO beta (the metric key's beta=1)
BETA1 = 0.9


@dataclass(frozen=True)
class Config:
    """Settings of ``adam-rates``; defaults are the full preset."""

    seed: int = 0
    n_forget: int = 32
    d: int = 2048
    theta_init_norm: float = 0.1
    betas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    gd_lr: float = 1.0
    gd_steps: int = 2000
    sign_lr: float = 0.01
    sign_steps: int = 500
    adam_lr: float = 0.01
    beta2s: tuple[float, ...] = (0.99, 0.999, 0.9999)
    adam_steps: tuple[int, ...] = (1200, 12000, 120000)  # one per beta2: 12 / (1 - beta2), >= 2 t_c
    within: float = 0.1  # the crossover: the local rate stays within this fraction of the late rate
    eps_values: tuple[float, ...] = (1e-8, 1e-6, 0.0)
    eps_beta2: float = 0.9
    eps_lr: float = 0.1
    eps_steps: int = 3000
    sequence_lengths: tuple[int, int] = (20, 5)
    sequence_beta2: float = 0.9
    sequence_lr: float = 0.2
    sequence_steps: int = 2000
    n_record: int = 120  # log-spaced record points per run (fewer once rounded to distinct steps)
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self):
        for key in ("betas", "beta2s", "eps_values"):
            values = getattr(self, key)
            if not values or len(set(values)) != len(values):
                raise ValueError(f"{key} must name at least one value, each once, got {values}")
        for beta in self.betas:
            if not (np.isfinite(beta) and beta > 0):
                raise ValueError(f"betas: every beta must be a finite number > 0, got {beta!r}")
        for key in ("beta2s",):
            for beta2 in getattr(self, key):
                if not 0 < beta2 < 1:
                    raise ValueError(f"{key}: every beta2 must lie in (0, 1), got {beta2!r}")
        for key in ("eps_beta2", "sequence_beta2", "within"):
            if not 0 < getattr(self, key) < 1:
                raise ValueError(f"{key} must lie in (0, 1), got {getattr(self, key)!r}")
        for eps in self.eps_values:
            if not (np.isfinite(eps) and eps >= 0):
                raise ValueError(f"eps_values: every eps must be a finite number >= 0, got {eps!r}")
        require_at_least_one(self, "n_forget", "d", "gd_steps", "sign_steps", "eps_steps", "sequence_steps")
        if len(self.adam_steps) != len(self.beta2s) or min(self.adam_steps) < 10:
            raise ValueError(f"adam_steps must give each beta2 in beta2s ({len(self.beta2s)}) a run of >= 10 steps, "
                             f"got {self.adam_steps}")
        if self.n_forget > self.d:
            raise ValueError(f"n_forget must be <= d (Theorem 2 is high-dimensional), got {self.n_forget} > {self.d}")
        if len(self.sequence_lengths) != 2 or min(self.sequence_lengths) < 1 or \
                self.sequence_lengths[0] <= self.sequence_lengths[1]:
            raise ValueError(f"sequence_lengths must be (long, short) with long > short >= 1, "
                             f"got {self.sequence_lengths}")
        if self.n_record < 10:
            raise ValueError(f"n_record must be >= 10, got {self.n_record}")
        require_positive(self, "gd_lr", "sign_lr", "adam_lr", "eps_lr", "sequence_lr")
        if not self.theta_init_norm >= 0:
            raise ValueError(f"theta_init_norm must be >= 0, got {self.theta_init_norm!r}")


PRESETS = {
    "full": Config(),
    "fast": Config(betas=(1.0, 4.0), gd_steps=1000, sign_steps=300, beta2s=(0.99,), adam_steps=(1200,),
                   eps_values=(1e-6, 0.0), eps_steps=1500, n_record=80),
}


# ------------------------------------------------------------------ measurements (pure) --------------------------


def window_slope(t, y, start: float, end: float | None = None) -> float:
    """Least-squares slope of y against t over the records with start <= t <= end (default: the last)."""
    t, y = np.asarray(t, float), np.asarray(y, float)
    keep = (t >= start) & (t <= (t[-1] if end is None else end))
    if keep.sum() < 2:
        raise ValueError(f"a slope needs two records in [{start}, {end}], got {int(keep.sum())}")
    return fit_r2(t[keep], y[keep])[1]


def late_slope(t, y) -> float:
    """dy/dt over the second half of the run, [T/2, T]."""
    return window_slope(t, y, t[-1] / 2)


def log_slope(t, y, start: float) -> float:
    """dy/d ln t over the records with t >= start."""
    t = np.asarray(t, float)
    keep = t >= start
    return fit_r2(np.log(t[keep]), np.asarray(y, float)[keep])[1]


def local_slopes(t, y) -> tuple[np.ndarray, np.ndarray]:
    """(geometric mid-points, slopes) of y between consecutive records."""
    t, y = np.asarray(t, float), np.asarray(y, float)
    return np.sqrt(t[1:] * t[:-1]), np.diff(y) / np.diff(t)


def measured_crossover(t, y, rate: float, within: float) -> float | None:
    """The first mid-point after which y's local slope stays within ``within`` (relative) of ``rate`` to the end
    of the record; None if the last slope is not within it (the crossover is not in the record)."""
    mid, slope = local_slopes(t, y)
    outside = np.flatnonzero(np.abs(slope / rate - 1) > within)
    if outside.size == 0:
        return float(mid[0])
    if outside[-1] == len(slope) - 1:
        return None
    return float(mid[outside[-1] + 1])


# ------------------------------------------------------------------ runs -----------------------------------------


def distances(runs, world, theta_init, steps: int, cfg: Config, name: str, **optimizer) -> tuple[list, np.ndarray]:
    """Every run (each at its own lr) from theta_init through ``sims.logistic.unlearn`` with ``optimizer``
    (optimizer, adam_betas, adam_eps); (record grid, distances (len(grid), len(runs)))."""
    grid = record_grid(steps, cfg.n_record)
    theta0 = theta_init.view(1, -1)
    history = logistic.unlearn(runs, [world], theta0, theta0, steps, 0, cfg.progress, name,
                               eval_at=tuple(int(s) for s in grid),
                               evaluate=distance_evaluator(world.x_forget.unsqueeze(0), theta0), **optimizer)
    at = {step: i for i, step in enumerate(history.eval_steps)}
    return grid.tolist(), np.asarray(history.evals["distance"])[[at[int(s)] for s in grid]]


def _claim(metrics: dict, claims: dict, key: str, measured: float | None, predicted: float) -> None:
    metrics[key] = None if measured is None else measured / predicted
    claims[key] = {"measured": measured, "predicted": predicted}


def theorem_rows(cfg: Config, device: torch.device) -> tuple[dict, dict]:
    """GD, sign descent, Adam per beta2 and Adam per eps on the theorem world."""
    world, theta_init = theorem_world(cfg, device)
    X, y = world.x_forget.cpu().numpy(), world.y_forget.cpu().numpy()
    n_f = cfg.n_forget
    ga_weights = (2 * y - 1) / n_f
    metrics, claims, curves = {}, {}, {}
    labels = ["GA"] + [f"NPO beta={b:g}" for b in cfg.betas]

    def record(name, grid, dist, run_labels, **extra):
        curves[name] = {"t": grid, "distance": {lab: dist[:, j].tolist() for j, lab in enumerate(run_labels)},
                        **extra}

    grid, dist = distances(runs_for(cfg.betas, cfg.gd_lr), world, theta_init, cfg.gd_steps, cfg,
                           "adam-rates: gradient descent", optimizer="sgd")
    record("gd", grid, dist, labels, lr=cfg.gd_lr)
    for j, beta in enumerate(cfg.betas, start=1):
        _claim(metrics, claims, f"gd.npo.beta={beta:g}.log_slope_ratio", log_slope(grid, dist[:, j], grid[-1] / 10),
               theory.npo_gd_log_slope(beta, n_f))

    sign_rate = theory.sign_descent_distance_rate(cfg.sign_lr, X, ga_weights)
    grid, dist = distances(runs_for(cfg.betas, cfg.sign_lr), world, theta_init, cfg.sign_steps, cfg,
                           "adam-rates: sign descent", optimizer="signsgd")
    record("signsgd", grid, dist, labels, lr=cfg.sign_lr, rate=sign_rate)
    for j, beta in enumerate(cfg.betas, start=1):
        _claim(metrics, claims, f"signsgd.npo.beta={beta:g}.late_slope_ratio", late_slope(grid, dist[:, j]),
               sign_rate)

    for k, (beta2, steps) in enumerate(zip(cfg.beta2s, cfg.adam_steps, strict=True)):
        grid, dist = distances(runs_for(cfg.betas, cfg.adam_lr), world, theta_init, steps, cfg,
                               f"adam-rates: Adam beta2={beta2:g}", optimizer="adamw",
                               adam_betas=(BETA1, beta2), adam_eps=0.0)
        crossover = theory.npo_adam_crossover_step(beta2, cfg.within)
        record(f"adam beta2={beta2:g}", grid, dist, labels, beta2=beta2, crossover=crossover,
               late_reached=grid[-1] / 2 >= crossover)
        if k == 0:
            ga_rate = theory.sign_descent_distance_rate(cfg.adam_lr, X, ga_weights)
            _claim(metrics, claims, "adam.ga.slope_ratio", late_slope(grid, dist[:, 0]), ga_rate)
            last = np.asarray(grid) >= grid[-1] / 10
            metrics["adam.ga.linear_r2"] = fit_r2(np.asarray(grid)[last], dist[last, 0])[0]
        for j, beta in enumerate(cfg.betas, start=1):
            key, rate = f"adam.npo.beta={beta:g}.beta2={beta2:g}", theory.npo_adam_distance_rate(beta, beta2, n_f)
            reached = grid[-1] / 2 >= crossover
            _claim(metrics, claims, f"{key}.late_slope_ratio", late_slope(grid, dist[:, j]) if reached else None,
                   rate)
            measured = measured_crossover(grid, dist[:, j], rate, cfg.within) if grid[-1] >= 2 * crossover else None
            _claim(metrics, claims, f"{key}.crossover_ratio", measured, crossover)

    token_eps = float(np.sqrt(n_f * cfg.d))  # eps meets the coordinate gradient 2 e^{beta r} / sqrt(n_f d)
    for eps in cfg.eps_values:
        run = [logistic.Run(f"NPO beta={EPS_BETA:g}", "NPO", MethodParams(beta=EPS_BETA), cfg.eps_lr)]
        grid, dist = distances(run, world, theta_init, cfg.eps_steps, cfg, f"adam-rates: Adam eps={eps:g}",
                               optimizer="adamw", adam_betas=(BETA1, cfg.eps_beta2), adam_eps=eps)
        onset = theory.adam_eps_onset_step(EPS_BETA, cfg.eps_beta2, eps * token_eps) if eps > 0 else None
        record(f"adam eps={eps:g}", grid, dist, [run[0].label], eps=eps, onset=onset)
        _claim(metrics, claims, f"adam.eps={eps:g}.npo.beta={EPS_BETA:g}.third_regime_log_slope_ratio",
               log_slope(grid, dist[:, 0], grid[-1] / 2), theory.npo_gd_log_slope(EPS_BETA, n_f))

    series = {"n_f": n_f, "d": cfg.d, "betas": list(cfg.betas), "beta2s": list(cfg.beta2s),
              "eps_values": list(cfg.eps_values), "eps_beta2": cfg.eps_beta2, "within": cfg.within,
              "adam_lr": cfg.adam_lr, "curves": curves}
    return metrics, {"claims": claims, **series}


def sequence_row(cfg: Config) -> tuple[dict, dict]:
    """NPO and SimNPO (beta 1) on two sequences of each length under Adam: per-token late rates."""
    long, short = cfg.sequence_lengths
    lengths = [long, long, short, short]
    runs = [logistic_sequences.SequenceRun(m, MethodParams(beta=1.0)) for m in ("NPO", "SimNPO")]
    steps = cfg.sequence_steps
    record_at = record_grid(steps, cfg.n_record)
    moved = -logistic_sequences.simulate(runs, lengths, steps, record_at, lr=cfg.sequence_lr,
                                         beta2=cfg.sequence_beta2)  # (records, runs, tokens)
    first_short = 2 * long
    metrics, claims, rates = {}, {}, {}
    for j, run in enumerate(runs):
        per_token = [late_slope(record_at, moved[:, j, token]) for token in range(moved.shape[-1])]
        rate_long, rate_short = np.mean(per_token[:first_short]), np.mean(per_token[first_short:])
        predicted = theory.per_token_adam_rate(run.method, 1.0, cfg.sequence_beta2, [long, short])
        key = f"{run.method.lower()}.adam.per_token_rate_ratio_short_over_long"
        metrics[key] = float(rate_short / rate_long)
        claims[key] = {"measured": metrics[key], "predicted": float(predicted[1] / predicted[0])}
        rates[run.method] = {"measured": [float(rate_long), float(rate_short)], "predicted": predicted.tolist()}
    series = {"lengths": [long, short], "beta2": cfg.sequence_beta2, "lr": cfg.sequence_lr, "steps": steps,
              "rates": rates, "claims": claims}
    return metrics, series


@contextmanager
def one_thread():
    """torch on one intra-op thread inside, restored after: a step here is ~20 ops on tensors of a few thousand
    entries, which a second thread only slows down (on a busy machine, by waiting for it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run(cfg: Config) -> Result:
    device = resolve_device(cfg.device)
    with one_thread():
        metrics, theorem = theorem_rows(cfg, device)
        seq_metrics, sequences = sequence_row(cfg)
    return Result(metrics={**metrics, **seq_metrics}, series={"theorem": theorem, "sequences": sequences})


# ------------------------------------------------------------------ figure --------------------------------------


def _anchored(t, T: float, end: float, gap) -> np.ndarray:
    """A prediction drawn through the run's last record: end - gap(t) with gap(T) = 0."""
    return end - np.array([gap(s) for s in t])


def _log_line(t, T: float, end: float, slope: float) -> np.ndarray:
    """end - slope ln(T / t): a line in ln t through (T, end)."""
    return end - slope * np.log(T / np.asarray(t, float))


def _adam_curve_prediction(t, dist, beta: float, beta2: float, n_f: int) -> np.ndarray:
    """The C = 0 curve (``theory.adam``) through the last record: D(T) - sqrt(n_f) x mean rate over [t, T] x (T - t)."""
    T = t[-1]
    rate = lambda s: np.sqrt(n_f) * theory.npo_adam_window_rate(s, T, beta, beta2) * (T - s) if s < T else 0.0
    return _anchored(t, T, dist[-1], rate)


def _beta2_colors(beta2s) -> dict:
    cmap = plt.get_cmap("plasma")
    return {b: cmap(0.1 + 0.7 * i / max(1, len(beta2s) - 1)) for i, b in enumerate(beta2s)}


def _distance_panels(ax_adam, ax_other, th: dict) -> None:
    curves, n_f, sqrt_nf = th["curves"], th["n_f"], np.sqrt(th["n_f"])
    beta = EPS_BETA if EPS_BETA in th["betas"] else th["betas"][0]
    label = f"NPO beta={beta:g}"
    for beta2, color in _beta2_colors(th["beta2s"]).items():
        c = curves[f"adam beta2={beta2:g}"]
        t, dist = np.asarray(c["t"], float), np.asarray(c["distance"][label], float)
        short = "" if c["late_reached"] else " (run ends before its crossover)"
        ax_adam.plot(t, dist, color=color, lw=2.2, label=f"Adam beta2={beta2:g}{short}")
        ax_adam.plot(t, _adam_curve_prediction(t, dist, beta, beta2, n_f), color="k", lw=0.9, ls="--")
        if c["late_reached"]:  # a late line through the end of a run still in its early regime would mislead
            ax_adam.plot(t, dist[-1] + theory.npo_adam_distance_rate(beta, beta2, n_f) * (t - t[-1]), color=color,
                         lw=0.9, ls=":")
        ax_adam.axvline(c["crossover"], color=color, lw=0.8, ls="-.")
    ax_adam.plot([], [], color="k", lw=0.9, ls="--", label="theory: log-like start onto the line (C = 0)")
    ax_adam.plot([], [], color="0.3", lw=0.9, ls=":", label="late line, slope sqrt(n_f)(-ln beta2)/(2 beta)")
    ax_adam.plot([], [], color="0.3", lw=0.8, ls="-.", label=f"predicted crossover (rate within {th['within']:.0%})")
    ax_adam.set(xscale="log", yscale="log", xlabel="step t", ylabel="||theta_t - theta_init||_{X^T X}",
                ylim=(0.5, None))
    ax_adam.legend(fontsize=7.5, loc="lower right")

    gd = curves["gd"]
    t, dist = np.asarray(gd["t"], float), np.asarray(gd["distance"][label], float)
    ax_other.plot(t, dist, color=METHOD_COLORS["NPO"], lw=2.2, label=f"GD (lr {gd['lr']:g})")
    ax_other.plot(t, _log_line(t, t[-1], dist[-1], sqrt_nf / beta), color="k", lw=0.9, ls="--",
                  label="log lines, slope sqrt(n_f)/beta in ln t")
    sign = curves["signsgd"]
    t, dist = np.asarray(sign["t"], float), np.asarray(sign["distance"][label], float)
    ax_other.plot(t, dist, color="tab:brown", lw=2.2, label=f"sign descent (lr {sign['lr']:g})")
    ax_other.plot(t, sign["rate"] * t, color="k", lw=0.9, ls=":", label="lines, slope lr ||X sign(X^T w)||")
    eps_colors = plt.get_cmap("Greens")(np.linspace(0.45, 0.95, len(th["eps_values"])))
    for eps, color in zip(th["eps_values"], eps_colors, strict=True):
        c = curves[f"adam eps={eps:g}"]
        t, dist = np.asarray(c["t"], float), np.asarray(c["distance"][f"NPO beta={EPS_BETA:g}"], float)
        ax_other.plot(t, dist, color=color, lw=2.2, label=f"Adam beta2={th['eps_beta2']:g}, eps={eps:g}")
        if c["onset"] is not None:
            late = t >= c["onset"]
            ax_other.plot(t[late], _log_line(t[late], t[-1], dist[-1], sqrt_nf / EPS_BETA), color="k", lw=0.9,
                          ls="--")
            ax_other.axvline(c["onset"], color=color, lw=0.8, ls="-.")
        else:
            rate = theory.npo_adam_distance_rate(EPS_BETA, th["eps_beta2"], n_f)
            ax_other.plot(t, dist[-1] + rate * (t - t[-1]), color="k", lw=0.9, ls=":")
    ax_other.plot([], [], color="0.3", lw=0.8, ls="-.", label="eps onset estimate")
    ax_other.set(xscale="log", yscale="log", xlabel="step t", ylabel="||theta_t - theta_init||_{X^T X}",
                 ylim=(0.5, None))
    ax_other.legend(fontsize=7.5, loc="upper left")


def _collapse_panel(ax, th: dict) -> None:
    """Adam's local slope over the late rate against t / t_c: every run on one curve, the C = 0 profile."""
    colors = beta_colors(th["betas"])
    for beta2 in th["beta2s"]:
        c = curves = th["curves"][f"adam beta2={beta2:g}"]
        for beta in th["betas"]:
            mid, slope = local_slopes(curves["t"], c["distance"][f"NPO beta={beta:g}"])
            rate = theory.npo_adam_distance_rate(beta, beta2, th["n_f"])
            ax.plot(mid / c["crossover"], slope / rate, color=colors[beta], lw=1.2, alpha=0.85,
                    label=f"beta={beta:g}" if beta2 == th["beta2s"][0] else None)
    x = np.geomspace(1e-3, 4, 200)
    crossover = theory.npo_adam_crossover_step(0.99, th["within"])
    ax.plot(x, theory.npo_adam_rate_profile(x * crossover, 0.99), color="k", lw=1.4, ls="--",
            label="theory q / (q - arctan q)")
    ax.axhspan(1 - th["within"], 1 + th["within"], color="0.5", alpha=0.15, lw=0)
    ax.axvline(1, color="0.3", lw=0.8, ls="-.")
    ax.set(xscale="log", yscale="log", xlabel="t / predicted crossover t_c (all beta2)",
           ylabel="local dD/dt / (sqrt(n_f)(-ln beta2)/(2 beta))", ylim=(0.3, 80))
    ax.legend(fontsize=7.5, loc="upper right")


def _scatter(ax, claims: dict, groups: dict, what: str) -> None:
    """measured against predicted for each claim key containing a group's text, with y = x."""
    values = []
    for text, (marker, color, label) in groups.items():
        pairs = [(c["predicted"], c["measured"]) for key, c in claims.items() if text in key and c["measured"]]
        if pairs:
            x, y = np.array(pairs).T
            hollow = marker == "s"  # GA's square around the sign-descent triangles it would hide
            ax.scatter(x, y, marker=marker, s=70 if hollow else 36, label=label, zorder=3,
                       facecolors="none" if hollow else color, edgecolors=color, linewidths=1.5)
            values += [*x, *y]
    low, high = min(values) / 1.5, max(values) * 1.5
    ax.plot([low, high], [low, high], color="k", lw=0.9, ls="--", label="measured = predicted")
    ax.set(xscale="log", yscale="log", xlim=(low, high), ylim=(low, high), xlabel=f"predicted {what}",
           ylabel=f"measured {what}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=7.5, loc="upper left")


def _per_token_panel(ax, seq: dict) -> None:
    lengths = np.asarray(seq["lengths"], float)
    grid = np.geomspace(1, 1.5 * lengths.max(), 50)
    for method in ("NPO", "SimNPO"):
        color = METHOD_COLORS[method]
        ax.plot(lengths, seq["rates"][method]["measured"], "o", color=color, ms=8, label=f"{method} measured")
        ax.plot(grid, theory.per_token_adam_rate(method, 1.0, seq["beta2"], grid), color=color, lw=1.0, ls="--",
                label=f"{method} theory" + (" rho/|y|" if method == "NPO" else " rho"))
    ax.set(xscale="log", yscale="log", xlabel="|y| (tokens in the sequence)",
           ylabel="late rate per token (logit per step)")
    ax.legend(fontsize=8, loc="lower left")


def plot(result: Result):
    th, seq = result.series["theorem"], result.series["sequences"]
    fig, axes = plt.subplots(2, 3, figsize=(18, 10.5), constrained_layout=True)
    _distance_panels(axes[0][0], axes[0][1], th)
    _collapse_panel(axes[0][2], th)
    colors = beta_colors(th["betas"])
    late = {f"beta={b:g}.beta2": ("o", colors[b], f"Adam NPO beta={b:g}") for b in th["betas"]}
    slopes = {k: v for k, v in th["claims"].items() if k.endswith("slope_ratio") and "log_slope" not in k}
    _scatter(axes[1][0], slopes, {**late, "adam.ga.": ("s", METHOD_COLORS["GA"], "Adam GA"),
                                  "signsgd.": ("^", "tab:brown", "sign descent NPO")}, "late slope")
    _scatter(axes[1][1], {k: v for k, v in th["claims"].items() if k.endswith("crossover_ratio")},
             {f"beta={b:g}.": ("o", colors[b], f"NPO beta={b:g}") for b in th["betas"]}, "crossover step t_c")
    _per_token_panel(axes[1][2], seq)
    metrics = result.metrics
    gd = ", ".join(f"{metrics[f'gd.npo.beta={b:g}.log_slope_ratio']:.2f}" for b in th["betas"])
    eps = ", ".join(f"eps={e:g}: {metrics[f'adam.eps={e:g}.npo.beta={EPS_BETA:g}.third_regime_log_slope_ratio']:.2f}"
                    for e in th["eps_values"])
    note(axes[0][1], 0.98, 0.03, f"dD/d ln t / (sqrt(n_f)/beta), measured / predicted:\nGD (beta {th['betas']}): "
         f"{gd}\nAdam third regime (last half): {eps}", ha="right", va="bottom", fontsize=7.5)
    beta = EPS_BETA if EPS_BETA in th["betas"] else th["betas"][0]
    panel_label(axes[0][0], f"(a) NPO beta={beta:g} under Adam (lr {th['adam_lr']:g}, eps 0): log-like, then linear")
    panel_label(axes[0][1], f"(b) NPO beta={EPS_BETA:g}: GD log, sign descent linear, Adam's eps brings log back")
    panel_label(axes[0][2], "(c) Adam's local rate over the late rate: one curve in t / t_c")
    panel_label(axes[1][0], "(d) late slope dD/dt: measured vs predicted")
    panel_label(axes[1][1], f"(e) crossover step (rate stays within {th['within']:.0%}): measured vs predicted")
    panel_label(axes[1][2], f"(f) per-token late rate under Adam (beta2 {seq['beta2']:g}) against |y|")
    fig.suptitle(f"Theorem 2's setting (n_f={th['n_f']}, d={th['d']}) under GD, Adam and sign descent: "
                 "the optimizer sets NPO's rate", fontsize=12)
    return fig


EXPERIMENT = Experiment(
    name="adam-rates",
    claim="Theorem 2's logistic setting under GD, Adam and sign descent: NPO's distance is logarithmic under GD, "
          "under Adam log-like until t_c = 5.6/-ln(beta2) then linear at sqrt(n_f)(-ln beta2)/(2 beta) whatever "
          "the lr, logarithmic again once the gradient is below eps, linear under sign descent; per token, "
          "Adam's late rate goes like 1/|y| for NPO and is flat in |y| for SimNPO (theory.adam).",
    presets=PRESETS, run=run, plot=plot,
)
