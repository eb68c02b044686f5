"""weight-allocation: how NPO and SimNPO share their unlearning power across forget sequences of different
lengths and likelihoods (SimNPO paper Sec. 4, Figs 3-4, App. G; theory in ``theory.allocation``).

Claim. The per-sequence weight W_b = dL/dlogp_b that multiplies each sequence's gradient is
  NPO:    2 sigma(beta (logp_b - logp_ref_b))      = 1 for every sequence at step 0 (logp = logp_ref), so early
          NPO is GA and a sequence's gradient grows with its length |y| (limitation L2); later it favours the
          sequences whose likelihood has fallen least relative to their reference (L1);
  SimNPO: (2/|y|) sigma(beta logp_b / |y| + gamma) ~ 1/|y| at equal mean likelihood: length-normalised from
          the first step, and without a reference.
Measured on the Markov transformer of markov-length: the weights of every forget-train sequence at several
stages of 50 unlearning steps (AdamW, lr 5e-4, batch 4), their Pearson correlation with |y| and with the
initial mean token log-likelihood, and the closed forms of ``theory.allocation`` evaluated at the measured
likelihoods beside them. X.closed_form_consistency_max_abs_err, the largest gap between autograd's weight and the
closed form at the same log-probs over all sequences and stages, checks the code (the objective against its own
derivative), not the theory: the claims are the correlations, which the weights' formulas predict.

The forget set. markov-length's Forget1 sequences all have |y| = 19 and Forget2's |y| = 4, so a correlation
with length would only contrast two groups. Here each Forget1 training sequence is cut to a random prefix
(|y| uniform in 2..19, the same sequences the original model was trained on, so as well memorised), and
Forget2 keeps |y| = 4: weights against |y| form a cloud. The models are markov-length's (cached, shared).

X.pearson_weight_length.step0 is null for NPO: its step-0 weights are all exactly 1 (a constant has no
correlation; npo.weight_step0_max_abs_dev_from_1 measures how exactly). The SimNPO paper's Figs 3-4 are on TOFU,
not on this toy, so ``paper`` is empty.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import matplotlib.pyplot as plt
import numpy as np
import torch

from sims import markov
from sims.experiment import Experiment, Result, method_params
from sims.plotting import METHOD_COLORS, panel_label
from theory import allocation
from unlearn.config import require_positive
from unlearn.metrics import tokens
from unlearn.objectives import MethodParams
from unlearn.rng import generator
from unlearn.train import resolve_device

COMPARED = ("NPO", "SimNPO")  # the methods of the figure


@dataclass(frozen=True)
class Config(markov.UnlearningSetup):
    """Unlearning settings on the shared Markov setup (``sims.markov.UnlearningSetup``; default: markov-length's)."""

    npo_beta: float = 0.2
    simnpo_beta: float = 4.0
    stages: tuple[int, ...] = (0, 10, 25, 50)  # steps at which every forget sequence's weight is recorded
    min_tokens: int = 2  # shortest Forget1 prefix, in predicted tokens |y|

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "npo_beta", "simnpo_beta")
        if not self.stages or self.stages[0] != 0 or list(self.stages) != sorted(set(self.stages)) \
                or self.stages[-1] > self.steps:
            raise ValueError(f"stages must rise strictly from 0 to at most steps={self.steps}, got {self.stages}")
        if not 1 <= self.min_tokens <= 19:
            raise ValueError(f"min_tokens must lie in [1, 19], got {self.min_tokens}")


PRESETS = {
    "full": Config(),
    "fast": Config(**markov.FAST_SETUP, stages=(0, 10, 25, 50)),
}


def random_prefixes(split: markov.Split, min_tokens: int, g: torch.Generator) -> markov.Split:
    """Each sequence of ``split`` cut to its first k + 1 states, k uniform in [min_tokens, |y|]: positions past
    the cut stop counting (label -100, mask 0), exactly as padding."""
    n_tokens = split.n_tokens
    cut = min_tokens + (torch.rand(len(split), generator=g) * (n_tokens - min_tokens + 1)).long()
    keep = torch.arange(split.labels.shape[1]) < cut[:, None]
    return replace(split, labels=split.labels.masked_fill(~keep, -100), mask=split.mask * keep)


def varied_length_world(world: markov.MarkovWorld, min_tokens: int, seed: int) -> markov.MarkovWorld:
    """``world`` with Forget1's training sequences cut to random prefixes (module docstring)."""
    cut = random_prefixes(world["forget1_train"], min_tokens, generator(seed, "weight-allocation", "prefixes"))
    return markov.MarkovWorld(world.cfg, world.chains, {**world.splits, "forget1_train": cut})


def theory_weights(method: str, logp: np.ndarray, n_tokens: np.ndarray, logp_ref: np.ndarray,
                   params: MethodParams) -> np.ndarray:
    """The closed forms of ``theory.allocation`` at the measured log-likelihoods."""
    if method == "NPO":
        return allocation.npo_sample_weight(logp, logp_ref, params.beta)
    return allocation.simnpo_sample_weight(logp, n_tokens, params.beta, params.gamma)


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson's r, or None when either variable is constant (then r is undefined)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def weight_snapshots(original, method: str, world: markov.MarkovWorld, cfg: Config) -> dict:
    """Unlearn a copy of ``original`` with ``method`` and record, at each of ``cfg.stages``, the weight and the
    log-likelihood of every forget-train sequence (in the order of ``world.forget_set()``)."""
    device = tokens.model_device(original)
    forget = world.forget_set().to(device)
    params = method_params(cfg, method)
    ref_logp = tokens.per_sequence_stats(original, forget).logp
    snaps: dict[int, dict] = {}

    def evaluate(model, step):
        if step in cfg.stages:
            stats = tokens.per_sequence_stats(model, forget)
            weights = markov.sample_weights(model, forget, method, params, ref_logp)
            snaps[step] = {"weight": weights.tolist(), "logp": stats.logp.double().tolist()}
        return {}

    markov.unlearn_run(copy.deepcopy(original), method, params, world, steps=cfg.stages[-1],
                       batch_size=cfg.batch_size, lr=cfg.lr, evaluate_every=1, evaluate=evaluate,
                       generator=generator(cfg.seed, "weight-allocation", method), progress=cfg.progress,
                       **cfg.train_options())
    return {"stages": {str(s): snaps[s] for s in cfg.stages}, "ref_logp": ref_logp.double().tolist()}


def run(cfg: Config) -> Result:
    device = resolve_device(cfg.device)
    world, original, _ = cfg.models(device, cfg.progress)
    world = varied_length_world(world, cfg.min_tokens, cfg.seed)
    forget = world.forget_set()
    n_tokens = forget.n_tokens.double().numpy()
    series = {"n_tokens": n_tokens.tolist(), "chain": forget.chain.tolist(), "methods": {}}
    metrics: dict[str, float | None] = {}
    for method in COMPARED:
        x, params = method.lower(), method_params(cfg, method)
        snaps = weight_snapshots(original, method, world, cfg)
        ref = np.asarray(snaps["ref_logp"])
        lbar0 = ref / n_tokens
        errors = []
        for stage, snap in snaps["stages"].items():
            w, logp = np.asarray(snap["weight"]), np.asarray(snap["logp"])
            errors.append(np.max(np.abs(w - theory_weights(method, logp, n_tokens, ref, params))))
            name = "step0" if stage == "0" else ("final" if int(stage) == cfg.stages[-1] else f"step{stage}")
            metrics[f"{x}.pearson_weight_length.{name}"] = pearson(w, n_tokens)
            metrics[f"{x}.pearson_weight_loglik.{name}"] = pearson(w, lbar0)
        metrics[f"{x}.closed_form_consistency_max_abs_err"] = float(max(errors))
        series["methods"][method] = {"beta": params.beta, **snaps}
    metrics["npo.weight_step0_max_abs_dev_from_1"] = float(
        np.max(np.abs(np.asarray(series["methods"]["NPO"]["stages"]["0"]["weight"]) - 1.0)))
    return Result(metrics, series, {})


def _median_by_length(n_tokens: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.unique(n_tokens)
    return lengths, np.array([np.median(values[n_tokens == k]) for k in lengths])


def plot(result: Result):
    s, m = result.series, result.metrics
    n_tokens = np.asarray(s["n_tokens"])
    stages = list(s["methods"]["NPO"]["stages"])
    fig, axes = plt.subplots(2, len(stages) + 1, figsize=(4.6 * (len(stages) + 1), 8.5), constrained_layout=True)
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.25, 0.25, n_tokens.shape)
    for row, method in enumerate(COMPARED):
        r = s["methods"][method]
        ref = np.asarray(r["ref_logp"])
        params = MethodParams(beta=r["beta"])
        color = METHOD_COLORS[method]
        for col, stage in enumerate(stages):
            ax = axes[row][col]
            w, logp = np.asarray(r["stages"][stage]["weight"]), np.asarray(r["stages"][stage]["logp"])
            ax.scatter(n_tokens + jitter, w, s=2, alpha=0.25, color=color, rasterized=True)
            lengths, lbar = _median_by_length(n_tokens, logp / n_tokens)
            _, lbar_ref = _median_by_length(n_tokens, ref / n_tokens)
            predicted = theory_weights(method, lbar * lengths, lengths, lbar_ref * lengths, params)
            ax.plot(lengths, predicted, "k-", lw=1.2, label="theory at the median likelihood per |y|")
            if method == "SimNPO":  # weights span orders of magnitude: sigma(beta lbar) with lbar ~ -2
                ax.set_yscale("log")
            corr = m.get(f"{method.lower()}.pearson_weight_length."
                         f"{'step0' if stage == '0' else 'final' if stage == stages[-1] else 'step' + stage}")
            shown = "undefined (all W = 1)" if corr is None else f"{corr:+.2f}"
            panel_label(ax, f"({'ab'[row]}{col + 1}) {method} step {stage}: r(W, |y|) = {shown}")
            ax.set_xlabel("|y| (predicted tokens)")
            ax.set_ylabel("weight W = dL/dlogp")
            ax.legend(fontsize=7)
        ax = axes[row][-1]
        w_final = np.asarray(r["stages"][stages[-1]]["weight"])
        sc = ax.scatter(ref / n_tokens, w_final, c=n_tokens, s=3, alpha=0.4, cmap="viridis", rasterized=True)
        fig.colorbar(sc, ax=ax, label="|y|")
        corr = m.get(f"{method.lower()}.pearson_weight_loglik.final")
        if method == "SimNPO":
            ax.set_yscale("log")
        panel_label(ax, f"({'ab'[row]}{len(stages) + 1}) {method} step {stages[-1]} vs initial likelihood: "
                        f"r = {'-' if corr is None else f'{corr:+.2f}'}")
        ax.set_xlabel("initial mean token log-likelihood logp_ref/|y|")
        ax.set_ylabel("weight at the last stage")
    fig.suptitle("Per-sequence weights of NPO (top) and SimNPO (bottom) on the Markov forget set: NPO starts at 1 "
                 "for every sequence (GA-like, gradient ~ |y|), SimNPO ~ 1/|y| from the start", fontsize=12)
    return fig


EXPERIMENT = Experiment(
    name="weight-allocation",
    claim="Per-sequence weights on the Markov transformer: NPO's are exactly 1 at step 0 (GA-like, so long "
          "sequences get more gradient), SimNPO's carry a 1/|y| factor from the start (correlation with length "
          "-0.35 at beta 4, where the likelihood term varies too); both follow theory.allocation's closed forms "
          "at the measured likelihoods.",
    presets=PRESETS, run=run, plot=plot,
)
