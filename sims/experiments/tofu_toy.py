"""tofu-toy: TOFU's protocol at laptop scale, measured as the field measures it (forget quality against model
utility per epoch: the SimNPO paper's Table 1, the NPO paper's Fig. 5), beside the mechanisms the toys predict.

Claim (Fan et al. 2024, Table 1; Zhang et al. 2024, Sec. 5). On TOFU, NPO and SimNPO (with their retain terms)
reach far higher forget quality than GA at similar model utility, and SimNPO at least NPO's.

Setting. A TOFU-layout data set from ``unlearn.tofu.tofu_like`` (``n_authors`` fictitious authors with 20 facts
each, real-author and world facts, forget10 = the first 10% of the authors), read as words
(``unlearn.data.word_tokenizer`` over all its texts, plain "Question: ... Answer: " prompts). Two Llama models
(``hidden`` x ``layers``, random init) are fine-tuned with AdamW (warm-up, linear decay) for ``finetune_epochs``:
the original on full + real authors + world facts ("fine-tuned on TOFU"), the retain model on retain90 + real
authors + world facts (it never saw the forget authors). Both are cached (``unlearn.cache``), the retain model with
its per-question forget truth ratios (its eval log, computed once). Each method of COMPARED then unlearns the
forget split from the original for ``epochs`` epochs (forget batches of ``batch_size``; the +RT methods add the
NLL of retain batches of the same size with weight lam; AdamW, lr ``lr`` with a one-epoch linear warm-up, as
TOFU's protocol) with the hyperparameters of its published TOFU runs unless the config gives them
(``unlearn.tofu.published_hyperparameters``: NPO beta 0.1 and lam 1, SimNPO on forget10 beta 4.5 and forget
weight 0.125 as lam = 8, the retain NLL per token beside both; GA+RT sums both terms per sequence, where
TOFU takes both per token), evaluated before the first step and after every epoch by ``unlearn.metrics.tofu``
(greedy answers up to ``max_new_tokens`` words).

Keys (X a method of COMPARED): X.forget_quality.final, X.model_utility.final, X.forget_quality.best (over the
epochs), X.epochs_to_forget_quality_0.05 (the first epoch at which forget quality reaches 0.05, the NPO paper's
threshold; null if never), X.forget_nll.final (forget NLL per answer token); retain_model.forget_quality (the
retain model's truth ratios against themselves: 1.0 by construction, a check of the pipeline),
retain_model.model_utility, original.forget_quality, original.model_utility. ``paper``: the SimNPO paper's Table 1
Forget10 values for NPO and SimNPO on Llama-2-7B-chat, whose TOFU runs include a retain term (here NPO+RT and
SimNPO+RT). They are not the same scale of model or data: compare orderings, not values.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch

from sims.experiment import Experiment, Result, UnlearningOptimizer, method_params
from sims.plotting import METHOD_COLORS, panel_label
from unlearn import cache, tofu
from unlearn.config import require_at_least_one, require_positive
from unlearn.data import PLAIN_TEMPLATE, Example, TokenSet, tokenize_examples, word_tokenizer
from unlearn.losses import token_mean_nll, unlearning_losses
from unlearn.metrics.tofu import FORGET_SET, TofuEvalSettings, evaluate_tofu, forget_quality, summarise
from unlearn.metrics.tokens import nll_per_token, per_sequence_stats
from unlearn.objectives import MethodParams, SequenceStats, forget_weights, get_method
from unlearn.reference import make_reference
from unlearn.train import TrainConfig, resolve_device, shuffled_batches, train

COMPARED = ("GA", "GA+RT", "NPO", "NPO+RT", "SimNPO", "SimNPO+RT")
WEIGHTED = ("NPO+RT", "SimNPO+RT")  # the per-sample weights panel
PRETRAINING = ("real_authors.json", "world_facts.json")  # facts both models learn, no forget split touches
FQ_THRESHOLD = 0.05
MAX_LENGTH = 128  # tokens (words) of question + answer


@dataclass(frozen=True)
class Config(UnlearningOptimizer):
    """Settings of ``tofu-toy``; the unlearning runs' optimizer (``sims.experiment.UnlearningOptimizer``) defaults to
    AdamW with betas (0.9, 0.999) and eps 1e-8; the fine-tuned original and retain models keep their own AdamW
    (they are cached)."""

    optimizer: str = "adamw"
    n_authors: int = 20
    n_retain_perturbed: int = 2  # authors of retain_perturbed (40 questions)
    n_perturbed: int = 5
    split: str = "forget10"
    hidden: int = 64
    layers: int = 2
    finetune_epochs: int = 60
    finetune_lr: float = 3e-3
    finetune_batch_size: int = 32
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    # beta, lam, retain_norm: None takes the method's published TOFU value for the split
    # (unlearn.tofu.published_hyperparameters: SimNPO beta 4.5 and lam 8 on forget10, the retain NLL per token
    # beside NPO and SimNPO), else MethodParams' (beta 0.1, lam 1, per-sequence sums)
    npo_beta: float = 0.1
    simnpo_beta: float | None = None
    gamma: float = 0.0
    lam: float | None = None
    retain_norm: str | None = None
    max_new_tokens: int = 16  # words; the longest answer here is 13 words and its EOS
    seed: int = 0
    device: str = "cpu"
    progress: bool | None = None  # bars for the fine-tuning and the unlearning runs (None: on a terminal)

    def __post_init__(self):
        require_at_least_one(self, "hidden", "layers", "finetune_epochs", "finetune_batch_size", "epochs",
                             "batch_size", "max_new_tokens")
        require_positive(self, "finetune_lr", "lr")
        if self.split not in tofu.SPLITS:
            raise ValueError(f"unknown split {self.split!r}; valid: {', '.join(tofu.SPLITS)}")
        if self.hidden % 4:
            raise ValueError(f"hidden must be a multiple of the 4 attention heads, got {self.hidden}")
        self.data_config()  # validates the data sizes
        self.check_optimizer()
        for method in COMPARED:  # validates beta, gamma, lam and retain_norm
            self.params(method)

    def params(self, method: str) -> MethodParams:
        """``method``'s hyperparameters: the config's where it gives them, else the published TOFU run's."""
        return method_params(self, method, tofu.published_hyperparameters(method, self.split))

    def data_config(self) -> tofu.TofuLikeConfig:
        return tofu.TofuLikeConfig(self.n_authors, self.n_retain_perturbed, self.n_perturbed, self.seed)


PRESETS = {"fast": Config(epochs=5), "full": Config(n_authors=40)}
PAPER = {"NPO+RT.forget_quality.final": 0.29, "NPO+RT.model_utility.final": 0.55,
         "SimNPO+RT.forget_quality.final": 0.45, "SimNPO+RT.model_utility.final": 0.62}


# --------------------------------------------------------------------------------------------------- data


def eval_sets(files: dict[str, list[dict]], split: str) -> dict[str, list[tofu.Question]]:
    """The four evaluation sets of ``files`` (``tofu.tofu_like``'s records), as ``tofu.read_eval_sets`` reads
    them from disk."""
    return {name: [tofu.question_of(r, f"{file}:{i + 1}", tofu.PARAPHRASED[name]) for i, r in enumerate(files[file])]
            for name, file in tofu.eval_files(split).items()}


def texts_of(files: dict[str, list[dict]]) -> list[str]:
    """Every text of the data set (the word tokenizer's vocabulary)."""
    return [t for records in files.values() for r in records for key, value in r.items()
            for t in (value if isinstance(value, list) else [value])]


def examples(files: dict[str, list[dict]], *names: str) -> list[Example]:
    return [Example(r["question"], r["answer"], f"{name}:{i + 1}") for name in names
            for i, r in enumerate(files[name])]


def tokens(tokenizer, exs: list[Example]) -> TokenSet:
    return tokenize_examples(exs, tokenizer, MAX_LENGTH, "plain", PLAIN_TEMPLATE, progress=False)


def settings(cfg: Config) -> TofuEvalSettings:
    return TofuEvalSettings("plain", PLAIN_TEMPLATE, MAX_LENGTH, 64, cfg.max_new_tokens)


# -------------------------------------------------------------------------------------------------- models


def new_model(cfg: Config, vocab: int):
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=vocab, hidden_size=cfg.hidden, intermediate_size=int(8 / 3 * cfg.hidden),
                         num_hidden_layers=cfg.layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=MAX_LENGTH, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return AutoModelForCausalLM.from_config(config).to(resolve_device(cfg.device))


def model_key(cfg: Config, vocab: int, which: str) -> dict:
    """What a fine-tuned model (and anything computed from it alone) is a function of."""
    return {"which": which, "vocab": vocab, **{k: getattr(cfg, k) for k in (
        "n_authors", "n_retain_perturbed", "n_perturbed", "split", "hidden", "layers", "finetune_epochs",
        "finetune_lr", "finetune_batch_size", "seed")}}


def finetuned(cfg: Config, vocab: int, data: TokenSet, which: str):
    """A model fine-tuned on ``data`` from random init (module docstring), cached under ``model_key``."""
    model = new_model(cfg, vocab)

    def build():
        batches, per_epoch = shuffled_batches(len(data), cfg.finetune_batch_size, cfg.seed, "tofu-toy", which)
        tc = TrainConfig(steps=cfg.finetune_epochs * per_epoch, lr=cfg.finetune_lr, optimizer="adamw",
                         schedule="warmup_linear", warmup_steps=per_epoch, device=cfg.device, progress=cfg.progress,
                         name=f"fine-tune {which}")
        train(model, token_mean_nll(data.to(cfg.device)), batches, tc)
        return model.state_dict()

    model.load_state_dict(cache.cached("tofu-toy", model_key(cfg, vocab, which), build))
    return model.eval()


def retain_ratios(cfg: Config, model, tokenizer, sets) -> np.ndarray:
    """The retain model's per-question forget truth ratios, cached beside it (its eval log, computed once)."""
    key = {**model_key(cfg, len(tokenizer), cfg.split), "computed": "forget truth ratios"}

    def build():
        values = evaluate_tofu(model, tokenizer, {FORGET_SET: sets[FORGET_SET]}, settings(cfg), progress=False)
        return {"truth_ratio": torch.tensor(values[FORGET_SET]["truth_ratio"], dtype=torch.float64)}

    return cache.cached("tofu-toy", key, build)["truth_ratio"].numpy()


# ------------------------------------------------------------------------------------------------ unlearning


def unlearn_method(cfg: Config, method: str, original, tokenizer, sets, forget: TokenSet, retain: TokenSet,
                   reference_ratios: np.ndarray) -> dict:
    """One method from a copy of the original: the TOFU metrics and forget NLL after every epoch (epoch 0 = the
    original), and the per-sample forget weights at the last epoch."""
    model = copy.deepcopy(original).train()
    device = cfg.device
    forget, retain = forget.to(device), retain.to(device)
    params = cfg.params(method)
    with torch.no_grad():
        reference = make_reference("cached", model, forget)
    forget_batches, per_epoch = shuffled_batches(len(forget), cfg.batch_size, cfg.seed, "tofu-toy", method, "forget")
    retain_batches, _ = shuffled_batches(len(retain), cfg.batch_size, cfg.seed, "tofu-toy", method, "retain")
    curves: dict[str, list] = {"epoch": [], "forget_quality": [], "model_utility": [], "forget_nll": []}

    def evaluate(m, step):
        metrics = summarise(evaluate_tofu(m, tokenizer, sets, settings(cfg), progress=False), reference_ratios)
        curves["epoch"].append(step // per_epoch)
        curves["forget_quality"].append(metrics["forget_quality"])
        curves["model_utility"].append(metrics["model_utility"])
        curves["forget_nll"].append(nll_per_token(m, forget))
        return {"forget_quality": metrics["forget_quality"]}

    tc = TrainConfig(steps=cfg.epochs * per_epoch, lr=cfg.lr, **cfg.train_options(), schedule="warmup_linear",
                     warmup_steps=per_epoch, eval_every=per_epoch, device=device, progress=cfg.progress,
                     name=f"tofu-toy {method}")
    train(model, unlearning_losses(method, params, forget, retain, reference),
          lambda step: [(forget_batches(step)[0], retain_batches(step)[0], None)], tc, evaluate=evaluate)
    stats = per_sequence_stats(model.eval(), forget)
    logp_ref = reference.forget_logp(model, torch.arange(len(forget), device=device), forget)
    weights = forget_weights(method, params, SequenceStats(stats.logp.double(), stats.n_tokens.double(),
                                                           logp_ref=logp_ref.double()))
    used = {key: getattr(params, key) for key in get_method(method).hyperparameters}
    return {**curves, "length": stats.n_tokens.tolist(), "weight": weights.tolist(), "params": used}


def first_epoch_at(epochs: list[int], values: list[float], level: float) -> int | None:
    return next((e for e, v in zip(epochs, values, strict=True) if v >= level), None)


def run(cfg: Config) -> Result:
    files = tofu.tofu_like(cfg.data_config())
    sets = eval_sets(files, cfg.split)
    tokenizer = word_tokenizer(texts_of(files))
    vocab = len(tokenizer)
    retain_file = f"{tofu.SPLITS[cfg.split]}.json"
    original = finetuned(cfg, vocab, tokens(tokenizer, examples(files, "full.json", *PRETRAINING)), "original")
    retained = finetuned(cfg, vocab, tokens(tokenizer, examples(files, retain_file, *PRETRAINING)), cfg.split)
    ratios = retain_ratios(cfg, retained, tokenizer, sets)
    forget = tokens(tokenizer, examples(files, f"{cfg.split}.json"))
    retain = tokens(tokenizer, examples(files, retain_file))

    metrics, series = {}, {"methods": {}}
    retained_metrics = summarise(evaluate_tofu(retained, tokenizer, sets, settings(cfg), progress=False), ratios)
    metrics["retain_model.forget_quality"] = forget_quality(ratios, ratios)
    metrics["retain_model.model_utility"] = retained_metrics["model_utility"]
    for method in COMPARED:
        record = unlearn_method(cfg, method, original, tokenizer, sets, forget, retain, ratios)
        series["methods"][method] = record
        fq = record["forget_quality"]
        metrics |= {f"{method}.forget_quality.final": fq[-1],
                    f"{method}.model_utility.final": record["model_utility"][-1],
                    f"{method}.forget_quality.best": max(fq),
                    f"{method}.epochs_to_forget_quality_0.05": first_epoch_at(record["epoch"], fq, FQ_THRESHOLD),
                    f"{method}.forget_nll.final": record["forget_nll"][-1]}
    first = series["methods"][COMPARED[0]]
    metrics["original.forget_quality"] = first["forget_quality"][0]
    metrics["original.model_utility"] = first["model_utility"][0]
    series["retain_model"] = {"forget_quality": metrics["retain_model.forget_quality"],
                              "model_utility": metrics["retain_model.model_utility"]}
    return Result(metrics=metrics, series=series, paper=dict(PAPER))


# ---------------------------------------------------------------------------------------------------- plot


def plot(result: Result):
    methods = result.series["methods"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    ax = axes[0]
    for method, r in methods.items():
        ax.plot(r["model_utility"], r["forget_quality"], "-o", ms=3, color=METHOD_COLORS[method], label=method)
        ax.plot(r["model_utility"][-1], r["forget_quality"][-1], "o", ms=8, mfc="none", color=METHOD_COLORS[method])
    first = next(iter(methods.values()))
    ax.plot(first["model_utility"][0], first["forget_quality"][0], "k^", ms=9, label="original")
    kept = result.series["retain_model"]
    ax.plot(kept["model_utility"], kept["forget_quality"], "k*", ms=12, label="retain model")
    ax.axhline(FQ_THRESHOLD, color="0.6", lw=0.8, ls="--")
    ax.set(yscale="log", xlabel="model utility", ylabel="forget quality (KS p-value)",
           title="per epoch (large circle: last epoch)")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1]
    for method, r in methods.items():
        ax.plot(r["epoch"], r["forget_nll"], "-o", ms=3, color=METHOD_COLORS[method], label=method)
    ax.set(yscale="log", xlabel="epoch", ylabel="forget NLL per answer token", title="forget NLL growth")
    ax = axes[2]
    for method in WEIGHTED:
        r = methods[method]
        ax.plot(r["length"], r["weight"], "o", ms=4, alpha=0.7, color=METHOD_COLORS[method], label=method)
    ax.set(yscale="log", xlabel="|y| (answer tokens)", ylabel="dL/dlog p(y|x) after the last epoch",
           title="per-sample forget weights")
    ax.legend(fontsize=8)
    for i, a in enumerate(axes):
        panel_label(a, "abc"[i])
    fig.suptitle(f"TOFU's forget quality vs model utility per epoch at laptop scale, each method with its published "
                 f"TOFU hyperparameters (dashed: forget quality {FQ_THRESHOLD:g})", fontsize=11)
    fig.tight_layout()
    return fig


EXPERIMENT = Experiment(
    name="tofu-toy",
    claim="TOFU's forget quality vs model utility per epoch at laptop scale: GA, NPO, SimNPO with and without RT",
    presets=PRESETS,
    run=run,
    plot=plot,
)
