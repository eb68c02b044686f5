"""markov-length and markov-memorization: SimNPO paper Fig. 5 (Fan et al. 2024, Sec. 5, App. H).

Claim. On the mixture of Markov chains (``sims.markov``; exact theory in ``theory.markov``) NPO's reference
bias shows as an uneven trade-off between two forget sets, SimNPO's does not:
  (a) markov-length: retain and Forget1 sequences have length 20, Forget2 length 5, the original model saw all
      three. NPO (beta 0.2) forgets the long Forget1 fast and the short Forget2 slowly, so bringing Forget2 to
      the retrained model's KL costs a large retain KL (paper: ~0.19-0.20); SimNPO (beta 4) gets there for
      ~0.03, with its Forget1 and Forget2 paths close together.
  (b) markov-memorization: every length is 20 and Forget2 was left out of pretraining (weakly memorised, its KL
      already at the retrained level). NPO (beta 1) pushes the weakly memorised Forget2 far past the retrained
      level before Forget1 moves; SimNPO's two paths are closer.

Setting (SimNPO paper Sec. 5 and App. H). 10000 retain / 5000 Forget1 / 5000 Forget2 sequences, 80/20 split; the
4-layer d = 128 transformer pretrained with AdamW lr 5e-4, batch 128, 5 epochs (cached on disk, shared by both
experiments and by ``weight-allocation`` and ``collapse``); unlearning on Forget1 + Forget2 train, 50 steps of
batch 4, AdamW lr 5e-4, forget loss only; every step is evaluated by the per-token KL of the model's next-state
distribution to the true transition row on the three test splits (their first ``eval_limit`` = 500 sequences,
the same ones at every step and for the original and retrained models). ``seeds`` replicates the unlearning runs
(their batch order; the pretrained models are one draw) and curves are their mean; a beta sweep (one run per
beta, evaluated every ``sweep_eval_every`` steps) shows how the trade-off moves with beta. The replicates of
both methods train side by side as one ensemble, and so do all runs of the sweep (``sims.markov.unlearn_runs``).

Metrics. theory.retrained_forgetK_kl: the exact KL of a retain-only Bayes model (``theory.markov.retrained_kl``);
retrained.* / original.*: the measured KLs of the retrained and original transformers;
X.retain_cost_fK_to_retrained: the retain KL where forget split K's KL first reaches retrained.forgetK_kl along
the mean path (linearly interpolated between steps; null if it never does within the run);
X.retain_cost_fK_to_kl1: the same for the level KL = 1 that the paper reads off in (b);
X.f1_f2_gap: the mean over evaluated steps of |forget1 KL - forget2 KL| (step 0 included);
sweep.X.beta=B.*: the same for each beta of the sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from sims import markov
from sims.experiment import Experiment, Result, mean_std, member_curves, method_params
from sims.plotting import METHOD_COLORS, beta_colors, panel_label
from theory import markov as theory
from unlearn.config import require_at_least_one, require_positive
from unlearn.metrics.curves import value_at_crossing
from unlearn.rng import generator
from unlearn.train import resolve_device

COMPARED = ("NPO", "SimNPO")  # the methods of the figure
SPLITS = ("retain_kl", "forget1_kl", "forget2_kl")
FORGETS = {"f1": "forget1_kl", "f2": "forget2_kl"}


@dataclass(frozen=True)
class Config(markov.UnlearningSetup):
    """Unlearning settings on top of the shared world and pretraining (``sims.markov.UnlearningSetup``)."""

    npo_beta: float = 0.2
    simnpo_beta: float = 4.0
    seeds: int = 3
    sweep_npo_betas: tuple[float, ...] = (0.05, 0.5, 1.0, 2.0)
    sweep_simnpo_betas: tuple[float, ...] = (1.0, 2.0, 8.0)
    sweep_eval_every: int = 5
    eval_limit: int | None = 500  # evaluate on the first eval_limit sequences of each test split (None: all)

    def __post_init__(self):
        super().__post_init__()
        require_at_least_one(self, "seeds", "sweep_eval_every")
        require_positive(self, "npo_beta", "simnpo_beta")
        for key in ("sweep_npo_betas", "sweep_simnpo_betas"):
            for beta in getattr(self, key):
                if not (np.isfinite(beta) and beta > 0):
                    raise ValueError(f"{key}: every beta must be a finite number > 0, got {beta!r}")

    def beta(self, method: str) -> float:
        return method_params(self, method).beta

    def sweep_betas(self, method: str) -> tuple[float, ...]:
        return {"NPO": self.sweep_npo_betas, "SimNPO": self.sweep_simnpo_betas}[method]


LENGTH = Config()
MEMORIZATION = Config(len_forget2=20, pretrain_data="without_forget2", npo_beta=1.0,
                      sweep_npo_betas=(0.2, 0.5, 2.0), sweep_simnpo_betas=(1.0, 2.0, 8.0))
# fast: the small setup (sims.markov.FAST_SETUP), one unlearning seed, a one-beta sweep, 400-sequence test splits.
_FAST = dict(**markov.FAST_SETUP, seeds=1, eval_limit=400)
LENGTH_PRESETS = {"full": LENGTH, "fast": Config(**{**_FAST, "sweep_npo_betas": (1.0,), "sweep_simnpo_betas": (1.0,)})}
MEMORIZATION_PRESETS = {
    "full": MEMORIZATION,
    "fast": Config(**{**_FAST, "len_forget2": 20, "pretrain_data": "without_forget2", "npo_beta": 1.0,
                      "sweep_npo_betas": (0.2,), "sweep_simnpo_betas": (1.0,)}),
}

# The SimNPO paper's Fig. 5 readings (read from the PDF's vector paths, approximate).
PAPER_LENGTH = {
    "original.retain_kl": 0.022, "original.forget1_kl": 0.037, "original.forget2_kl": 0.100,
    "retrained.forget1_kl": 0.42, "retrained.forget2_kl": 0.44,
    "npo.retain_cost_f2_to_retrained": 0.195, "simnpo.retain_cost_f2_to_retrained": 0.03,
}
PAPER_MEMORIZATION = {
    "original.retain_kl": 0.017, "original.forget1_kl": 0.044, "original.forget2_kl": 0.42,
    "retrained.forget1_kl": 0.42, "retrained.forget2_kl": 0.42,
    "npo.retain_cost_f2_to_kl1": 0.08, "npo.retain_cost_f1_to_kl1": 0.29,
    "simnpo.retain_cost_f2_to_kl1": 0.14, "simnpo.retain_cost_f1_to_kl1": 0.20,
}


# --------------------------------------------------------------------------------------------- measurement


def unlearning_curves(original, runs: list[tuple[str, float, int]], world: markov.MarkovWorld, evaluate, cfg: Config,
                      eval_every: int = 1) -> list[dict[str, list[float]]]:
    """For each run (method, beta, replicate), {"steps", "retain_kl", "forget1_kl", "forget2_kl"} along its
    unlearning path from ``original``; the batch order comes from the stream (seed, "markov-unlearn", method,
    replicate). The runs train side by side as one ensemble (``sims.markov.unlearn_runs``)."""
    history, _ = markov.unlearn_runs(
        original, [method for method, _, _ in runs], [method_params(cfg, m, beta=beta) for m, beta, _ in runs], world,
        [generator(cfg.seed, "markov-unlearn", method, replicate) for method, _, replicate in runs],
        steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, evaluate_every=eval_every, evaluate=evaluate,
        progress=cfg.progress, **cfg.train_options())
    return [{"steps": history.eval_steps, **curves} for curves in member_curves(history, SPLITS)]


def mean_curves(replicates: list[dict[str, list[float]]]) -> dict:
    """Mean and std over replicates of each split's curve, and every replicate's curve."""
    out = {"steps": replicates[0]["steps"]}
    for key in SPLITS:
        values = [r[key] for r in replicates]
        out[key] = {**mean_std(values), "seeds": values}
    return out


def tradeoff_metrics(curves: dict, levels: dict[str, float]) -> dict[str, float | None]:
    """retain_cost_fK_to_<level> for each forget split K and each named level, and the f1-f2 gap, of one path.
    ``curves`` holds mean curves ({"mean": [...]}) or plain lists."""
    mean = {key: np.asarray(c["mean"] if isinstance(c, dict) else c, float) for key, c in curves.items()
            if key in SPLITS}
    out: dict[str, float | None] = {}
    for k, split in FORGETS.items():
        for name, level in levels.items():
            target = level[split] if isinstance(level, dict) else level
            out[f"retain_cost_{k}_to_{name}"] = value_at_crossing(mean[split], mean["retain_kl"], target, rising=True)
    out["f1_f2_gap"] = float(np.mean(np.abs(mean["forget1_kl"] - mean["forget2_kl"])))
    return out


def _runner(paper: dict[str, float]):
    def run(cfg: Config) -> Result:
        """Pretrain (or load) the original and retrained models, run NPO and SimNPO (``seeds`` replicates each)
        and the beta sweep, and measure the Fig. 5 trade-off."""
        device = resolve_device(cfg.device)
        world, original, retrained = cfg.models(device, cfg.progress)
        world_cfg = world.cfg
        evaluate = markov.evaluator(world, device, limit=cfg.eval_limit)
        measured = {"original": evaluate(original, 0), "retrained": evaluate(retrained, 0)}
        exact = {f"forget{k}_kl": theory.retrained_kl(f"forget{k}", getattr(world_cfg, f"len_forget{k}"))
                 for k in (1, 2)}
        levels = {"retrained": {s: measured["retrained"][s] for s in FORGETS.values()}, "kl1": 1.0}

        metrics: dict[str, float | None] = {f"theory.retrained_{k}": v for k, v in exact.items()}
        for model in ("retrained", "original"):
            metrics.update({f"{model}.{k}": v for k, v in measured[model].items()})
        main = [(method, cfg.beta(method), r) for method in COMPARED for r in range(cfg.seeds)]
        swept = [(method, beta, 0) for method in COMPARED for beta in cfg.sweep_betas(method)]
        main_curves = unlearning_curves(original, main, world, evaluate, cfg)
        sweep_curves = unlearning_curves(original, swept, world, evaluate, cfg, cfg.sweep_eval_every) if swept else []
        runs, sweep = {}, {method: {} for method in COMPARED}
        for method in COMPARED:
            x = method.lower()
            replicates = [c for (name, _, _), c in zip(main, main_curves, strict=True) if name == method]
            runs[method] = {"beta": cfg.beta(method), **mean_curves(replicates)}
            metrics.update({f"{x}.{k}": v for k, v in tradeoff_metrics(runs[method], levels).items()})
            metrics.update({f"{x}.{s}.final": runs[method][s]["mean"][-1] for s in SPLITS})
        for (method, beta, _), curves in zip(swept, sweep_curves, strict=True):
            sweep[method][f"{beta:g}"] = curves
            found = tradeoff_metrics(curves, {"retrained": levels["retrained"]})
            metrics.update({f"sweep.{method.lower()}.beta={beta:g}.{k}": v for k, v in found.items()})
        series = {"measured": measured, "theory": exact, "runs": runs, "sweep": sweep,
                  "world": {"len_forget2": world_cfg.len_forget2, "pretrain_data": cfg.pretrain_data},
                  "seeds": cfg.seeds}
        return Result(metrics, series, paper)

    return run


# ------------------------------------------------------------------------------------------------ figure

_STYLE = {"forget1_kl": "-", "forget2_kl": "--"}
_EXACT_STYLE = {"forget1_kl": ":", "forget2_kl": "-."}  # theory.markov's exact retrained levels
_MARK = {"forget1_kl": "*", "forget2_kl": "o"}
_NAME = {"retain_kl": "retain", "forget1_kl": "Forget1", "forget2_kl": "Forget2"}


def _markers(ax, series: dict) -> None:
    """The retrained (filled) and original (hollow) models' (retain KL, forget KL) points, star = Forget1,
    dot = Forget2, and the exact retrained levels of theory.markov (dotted Forget1, dash-dot Forget2)."""
    for split in FORGETS.values():
        for model, face in (("retrained", "k"), ("original", "none")):
            point = series["measured"][model]
            ax.plot(point["retain_kl"], point[split], _MARK[split], mfc=face, mec="k", ms=9 if split == "forget1_kl"
                    else 6, zorder=5)
        ax.axhline(series["theory"][split], color="0.5", lw=0.8, ls=_EXACT_STYLE[split])


def _path_panel(ax, series: dict, metrics: dict) -> None:
    for method, r in series["runs"].items():
        color = METHOD_COLORS[method]
        for split in FORGETS.values():
            if series["seeds"] > 1:  # each replicate thin, their mean bold
                for x, y in zip(r["retain_kl"]["seeds"], r[split]["seeds"], strict=True):
                    ax.plot(x, y, color=color, lw=0.5, alpha=0.3, ls=_STYLE[split])
            ax.plot(r["retain_kl"]["mean"], r[split]["mean"], color=color, ls=_STYLE[split], lw=1.8)
        for k, split in FORGETS.items():
            cost = metrics.get(f"{method.lower()}.retain_cost_{k}_to_retrained")
            if cost is not None:
                ax.axvline(cost, color=color, lw=0.6, ls=_STYLE[split], alpha=0.6)
    _markers(ax, series)
    ax.set_xlabel("retain KL (lower is better)")
    ax.set_ylabel("forget KL (higher = more forgotten)")
    handles = [Line2D([], [], color=METHOD_COLORS[m], lw=1.8, label=f"{m} (beta={series['runs'][m]['beta']:g})")
               for m in series["runs"]]
    handles += [Line2D([], [], color="k", ls=_STYLE[s], label=_NAME[s]) for s in FORGETS.values()]
    handles += [Line2D([], [], marker="*", color="k", ls="", ms=9, label="retrained (filled) / original (hollow)"),
                *(Line2D([], [], color="0.5", ls=_EXACT_STYLE[s], label=f"exact retrain-only Bayes KL, {_NAME[s]}")
                  for s in FORGETS.values())]
    ax.legend(handles=handles, fontsize=7, loc="lower right")


def _steps_panel(ax, series: dict, method: str) -> None:
    r = series["runs"][method]
    for split, color in zip(SPLITS, ("0.3", "#ff7f0e", "#9467bd"), strict=True):
        mean, std = np.array(r[split]["mean"]), np.array(r[split]["std"])
        ax.plot(r["steps"], mean, color=color, label=_NAME[split], ls=_STYLE.get(split, "-"))
        ax.fill_between(r["steps"], mean - std, mean + std, color=color, alpha=0.2, lw=0)
        if split in FORGETS.values():
            ax.axhline(series["measured"]["retrained"][split], color=color, lw=0.7, ls=":")
    ax.set_xlabel("unlearning step")
    ax.set_ylabel("KL to the true transitions")
    band = f"mean +- std over {series['seeds']} seeds" if series["seeds"] > 1 else "one seed"
    ax.legend(fontsize=7, title=f"{method}, {band}; dotted: retrained", title_fontsize=7, loc="upper left")


def _sweep_panel(ax, series: dict, method: str) -> None:
    runs = dict(series["sweep"][method])
    main = series["runs"][method]
    runs[f"{main['beta']:g}"] = {"retain_kl": main["retain_kl"]["mean"],
                                 **{s: main[s]["mean"] for s in FORGETS.values()}}
    colors = beta_colors([float(b) for b in runs])
    for beta, r in sorted(runs.items(), key=lambda kv: float(kv[0])):
        for split in FORGETS.values():
            ax.plot(r["retain_kl"], r[split], color=colors[float(beta)], ls=_STYLE[split], lw=1.4,
                    label=f"beta={beta}" if split == "forget1_kl" else None)
    _markers(ax, series)
    ax.set_xlabel("retain KL")
    ax.set_ylabel("forget KL (solid Forget1, dashed Forget2)")
    ax.legend(fontsize=7, loc="lower right")


def _cost_panel(ax, series: dict, metrics: dict) -> None:
    """Retain KL spent to bring Forget1 / Forget2 to the retrained level, per beta; hollow = never reached."""
    top = max([v for k, v in metrics.items() if "retain_cost" in k and "to_retrained" in k and v is not None],
              default=0.1) * 1.15
    for method in COMPARED:
        x = method.lower()
        betas = sorted({float(b) for b in series["sweep"][method]} | {series["runs"][method]["beta"]})
        for k, split in FORGETS.items():
            costs = []
            for b in betas:
                key = (f"{x}.retain_cost_{k}_to_retrained" if b == series["runs"][method]["beta"]
                       else f"sweep.{x}.beta={b:g}.retain_cost_{k}_to_retrained")
                costs.append(metrics.get(key))
            reached = [(b, c) for b, c in zip(betas, costs, strict=True) if c is not None]
            if reached:
                ax.plot(*zip(*reached, strict=True), marker=_MARK[split], color=METHOD_COLORS[method],
                        ls=_STYLE[split], label=f"{method} {_NAME[split]}")
            missed = [b for b, c in zip(betas, costs, strict=True) if c is None]
            ax.plot(missed, [top] * len(missed), _MARK[split], mfc="none", mec=METHOD_COLORS[method], ls="")
    ax.set_xscale("log")
    ticks = sorted({float(b) for m in COMPARED for b in series["sweep"][m]}
                   | {r["beta"] for r in series["runs"].values()})
    ax.set_xticks(ticks, [f"{b:g}" for b in ticks])
    ax.minorticks_off()
    ax.set_ylim(0, top * 1.05)
    ax.set_xlabel("beta")
    ax.set_ylabel("retain KL when forget KL reaches retrained")
    ax.legend(fontsize=7, title="hollow at top: not reached in the run", title_fontsize=7)


def _plotter(title: str):
    def plot(result: Result):
        s, m = result.series, result.metrics
        fig, axes = plt.subplots(2, 3, figsize=(17, 10), constrained_layout=True)
        _path_panel(axes[0][0], s, m)
        _steps_panel(axes[0][1], s, "NPO")
        _steps_panel(axes[0][2], s, "SimNPO")
        _sweep_panel(axes[1][0], s, "NPO")
        _sweep_panel(axes[1][1], s, "SimNPO")
        _cost_panel(axes[1][2], s, m)
        panel_label(axes[0][0], "(a) forget vs retain KL along 50 steps (SimNPO Fig. 5)")
        panel_label(axes[0][1], "(b) NPO: KL on each test split vs step")
        panel_label(axes[0][2], "(c) SimNPO: KL on each test split vs step")
        panel_label(axes[1][0], "(d) NPO beta sweep")
        panel_label(axes[1][1], "(e) SimNPO beta sweep")
        panel_label(axes[1][2], "(f) retain cost of reaching the retrained forget KL")
        fig.suptitle(title.format(**s["world"]), fontsize=12)
        return fig

    return plot


EXPERIMENT_LENGTH = Experiment(
    name="markov-length",
    claim="Markov mixture, Forget2 4x shorter than Forget1 (SimNPO Fig. 5a): NPO pays ~0.08 retain KL to bring "
          "short Forget2 to the retrained level and its Forget1 and Forget2 paths run apart; SimNPO pays less than "
          "half of that and keeps them together.",
    presets=LENGTH_PRESETS, run=_runner(PAPER_LENGTH),
    plot=_plotter("SimNPO paper Fig. 5a: length bias. Forget1 length 20, Forget2 length {len_forget2}; "
                  "original model pretrained on {pretrain_data}"),
)
EXPERIMENT_MEMORIZATION = Experiment(
    name="markov-memorization",
    claim="Markov mixture, Forget2 left out of pretraining (SimNPO Fig. 5b): NPO over-forgets the weakly "
          "memorised Forget2 and under-forgets Forget1; SimNPO's two forget paths stay closer.",
    presets=MEMORIZATION_PRESETS, run=_runner(PAPER_MEMORIZATION),
    plot=_plotter("SimNPO paper Fig. 5b: memorisation bias. Both forget sets length 20, Forget2 left out of "
                  "pretraining (original model pretrained on {pretrain_data})"),
)
