"""``unlearn validate``: do the toy models' predictions hold on a real causal LM?

1. Data and model: a built-in task (``markov``: the SimNPO Markov mixture as tokens, with Forget1 length 20 and
   Forget2 length 5 so that response lengths differ; ``facts``: fictitious authors, TOFU-like), JSONL/TOFU
   files (``--task jsonl --forget F --retain R``) or a TOFU directory (``--task tofu --data DIR --split
   forget10``, ``unlearn.tofu``; ``--eval tofu|mia`` records the field's metrics at every evaluation); a local
   Hugging Face model directory (with its own tokenizer), or a named architecture with random weights (``tiny``,
   ``llama-100m-shape``, ``llama-7b-shape``; ``unlearn.models.hf``), which reads bytes
   (``unlearn.data.byte_tokenizer``: 258 ids for any data, so the model's size never depends on the data's).
   Reading and tokenising report their time.
2. Memorise: fine-tune (one AdamW run: 10-step warm-up, linear decay; token-mean NLL, batches of at least
   64) on forget + retain, evaluating the forget NLL per response token every 10 epochs, and stop at the first
   of (``memorise``):

       target     NLL <= floor + memorise_nll
       plateau    NLL > 0.98 x the previous evaluation's (less than 2% in 10 epochs), from the third on
       budget     memorise_epochs epochs (0: skipped, for a model that already knows its data, such as a real
                  checkpoint with ``--memorise-epochs 0``)

   The floor (``memorisation_floor``) is the forget NLL of a perfect memoriser of the training data: where
   training sequences share a context (the markov task's sequences share prompts: 0.151 nats per token at the
   defaults) the best fit of forget + retain is the data's own conditional distribution, not certainty; 0 when
   no two training sequences share a context (every prompt distinct). The forget set counts as
   memorised (``memorisation``: validate.json's ``memorised.reached``) when the final NLL is at most
   ``floor + max(memorise_nll, memorised_within)`` (``memorised.target``): a plateau close to the floor counts,
   one far above it (a learning rate too small for the model) does not. The predictions assume memorised data:
   when it was not reached, a WARNING says so with the epochs or learning rate that would get there, and every
   prediction's verdict is "not applicable" instead of pass or fail.
3. Unlearn from the memorised model with each method for ``steps`` steps (AdamW, forget batches of
   ``batch_size``), through the same loop, objectives and reference handling as every run (``unlearn.losses``,
   ``unlearn.reference``), optionally with LoRA; every ``eval_every`` steps record each forget sequence's
   log-likelihood and the retain NLL per token. Fits use the steps after the first ``fit_from`` fraction (the
   early transient is neither linear nor logarithmic, as in the collapse experiment).
4. Measure, beside each the toy model's prediction (``PREDICTIONS``): forget NLL against steps, its acceleration
   (late/early slope ratio, ``unlearn.metrics.curves.acceleration``, with a 95% bootstrap interval over the
   forget sequences: GA linear, ratio 1; NPO under AdamW slowing down, below 1, before 1/(1 - beta2) steps,
   ``theory.adam``) and, as information, linear and log-step fits' R^2, the per-sequence weights dL/dlogp (by
   autograd through the objective) against |y| at the first and last evaluation (NPO exactly 1 at step 0;
   SimNPO's 2/|y| factor: SimNPO paper Sec. 4, ``theory.allocation``), and the retain drift; each prediction
   gets a verdict (``VERDICTS``: pass, fail, or not applicable).

Evaluation (memorising's forget NLL, the recorded forget log-likelihoods and retain NLL) reads the first
``eval_limit`` sequences of each set (``evaluation_sets``; None: all), training always the whole sets: with
the default 1024 the built-in tasks are evaluated whole, and a 50k-line file costs no more per evaluation than
a 1k-line one.

Precision, optimizer and memory (``PRECISION_MODES``, ``unlearn.memory.memory_plan``): AdamW everywhere, its
moments in the weights' dtype. ``float32`` (the CPU default); ``bf16-mixed``: float32 weights and moments, bf16 autocast
(16 bytes per weight, plus autocast's bf16 copy of the weights); ``bf16``: bf16 weights and moments (8 bytes
per weight), which rounds away an update smaller than half the bf16 spacing of its weight (2^-9 to 2^-8 of
the weight: an AdamW step of ~lr = 5e-5 no longer moves weights above ~0.026). On CUDA, ``auto`` takes
bf16-mixed when its plan fits the GPU's free memory (Llama-2-7B's shape: 113 GiB, within an H200's 140 GiB)
and bf16 otherwise (50 GiB: one 80 GB GPU); a run whose plan does not fit is refused before anything is
allocated. The memorised weights wait in host memory while each method unlearns from a copy of them on the
device. Learning rates default by model (``LEARNING_RATES``): AdamW's usable rate falls with width.

Checkpoints: the memorised model (a folder memorised-KEY holding model.safetensors and record.json, written
as a unit: built under a temporary name and renamed) and each finished method's measurements (METHOD-KEY.json,
written atomically) go to OUT/validate.ckpt under a key of everything they depend on, so an interrupted run
resumes without redoing finished work, and a changed setting never reads a stale entry. A stage that fails
leaves nothing of itself there (and no empty folder); an unreadable entry is named, with "delete it to redo
that stage". A non-finite loss (``unlearn.train.NonFiniteLossError``) keeps what was computed, the history and
the config, in OUT/validate.failed.json, and the error says so. Each stage's wall time is kept with it
(validate.json's ``seconds``) and printed as the stage ends, so a log shows how far a run got.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sims import markov
from theory.markov import N_STATES
from unlearn import data as llm_data
from unlearn import tofu
from unlearn.config import require_at_least_one, require_positive
from unlearn.io import atomic_write, environment, failed_record, to_jsonable, write_failed
from unlearn.losses import token_mean_nll, unlearning_losses
from unlearn.memory import fits, memory_plan
from unlearn.metrics.ceiling import forget_ceiling, forget_head_growth, head_and_gain, late_slope_ratio
from unlearn.metrics.collapse import CollapseMonitor, describe_collapse, vocab_size_of
from unlearn.metrics.curves import acceleration_interval, rate_fits
from unlearn.metrics.tokens import nll_per_token
from unlearn.models import hf
from unlearn.objectives import MethodParams, SequenceStats, forget_weights
from unlearn.reference import MODES, batched_logprobs, make_reference
from unlearn.train import (
    NonFiniteLossError,
    StopRun,
    TrainConfig,
    forward_precision,
    resolve_device,
    shuffled_batches,
    train,
)

TASKS = ("markov", "facts", "jsonl", "tofu")
# (memorise lr, unlearning lr) by model, AdamW; docs/findings.md#causal-lms has the runs behind them. Memorising:
# measured on the CPU up to llama-100m-shape, llama-7b-shape's extrapolated like 1/width. Unlearning: slow enough
# that NPO is still moving after the first 20% of steps, where the rate fits start, fast enough that GA's
# collapse ends before them; llama-7b-shape's 2e-6 is the 1/width extrapolation of the rates at widths 256 and
# 768. 1e-5, the NPO paper's rate for real 7B models, is a local checkpoint's default.
LEARNING_RATES = {"tiny": (3e-3, 1e-3), "llama-20m-shape": (1e-3, 3e-5), "llama-100m-shape": (2e-4, 1e-5),
                  "llama-7b-shape": (5e-5, 2e-6), "checkpoint": (1e-5, 1e-5)}
MEMORISE_WARMUP = 10  # optimizer steps
PRECISION_MODES = {"float32": ("float32", "float32"), "bf16-mixed": ("float32", "bf16-autocast"),
                   "bf16": ("bf16", "bf16-autocast")}
# name -> (the weights' dtype, unlearn.train precision: forward passes in float32 or under bf16 autocast)
VALIDATED_METHODS = ("GA", "NPO", "SimNPO")
UNLEARN_OPTIMIZERS = ("adamw", "sgd")  # unlearn.optim names
FREEZABLE = ("head", "norm")  # the output head W and the final RMSNorm's gain g (theory.ceiling)
CEILING_REACHED = 0.9  # GA's forget NLL has reached the margin ceiling when NLL / C ends above this
LATE_SLOPE_TOLERANCE = 0.25  # ga.late_slope_ratio passes when its interval meets [1 - this, 1 + this]
ADAM_BETA2 = 0.999  # validate's AdamW (unlearn.train.TrainConfig's default betas): 1/(1 - beta2) = 1000 steps
PREDICTIONS = {
    "ga.acceleration": "GA's forget NLL grows linearly in the step (NPO paper Thm. 2; under Adam too, as its "
                       "gradient never shrinks, theory.adam): late/early slope ratio 1, until it reaches the "
                       "final-norm ceiling",
    "ga.late_slope_ratio": "on the final-norm ceiling GA's forget NLL grows only as the optimizer grows the head and "
                           "the norm's gain (theory.ceiling): late dNLL/dt over the predicted dC/dt (AdamW: "
                           "lr (2 ||g * u*||_1 + ||(w_v* - w_y) * u*||_1) per token, SGD: lr times the gradient) "
                           "is 1; with the head and gain frozen the NLL stops below C + log V (a plateau)",
    "npo.acceleration": "NPO's forget NLL slows down (log-like) while Adam's second moment remembers the early "
                        "gradients, t < 1/(1 - beta2) = 1000 steps here, and grows linearly after ~3/(1 - beta2) "
                        "(theory.adam): late/early slope ratio below 1, then 1",
    "npo.weight_step0_max_abs_dev_from_1": "NPO's weights 2 sigma(beta (logp - logp_ref)) are exactly 1 at step 0, "
                                           "where the model is its reference (cached: the reference numbers line "
                                           "up with the data; adapter, copy: the reference reproduces the model)",
    "npo.pearson_weight_length.step0": "undefined at step 0: every NPO weight is 1 (GA-like)",
    "simnpo.pearson_weight_length.step0": "SimNPO's weight (2/|y|) sigma(beta lbar + gamma) falls with |y|: the "
                                          "correlation of 1/|y| with |y| if length alone set it (equal likelihood "
                                          "per token lbar); a spread of lbar moves the measurement toward 0",
}
NOT_MEMORISED = "not applicable: the forget set was not memorised"
VERDICTS = {  # how each prediction's verdict is read off the measurement m and the predicted value v
    "ga.acceleration": "below the ceiling (ga.nll_over_margin_ceiling.final < 0.9): pass when m's 95% interval over "
                       "the forget sequences contains v = 1; on it, not applicable (ga.late_slope_ratio decides)",
    "ga.late_slope_ratio": "on the ceiling (final NLL >= 0.9 C(t), C without log V): pass when m's 95% interval over "
                           "the forget sequences meets [0.75, 1.25] (Adam's steps exceed lr while the gradients "
                           "grow: m_hat / sqrt(v_hat) up to sqrt(1 + 2k / (1 - beta2)) at a growth k per step); "
                           "frozen head and gain: pass when the late slope adds under 5% of C + log V over the "
                           "late half (the NLL can only creep up within the bound); below the ceiling or without "
                           "one, not applicable",
    "npo.acceleration": "early regime (v none): pass when m's 95% interval lies below 1; late (v = 1): pass when it "
                        "contains 1; a window across the crossover is undetermined",
    "npo.weight_step0_max_abs_dev_from_1": "pass when m <= 1e-3",
    "npo.pearson_weight_length.step0": "pass when m is undefined (every weight equal)",
    "simnpo.pearson_weight_length.step0": "pass when m < 0 (weights fall with |y|)",
}
MEMORISE_EVERY = 10  # epochs between memorising's evaluations
PLATEAU = 0.98  # memorising stops when an evaluation's NLL is above this times the previous one's


@dataclass(frozen=True)
class ValidateConfig:
    model: str = "tiny"
    task: str = "markov"
    forget: str | None = None
    retain: str | None = None
    methods: tuple[str, ...] = VALIDATED_METHODS
    steps: int = 300
    fit_from: float = 0.2  # fit the rates over the last 80% of the steps (after the first transient)
    lr: float | None = None  # None: LEARNING_RATES
    batch_size: int = 32
    npo_beta: float = 0.5
    simnpo_beta: float = 2.5
    n_forget: int = 32  # built-in tasks: forget sequences (markov: half Forget1, half Forget2) / facts: authors
    n_retain: int = 32
    facts_split: str = "forget10"
    data: str | None = None  # --task tofu: a TOFU directory (real, or `unlearn data tofu-like`)
    split: str = "forget10"  # --task tofu: forget01, forget05 or forget10 (the retain set is its complement)
    eval: str | None = None  # "tofu" or "mia": the field's metrics at every evaluation (--task tofu's directory)
    retain_logs: str | None = None  # --eval tofu: the retain model's eval.json, for forget quality
    memorise_epochs: int = 300
    memorise_nll: float = 0.05  # memorising's target: nats per response token above the data's floor
    memorised_within: float = 0.15  # memorised when the NLL ends at most this (or memorise_nll) above the floor
    memorise_lr: float | None = None  # None: LEARNING_RATES
    eval_every: int = 5
    eval_limit: int | None = 1024  # evaluate the first N sequences of each set (never training); None: all
    lora_rank: int | None = None
    lora_alpha: float = 16.0
    reference: str = "cached"
    precision: str = "auto"  # PRECISION_MODES; auto: float32 on the CPU, on CUDA what fits (module docstring)
    gradient_checkpointing: bool = False
    max_length: int = 256
    prompt_format: str = "auto"
    template: str | None = None  # a plain prompt template with {prompt}, e.g. TOFU's "[INST] {prompt} [/INST]"
    seed: int = 0
    device: str = "auto"  # cuda when a GPU is visible, else cpu
    stop_on: str | None = None  # "collapse": end a method at its first collapsed evaluation (unlearn.metrics.collapse)
    optimizer: str = "adamw"  # UNLEARN_OPTIMIZERS: the unlearning optimizer (memorising is always AdamW)
    freeze: tuple[str, ...] = ()  # FREEZABLE parts kept fixed while unlearning: the output head, the final norm's gain

    def __post_init__(self):
        resolved = {}
        if self.device == "auto":
            resolved["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        if self.precision == "auto" and torch.device(resolved.get("device", self.device)).type == "cpu":
            resolved["precision"] = "float32"
        memorise_lr, lr = LEARNING_RATES.get(self.model, LEARNING_RATES["checkpoint"])
        resolved.update({k: v for k, v in (("lr", lr), ("memorise_lr", memorise_lr)) if getattr(self, k) is None})
        for key, value in resolved.items():
            object.__setattr__(self, key, value)
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; valid: {', '.join(TASKS)}")
        if self.task == "jsonl" and not (self.forget and self.retain):
            raise ValueError("--task jsonl needs --forget FILE and --retain FILE")
        if self.task == "tofu" and not self.data:
            raise ValueError("--task tofu needs --data DIR (a TOFU directory, or `unlearn data tofu-like --out DIR`)")
        for key, task in (("forget", "jsonl"), ("retain", "jsonl"), ("data", "tofu")):
            if getattr(self, key) is not None and self.task != task:
                raise ValueError(f"--{key} is read by --task {task}, and the task is {self.task}")
        if self.prompt_format not in llm_data.PROMPT_FORMATS:
            raise ValueError(f"unknown prompt_format {self.prompt_format!r}; valid: "
                             f"{', '.join(llm_data.PROMPT_FORMATS)}")
        if self.task == "markov" and (self.prompt_format != "auto" or self.template is not None):
            raise ValueError("--prompt-format and --template shape text prompts, and the markov task reads state ids")
        if self.eval is not None and (self.eval not in ("tofu", "mia") or self.task != "tofu"):
            raise ValueError(f"--eval takes tofu or mia and reads the TOFU directory of --task tofu; got --eval "
                             f"{self.eval} with --task {self.task}")
        if self.retain_logs is not None and self.eval != "tofu":
            raise ValueError("--retain-logs is read only with --eval tofu (forget quality)")
        if not self.methods:
            raise ValueError(f"methods: give at least one of {', '.join(VALIDATED_METHODS)}")
        if len(set(self.methods)) < len(self.methods):
            raise ValueError(f"methods: each at most once, got {', '.join(self.methods)}")
        for name in self.methods:
            if name not in VALIDATED_METHODS:
                raise ValueError(f"validate runs {', '.join(VALIDATED_METHODS)}; got {name!r}")
        if self.precision not in (*PRECISION_MODES, "auto"):
            raise ValueError(f"unknown precision {self.precision!r}; valid: auto, {', '.join(PRECISION_MODES)}")
        if self.reference not in MODES:
            raise ValueError(f"unknown reference {self.reference!r}; valid: {', '.join(MODES)}")
        if self.stop_on not in (None, "collapse"):
            raise ValueError(f"unknown stop_on {self.stop_on!r}; valid: collapse (or none)")
        if self.optimizer not in UNLEARN_OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(UNLEARN_OPTIMIZERS)}")
        if self.optimizer == "sgd" and set(self.methods) != {"GA"}:
            raise ValueError("--optimizer sgd runs GA only (--methods GA): the NPO and SimNPO predictions here are "
                             "AdamW's (theory.adam)")
        unknown = [part for part in self.freeze if part not in FREEZABLE]
        if unknown:
            raise ValueError(f"--freeze takes {', '.join(FREEZABLE)}; got {', '.join(map(repr, unknown))}")
        if self.freeze and self.lora_rank is not None:
            raise ValueError("--freeze applies to full fine-tuning: with --lora the head and the norm are already "
                             "frozen")
        if self.lora_rank is not None and self.lora_rank < 1:
            raise ValueError(f"lora_rank (--lora) must be >= 1, got {self.lora_rank}; leave it out (None) for "
                             "full fine-tuning without LoRA")
        if self.reference == "adapter" and self.lora_rank is None:
            raise ValueError("the adapter reference needs LoRA (--lora RANK)")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ValueError(f"eval_limit must be >= 1 (or None: evaluate every sequence), got {self.eval_limit}")
        require_at_least_one(self, "steps", "batch_size", "eval_every", "n_forget", "n_retain", "max_length")
        require_positive(self, "lr", "npo_beta", "simnpo_beta", "memorise_lr", "memorise_nll", "memorised_within")
        if self.memorise_epochs < 0:
            raise ValueError(f"memorise_epochs must be >= 0, got {self.memorise_epochs}")
        if self.template is not None and (self.template.count("{prompt}") != 1 or self.prompt_format == "chat"):
            raise ValueError(f"--template {self.template!r}: a plain template must hold {{prompt}} once (and it "
                             "replaces the chat template, so not with prompt_format chat)")
        if self.task == "tofu":
            tofu.check_split(self.data, self.split)
        hf.check_model(self.model)

    def prompt(self) -> dict:
        """``unlearn.data.tokenize_examples``' prompt keywords: --template as the plain template (and the format
        plain), else prompt_format's with the default plain template."""
        if self.template is not None:
            return {"prompt_format": "plain", "plain_template": self.template}
        return {"prompt_format": self.prompt_format, "plain_template": llm_data.PLAIN_TEMPLATE}

    def params(self, method: str) -> MethodParams:
        return MethodParams(beta={"GA": 1.0, "NPO": self.npo_beta, "SimNPO": self.simnpo_beta}[method])

    def model_spec(self, vocab_size: int | None = None, lora: bool = False) -> hf.ModelSpec:
        return hf.ModelSpec(self.model, dtype=PRECISION_MODES[self.precision][0], device=self.device,
                            gradient_checkpointing=self.gradient_checkpointing, seed=self.seed,
                            vocab_size=vocab_size if self.model == "tiny" else None,
                            lora=hf.LoraSpec(self.lora_rank, self.lora_alpha) if lora and self.lora_rank else None)


# ----------------------------------------------------------------------------------------------------- data


def task_data(cfg: ValidateConfig, report: Callable[[str], None] | None = print, progress: bool | None = None):
    """(forget TokenSet, retain TokenSet, vocab size or None, description) of the task. Reading files and
    tokenising report their time through ``report`` (None: silent) and show a progress bar for long files
    (``unlearn.data``). An architecture reads bytes (``unlearn.data.byte_tokenizer``: the vocabulary, and so
    the model, is the same for any data); a model directory keeps its own tokenizer."""
    if cfg.task == "markov":
        return markov_task(cfg)
    report = report or (lambda line: None)
    forget_ex, retain_ex = task_examples(cfg, report, progress)
    architecture = hf.ModelSpec(cfg.model).is_architecture
    tokenizer = tokenizer_of(cfg.model)
    start = time.perf_counter()
    tok = [tokenize(cfg, ex, tokenizer, progress) for ex in (forget_ex, retain_ex)]
    kind = f"bytes, {len(tokenizer)} ids" if architecture else "the model's tokenizer"
    report(f"tokenised {len(forget_ex) + len(retain_ex):,} examples ({kind}; widths {tok[0].input_ids.shape[1]} "
           f"and {tok[1].input_ids.shape[1]} tokens) in {time.perf_counter() - start:.1f} s")
    return tok[0], tok[1], len(tokenizer) if architecture else None, cfg.task


def tokenize(cfg: ValidateConfig, examples, tokenizer, progress: bool | None = None):
    """The TokenSet of ``examples`` in this run's prompt format (``ValidateConfig.prompt``)."""
    return llm_data.tokenize_examples(examples, tokenizer, cfg.max_length, progress=progress, **cfg.prompt())


def markov_task(cfg: ValidateConfig):
    """task_data of the markov task: the SimNPO Markov mixture's sequences as tokens (no text)."""
    half = max(1, cfg.n_forget // 2)  # draw twice as many as needed: each train split keeps >= half of them
    world = markov.make_world(markov.MarkovWorldConfig(seed=cfg.seed, n_retain=2 * cfg.n_retain,
                                                       n_forget1=2 * half, n_forget2=2 * (cfg.n_forget - half)))
    forget = markov.Split.concat([world["forget1_train"].take(slice(0, half)),
                                  world["forget2_train"].take(slice(0, cfg.n_forget - half))])
    retain = world["retain_train"].take(slice(0, cfg.n_retain))
    return markov.token_set(forget), markov.token_set(retain), N_STATES + 2, "markov mixture"


def task_examples(cfg: ValidateConfig, report: Callable[[str], None], progress: bool | None = None):
    """(forget Examples, retain Examples) of a task with text (facts, tofu, jsonl), reading time reported."""
    start = time.perf_counter()
    if cfg.task == "facts":
        forget_ex, retain_ex = llm_data.facts_task(cfg.n_forget, cfg.facts_split, cfg.seed)
        retain_ex = retain_ex[: cfg.n_retain * len(llm_data.ATTRIBUTES)]
    elif cfg.task == "tofu":
        forget_ex, retain_ex = tofu.read_training(cfg.data, cfg.split)
        report(f"read {len(forget_ex):,} forget and {len(retain_ex):,} retain examples of {cfg.split} in "
               f"{time.perf_counter() - start:.1f} s")
    else:
        forget_ex = llm_data.read_examples(cfg.forget, progress)
        retain_ex = llm_data.read_examples(cfg.retain, progress)
        report(f"read {len(forget_ex):,} forget and {len(retain_ex):,} retain examples in "
               f"{time.perf_counter() - start:.1f} s")
    return forget_ex, retain_ex


def tokenizer_of(model: str):
    """An architecture's byte tokenizer (the same for any data), or a model directory's own."""
    return llm_data.byte_tokenizer() if hf.ModelSpec(model).is_architecture else hf.load_tokenizer(model)


def field_evaluator(cfg: ValidateConfig):
    """The field's metrics at every evaluation (``recipes.eval.field_evaluator``), or None without --eval."""
    from recipes.eval import field_evaluator as make

    if cfg.eval is None:
        return None
    prompt = cfg.prompt()
    return make(cfg.eval, cfg.data, cfg.split, tokenizer_of(cfg.model), retain_logs=cfg.retain_logs,
                prompt_format=prompt["prompt_format"], template=prompt["plain_template"], max_length=cfg.max_length,
                limit=cfg.eval_limit)


def evaluation_sets(cfg: ValidateConfig, forget, retain):
    """(forget, retain) as evaluated: the first ``eval_limit`` sequences of each (all when it is None). Training
    reads the whole sets."""
    limit = slice(0, cfg.eval_limit)
    return forget.take(limit), retain.take(limit)


# --------------------------------------------------------------------------------------------------- memory


def model_size(cfg: ValidateConfig, vocab: int | None) -> tuple[int, int]:
    """(parameters, LoRA adapter parameters or 0) of this run, from the model's shapes on the meta device."""
    model = hf.meta_model(dataclasses.replace(cfg, precision="float32").model_spec(vocab))
    lora = hf.lora_size(model, hf.LoraSpec(cfg.lora_rank, cfg.lora_alpha)) if cfg.lora_rank else 0
    return hf.n_parameters(model), lora


def plan_precision(cfg: ValidateConfig, size: tuple[int, int], free_bytes: int | None) -> tuple[str, dict]:
    """(precision, memory plan) of this run on a device with ``free_bytes`` free (None: the CPU, unchecked):
    ``auto`` takes the first of bf16-mixed, bf16 whose plan fits with HEADROOM; a plan that does not fit is
    refused before anything is allocated, with its sizes and what would help."""
    choices = ("bf16-mixed", "bf16") if cfg.precision == "auto" else (cfg.precision,)
    plans = {p: memory_plan(*size, p, cfg.reference, memorise=cfg.memorise_epochs > 0) for p in choices}
    for precision, plan in plans.items():
        if fits(plan["peak_bytes"], free_bytes):
            return precision, plan
    precision, plan = choices[-1], plans[choices[-1]]
    gib = {k: v / 2**30 for k, v in plan.items()}
    raise ValueError(f"{cfg.model} in {precision} needs about {gib['peak_bytes']:.1f} GiB on {cfg.device} for "
                     f"weights, gradients and AdamW moments (memorise {gib['memorise_bytes']:.1f} GiB, unlearn "
                     f"{gib['unlearn_bytes']:.1f} GiB) and room for activations, more than its "
                     f"{free_bytes / 2**30:.1f} GiB free; use "
                     f"--precision bf16, --lora RANK, a smaller model, or a GPU with more memory")


# ------------------------------------------------------------------------------------------------- training


def memorisation_floor(forget, retain, n: int | None = None) -> float:
    """The NLL per response token of the first ``n`` forget sequences (None: all) under a perfect memoriser of
    forget + retain: the token-mean NLL over both is smallest where the model predicts, after each context (the
    whole sequence up to a trained token), the data's own distribution of the next token, so this floor is the
    mean of -log(count(context, token) / count(context)) over those sequences' response tokens; 0 when no two
    trained contexts coincide (every prompt distinct). It is what memorising converges to, not a bound: a model
    that favoured the forget set's continuations over the retain set's could go below it."""
    both = llm_data.TokenSet.concat([forget, retain])
    ids, labels, mask = (t.cpu().numpy() for t in (both.input_ids, both.labels, both.mask))
    n = len(forget) if n is None else min(n, len(forget))
    scale = int(max(ids.max(), labels.max())) + 1
    context = np.zeros(len(ids), np.int64)
    total = 0.0
    for t in range(ids.shape[1]):
        context = np.unique(context * scale + ids[:, t], return_inverse=True)[1].reshape(-1)  # prefix ids[:, :t+1]
        rows = np.nonzero(mask[:, t])[0]
        if not len(rows):
            continue
        _, per_context, n_context = np.unique(context[rows], return_inverse=True, return_counts=True)
        _, per_pair, n_pair = np.unique(context[rows] * scale + labels[rows, t], return_inverse=True,
                                        return_counts=True)
        p = n_pair[per_pair.reshape(-1)] / n_context[per_context.reshape(-1)]
        total -= np.log(p[rows < n]).sum()
    return float(total / mask[:n].sum())


def memorise(model, forget, retain, cfg: ValidateConfig, progress, evaluated=None) -> dict:
    """Fine-tune on forget + retain (one AdamW run: MEMORISE_WARMUP warm-up steps, then a linear decay to 0 at
    memorise_epochs; batches of ``memorise_batch_size``) until the rule of the module docstring (step 2) stops it,
    judging the forget NLL per token of ``evaluated`` (the forget sequences evaluated; None: the first
    ``eval_limit``) every MEMORISE_EVERY epochs. Returns the record: the NLL at each evaluation
    (``forget_nll_per_token``) and its epoch (``curve_epochs``), the epochs run, the floor, the stopping target
    and what stopped it (``stopped``: target, plateau, budget, or skipped when memorise_epochs is 0)."""
    evaluated = evaluation_sets(cfg, forget, retain)[0] if evaluated is None else evaluated
    floor = memorisation_floor(forget, retain, len(evaluated))
    target = floor + cfg.memorise_nll
    both = llm_data.TokenSet.concat([forget, retain])
    micro_batches, per_epoch = shuffled_batches(len(both), memorise_batch_size(cfg), cfg.seed, "memorise")
    curve, stopped = [], ["budget" if cfg.memorise_epochs else "skipped"]

    def evaluate(m, step):
        curve.append(nll_per_token(m, evaluated))
        plateau = len(curve) >= 3 and curve[-1] > PLATEAU * curve[-2]  # what is left is not memorisable
        if curve[-1] <= target or plateau:
            stopped[0] = "target" if curve[-1] <= target else "plateau"
            raise StopRun({"forget_nll": curve[-1]})
        return {"forget_nll": curve[-1]}

    tc = TrainConfig(steps=cfg.memorise_epochs * per_epoch, lr=cfg.memorise_lr, optimizer="adamw",
                     schedule="warmup_linear", warmup_steps=MEMORISE_WARMUP, eval_every=MEMORISE_EVERY * per_epoch,
                     device=cfg.device, precision=_precision(cfg), progress=progress, name="memorise")
    history = train(model, token_mean_nll(both), micro_batches, tc, evaluate=evaluate)
    return {"forget_nll_per_token": curve, "curve_epochs": [s / per_epoch for s in history.eval_steps],
            "epochs": history.eval_steps[-1] // per_epoch, "floor": floor, "stop_target": target,
            "stopped": stopped[0]}


def memorisation(cfg: ValidateConfig, record: dict) -> dict:
    """Whether memorising reached its goal (module docstring, step 2): ``reached``, the ``target`` it was judged
    against (floor + max(memorise_nll, memorised_within)), the ``nll`` it ended at, the ``floor``, what stopped
    it, and when it was not reached a ``suggestion`` of what would reach it."""
    curve, floor = record["forget_nll_per_token"], record["floor"]
    target = floor + max(cfg.memorise_nll, cfg.memorised_within)
    verdict = {"reached": curve[-1] <= target, "target": target, "nll": curve[-1], "floor": floor,
               "stopped": record["stopped"], "suggestion": None}
    if verdict["reached"]:
        return verdict
    larger = f"--memorise-lr {3 * cfg.memorise_lr:.3g} (3x the {cfg.memorise_lr:g} used)"
    if record["stopped"] == "skipped":
        verdict["suggestion"] = (f"memorise it first: leave out --memorise-epochs 0 (the default is "
                                 f"{ValidateConfig.memorise_epochs} epochs)")
    elif record["stopped"] == "budget" and len(curve) >= 2 and curve[-1] < curve[-2]:
        # the excess over the floor fell like exp(-rate * epochs) over the last interval: the epochs it needs
        span = record["curve_epochs"][-1] - record["curve_epochs"][-2]
        rate = math.log((curve[-2] - floor) / (curve[-1] - floor)) / span
        needed = math.ceil(record["epochs"] + math.log((curve[-1] - floor) / (target - floor)) / rate - 1e-6)
        verdict["suggestion"] = (f"at the rate of its last {span:g} epochs it would need about {needed:,} epochs: "
                                 f"--memorise-epochs {needed}, or {larger}")
    else:
        verdict["suggestion"] = f"its NLL stopped falling ({record['stopped']}): try {larger}"
    return verdict


def memorise_batch_size(cfg: ValidateConfig) -> int:
    return max(cfg.batch_size, 64)


def _precision(cfg: ValidateConfig) -> str:
    return PRECISION_MODES[cfg.precision][1]


def unlearn_method(memorised, method: str, forget, retain, cfg: ValidateConfig, progress, field=None) -> dict:
    """One method from a copy of the memorised model; the recorded forget log-likelihoods and retain NLL, of the
    evaluated sequences (``evaluation_sets``), and with ``field`` (``field_evaluator``) the field's metrics at
    every evaluation (record["eval"][key]: one value per evaluation)."""
    model = copy.deepcopy(memorised).to(cfg.device)
    if cfg.lora_rank:
        model = hf.add_lora(model, hf.LoraSpec(cfg.lora_rank, cfg.lora_alpha))
    freeze(model, cfg.freeze)
    eval_forget, eval_retain = evaluation_sets(cfg, forget, retain)
    with torch.no_grad(), forward_precision(cfg.device, _precision(cfg)):  # as the loss and the evaluations run
        reference = make_reference(cfg.reference, model, forget)
        # log pi_ref(y|x) as the loss reads it: the NPO weights are taken against these
        reference_logp = reference.forget_logp(model, torch.arange(len(eval_forget), device=cfg.device),
                                               eval_forget.trim())
    size = min(cfg.batch_size, len(forget))
    forget_batches, _ = shuffled_batches(len(forget), size, cfg.seed, "validate", method, "forget")
    retain_batches, _ = shuffled_batches(len(retain), min(size, len(retain)), cfg.seed, "validate", method, "retain")
    losses = unlearning_losses(method, cfg.params(method), forget, retain, reference)
    record = {"steps": [], "forget_logp": [], "retain_nll": [], "forget_ceiling": [], "forget_head_growth": [],
              "reference_logp": reference_logp.tolist()}

    def evaluate(m, step):
        record["steps"].append(step)
        record["forget_logp"].append(batched_logprobs(m, eval_forget).tolist())
        record["retain_nll"].append(nll_per_token(m, eval_retain))
        record["forget_ceiling"].append(forget_ceiling(m, eval_forget))  # C(t) + log V per forget token, or None
        # its predicted growth per step under GA (theory.ceiling), or None
        record["forget_head_growth"].append(forget_head_growth(m, eval_forget, cfg.lr, cfg.optimizer, cfg.freeze))
        for key, value in (field(m) if field else {}).items():
            record.setdefault("eval", {}).setdefault(key, []).append(value)
        return {"retain_nll": record["retain_nll"][-1]}

    # the entropy (and collapse) on the evaluated retain sequences, under the steps' precision as every pass
    monitor = CollapseMonitor(evaluate, vocab_size_of(model), stop=cfg.stop_on == "collapse", data=eval_retain)
    tc = TrainConfig(steps=cfg.steps, lr=cfg.lr, optimizer=cfg.optimizer, eval_every=cfg.eval_every, device=cfg.device,
                     precision=_precision(cfg), progress=progress, name=f"validate {method}")
    history = train(model, losses, lambda step: [(forget_batches(step)[0], retain_batches(step)[0], None)], tc,
                    evaluate=monitor)
    record["entropy"] = history.evals["entropy"]
    if monitor.stopped_at is not None:  # the record ends at the last healthy evaluation
        for key in ("steps", "forget_logp", "retain_nll", "forget_ceiling", "forget_head_growth", "entropy"):
            record[key] = record[key][:-1]
        record["eval"] = {key: values[:-1] for key, values in record.get("eval", {}).items()}
    return {**record, **monitor.summary()}


def freeze(model, parts: tuple[str, ...]) -> None:
    """Keep ``parts`` (FREEZABLE: "head", the output head W; "norm", the final RMSNorm's gain g) out of training;
    a model without that final RMSNorm and bias-free head (``unlearn.metrics.ceiling.head_and_gain``) is refused."""
    if not parts:
        return
    found = head_and_gain(model)
    if found is None:
        raise ValueError(f"--freeze {','.join(parts)} needs a model ending in an RMSNorm and a bias-free head "
                         f"(Llama, Mistral, Qwen); {type(model).__name__} does not")
    for part, weight in zip(FREEZABLE, found, strict=True):
        if part in parts:
            weight.requires_grad_(False)


# ---------------------------------------------------------------------------------------------- measuring


def _pearson(x, y) -> float | None:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def weights(method: str, logp, logp_ref, length, params: MethodParams) -> np.ndarray:
    """Per-sequence forget weights dL/dlogp at recorded log-likelihoods, by autograd through the objective the
    run trained with (``unlearn.objectives.forget_weights``): the weights of a step taken there."""
    logp, logp_ref, length = (torch.as_tensor(np.asarray(v, float)) for v in (logp, logp_ref, length))
    return forget_weights(method, params, SequenceStats(logp, length, logp_ref=logp_ref)).numpy()


def measure(method: str, record: dict, lengths, params: MethodParams, fit_from: float,
            log_vocab: float | None = None) -> tuple[dict, dict]:
    """(metrics, curves) of one method (module docstring); ``log_vocab``, log V of the model's head, separates the
    ceiling's C(t) from its log V (needed when the record has a ceiling)."""
    x = method.lower()
    steps = np.asarray(record["steps"], float)
    logp = np.asarray(record["forget_logp"], float)  # (evals, n)
    nll = -logp.sum(1) / np.sum(lengths)  # forget NLL per token
    keep = steps >= max(1.0, fit_from * steps[-1])
    fits = rate_fits(steps[keep], nll[keep]) if keep.sum() >= 3 else {"linear_r2": None, "log_r2": None}
    lengths = np.asarray(lengths, float)
    growth = acceleration_interval(steps, (-logp / lengths).T, steps[keep][0], weights=lengths)
    w0 = weights(method, logp[0], record["reference_logp"], lengths, params)
    w1 = weights(method, logp[-1], record["reference_logp"], lengths, params)
    metrics = {f"{x}.linear_r2": fits["linear_r2"], f"{x}.log_r2": fits["log_r2"],
               f"{x}.acceleration": growth["value"], f"{x}.acceleration.ci_low": growth["ci_low"],
               f"{x}.acceleration.ci_high": growth["ci_high"],
               f"{x}.retain_nll_drift": record["retain_nll"][-1] - record["retain_nll"][0],
               f"{x}.forget_nll_per_token.start": float(nll[0]), f"{x}.forget_nll_per_token.end": float(nll[-1]),
               f"{x}.pearson_weight_length.step0": _pearson(w0, lengths),
               f"{x}.pearson_weight_length.end": _pearson(w1, lengths)}
    if method == "NPO":
        metrics[f"{x}.weight_step0_max_abs_dev_from_1"] = float(np.max(np.abs(w0 - 1)))
    ceiling = record.get("forget_ceiling") or [None]
    metrics[f"{x}.nll_over_ceiling.final"] = None if ceiling[-1] is None else float(nll[-1] / ceiling[-1])
    growth = record.get("forget_head_growth")
    margin = None if ceiling[-1] is None else ceiling[-1] - log_vocab  # C(t) alone, without log V
    metrics[f"{x}.nll_over_margin_ceiling.final"] = None if margin is None else float(nll[-1] / margin)
    if method == "GA":  # the head-growth prediction (theory.ceiling) over the late half of the fit window
        ratio = late_slope_ratio(steps, (-logp / lengths).T, growth, steps[keep][0], weights=lengths)
        metrics.update({f"{x}.late_slope_ratio": ratio["value"], f"{x}.late_slope_ratio.ci_low": ratio["ci_low"],
                        f"{x}.late_slope_ratio.ci_high": ratio["ci_high"], f"{x}.late_slope": ratio["slope"],
                        f"{x}.late_head_growth": ratio["predicted"]})
        measured = None if margin is None else late_slope_ratio(steps, [ceiling], growth, steps[keep][0])
        metrics[f"{x}.late_ceiling_slope"] = None if measured is None else measured["slope"]
    curves = {"steps": record["steps"], "fit_from": float(steps[keep][0]), "forget_nll": nll.tolist(),
              "retain_nll": record["retain_nll"], "forget_ceiling": record.get("forget_ceiling"),
              "forget_head_growth": growth, "weights_start": w0.tolist(), "weights_end": w1.tolist()}
    if "eval" in record:  # --eval: the field's metrics at every evaluation
        curves["eval"] = record["eval"]
    return metrics, curves


def fit_window(curves: dict) -> tuple[float, float] | None:
    """(first, last) step of the rate fits of the methods measured (every method shares the schedule)."""
    for c in curves.values():
        return c["fit_from"], float(c["steps"][-1])
    return None


def npo_regime(fit_window: tuple[float, float] | None) -> str | None:
    """Adam's regime of NPO over the fit window (``theory.adam``): "early" when it ends before 1/(1 - beta2),
    "late" when it starts after 3/(1 - beta2), "crossover" between, None without a window."""
    if fit_window is None:
        return None
    memory = 1 / (1 - ADAM_BETA2)
    return "early" if fit_window[1] <= memory else "late" if fit_window[0] >= 3 * memory else "crossover"


def predictions(metrics: dict, lengths, memorised: bool = True, fit_window=None) -> dict:
    """The toy models' prediction beside each measurement: a number where theory gives one, its rule, and a
    verdict (``VERDICTS``): pass or fail, undetermined when a measurement is missing, and NOT_MEMORISED when the
    forget set was not memorised (the predictions assume it was). ``fit_window``: the (first, last) step of the
    rate fits, which sets NPO's Adam regime (``npo_regime``)."""
    lengths = np.asarray(lengths, float)
    regime = npo_regime(fit_window)
    values = {"npo.weight_step0_max_abs_dev_from_1": 0.0,
              "simnpo.pearson_weight_length.step0": _pearson(1 / lengths, lengths),  # 2/|y| at equal lbar
              "ga.acceleration": 1.0, "npo.acceleration": 1.0 if regime == "late" else None}
    interval = lambda key: (metrics.get(f"{key}.ci_low"), metrics.get(f"{key}.ci_high"))
    ceiling = ceiling_state(metrics)
    values["ga.late_slope_ratio"] = 1.0 if ceiling == "reached" and metrics.get("ga.late_head_growth") else None

    def judged(key):
        if not memorised:
            return NOT_MEMORISED
        if key == "ga.acceleration" and ceiling == "reached":
            return "not applicable: GA's forget NLL reached the final-norm ceiling (validate.ga.late_slope_ratio)"
        if key == "ga.late_slope_ratio":
            if ceiling != "reached":
                return CEILING_NOT_APPLICABLE[ceiling]
            if metrics.get("ga.late_head_growth") == 0:
                return plateau_verdict(metrics, fit_window)
        return verdict(key, metrics.get(key), values.get(key), interval(key), regime)

    return {f"validate.{key}": {"value": values.get(key), "rule": rule, "verdict": judged(key)}
            for key, rule in PREDICTIONS.items()
            if any(k.startswith(key.split(".")[0] + ".") for k in metrics)}  # the methods that ran


CEILING_NOT_APPLICABLE = {
    "none": "not applicable: the model has no final RMSNorm and bias-free head (no ceiling)",
    "below": "not applicable: GA's forget NLL is below the ceiling (validate.ga.acceleration decides)"}


def ceiling_state(metrics: dict) -> str:
    """Where GA's forget NLL ended against the final-norm ceiling: "none" (the model has none, or GA did not run),
    "reached" (NLL >= CEILING_REACHED x C(t), the margin ceiling without log V: within 10% of the least NLL that
    the worst hidden state guarantees), else "below"."""
    ratio = metrics.get("ga.nll_over_margin_ceiling.final")
    return "none" if ratio is None else "reached" if ratio >= CEILING_REACHED else "below"


def plateau_verdict(metrics: dict, fit_window) -> str:
    """A frozen head and gain (predicted growth 0): pass when the late slope times the late half of the fit window
    adds at most 5% of the fixed bound C + log V (= final NLL / nll_over_ceiling.final): on the ceiling the NLL can
    then only creep toward the bound, as the other tokens' margins fill in its log V."""
    slope, end, share = (metrics.get(f"ga.{k}") for k in ("late_slope", "forget_nll_per_token.end",
                                                           "nll_over_ceiling.final"))
    if slope is None or end is None or not share or fit_window is None:
        return "undetermined: the measurement is missing"
    return "pass" if abs(slope) * (fit_window[1] - fit_window[0]) / 2 <= 0.05 * end / share else "fail"


def verdict(key: str, measured, predicted, interval=(None, None), regime: str | None = "early") -> str:
    """pass or fail of one prediction by its VERDICTS rule (undetermined when a number it needs is missing).
    ``interval``: the measurement's (ci_low, ci_high); ``regime``: NPO's Adam regime (``npo_regime``)."""
    if key == "npo.pearson_weight_length.step0":
        return "pass" if measured is None else "fail"
    low, high = interval
    if (key.endswith(".acceleration") or key == "ga.late_slope_ratio") and (low is None or high is None):
        return "undetermined: the measurement is missing (too few evaluations, or no growth to compare)"
    if key == "npo.acceleration" and regime == "crossover":
        return "undetermined: the fit window spans Adam's crossover (theory.adam)"
    if measured is None:
        return "undetermined: the measurement is missing"
    tolerance = LATE_SLOPE_TOLERANCE
    passed = {"ga.acceleration": lambda: low <= predicted <= high,
              "ga.late_slope_ratio": lambda: low <= 1 + tolerance and high >= 1 - tolerance,
              "npo.acceleration": lambda: low <= 1 <= high if regime == "late" else high < 1,
              "npo.weight_step0_max_abs_dev_from_1": lambda: measured <= 1e-3,
              "simnpo.pearson_weight_length.step0": lambda: measured < 0}[key]()
    return "pass" if passed else "fail"


# --------------------------------------------------------------------------------------------- checkpoints


CHECKPOINT_FORMAT = 5  # 3: memorised-KEY folders, evaluation limits, memorising's floor; 4: collapse; 5: ceiling


def _key(cfg: ValidateConfig, stage: str) -> str:
    """A hash of everything the stage's checkpoint depends on (and of CHECKPOINT_FORMAT); memorised_within only
    judges the memorised model afterwards, and keys nothing."""
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "memorised_within"}
    if stage == "memorised":
        fields = {k: v for k, v in fields.items() if k not in ("methods", "steps", "lr", "npo_beta", "simnpo_beta",
                                                                "eval_every", "lora_rank", "lora_alpha",
                                                                "reference", "batch_size", "stop_on", "eval",
                                                                "retain_logs", "optimizer", "freeze")}
        fields["memorise_batch_size"] = memorise_batch_size(cfg)
    text = json.dumps({"stage": stage, "format": CHECKPOINT_FORMAT, **fields}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _unreadable(path: Path, err: Exception, entry: Path | None = None) -> ValueError:
    """The error of a checkpoint file that cannot be read: its path, why, and what to delete (``entry``, the
    stage's folder, or the file itself)."""
    what = "it" if entry is None else str(entry)
    return ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err}); delete {what} to redo "
                      "that stage")


def _read_checkpoint(path: Path, entry: Path | None = None) -> dict:
    """A stage's JSON record; one that cannot be read is named, with what to do (written atomically, it only
    breaks when edited or copied by hand)."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _unreadable(path, err, entry) from None


def _load_weights(model, path: Path, entry: Path) -> None:
    """``model``'s weights from a safetensors checkpoint; a missing, truncated, corrupt or mismatched file is
    named as a broken JSON record is (``_read_checkpoint``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        model.load_state_dict(load_file(str(path), device=str(next(model.parameters()).device)))
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise _unreadable(path, err, entry) from None


def _write_unit(folder: Path, files: dict[str, Callable[[str], None]]) -> None:
    """Write each of ``files`` (name -> write(path)) into a temporary folder beside ``folder``, then rename it to
    ``folder``: a reader sees all of them or none, and an interruption leaves only the temporary folder's
    removal undone at worst (never a half-written stage under its key)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        for name, write in files.items():
            write(str(tmp / name))
        shutil.rmtree(folder, ignore_errors=True)  # a stale or broken entry of the same key, if any
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _timed(run: Callable[[], dict]) -> dict:
    """``run()``'s record with its wall time under ``seconds``."""
    start = time.perf_counter()
    record = run()
    record["seconds"] = time.perf_counter() - start
    return record


def memorised_model(cfg: ValidateConfig, vocab: int | None, forget, retain, ckpt: Path, progress):
    """(model, record) after step 2 of the module docstring, read from its checkpoint (the folder
    memorised-KEY: model.safetensors and record.json) when there is one, else written there as a unit."""
    from safetensors.torch import save_file

    model = hf.load_model(cfg.model_spec(vocab))
    folder = ckpt / f"memorised-{_key(cfg, 'memorised')}"
    if folder.is_dir():
        record = _read_checkpoint(folder / "record.json", folder)
        _load_weights(model, folder / "model.safetensors", folder)
        return model, record
    record = _timed(lambda: memorise(model, forget, retain, cfg, progress))
    if record["epochs"]:  # a model that did not train is its own checkpoint
        _write_unit(folder, {
            "model.safetensors": lambda p: save_file({k: v.contiguous() for k, v in model.state_dict().items()}, p),
            "record.json": lambda p: Path(p).write_text(json.dumps(record))})
    return model, record


def method_record(memorised, method: str, forget, retain, cfg: ValidateConfig, ckpt: Path, progress,
                  field=None) -> dict:
    """``unlearn_method``'s record (step 3), read from its checkpoint when there is one, else written there."""
    path = ckpt / f"{method}-{_key(cfg, method)}.json"
    if path.is_file():
        return _read_checkpoint(path)
    record = _timed(lambda: unlearn_method(memorised, method, forget, retain, cfg, progress, field))
    ckpt.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: Path(p).write_text(json.dumps(record)))
    return record


def keep_failure(err: NonFiniteLossError, stage: str, cfg: ValidateConfig, out: Path, **computed) -> Path:
    """OUT/validate.failed.json: the stage that stopped, the error, the history recorded up to the step that
    overflowed, the config, and ``computed`` (what finished before it), as ``unlearn figures`` keeps
    NAME.failed.json; the error's message then names the file."""
    path = write_failed(out, "validate", failed_record(dataclasses.asdict(cfg), err, stage=stage, **computed))
    err.args = (f"{err}; what was computed is in {path}",)
    return path


def run_validate(cfg: ValidateConfig, out: Path, progress: bool | None = None,
                 report: Callable[[str], None] = print) -> dict:
    """Everything of the module docstring; writes OUT/validate.json and OUT/validate.png and returns the JSON.
    A failure leaves no empty checkpoint folder behind; a non-finite loss keeps OUT/validate.failed.json."""
    ckpt = out / "validate.ckpt"
    existed = ckpt.exists()
    try:
        return _run_validate(cfg, out, ckpt, progress, report)
    finally:  # on success the report was written; on failure a folder this run made and left empty goes
        if not existed and ckpt.is_dir() and not any(ckpt.iterdir()):
            ckpt.rmdir()


def _run_validate(cfg: ValidateConfig, out: Path, ckpt: Path, progress: bool | None,
                  report: Callable[[str], None]) -> dict:
    forget, retain, vocab, description = task_data(cfg, report, progress)
    field = field_evaluator(cfg)  # reads and checks --eval's sets before any training
    device = resolve_device(cfg.device)
    size = model_size(cfg, vocab)
    precision, plan = plan_precision(cfg, size, torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None)
    cfg = dataclasses.replace(cfg, precision=precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    lora = f", LoRA adapter of {size[1]:,}" if size[1] else ""
    report(f"{cfg.model} ({size[0]:,} parameters{lora}) on {cfg.device} in {precision}: AdamW, "
           f"lr {cfg.memorise_lr:g} (memorise) / {cfg.lr:g} (unlearn), about {plan['peak_bytes'] / 2**30:.1f} GiB "
           f"of weights, gradients and moments")
    forget, retain = forget.to(device), retain.to(device)
    eval_forget, eval_retain = evaluation_sets(cfg, forget, retain)
    if len(eval_forget) < len(forget) or len(eval_retain) < len(retain):
        report(f"evaluating the first {len(eval_forget):,} of {len(forget):,} forget and {len(eval_retain):,} of "
               f"{len(retain):,} retain sequences (eval_limit {cfg.eval_limit}); training on all of them")
    try:
        model, memorised = memorised_model(cfg, vocab, forget, retain, ckpt, progress)
    except NonFiniteLossError as err:
        keep_failure(err, "memorise", cfg, out)
        raise
    nll = memorised["forget_nll_per_token"]
    judged = memorisation(cfg, memorised)
    report(f"memorised: forget NLL per token {nll[0]:.3g} -> {nll[-1]:.3g} in {memorised['epochs']} epochs"
           f"{_took(memorised)}; stopped by {judged['stopped']}, floor {judged['floor']:.3g}, memorised below "
           f"{judged['target']:.3g}: {'reached' if judged['reached'] else 'NOT reached'}")
    warning = None
    if not judged["reached"]:
        warning = (f"WARNING: the forget set was not memorised (forget NLL per token {judged['nll']:.3g}, memorised "
                   f"below {judged['target']:.3g}); the predictions assume memorised data, so every verdict is "
                   f"'not applicable'. {judged['suggestion'][0].upper()}{judged['suggestion'][1:]}.")
        report(warning)
    model = model.cpu()  # the memorised weights wait in host memory; each method unlearns a copy on the device
    lengths = eval_forget.n_tokens.cpu().numpy()
    metrics, curves, seconds = {}, {}, {"memorise": memorised.get("seconds")}
    for method in cfg.methods:
        try:
            record = method_record(model, method, forget, retain, cfg, ckpt, progress, field)
        except NonFiniteLossError as err:
            keep_failure(err, method, cfg, out, memorised={**memorised, **judged}, metrics=metrics)
            raise
        found, curves[method] = measure(method, record, lengths, cfg.params(method), cfg.fit_from,
                                        math.log(vocab_size_of(model)))
        x = method.lower()
        report(f"{method}: {cfg.steps} steps{_took(record)}; forget NLL per token "
               f"{found[f'{x}.forget_nll_per_token.start']:.3g} -> {found[f'{x}.forget_nll_per_token.end']:.3g}; "
               f"{describe_collapse(record)}")
        if method == "GA" and curves[method]["forget_ceiling"] and curves[method]["forget_ceiling"][-1] is not None:
            report(describe_ceiling(found, curves[method]))
        metrics.update({f"validate.{k}": v for k, v in found.items()})
        metrics[f"validate.{x}.collapsed_at_step"] = record["collapsed_at_step"]
        seconds[method] = record.get("seconds")
    plain = {k.removeprefix("validate."): v for k, v in metrics.items()}
    doc = {"config": dataclasses.asdict(cfg), "task": description, "metrics": metrics,
           "predictions": predictions(plain, lengths, judged["reached"], fit_window(curves)),
           "memorised": {**memorised, **judged},
           "curves": curves, "lengths": lengths.tolist(), "n_parameters": size[0], "env": environment(cfg.device),
           "evaluated": {"forget": len(eval_forget), "retain": len(eval_retain), "forget_total": len(forget),
                         "retain_total": len(retain)},
           "seconds": seconds,  # wall time of each stage, as first run (a resumed run reads it back)
           "memory_plan": {"n_lora": size[1], **plan,  # and what CUDA measured (activations included)
                           "measured_peak_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                           else None}}
    doc = to_jsonable(doc)
    write_report(doc, out)
    for key, p in doc["predictions"].items():
        report(f"{key}: {p['verdict']}")
    if warning:
        report(warning)  # again, last: the verdicts above do not apply
    return doc


def describe_ceiling(found: dict, curve: dict) -> str:
    """One line: GA's forget NLL against the final-norm ceiling C(t) + log V, and its late slope against the
    head-growth prediction (n/a where a number is missing: too few late evaluations, a frozen head)."""
    show = lambda value: "n/a" if value is None else f"{value:.3g}"
    ceiling = curve["forget_ceiling"]
    return (f"GA against the final-norm ceiling: C(t) + log V {ceiling[0]:.3g} -> {ceiling[-1]:.3g}, NLL / C(t) "
            f"{show(found['ga.nll_over_margin_ceiling.final'])} at the end; late dNLL/dt "
            f"{show(found['ga.late_slope'])}, predicted dC/dt {show(found['ga.late_head_growth'])}, ratio "
            f"{show(found['ga.late_slope_ratio'])} (95% {show(found['ga.late_slope_ratio.ci_low'])} to "
            f"{show(found['ga.late_slope_ratio.ci_high'])})")


def write_report(doc: dict, out: Path) -> None:
    """OUT/validate.json and OUT/validate.png (``plot``), each written atomically."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "validate.json", lambda p: Path(p).write_text(json.dumps(doc, indent=1)))
    fig = plot(doc)
    atomic_write(out / "validate.png", lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


def _took(record: dict) -> str:
    """' (N s)' for a stage that recorded its wall time (entries checkpointed before times were kept have
    none)."""
    return f" ({record['seconds']:.1f} s)" if record.get("seconds") is not None else ""


def plot(doc: dict):
    import matplotlib.pyplot as plt

    from sims.plotting import METHOD_COLORS, panel_label

    curves, m = doc["curves"], doc["metrics"]
    lengths = np.asarray(doc["lengths"], float)
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.4), constrained_layout=True)
    for method, c in curves.items():
        x, color = method.lower(), METHOD_COLORS[method]
        lin, log = (m[f"validate.{x}.{k}_r2"] for k in ("linear", "log"))
        r2 = "" if lin is None else f"R^2 lin {lin:.3f}, log {log:.3f}"
        axes[0].plot(c["steps"], c["forget_nll"], color=color, label=f"{method}: {r2}" if r2 else method)
        if method == "GA" and c.get("forget_ceiling") and None not in c["forget_ceiling"]:
            ratio = m.get("validate.ga.late_slope_ratio")
            late = "" if ratio is None else f"; late slope / predicted {ratio:.2f}"
            axes[0].plot(c["steps"], c["forget_ceiling"], color=color, ls="--", lw=1,
                         label=f"GA's ceiling C(t) + log V{late}")
        axes[0].axvline(c["fit_from"], color="0.6", lw=0.7, ls=":")
        axes[3].plot(c["steps"], c["retain_nll"], color=color, label=method)
        if method != "GA":
            ax = axes[1] if method == "NPO" else axes[2]
            ax.scatter(lengths, c["weights_start"], s=12, color=color, alpha=0.5, label="first evaluation (step 0)")
            ax.scatter(lengths, c["weights_end"], s=12, color=color, marker="x", label="last evaluation")
            ax.set_xlabel("response length |y| (tokens)")
            ax.set_ylabel("per-sequence weight dL/dlogp")
            ax.legend(fontsize=7)
    axes[0].set_xlabel("unlearning step")
    axes[0].set_ylabel("forget NLL per token")
    axes[3].set_xlabel("unlearning step")
    axes[3].set_ylabel("retain NLL per token")
    axes[0].legend(fontsize=7)
    axes[3].legend(fontsize=7)
    panel_label(axes[0], "(a) forget NLL (dashed: GA's ceiling); fits right of the dotted line")
    panel_label(axes[1], "(b) NPO weights (predicted: all 1 at step 0)")
    panel_label(axes[2], "(c) SimNPO weights (predicted: ~ 1/|y|)")
    panel_label(axes[3], "(d) retain drift")
    cfg = doc["config"]
    memorised = doc.get("memorised", {}).get("reached", True)
    fig.suptitle(f"unlearn validate: {cfg['model']} ({doc['n_parameters']:,} parameters) on {doc['task']}, "
                 f"reference {cfg['reference']}, LoRA {cfg['lora_rank'] or 'off'}"
                 + ("" if memorised else "\nWARNING: the forget set was not memorised, so no prediction applies"),
                 fontsize=11, color="k" if memorised else "firebrick")
    return fig
