"""relearn: how much of the forgetting survives a relearning attack, NPO vs SimNPO (SimNPO paper Fig. 6, E6).

Claim (Fan et al. 2024, Sec. 6 and Fig. 6, on TOFU). After unlearning, fine-tuning on 20% of the forget set
brings forgotten knowledge back; NPO is more exposed when the relearning set is the 20% SHORTEST responses
(NPO spent least on short responses: its weights favour long ones, ``theory.allocation``), while SimNPO, whose
length-normalised weights treat short responses fully, holds up against both shortest and random subsets.

Setting. The markov-length world and original model (``sims.markov.Setup``; Forget2 sequences are 4x shorter
than Forget1's, so the shortest 20% of the forget set is all Forget2). Unlearning as in markov-length: NPO
(beta 0.2) and SimNPO (beta 4), 50 steps of batch 4, AdamW lr 5e-4, side by side (``sims.markov.unlearn_runs``).
Relearning (``unlearn.relearn``): token-mean NLL on the chosen 20% of the forget TRAIN set, AdamW, batch
``relearn_batch_size``, ``relearn_epochs`` epochs at ``relearn_lr``, from each unlearned model; the random subset
is drawn ``draws`` times (paper: 5). The paper gives no relearning learning rate for TOFU (its WMDP config:
1e-5, 3 epochs); ours is set so that a full attack is not instantaneous on this model, and is a config key.

Measured after every relearning epoch on the test splits (their first ``eval_limit`` = 500 sequences): forget
KL (token KL on Forget1 + Forget2 test together; higher = more forgotten), and Forget1, Forget2 and retain KL.
Keys:
X.forget_kl.before (just unlearned), X.forget_kl.after_relearn.shortest, X.forget_kl.after_relearn.random_mean,
X.forget_kl.after_relearn.random_std (over draws), for X in npo, simnpo, plus the same with forget1_kl and
forget2_kl; X.recovered_fraction.{shortest,random}: the share of the forget-KL rise above the original model
that relearning took back (the methods start from different levels); original.* and retrained.* for scale.
The shortest 20% holds about 3x fewer tokens than a random 20% here (length 5 vs a mix of 5 and 20), so it is
a weaker attack in absolute terms; compare methods within a subset. The paper's values are TOFU forget-quality
p-values, not comparable numbers, so ``paper`` is empty.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np

from sims import markov
from sims.experiment import Experiment, Result, method_params
from sims.plotting import METHOD_COLORS, panel_label
from unlearn.config import require_at_least_one, require_positive
from unlearn.losses import token_mean_nll
from unlearn.relearn import relearn, relearn_subset
from unlearn.rng import generator
from unlearn.train import resolve_device

COMPARED = ("NPO", "SimNPO")  # the methods of the figure
SPLITS = ("forget_kl", "forget1_kl", "forget2_kl", "retain_kl")


@dataclass(frozen=True)
class Config(markov.UnlearningSetup):
    """Unlearning as in markov-length, then relearning on a fifth of the forget set. ``optimizer``, ``adam_beta2``
    and ``adam_eps`` set the unlearning runs only: the relearning attack fine-tunes with AdamW at relearn_lr."""

    npo_beta: float = 0.2
    simnpo_beta: float = 4.0
    relearn_frac: float = 0.2
    relearn_epochs: int = 3
    relearn_batch_size: int = 32
    relearn_lr: float = 1e-4
    draws: int = 5
    eval_limit: int | None = 500  # the first eval_limit sequences of each test split (None: all)

    def __post_init__(self):
        super().__post_init__()
        require_at_least_one(self, "relearn_epochs", "relearn_batch_size", "draws")
        require_positive(self, "npo_beta", "simnpo_beta", "relearn_lr")
        if not 0 < self.relearn_frac <= 1:
            raise ValueError(f"relearn_frac must lie in (0, 1], got {self.relearn_frac}")


PRESETS = {"full": Config(), "fast": Config(**markov.FAST_SETUP, draws=2, eval_limit=400)}


def relearn_curves(unlearned, forget: markov.Split, index, cfg: Config, evaluate, keys: tuple) -> dict:
    """Relearn a copy of ``unlearned`` on forget[index]; {"epochs", split: [value per epoch, 0 = before]}."""
    model = copy.deepcopy(unlearned)
    subset = forget.take(index)
    history = relearn(model, token_mean_nll(subset), len(subset), epochs=cfg.relearn_epochs,
                      batch_size=cfg.relearn_batch_size, lr=cfg.relearn_lr, seed=cfg.seed, keys=keys,
                      evaluate=evaluate, progress=cfg.progress, name=f"relearn {' '.join(map(str, keys))}")
    return {"epochs": list(range(len(history.eval_steps))), **{k: history.evals[k] for k in SPLITS}}


def run(cfg: Config) -> Result:
    device = resolve_device(cfg.device)
    world, original, retrained = cfg.models(device, cfg.progress)
    evaluate = markov.summary_evaluator(world, device, cfg.eval_limit, entropy=False)
    forget = world.forget_set().to(device)
    params = [method_params(cfg, m) for m in COMPARED]
    _, unlearned = markov.unlearn_runs(
        original, COMPARED, params, world,
        [generator(cfg.seed, "markov-unlearn", m, 0) for m in COMPARED], steps=cfg.steps,
        batch_size=cfg.batch_size, lr=cfg.lr, evaluate_every=cfg.steps, evaluate=lambda model, step: {},
        progress=cfg.progress, **cfg.train_options())
    metrics: dict[str, float | None] = {}
    for name, model in (("original", original), ("retrained", retrained)):
        metrics.update({f"{name}.{k}": v for k, v in evaluate(model, 0).items()})
    lengths = forget.n_tokens
    shortest = relearn_subset(lengths, cfg.relearn_frac, "shortest")
    randoms = [relearn_subset(lengths, cfg.relearn_frac, "random", generator(cfg.seed, "relearn-subset", d))
               for d in range(cfg.draws)]
    series = {"methods": {}, "shortest_share_forget2": float((forget.chain[shortest] == 2).float().mean())}
    for i, method in enumerate(COMPARED):
        model, x = unlearned.member(i), method.lower()
        short = relearn_curves(model, forget, shortest, cfg, evaluate, (method, "shortest"))
        rand = [relearn_curves(model, forget, index, cfg, evaluate, (method, "random", d))
                for d, index in enumerate(randoms)]
        series["methods"][method] = {"beta": params[i].beta, "shortest": short, "random": rand}
        for k in ("forget_kl", "forget1_kl", "forget2_kl"):
            finals = np.array([r[k][-1] for r in rand])
            metrics.update({f"{x}.{k}.before": short[k][0], f"{x}.{k}.after_relearn.shortest": short[k][-1],
                            f"{x}.{k}.after_relearn.random_mean": float(finals.mean()),
                            f"{x}.{k}.after_relearn.random_std": float(finals.std())})
        undone = short["forget_kl"][0] - metrics["original.forget_kl"]  # the forgetting that unlearning did
        for subset, after in (("shortest", short["forget_kl"][-1]),
                              ("random", metrics[f"{x}.forget_kl.after_relearn.random_mean"])):
            metrics[f"{x}.recovered_fraction.{subset}"] = (short["forget_kl"][0] - after) / undone
    return Result(metrics, series, {})


def plot(result: Result):
    s, metrics = result.series, result.metrics
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), constrained_layout=True)
    for method, m in s["methods"].items():
        color = METHOD_COLORS[method]
        short, rand = m["shortest"], m["random"]
        epochs = np.asarray(short["epochs"])
        ax = axes[0]
        ax.plot(epochs, short["forget_kl"], color=color, lw=1.8, label=f"{method}: shortest 20%")
        values = np.array([r["forget_kl"] for r in rand])
        mean, std = values.mean(0), values.std(0)
        ax.plot(epochs, mean, color=color, lw=1.8, ls="--", label=f"{method}: random 20% (mean of {len(rand)})")
        ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.18, lw=0)
        for ax, k in ((axes[1], "forget1_kl"), (axes[2], "forget2_kl")):
            ax.plot(epochs, short[k], color=color, lw=1.8, label=f"{method}: shortest")
            ax.plot(epochs, np.mean([r[k] for r in rand], 0), color=color, lw=1.8, ls="--", label=f"{method}: random")
    keys = ("forget_kl", "forget1_kl", "forget2_kl")
    titles = ("(a) forget KL (Forget1 + Forget2 test)", "(b) Forget1 (long, length 20)",
              f"(c) Forget2 (short; {s['shortest_share_forget2']:.0%} of the shortest-20% set)")
    for ax, k, title in zip(axes, keys, titles, strict=True):
        ax.axhline(metrics[f"retrained.{k}"], color="k", ls=":", lw=0.9, label="retrained model")
        ax.axhline(metrics[f"original.{k}"], color="0.5", ls="-.", lw=0.9, label="original model")
        ax.set_xlabel("relearning epoch (0 = just unlearned)")
        ax.set_ylabel("token KL to the true chain (higher = more forgotten)")
        ax.set_xticks(np.asarray(s["methods"]["NPO"]["shortest"]["epochs"]))
        ax.legend(fontsize=7)
        panel_label(ax, title)
    fig.suptitle("Relearning attack on the Markov transformer: fine-tuning the unlearned NPO and SimNPO models on "
                 "20% of the forget set (shortest vs random)", fontsize=11)
    return fig


EXPERIMENT = Experiment(
    name="relearn",
    claim="Relearning attack (SimNPO Fig. 6) on the Markov toy: after NPO and SimNPO unlearning, fine-tuning on "
          "the shortest or a random 20% of the forget set; forget KL recovery per epoch.",
    presets=PRESETS, run=run, plot=plot,
)
