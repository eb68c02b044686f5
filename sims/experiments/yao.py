"""yao: GA, GA+KL and GA+Mismatch+KL (Yao et al. 2024, "Large Language Model Unlearning") on the Markov toy.

Claim. Gradient ascent alone has no floor: on the Markov transformer it drives the forget KL up without
bound and takes the retain distribution and the output entropy with it. A KL term to the original model on
normal (retain) data holds the retain distribution back, and the random-mismatch term of Yao et al. (the NLL of
random normal responses given forget prompts, a bounded descent objective) adds a target to move towards, so
the forget prompts get normal-looking continuations instead of collapse (Yao et al. Sec. 3 and App. C).

Setting. The markov-length world and original model (``sims.markov.Setup``); unlearning on Forget1 + Forget2
train in batches of 4 (AdamW, lr 5e-4, as in every Markov experiment), for ``steps`` steps, several times the
50-step budget of markov-length (Yao et al.'s lesson 1: keep going after the forget loss is already high). Weights
(eps1, eps2, eps3) = (1, ``mismatch``, ``lam``); the defaults 2 and 2 are the released code's ratios
(bad 0.5, random 1, normal 1). Our losses are per-sequence sums over the response (the code's are token means),
so on these ~19-token sequences the GA term weighs ~19x more against the per-token KL than in the code; the
mismatch NLL is a sum like GA's. The mismatch response of a forget sequence is a random retain sequence's
continuation after the forget sequence's first state (``sims.markov.mismatched``). The three runs train side by
side as one ensemble (``sims.markov.unlearn_runs``), each with its own batch order.

Measured every ``eval_every`` steps on the first ``eval_limit`` sequences of each test split
(``sims.markov.summary_evaluator``): forget KL (Forget1 + Forget2 test), retain KL, and the mean next-state
entropy on retain prompts (log 10 = 2.30 at most). Keys: METHOD.forget_kl.final, METHOD.retain_kl.final,
METHOD.entropy.final with METHOD in ga, ga+kl, ga+mismatch+kl; original.* at step 0 and retrained.* of the
retain-only model, the target of unlearning. The paper's numbers are
on OPT/Llama harmfulness and copyright tasks, not on this toy, so ``paper`` is empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np

from sims import markov
from sims.experiment import Experiment, Result, member_curves, method_params
from sims.plotting import METHOD_COLORS, panel_label
from unlearn.config import require_at_least_one, require_positive
from unlearn.rng import generator
from unlearn.train import resolve_device

COMPARED = ("GA", "GA+KL", "GA+Mismatch+KL")  # the methods of the figure
METRICS = ("forget_kl", "retain_kl", "entropy")


@dataclass(frozen=True)
class Config(markov.UnlearningSetup):
    """Long unlearning on the shared Markov setup (``sims.markov.UnlearningSetup``; default: markov-length's)."""

    steps: int = 400
    lam: float = 2.0  # eps3 / eps1: the KL term (GA+KL and GA+Mismatch+KL)
    mismatch: float = 2.0  # eps2 / eps1: the random-mismatch NLL
    eval_every: int = 10
    eval_limit: int | None = 500

    def __post_init__(self):
        super().__post_init__()
        require_at_least_one(self, "eval_every")
        require_positive(self, "lam", "mismatch")


PRESETS = {"full": Config(), "fast": Config(**markov.FAST_SETUP, steps=200, eval_limit=300)}


def run(cfg: Config) -> Result:
    """The three methods from the cached original model, side by side; curves and final values."""
    device = resolve_device(cfg.device)
    world, original, retrained = cfg.models(device, cfg.progress)
    evaluate = markov.summary_evaluator(world, device, cfg.eval_limit)
    history, _ = markov.unlearn_runs(
        original, COMPARED, [method_params(cfg, m) for m in COMPARED], world,
        [generator(cfg.seed, "markov-unlearn", m) for m in COMPARED], steps=cfg.steps, batch_size=cfg.batch_size,
        lr=cfg.lr, evaluate_every=cfg.eval_every, evaluate=evaluate, progress=cfg.progress, **cfg.train_options())
    metrics: dict[str, float | None] = {f"original.{k}": history.evals[k][0][0] for k in METRICS}
    metrics.update({f"retrained.{k}": v for k, v in evaluate(retrained, 0).items()})
    series = {"steps": history.eval_steps, "methods": {}}
    for method, curves in zip(COMPARED, member_curves(history, METRICS), strict=True):
        series["methods"][method] = curves
        metrics.update({f"{method.lower()}.{k}.final": curves[k][-1] for k in METRICS})
    return Result(metrics, series, {})


def plot(result: Result):
    s, metrics = result.series, result.metrics
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), constrained_layout=True)
    steps = np.asarray(s["steps"], float)
    for method, curves in s["methods"].items():
        for ax, key in zip(axes, METRICS, strict=True):
            ax.plot(steps, curves[key], color=METHOD_COLORS[method], lw=1.6, label=method)
    for ax, key in zip(axes, METRICS, strict=True):
        ax.axhline(metrics[f"retrained.{key}"], color="k", ls=":", lw=0.9, label="retrained model")
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[2].axhline(np.log(10), color="0.5", ls=":", lw=0.8, label="uniform (log 10)")
    axes[2].axhline(metrics["original.entropy"], color="k", ls="--", lw=0.8, label="original model")
    labels = ("forget KL (Forget1 + Forget2 test, log scale)", "retain KL (log scale)",
              "mean next-state entropy on retain prompts (nats)")
    for ax, label in zip(axes, labels, strict=True):
        ax.set_xlabel("unlearning step")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    panel_label(axes[0], "(a) forgetting")
    panel_label(axes[1], "(b) damage to the retain distribution")
    panel_label(axes[2], "(c) output entropy (collapse -> 0)")
    fig.suptitle("Yao et al.'s objective on the Markov transformer: GA alone vs + KL to the original on retain data "
                 "vs + random-mismatch responses", fontsize=11)
    return fig


EXPERIMENT = Experiment(
    name="yao",
    claim="GA, GA+KL and GA+Mismatch+KL (Yao et al.) on the Markov transformer: forget KL, retain KL and output "
          "entropy against steps; GA alone collapses the model, the KL and mismatch terms hold the retain "
          "distribution and the entropy back.",
    presets=PRESETS, run=run, plot=plot,
)
