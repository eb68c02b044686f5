"""attribution: which weights unlearning may move, WAGLE vs magnitude vs random masks vs dense (E7).

Claim (Jia et al. 2024, WAGLE, Sec. 5 on TOFU/WMDP). Restricting unlearning to the weights that WAGLE's
attribution score ranks highest keeps the forgetting of dense unlearning while costing less utility than
random or magnitude masks at the same ratio; the best ratio depends on the method and task.

Setting. The markov-length world and original model (``sims.markov.Setup``). Masks (``unlearn.attribution``)
from the original model: WAGLE |(theta_o - g_r/mu) * g_f| with g_f, g_r the forget and retain NLL gradients
summed over the forget train set and as many retain train sequences (mu = 1e-6, as released), magnitude
|theta_o|, and random; each keeps the global top ``ratio`` fraction of weights that may move. GradDiff
(GA+RT) and NPO+RT (WAGLE's NPO; beta 0.2, lam 1) unlearn for ``steps`` steps of batch 4 (AdamW lr 5e-4, as in
every Markov experiment) with every mask at every ratio, all 2 x (1 + 3 x len(ratios)) runs side by side as
one ensemble with per-member masks (``sims.markov.unlearn_runs``); the same batch order for every run of a
method, so runs differ only in their mask.

Measured at the end on the test splits (their first ``eval_limit`` = 500 sequences): forget KL (token KL on
Forget1 + Forget2 test together; higher = more forgotten) and retain KL (lower = better). Keys:
METHOD.MASK.ratio=R.forget_kl and .retain_kl for METHOD in graddiff, npo and MASK in dense (ratio=1), random,
magnitude, wagle; original.* and retrained.* for scale. The paper's numbers are TOFU/WMDP scores, not comparable
ones, so ``paper`` is empty.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import matplotlib.pyplot as plt

from sims import markov
from sims.experiment import Experiment, Result, method_params
from sims.plotting import panel_label
from unlearn import attribution
from unlearn.config import require_positive
from unlearn.rng import generator
from unlearn.train import resolve_device

METHOD_BY_LABEL = {"graddiff": "GA+RT", "npo": "NPO+RT"}  # WAGLE paper label (metric prefix): method
KINDS = ("random", "magnitude", "wagle")
KIND_COLORS = {"dense": "k", "random": "#7f7f7f", "magnitude": "#ff7f0e", "wagle": "#1f77b4"}


@dataclass(frozen=True)
class Config(markov.UnlearningSetup):
    """Masked unlearning on the shared Markov setup (``sims.markov.UnlearningSetup``; default: markov-length's)."""

    npo_beta: float = 0.2
    lam: float = 1.0
    ratios: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 0.95)
    mu: float = 1e-6
    eval_limit: int | None = 500  # the first eval_limit sequences of each test split (None: all)

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "npo_beta", "mu")
        for ratio in self.ratios:
            if not 0 < ratio <= 1:
                raise ValueError(f"ratios: every ratio must lie in (0, 1], got {ratio!r}")


PRESETS = {"full": Config(), "fast": Config(**markov.FAST_SETUP, ratios=(0.2, 0.6, 0.95), eval_limit=400)}


def build_masks(original, world: markov.MarkovWorld, cfg: Config) -> tuple[dict, dict]:
    """{(kind, ratio): masks} for every kind and ratio, and the seconds each kind's scores took."""
    masks, seconds = {}, {}
    for kind in KINDS:
        start = time.perf_counter()
        scores = markov.attribution_scores(kind, original, world, cfg.mu, cfg.seed)
        seconds[kind] = time.perf_counter() - start
        for r in cfg.ratios:
            masks[kind, r] = attribution.top_fraction_masks(scores, r, generator(cfg.seed, "mask-threshold"))
    return masks, seconds


def run(cfg: Config) -> Result:
    device = resolve_device(cfg.device)
    world, original, retrained = cfg.models(device, cfg.progress)
    evaluate = markov.summary_evaluator(world, device, cfg.eval_limit)
    masks, seconds = build_masks(original, world, cfg)
    variants = [("dense", 1.0)] + [(kind, r) for kind in KINDS for r in cfg.ratios]
    runs = [(x, kind, r) for x in METHOD_BY_LABEL for kind, r in variants]
    methods = [METHOD_BY_LABEL[x] for x, _, _ in runs]
    history, _ = markov.unlearn_runs(
        original, methods, [method_params(cfg, m) for m in methods], world,
        [generator(cfg.seed, "markov-unlearn", m) for m in methods], steps=cfg.steps,
        batch_size=cfg.batch_size, lr=cfg.lr, evaluate_every=cfg.steps, evaluate=evaluate,
        masks=[None if kind == "dense" else masks[kind, r] for _, kind, r in runs], progress=cfg.progress,
        **cfg.train_options())
    scored = [k for k in history.evals if k != "entropy"]
    metrics: dict[str, float | None] = {f"original.{k}": history.evals[k][0][0] for k in scored}  # step 0
    metrics.update({f"retrained.{k}": v for k, v in evaluate(retrained, 0).items() if k != "entropy"})
    for i, (x, kind, r) in enumerate(runs):
        for k in ("forget_kl", "retain_kl"):
            metrics[f"{x}.{kind}.ratio={r:g}.{k}"] = history.evals[k][-1][i]
    series = {"methods": METHOD_BY_LABEL, "ratios": list(cfg.ratios), "kinds": ["dense", *KINDS],
              "score_seconds": seconds, "steps": cfg.steps}
    return Result(metrics, series, {})


LABEL_OFFSETS = {"random": ((4, -9), "left"), "magnitude": ((-4, 4), "right"), "wagle": ((6, -3), "left")}


def plot(result: Result):
    s, metrics = result.series, result.metrics
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.6), constrained_layout=True)
    for col, (x, method) in enumerate(s["methods"].items()):
        ax_path, ax_ratio = axes[col], axes[2 + col]
        for kind in s["kinds"]:
            ratios = [1.0] if kind == "dense" else s["ratios"]
            fk = [metrics[f"{x}.{kind}.ratio={r:g}.forget_kl"] for r in ratios]
            rk = [metrics[f"{x}.{kind}.ratio={r:g}.retain_kl"] for r in ratios]
            style = dict(color=KIND_COLORS[kind], label=kind if kind == "dense" else f"{kind} mask")
            if kind == "dense":
                ax_path.plot(rk, fk, "*", ms=13, **style)
                ax_ratio.axhline(fk[0], ls="--", lw=1, **style)
                continue
            ax_path.plot(rk, fk, "o-", ms=4, lw=1.4, **style)
            offset, ha = LABEL_OFFSETS[kind]  # random and magnitude paths nearly coincide: labels on either side
            for r, a, b in zip(ratios, rk, fk, strict=True):
                ax_path.annotate(f"{r:g}", (a, b), fontsize=7, xytext=offset, textcoords="offset points", ha=ha,
                                 color=KIND_COLORS[kind])
            ax_ratio.plot(ratios, fk, "o-", ms=4, lw=1.4, **style)
        ax_path.plot([metrics["original.retain_kl"]], [metrics["original.forget_kl"]], "ks", mfc="none", ms=7,
                     label="original model")
        for ax in (ax_path, ax_ratio):
            ax.axhline(metrics["retrained.forget_kl"], color="k", ls=":", lw=0.9, label="retrained model")
            ax.set_ylabel("forget KL (higher = more forgotten)")
            ax.legend(fontsize=7)
        ax_path.margins(x=0.08)  # room for the labels of the outermost points
        ax_path.set_xlabel("retain KL (lower = better)")
        ax_ratio.set_xlabel("mask ratio (fraction of weights that may move)")
        panel_label(ax_path, f"({'ab'[col]}) {method}: forget vs retain KL (labels: ratio)")
        panel_label(ax_ratio, f"({'cd'[col]}) {method}: forget KL vs ratio")
    fig.suptitle(f"Masked unlearning on the Markov transformer ({s['steps']} steps): WAGLE vs magnitude vs random "
                 "masks vs dense", fontsize=11)
    return fig


EXPERIMENT = Experiment(
    name="attribution",
    claim="WAGLE weight attribution on the Markov toy: GradDiff and NPO+RT unlearning restricted to the top "
          "fraction of weights by WAGLE, magnitude or random scores at ratios 0.2-0.95, against dense; forget KL "
          "vs retain KL per mask.",
    presets=PRESETS, run=run, plot=plot,
)
