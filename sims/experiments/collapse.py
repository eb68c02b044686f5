"""collapse: GA, NPO and SimNPO run long on the Markov transformer (NPO paper Sec. 5 and Theorem 2; SimNPO
paper Sec. 4), the rates of the theory seen on a transformer.

Claim. Unlearning the markov-length forget set for 2000 steps (one epoch of batch 4, AdamW lr 5e-4, the
paper's unlearning optimiser): GA's forget NLL grows without bound at a steady (here even accelerating) rate,
NPO's only logarithmically in the step (its weight 2 sigma(beta (logp - logp_ref)) vanishes as the forget
likelihood falls: Theorem 2's mechanism), SimNPO's logarithmically too. None of them has a retain term, and
all three take the retain distribution and the output entropy with them: GA within ~100 steps and without
bound, NPO soon after (its weight shrinks, but Adam rescales the small gradient), SimNPO slowest; by the end
each samples a single repeated state.

Seeds. Each method runs ``seeds`` times, each run on its own batch order (stream (seed, "markov-unlearn",
method, replicate)) from the one cached pretrained model; all 3 x seeds runs train side by side as one ensemble
(``sims.markov.unlearn_runs``). To keep the ensemble's cost down, every run is evaluated every ``eval_every``
steps (100 in the full preset) on the first ``eval_limit`` sequences (250) of each test split: the forget NLL
(mean per-token -log p on Forget1 + Forget2 test), the retain KL (per-token KL to the true transitions, as in
markov-length) and the mean entropy of the next-state distribution on retain test (log 10 = 2.30 at most).
Curves and X.*.final are means over seeds.

Rates (``rate_statistics``), over steps >= ``fit_from``, each the value on the seed-mean forget-NLL curve with
``.ci_low`` / ``.ci_high``, its bootstrap 95% interval over seeds (``unlearn.metrics.curves.bootstrap_interval``):
X.forget_nll_acceleration, the late/early slope ratio (``acceleration``: 1 = linear, above 1 accelerating,
below 1 slowing down); X.forget_nll_late_slope, the slope over the last half (NLL per token per step);
X.forget_nll_growth_exponent, the slope of log(NLL_t - NLL_0) against log t over the whole range, and
X.forget_nll_growth_exponent.tA-B over each of ``growth_windows`` (1 = linear, 2 = quadratic, falling toward 0
= logarithmic). The claims (``claim_checks``) read the intervals: GA's ratio and last-window exponent above 1,
NPO's and SimNPO's below 1. As information only, the R^2 of fits of the seed-mean curve against t and log t
(``rate_fits``; a line beats a log for any convex curve, so this race cannot tell linear from accelerating).

Under AdamW every parameter moves ~lr per step whatever the gradient's scale, so GA's logits grow like a
product of linearly growing weights: its NLL is super-linear (exponent ~1.5-2), steadier than NPO's but not the
single-layer straight line of Theorem 2. Plain SGD makes the point more sharply and is not a usable baseline:
GA's loss reaches inf within 15-60 steps at lr 0.005-0.05 on this model (positive feedback through the layers).
The SimNPO paper gives no numbers for this study, so ``paper`` is empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from sims import markov
from sims.experiment import Experiment, Result, member_curves, method_params
from sims.plotting import METHOD_COLORS, note, panel_label
from unlearn.config import require_at_least_one, require_positive
from unlearn.metrics import tokens
from unlearn.metrics.curves import (
    acceleration,
    bootstrap_interval,
    fit_r2,
    interval_supports,
    local_growth_exponents,
    rate_fits,
)
from unlearn.rng import generator
from unlearn.train import resolve_device

COMPARED = ("GA", "NPO", "SimNPO")  # the methods of the figure
N_SAMPLES = 6  # generated sequences shown per model


@dataclass(frozen=True)
class Config(markov.UnlearningSetup):
    """Long unlearning runs on the shared Markov setup (``sims.markov.UnlearningSetup``; default: markov-length's)."""

    npo_beta: float = 0.2
    simnpo_beta: float = 4.0
    steps: int = 2000  # capped at one epoch over the forget set (8000 sequences / batch 4 = 2000)
    eval_every: int = 100
    eval_limit: int | None = 250
    fit_from: int = 100
    seeds: int = 5  # batch orders per method (the pretrained model is shared), all in one ensemble

    def __post_init__(self):
        super().__post_init__()
        require_at_least_one(self, "eval_every")
        require_at_least_one(self, "seeds")
        require_positive(self, "npo_beta", "simnpo_beta")
        if not 0 <= self.fit_from < self.steps:
            raise ValueError(f"fit_from must lie in [0, steps), got {self.fit_from}")


PRESETS = {
    "full": Config(),
    # fast: the small setup; 800 steps is one epoch over its 3200 forget sequences.
    "fast": Config(**markov.FAST_SETUP, steps=800, eval_every=40, eval_limit=150, fit_from=80),
}


def collapse_evaluator(world: markov.MarkovWorld, device, limit: int | None):
    """(model, step) -> {"forget_nll", "retain_kl", "entropy"} (module docstring)."""
    forget = markov.Split.concat([world[f"forget{k}_test"].take(slice(0, limit)) for k in (1, 2)]).to(device)
    retain = world["retain_test"].take(slice(0, limit)).to(device)

    def evaluate(model, step):
        stats = tokens.per_sequence_stats(model, forget)
        on_retain = tokens.kl_and_entropy(model, retain)
        return {"forget_nll": (-stats.logp.sum(-1) / stats.n_tokens.sum(-1)).tolist(),
                "retain_kl": on_retain["kl"], "entropy": on_retain["entropy"]}

    return evaluate


def growth_fits(steps, nll, fit_from: int) -> dict[str, float]:
    """linear_r2, log_r2 of NLL against t and log t, the exponent of NLL_t - NLL_0 against t, and the acceleration
    (late/early slope ratio), for t >= fit_from and over the evaluations above the start (NLL_t > NLL_0, where
    log(NLL_t - NLL_0) exists; every fit uses the same points)."""
    t, y = np.asarray(steps, float), np.asarray(nll, float)
    keep = (t >= max(fit_from, 1)) & (y > y[0])
    fits = rate_fits(t[keep], y[keep])
    exponent = fit_r2(np.log(t[keep]), np.log(y[keep] - y[0]))[1] if keep.sum() >= 3 else float("nan")
    return {"linear_r2": fits["linear_r2"], "log_r2": fits["log_r2"], "growth_exponent": exponent,
            "acceleration": acceleration(t[keep], y[keep], t[keep][0]) if keep.any() else None}


def growth_windows(fit_from: int, steps: int) -> list[tuple[int, int]]:
    """The windows of the local growth exponents: [fit_from, T/4], [T/4, T/2], [T/2, T] (T = steps), those that
    are not empty."""
    edges = [fit_from, steps // 4, steps // 2, steps]
    return [(lo, hi) for lo, hi in zip(edges, edges[1:], strict=False) if lo < hi]


def rate_statistics(fit_from: int, steps: int) -> dict:
    """{name: statistic of one forget-NLL curve (against the steps t) that a rate claim reads}, every one over
    t >= fit_from: acceleration (late/early slope ratio), growth_exponent (slope of log(NLL_t - NLL_0) against log
    t over the whole range), growth_exponent.tA-B (the same over each of ``growth_windows``) and late_slope (the
    least-squares slope over the last half, NLL per token per step)."""
    def growth(t, y):
        return y - y[0]

    def late_slope(t, y):
        half = t >= (max(fit_from, 1) + t[-1]) / 2
        return fit_r2(t[half], y[half])[1]

    stats = {"acceleration": lambda t, y: acceleration(t, y, max(fit_from, 1)),
             "growth_exponent": lambda t, y: local_growth_exponents(t, growth(t, y), [(max(fit_from, 1), t[-1])])[0],
             "late_slope": late_slope}
    for lo, hi in growth_windows(fit_from, steps):
        stats[f"growth_exponent.t{lo}-{hi}"] = lambda t, y, w=(lo, hi): local_growth_exponents(t, growth(t, y), [w])[0]
    return stats


def seed_intervals(steps, curves, fit_from: int, total_steps: int, seed: int) -> dict[str, float | None]:
    """Every ``rate_statistics`` value on the seed-mean forget-NLL curve ("name") with its bootstrap 95% interval
    over the seeds ("name.ci_low", "name.ci_high"; ``unlearn.metrics.curves.bootstrap_interval``, its generator
    seeded by ``seed``). curves (seeds, records)."""
    t, out = np.asarray(steps, float), {}
    for name, statistic in rate_statistics(fit_from, total_steps).items():
        found = bootstrap_interval(curves, lambda y, statistic=statistic: statistic(t, y), seed=seed)
        out.update({name: found["value"], f"{name}.ci_low": found["ci_low"], f"{name}.ci_high": found["ci_high"]})
    return out


def claim_checks(metrics: dict) -> dict[str, bool]:
    """The rate claims, each decided by a bootstrap 95% interval over seeds (``interval_supports``): GA's forget
    NLL accelerates (late/early slope ratio above 1) and is super-linear in the last window (growth exponent above
    1); NPO's and SimNPO's slow down (ratio below 1) and are sub-linear there (exponent below 1)."""
    def interval(key):
        return {"ci_low": metrics.get(f"{key}.ci_low"), "ci_high": metrics.get(f"{key}.ci_high")}

    last = max((k[:-len(".ci_low")] for k in metrics if k.startswith("ga.forget_nll_growth_exponent.t")
                and k.endswith(".ci_low")), key=lambda k: int(k.rsplit("-", 1)[1]), default="")
    window = last[len("ga.forget_nll_growth_exponent."):]
    checks = {}
    for method, x, side in (("GA", "ga", "above"), ("NPO", "npo", "below"), ("SimNPO", "simnpo", "below")):
        checks[f"{method} {'accelerates' if side == 'above' else 'slows down'}"] = interval_supports(
            interval(f"{x}.forget_nll_acceleration"), 1.0, side)
        checks[f"{method} {'super' if side == 'above' else 'sub'}-linear late"] = interval_supports(
            interval(f"{x}.forget_nll_growth_exponent.{window}"), 1.0, side)
    return checks


def samples(model, world: markov.MarkovWorld, n: int, seed: int, name: str) -> list[list[int]]:
    """n sequences generated from the first states of retain test sequences (the same starts for every model)."""
    starts = world["retain_test"].input_ids[:n, 0]
    length = world.cfg.len_retain
    return markov.sample_from_model(model, starts, length, generator(seed, "collapse-samples", name)).tolist()


def run(cfg: Config) -> Result:
    """Unlearn with each method for ``steps`` steps from the cached original model; record the curves."""
    device = resolve_device(cfg.device)
    world, original, _ = cfg.models(device, cfg.progress)
    evaluate = collapse_evaluator(world, device, cfg.eval_limit)
    start = evaluate(original, 0)
    metrics: dict[str, float | None] = {f"original.{k}": v for k, v in start.items()}
    series = {"methods": {}, "original": {"samples": samples(original, world, N_SAMPLES, cfg.seed, "original"),
                                          **start}}
    members = [(m, replicate) for m in COMPARED for replicate in range(cfg.seeds)]  # member i = method, seed
    params = [method_params(cfg, m) for m, _ in members]
    history, unlearned = markov.unlearn_runs(
        original, [m for m, _ in members], params, world, [generator(cfg.seed, "markov-unlearn", *k) for k in members],
        steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, evaluate_every=cfg.eval_every, evaluate=evaluate,
        progress=cfg.progress, **cfg.train_options())
    per_member = member_curves(history, ("forget_nll", "retain_kl", "entropy"))
    for j, method in enumerate(COMPARED):
        x, first = method.lower(), j * cfg.seeds
        by_seed = {k: np.asarray([per_member[first + s][k] for s in range(cfg.seeds)]) for k in per_member[0]}
        curves = {k: v.mean(0).tolist() for k, v in by_seed.items()}
        fits = growth_fits(history.eval_steps, curves["forget_nll"], cfg.fit_from)
        metrics.update({f"{x}.forget_nll_{k}": v for k, v in fits.items()})
        intervals = seed_intervals(history.eval_steps, by_seed["forget_nll"], cfg.fit_from, cfg.steps, cfg.seed)
        metrics.update({f"{x}.forget_nll_{k}": v for k, v in intervals.items()})
        metrics.update({f"{x}.{k}.final": curve[-1] for k, curve in curves.items()})
        series["methods"][method] = {"beta": params[first].beta, "steps": history.eval_steps, **curves,
                                     "seeds": {k: v.tolist() for k, v in by_seed.items()},
                                     "samples": samples(unlearned.member(first), world, N_SAMPLES, cfg.seed, method)}
    series["fit_from"] = cfg.fit_from
    return Result(metrics, series, {})


def _label(method: str, m: dict) -> str:
    return f"{method} (beta={m['beta']:g})" if method != "GA" else method


def _with_interval(metrics: dict, key: str, digits: int = 2) -> str:
    """"value [ci_low, ci_high]" of a metric and its interval over seeds."""
    value, low, high = (metrics.get(f"{key}{end}") for end in ("", ".ci_low", ".ci_high"))
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" + (f" [{low:.{digits}f}, {high:.{digits}f}]" if low is not None else "")


def _seed_band(ax, steps, m: dict, key: str, color, start: int = 0) -> None:
    """The range of the seeds' curves (min to max) behind the seed-mean curve."""
    if "seeds" in m:
        values = np.asarray(m["seeds"][key], float)[:, start:]
        ax.fill_between(steps[start:], values.min(0), values.max(0), color=color, alpha=0.2, lw=0)


def plot(result: Result):
    s, metrics = result.series, result.metrics
    fig = plt.figure(figsize=(17, 8), constrained_layout=True)
    grid = fig.add_gridspec(2, 4, height_ratios=[2.2, 1])
    axes = [fig.add_subplot(grid[0, i]) for i in range(4)]
    ax_text = fig.add_subplot(grid[1, :])
    rates = []
    for method, m in s["methods"].items():
        color, steps = METHOD_COLORS[method], np.asarray(m["steps"], float)
        x = method.lower()
        rates.append(f"{method}: late/early slope {_with_interval(metrics, f'{x}.forget_nll_acceleration')}\n"
                     f"  exponent {_with_interval(metrics, f'{x}.forget_nll_growth_exponent')}\n"
                     f"  R^2 lin {metrics[f'{x}.forget_nll_linear_r2']:.3f}, "
                     f"log {metrics[f'{x}.forget_nll_log_r2']:.3f} (information)")
        axes[0].plot(steps, m["forget_nll"], color=color, label=_label(method, m))
        _seed_band(axes[0], steps, m, "forget_nll", color)
        if method != "GA":  # GA's scale would flatten the others; it is in (a)
            axes[1].plot(steps[1:], m["forget_nll"][1:], color=color, label=_label(method, m))
            _seed_band(axes[1], steps, m, "forget_nll", color, start=1)
        for ax, key in ((axes[2], "retain_kl"), (axes[3], "entropy")):
            ax.plot(steps, m[key], color=color, label=_label(method, m))
            _seed_band(ax, steps, m, key, color)
    for ax in axes[:2]:
        ax.axvline(s["fit_from"], color="0.6", lw=0.7, ls=":")
    axes[0].set_yscale("log")
    axes[1].set_xscale("log")
    axes[1].xaxis.set_minor_formatter(NullFormatter())
    axes[2].set_yscale("log")
    axes[3].axhline(np.log(10), color="0.5", ls=":", lw=0.8, label="uniform (log 10)")
    axes[3].axhline(s["original"]["entropy"], color="k", ls="--", lw=0.8, label="original model")
    for ax, ylabel in zip(axes, ("forget NLL per token (log scale)", "forget NLL per token",
                                 "retain KL (log scale)", "mean next-state entropy (nats)"), strict=True):
        ax.set_xlabel("unlearning step" + (" (log scale)" if ax is axes[1] else ""))
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, loc="lower right" if ax in axes[:2] else "best")
    seeds = len(next(iter(s["methods"].values())).get("seeds", {"forget_nll": [0]})["forget_nll"])
    panel_label(axes[0], f"(a) forget NLL, mean of {seeds} seeds (band: range)")
    note(axes[0], 0.02, 0.98, "[95% CI over seeds]\n" + "\n".join(rates), va="top", fontsize=6.5,
         family="monospace")
    panel_label(axes[1], "(b) against log step; growth exponents")
    windows = [k[len("ga.forget_nll_growth_exponent."):-len(".ci_low")] for k in metrics
               if k.startswith("ga.forget_nll_growth_exponent.t") and k.endswith(".ci_low")]
    exponents = "d log(NLL_t - NLL_0) / d log t [95% CI]\n" + "\n".join(f"{method}\n" + "\n".join(
        f"  {w} {_with_interval(metrics, f'{method.lower()}.forget_nll_growth_exponent.{w}')}" for w in windows)
        for method in s["methods"])
    note(axes[1], 0.02, 0.98, exponents, va="top", fontsize=6.5, family="monospace")
    panel_label(axes[2], "(c) retain KL")
    panel_label(axes[3], "(d) output entropy on retain prompts")
    models = [("original model", s["original"]), *((_label(k, m), m) for k, m in s["methods"].items())]
    for i, (name, m) in enumerate(models):
        text = "\n".join([name, ""] + [" ".join(str(v) for v in seq) for seq in m["samples"]])
        ax_text.text(i / len(models), 0.9, text, family="monospace", fontsize=8, va="top", transform=ax_text.transAxes)
    ax_text.text(0.0, 1.0, "generated from the same first states (the retain chain favours states 0-2, Forget1 "
                 "3-5, Forget2 6-8; a healthy model mixes them)", fontsize=9, va="top", transform=ax_text.transAxes)
    ax_text.axis("off")
    panel_label(ax_text, "(e) samples at the end of each run")
    checks = "; ".join(f"{name}: {'holds' if ok else 'FAILS'}" for name, ok in claim_checks(metrics).items())
    fig.suptitle("Long unlearning on the Markov transformer (no retain term): GA's forget NLL grows without bound, "
                 "NPO's and SimNPO's close to logarithmically; every method ends collapsed\n"
                 f"claims from 95% intervals over {seeds} seeds: {checks}", fontsize=12)
    return fig


EXPERIMENT = Experiment(
    name="collapse",
    claim="Unlearning the Markov transformer for 2000 steps without a retain term, 5 seeds: GA's forget NLL grows "
          "without bound and faster over time (95% interval of its late/early slope ratio above 1), NPO's slows "
          "down (interval below 1) and SimNPO's grows sub-linearly (growth-exponent intervals below 1; its "
          "late/early ratio is too noisy over 5 seeds to decide); all three end with degenerate outputs, GA first "
          "and furthest.",
    presets=PRESETS, run=run, plot=plot,
)
