"""npo-synthetic: the NPO paper's synthetic experiments (Zhang et al. 2024, Sec. 4, App. D; Figs 3, 4, 9).

Claim: on a random-features logistic model, NPO and NPO+RT reach the retrained model's predictions on the
forget distribution far sooner than GA, NPO+RT keeps the retain distribution where it was while GA and GA+RT
collapse it, and the forget KL to the reference grows linearly for GA but stays bounded (logarithmic) for NPO.
As beta -> 0, NPO's retain-vs-forget path approaches GA's; a larger beta gives a lower path (Fig. 3).

Setting (``sims.logistic``): d = 16, p = 128 ReLU features, n_f = 200, n_r = 1000, alpha in {1, 0}, float64;
pi_ref and pi_retr by full-batch GD (lr 0.05, 20000 steps, from 0); unlearning by full-batch GD for 2000 steps
with the learning rates and betas of the paper's Table 1 (``TABLE1``); metrics on 1000 fresh evaluation
points per distribution every 25 steps; curves averaged over independent draws (5 in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch

from sims import logistic
from sims.experiment import Experiment, Result, UnlearningOptimizer, mean_std
from sims.plotting import METHOD_COLORS, band, beta_colors, panel_label, path
from unlearn.config import require_at_least_one, require_positive
from unlearn.metrics.curves import value_at_crossing
from unlearn.models.logistic import random_feature_matrix
from unlearn.objectives import METHODS, MethodParams
from unlearn.rng import generator
from unlearn.train import resolve_device

# NPO paper Table 1: (learning rate, beta) per alpha. GA+KL and NPO+KL are not in the table; they take the
# learning rate (and beta) of GA and NPO, their closest rows. beta is unused by GA-family methods.
TABLE1 = {
    1.0: {"GA": (5e-4, 1.0), "GA+RT": (5e-4, 1.0), "GA+KL": (5e-4, 1.0), "IDK+RT": (5e-4, 1.0),
          "NPO": (5e-3, 1.0), "NPO+RT": (5e-3, 1.0), "NPO+KL": (5e-3, 1.0), "DPO+RT": (5e-3, 0.1)},
    0.0: {"GA": (1e-4, 1.0), "GA+RT": (1e-4, 1.0), "GA+KL": (1e-4, 1.0), "IDK+RT": (1e-4, 1.0),
          "NPO": (5e-2, 10.0), "NPO+RT": (5e-2, 10.0), "NPO+KL": (5e-2, 10.0), "DPO+RT": (5e-2, 5.0)},
}
METRICS = ("forget_dist", "retain_dist", "forget_kl")
SWEEP_FORGET_LEVEL = 0.14  # Fig. 3 is read at forget distance 0.14
PAPER_LAST_MARKER = 1900  # the paper's plots mark every 100 steps up to 1900

# Readings of the paper's figures (NPO paper Figs 3, 4, 9); its "final" readings are at its last marker, step
# 1900, so they sit beside our step-1900 values (``*.step1900.*``; ``*.final.*`` is the run's end, step 2000).
PAPER = {
    "alpha1.forget_dist.start": 1.70, "alpha1.retain_dist.start": 0.016, "alpha0.retain_dist.start": 0.06,
    "alpha1.forget_dist.step200.NPO": 0.04, "alpha1.forget_dist.step200.NPO+RT": 0.04,
    "alpha1.forget_dist.step200.GA": 1.65, "alpha1.forget_dist.step200.GA+RT": 1.65,
    **{f"alpha1.forget_dist.step1900.{m}": 0.0 for m in ("GA", "GA+RT", "NPO", "NPO+RT", "DPO+RT")},
    "alpha1.forget_dist.step1900.IDK+RT": 0.81,
    "alpha1.retain_dist.step1900.NPO+RT": 0.016, "alpha1.retain_dist.step1900.IDK+RT": 0.016,
    "alpha1.retain_dist.step1900.DPO+RT": 0.04, "alpha1.retain_dist.step1900.NPO": 0.17,
    "alpha1.retain_dist.step1900.GA+RT": 0.22,
    "alpha1.forget_kl.step1900.GA": 24.0, "alpha1.forget_kl.step1900.GA+RT": 24.0,
    "alpha1.forget_kl.step1900.DPO+RT": 5.5, "alpha1.forget_kl.step1900.NPO": 4.8,
    "alpha1.forget_kl.step1900.NPO+RT": 4.4, "alpha1.forget_kl.step1900.IDK+RT": 0.0,
    "alpha0.retain_dist.step1900.NPO+RT": 0.017, "alpha0.retain_dist.step1900.DPO+RT": 0.023,
    "alpha0.retain_dist.step1900.NPO": 0.038, "alpha0.retain_dist.step1900.IDK+RT": 0.066,
    "alpha0.retain_dist.step1900.GA": 0.175, "alpha0.retain_dist.step1900.GA+RT": 0.125,
    "alpha0.forget_kl.step1900.GA+RT": 0.18, "alpha0.forget_kl.step1900.NPO": 0.072,
    "alpha0.forget_kl.step1900.DPO+RT": 0.058, "alpha0.forget_kl.step1900.NPO+RT": 0.051,
    "alpha0.forget_kl.step1900.IDK+RT": 0.0,
    "beta_sweep.retain_dist_at_forget_0.14.GA": 0.09, "beta_sweep.retain_dist_at_forget_0.14.beta=0.01": 0.09,
    "beta_sweep.retain_dist_at_forget_0.14.beta=0.1": 0.08, "beta_sweep.retain_dist_at_forget_0.14.beta=0.2": 0.075,
    "beta_sweep.retain_dist_at_forget_0.14.beta=0.5": 0.06, "beta_sweep.retain_dist_at_forget_0.14.beta=1": 0.055,
}


@dataclass(frozen=True)
class Config(UnlearningOptimizer):
    """Settings of ``npo-synthetic``; defaults are the paper's (preset "full"). The unlearning runs' optimizer
    (``sims.experiment.UnlearningOptimizer``) defaults to the paper's full-batch gradient descent; pi_ref and
    pi_retr are always fitted by gradient descent (and cached)."""

    seed: int = 0
    seeds: int = 5  # independent draws of data, features and models, averaged
    methods: tuple[str, ...] = ("GA", "GA+RT", "GA+KL", "IDK+RT", "DPO+RT", "NPO", "NPO+RT", "NPO+KL")
    alphas: tuple[float, ...] = (1.0, 0.0)
    d: int = 16
    n_features: int = 128
    n_forget: int = 200
    n_retain: int = 1000
    n_eval: int = 1000
    pretrain_lr: float = 0.05
    pretrain_steps: int = 20000
    steps: int = 2000
    eval_every: int = 25
    lr_multiplier: float = 1.0  # multiplies every Table-1 learning rate (sensitivity checks)
    sweep_betas: tuple[float, ...] = (0.01, 0.1, 0.2, 0.5, 1.0)  # none: no Fig. 3 sweep
    sweep_lr: float = 5e-4
    sweep_steps: int = 10000
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self):
        if not self.methods or not self.alphas:
            raise ValueError("methods and alphas must each name at least one entry")
        for name in self.methods:
            if name not in METHODS:
                raise ValueError(f"methods: unknown method {name!r}; valid methods: {', '.join(METHODS)}")
            if name not in TABLE1[1.0]:
                valid = ", ".join(TABLE1[1.0])
                raise ValueError(f"methods: {name!r} has no Table-1 learning rate; choose from {valid}")
        for alpha in self.alphas:
            if alpha not in TABLE1:
                raise ValueError(f"alphas: {alpha!r} is not one of the paper's settings {sorted(TABLE1)}")
        require_at_least_one(self, "seeds", "d", "n_features", "n_forget", "n_retain", "n_eval", "pretrain_steps",
                             "steps", "eval_every", "sweep_steps")
        require_positive(self, "pretrain_lr", "sweep_lr", "lr_multiplier")
        for beta in self.sweep_betas:
            if not beta > 0:
                raise ValueError(f"sweep_betas: every beta must be > 0, got {beta!r}")
        self.check_optimizer()


PRESETS = {
    "full": Config(),
    "fast": Config(seeds=1, sweep_betas=(0.01, 0.1, 1.0), sweep_steps=3000),
}


def draw_worlds(cfg: Config, device: torch.device) -> list[tuple[float, int, logistic.LogisticData]]:
    """One independent draw of data and features per (alpha, replicate), featurized, on ``device``."""
    draws = []
    for alpha in cfg.alphas:
        for replicate in range(cfg.seeds):
            g = generator(cfg.seed, "npo-synthetic", alpha, replicate)
            W = random_feature_matrix(cfg.d, cfg.n_features, g)
            raw = logistic.sample_data(alpha, cfg.d, cfg.n_forget, cfg.n_retain, cfg.n_eval, g)
            draws.append((alpha, replicate, raw.featurize(W).to(device)))
    return draws


def pretrained_worlds(cfg: Config, device: torch.device):
    """``draw_worlds`` with their pi_ref and pi_retr through the shared model cache, keyed by the config that drew
    them: (draws, theta_ref, theta_retr, ref_grad_norm, retr_grad_norm), parameters stacked over draws."""
    draws = draw_worlds(cfg, device)
    data_keys = ("seed", "d", "n_features", "n_forget", "n_retain", "n_eval")
    keys = [{"world": "npo-synthetic", "alpha": a, "replicate": r, **{k: getattr(cfg, k) for k in data_keys}}
            for a, r, _ in draws]
    trained = logistic.pretrain_cached([w for _, _, w in draws], keys, cfg.pretrain_lr, cfg.pretrain_steps,
                                       cfg.progress)
    return (draws, *trained)


def _unlearn(cfg: Config, runs: list[logistic.Run], worlds, theta_ref, theta_retr, steps: int, name: str):
    """Every run on every world, side by side. Returns (eval steps, {run label: {metric: {"mean", "std"}}})
    with mean and std over the worlds (independent draws)."""
    history = logistic.unlearn(runs, worlds, theta_ref, theta_retr, steps, cfg.eval_every, cfg.progress, name,
                               **cfg.train_options())
    k = len(runs)
    evals = {m: np.asarray(history.evals[m]) for m in METRICS}  # (eval steps, worlds * runs)
    curves = {run.label: {m: mean_std(evals[m][:, j::k].T) for m in METRICS} for j, run in enumerate(runs)}
    return history.eval_steps, curves


def _at(steps, curve, step) -> float:
    return float(np.interp(step, steps, curve["mean"]))


def late_increment_ratio(steps, curve, total: int) -> float:
    """(c(T) - c(3T/4)) / (c(3T/4) - c(T/2)): 1 for linear growth, log(4/3)/log(3/2) = 0.71 for c = log t."""
    a, b, c = (_at(steps, curve, s) for s in (total // 2, 3 * total // 4, total))
    return (c - b) / (b - a) if b != a else float("nan")


def run(cfg: Config) -> Result:
    device = resolve_device(cfg.device)
    draws, theta_ref, theta_retr, norm_ref, norm_retr = pretrained_worlds(cfg, device)
    metrics: dict[str, float | None] = {}
    series: dict = {}

    def worlds_at(alpha):
        index = [i for i, (a, _, _) in enumerate(draws) if a == alpha]
        return index, [draws[i][2] for i in index], theta_ref[index], theta_retr[index]

    for alpha in cfg.alphas:  # Figs 4 and 9; Table 1 sets lr and beta per alpha
        key = f"alpha{alpha:g}"
        index, worlds, ref, retr = worlds_at(alpha)
        runs = [logistic.Run(name, name, MethodParams(beta=TABLE1[alpha][name][1]),
                             TABLE1[alpha][name][0] * cfg.lr_multiplier) for name in cfg.methods]
        steps, per_run = _unlearn(cfg, runs, worlds, ref, retr, cfg.steps, f"unlearn alpha={alpha:g}")
        curves = {m: {name: per_run[name][m] for name in cfg.methods} for m in METRICS}
        series[key] = {"steps": steps, **curves}
        metrics[f"{key}.pretrain.ref_grad_norm.max"] = float(norm_ref[index].max())
        metrics[f"{key}.pretrain.retr_grad_norm.max"] = float(norm_retr[index].max())
        first = cfg.methods[0]
        metrics[f"{key}.forget_dist.start"] = curves["forget_dist"][first]["mean"][0]
        metrics[f"{key}.retain_dist.start"] = curves["retain_dist"][first]["mean"][0]
        for name in cfg.methods:
            metrics[f"{key}.forget_dist.step200.{name}"] = _at(steps, curves["forget_dist"][name], 200)
            for m in METRICS:
                metrics[f"{key}.{m}.final.{name}"] = curves[m][name]["mean"][-1]
                if cfg.steps >= PAPER_LAST_MARKER:  # where the paper's "final" readings were taken
                    at_marker = _at(steps, curves[m][name], PAPER_LAST_MARKER)
                    metrics[f"{key}.{m}.step{PAPER_LAST_MARKER}.{name}"] = at_marker
            metrics[f"{key}.forget_kl.late_increment_ratio.{name}"] = late_increment_ratio(
                steps, curves["forget_kl"][name], cfg.steps)

    if cfg.sweep_betas and 1.0 in cfg.alphas:  # Fig. 3: GA and NPO at one learning rate, alpha = 1
        _, worlds, ref, retr = worlds_at(1.0)
        runs = [logistic.Run("GA", "GA", MethodParams(), cfg.sweep_lr)] + [
            logistic.Run(f"beta={b:g}", "NPO", MethodParams(beta=b), cfg.sweep_lr) for b in cfg.sweep_betas]
        steps, per_run = _unlearn(cfg, runs, worlds, ref, retr, cfg.sweep_steps, "beta sweep")
        series["beta_sweep"] = {"steps": steps, "betas": list(cfg.sweep_betas), **per_run}
        for label, curves in per_run.items():
            metrics[f"beta_sweep.retain_dist_at_forget_{SWEEP_FORGET_LEVEL}.{label}"] = value_at_crossing(
                curves["forget_dist"]["mean"], curves["retain_dist"]["mean"], SWEEP_FORGET_LEVEL)
    paper = {k: v for k, v in PAPER.items() if k in metrics}
    return Result(metrics=metrics, series=series, paper=paper)


def plot(result: Result):
    """Figs 4a/4b (rows 1-2: forget distance, retain distance, Pareto), Fig. 9 and Fig. 3 (row 3)."""
    s = result.series
    alphas = [k for k in ("alpha1", "alpha0") if k in s]
    fig, axes = plt.subplots(3, 3, figsize=(14, 12), constrained_layout=True)
    for row, key in enumerate(alphas):
        steps, alpha = s[key]["steps"], key.removeprefix("alpha")
        ax_f, ax_r, ax_p = axes[row]
        for name, curve in s[key]["forget_dist"].items():
            color = METHOD_COLORS[name]
            band(ax_f, steps, curve, color, name)
            band(ax_r, steps, s[key]["retain_dist"][name], color, name)
            path(ax_p, curve, s[key]["retain_dist"][name], color, name)
        panel_label(ax_f, f"({'ab'[row]}1) alpha={alpha}: forget distance")
        panel_label(ax_r, f"({'ab'[row]}2) alpha={alpha}: retain distance")
        panel_label(ax_p, f"({'ab'[row]}3) alpha={alpha}: retain vs forget (o = start)")
        ax_f.set(xlabel="unlearning step", ylabel="E_forget KL(pi_retr || pi_theta)")
        ax_r.set(xlabel="unlearning step", ylabel="E_retain KL(pi_retr || pi_theta)", yscale="log")
        ax_p.set(xlabel="forget distance", ylabel="retain distance", yscale="log")
        ax_f.legend(fontsize=7, ncol=2)
        ax_kl = axes[2][row]
        for name, curve in s[key]["forget_kl"].items():
            band(ax_kl, steps, curve, METHOD_COLORS[name], name)
        panel_label(ax_kl, f"(c{row + 1}) alpha={alpha}: forget KL to the reference (Fig. 9)")
        ax_kl.set(xlabel="unlearning step", ylabel="E_forget KL(pi_ref || pi_theta)")
        ax_kl.legend(fontsize=7, ncol=2)
    ax = axes[2][2]
    if "beta_sweep" in s:
        sweep = s["beta_sweep"]
        colors = beta_colors(sweep["betas"])
        for beta in sweep["betas"]:
            c = sweep[f"beta={beta:g}"]
            path(ax, c["forget_dist"], c["retain_dist"], colors[beta], f"NPO beta={beta:g}")
        path(ax, sweep["GA"]["forget_dist"], sweep["GA"]["retain_dist"], METHOD_COLORS["GA"], "GA", ls="--", zorder=3)
        ax.axvline(SWEEP_FORGET_LEVEL, color="0.6", lw=0.8, ls=":")
        ax.text(SWEEP_FORGET_LEVEL, 0.24, f" forget = {SWEEP_FORGET_LEVEL}", fontsize=7, color="0.4", va="top")
        ax.set(xlabel="forget distance", ylabel="retain distance (clipped at 0.25)", ylim=(0, 0.25), xlim=(0, 1.0))
        ax.legend(fontsize=7)
    panel_label(ax, "(c3) alpha=1, lr 5e-4: beta -> 0 recovers GA (Fig. 3)")
    for ax in axes.flat[len(alphas) * 3:6]:
        ax.set_visible(False)
    fig.suptitle("NPO synthetic (Zhang et al. 2024, Figs 3, 4, 9): random-features logistic model", fontsize=12)
    return fig


EXPERIMENT = Experiment(
    name="npo-synthetic",
    claim="Logistic toy: NPO forgets faster than GA, keeps retain error flat with RT, and its forget KL grows "
          "logarithmically where GA's grows linearly (NPO paper Figs 3, 4, 9).",
    presets=PRESETS, run=run, plot=plot,
)
