"""collapse: GA, NPO and SimNPO run long on the Markov transformer (NPO paper Sec. 5 and Theorem 2; SimNPO
paper Sec. 4), the rates of the theory seen on a transformer.

Claim. Unlearning the markov-length forget set for 2000 steps (one epoch of batch 4, AdamW lr 5e-4, the
paper's unlearning optimiser): GA's forget NLL grows without bound at a steady (here even accelerating) rate,
NPO's only logarithmically in the step (its weight 2 sigma(beta (logp - logp_ref)) vanishes as the forget
likelihood falls: Theorem 2's mechanism), SimNPO's logarithmically too. None of them has a retain term, and
all three take the retain distribution and the output entropy with them: GA within ~100 steps and without
bound, NPO soon after (its weight shrinks, but Adam rescales the small gradient), SimNPO slowest; by the end
each samples a single repeated state.

Measured every ``eval_every`` steps on the first ``eval_limit`` sequences of each test split: the forget NLL
(mean per-token -log p on Forget1 + Forget2 test), the retain KL (per-token KL to the true transitions, as in
markov-length) and the mean entropy of the next-state distribution on retain test (log 10 = 2.30 at most).
Over steps >= ``fit_from``: X.forget_nll_acceleration, the late/early slope ratio of the forget NLL
(``unlearn.metrics.curves.acceleration``: 1 = linear, above 1 accelerating, below 1 slowing down; the claim's
check), X.forget_nll_growth_exponent, the slope of log(NLL_t - NLL_0) against log t (1 = linear, 2 =
quadratic, near 0 = logarithmic), and, as information, the R^2 of fits against t and log t (``rate_fits``; a
line beats a log for any convex curve, so this race cannot tell linear from accelerating). The three runs train
side by side as one ensemble (``sims.markov.unlearn_runs``), each on its own batch order.

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
from sims.plotting import METHOD_COLORS, panel_label
from unlearn.config import require_at_least_one, require_positive
from unlearn.metrics import tokens
from unlearn.metrics.curves import acceleration, fit_r2, rate_fits
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
    eval_every: int = 40
    eval_limit: int | None = 500
    fit_from: int = 100

    def __post_init__(self):
        super().__post_init__()
        require_at_least_one(self, "eval_every")
        require_positive(self, "npo_beta", "simnpo_beta")
        if not 0 <= self.fit_from < self.steps:
            raise ValueError(f"fit_from must lie in [0, steps), got {self.fit_from}")


PRESETS = {
    "full": Config(),
    # fast: the small setup; 800 steps is one epoch over its 3200 forget sequences.
    "fast": Config(**markov.FAST_SETUP, steps=800, eval_every=40, eval_limit=300, fit_from=80),
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
    params = [method_params(cfg, m) for m in COMPARED]
    history, unlearned = markov.unlearn_runs(
        original, COMPARED, params, world, [generator(cfg.seed, "markov-unlearn", m) for m in COMPARED],
        steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, evaluate_every=cfg.eval_every, evaluate=evaluate,
        progress=cfg.progress)
    per_member = member_curves(history, ("forget_nll", "retain_kl", "entropy"))
    for i, method in enumerate(COMPARED):
        x, curves = method.lower(), per_member[i]
        fits = growth_fits(history.eval_steps, curves["forget_nll"], cfg.fit_from)
        metrics.update({f"{x}.forget_nll_{k}": v for k, v in fits.items()})
        metrics.update({f"{x}.{k}.final": curve[-1] for k, curve in curves.items()})
        series["methods"][method] = {"beta": params[i].beta, "steps": history.eval_steps, **curves,
                                     "samples": samples(unlearned.member(i), world, N_SAMPLES, cfg.seed, method)}
    series["fit_from"] = cfg.fit_from
    return Result(metrics, series, {})


def _label(method: str, m: dict) -> str:
    return f"{method} (beta={m['beta']:g})" if method != "GA" else method


def plot(result: Result):
    s, metrics = result.series, result.metrics
    fig = plt.figure(figsize=(17, 8), constrained_layout=True)
    grid = fig.add_gridspec(2, 4, height_ratios=[2.2, 1])
    axes = [fig.add_subplot(grid[0, i]) for i in range(4)]
    ax_text = fig.add_subplot(grid[1, :])
    for method, m in s["methods"].items():
        color, steps = METHOD_COLORS[method], np.asarray(m["steps"], float)
        x = method.lower()
        fits = (f"R^2 lin {metrics[f'{x}.forget_nll_linear_r2']:.3f}, log {metrics[f'{x}.forget_nll_log_r2']:.3f}, "
                f"exp {metrics[f'{x}.forget_nll_growth_exponent']:.2f}")
        axes[0].plot(steps, m["forget_nll"], color=color, label=f"{_label(method, m)}: {fits}")
        if method != "GA":  # GA's scale would flatten the others; it is in (a)
            axes[1].plot(steps[1:], m["forget_nll"][1:], color=color, label=_label(method, m))
        axes[2].plot(steps, m["retain_kl"], color=color, label=_label(method, m))
        axes[3].plot(steps, m["entropy"], color=color, label=_label(method, m))
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
        ax.legend(fontsize=7)
    panel_label(axes[0], "(a) forget NLL vs step; fits after the dotted line")
    panel_label(axes[1], f"(b) against log step (log-fit R^2: NPO {metrics['npo.forget_nll_log_r2']:.3f}, "
                         f"SimNPO {metrics['simnpo.forget_nll_log_r2']:.3f})")
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
    fig.suptitle("Long unlearning on the Markov transformer (no retain term): GA's forget NLL grows without bound, "
                 "NPO's and SimNPO's close to logarithmically; every method ends collapsed", fontsize=12)
    return fig


EXPERIMENT = Experiment(
    name="collapse",
    claim="Unlearning the Markov transformer for 2000 steps without a retain term: GA's forget NLL grows without "
          "bound and faster over time (late/early slope ratio above 1), NPO's and SimNPO's slow down "
          "(logarithmically); all three end with degenerate outputs, GA first and furthest.",
    presets=PRESETS, run=run, plot=plot,
)
