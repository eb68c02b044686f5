"""One unlearning run, and relearning attacks on its result: what ``unlearn run`` and ``unlearn relearn`` do with
``--model markov`` (the paper's setup) or ``--model markov-fast`` (the fast presets' smaller world and model).
``unlearn run`` also takes a Hugging Face model (a directory, or an architecture such as ``tiny``) with a task
(``--task markov|facts|jsonl|tofu``, the data of ``unlearn validate``), trained under the TOFU protocol of the NPO
and SimNPO papers unless told otherwise (TOFU_PROTOCOL; ``unlearn_language_model``). A run folder holds:

    run.json            the settings (``config`` as given; ``training``: the protocol's values and the plan), the
                        metrics before and after (toy models: forget KL, retain KL, entropy; Hugging Face models:
                        forget and retain NLL per token, --eval's metrics), the History, moved_fraction (the
                        fraction of the trained weight entries, for LoRA the adapter's, that differ after the run
                        from before) and mask_fraction (the fraction the mask let move; None unmasked); Hugging
                        Face runs also the prompt template, versions, device, wall time and peak memory
    model.safetensors   a toy model's unlearned weights
    hf/                 a Hugging Face model's: config.json, the tokenizer of a model directory, and a peft adapter
                        (``--save adapter``, the default with LoRA) or whole weights (``--save merged``)
    run.ckpt/           while a Hugging Face run is unfinished: its state after the last epoch (resumed by the same
                        command)
    mask.safetensors    the mask it was trained with (``--mask``), if any
    relearn.json        what ``unlearn relearn`` measured, if it ran
    run.failed.json     what a run that stopped on a non-finite loss had computed (config, error, history)

run.json also says whether and when the model collapsed (``unlearn.metrics.collapse``: collapsed_at_step, the
kind, "uniform" or "degenerate", the kind at every evaluation); ``--stop-on collapse`` ends the run at the
first collapsed evaluation and keeps the model of the last healthy one.

Nothing given is ignored: a setting that differs from its default but does not apply to the chosen model, task,
method or mask (``RunConfig.inapplicable``) is refused before any work, naming it and why. A mask file must name
every trainable parameter, unless its safetensors metadata says ``missing=frozen`` (the parameters it leaves
out stay fixed) or ``missing=free`` (they train); anything else is refused, naming the file and the first
parameters it leaves out (``unlearn.attribution.load_masks``). ``--out`` must not hold a run already unless
``--overwrite`` is given; then run.json, relearn.json, hf/ and (for a run without a mask) mask.safetensors are
removed before the new files are written, run.json last, so that the folder never pairs a record with another
model. The memory of a Hugging Face run is planned before anything is allocated (``plan_run``,
``unlearn.memory``): ``--reference auto`` takes cached, adapter or copy by what fits, and a plan that fits
nowhere is refused with its sizes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sims import markov
from unlearn import alternatives, attribution, distributed, memory, optim, tofu
from unlearn.config import config_dict, format_value, require_at_least_one, require_positive
from unlearn.data import ByteTokenizer
from unlearn.io import (
    atomic_write,
    environment,
    failed_record,
    package_versions,
    refuse_replacing,
    to_jsonable,
    write_failed,
)
from unlearn.logprobs import check_fused_logprobs
from unlearn.losses import token_mean_nll
from unlearn.memory import REFERENCE_ORDER
from unlearn.metrics.collapse import CollapseMonitor, vocab_size_of
from unlearn.metrics.tokens import nll_per_token
from unlearn.models import hf
from unlearn.models.transformer import Transformer
from unlearn.objectives import MethodParams, get_method
from unlearn.relearn import SUBSETS, relearn, relearn_subset
from unlearn.rng import generator
from unlearn.train import History, NonFiniteLossError, resolve_device

MODELS = {"markov": markov.Setup(), "markov-fast": markov.Setup(**markov.FAST_SETUP)}
REFERENCES = ("auto", *REFERENCE_ORDER)  # auto: the memory plan's choice (unlearn.memory.plan_reference)
PRECISION_CHOICES = ("float32", "bf16", "bf16-mixed", "auto")  # --precision: validate.PRECISION_MODES, and auto
SAVES = ("adapter", "merged")
RUN_FILES = ("run.json", "model.safetensors", "hf", "mask.safetensors", "relearn.json")  # what marks a run folder
CHECKPOINT = "run.ckpt"  # OUT/run.ckpt: the last epoch's state while a Hugging Face run is unfinished
HYPERPARAMETERS = tuple(f.name for f in dataclasses.fields(MethodParams))  # a method reads some of them
# Hugging Face models: the TOFU unlearning protocol of the NPO and SimNPO papers (AdamW, lr 1e-5, weight decay
# 0.01, effective batch 32 = 4 x 8 accumulated, linear warm-up over the first epoch then linear decay, 10 epochs;
# no clipping: TOFU's DeepSpeed config sets no gradient_clipping, and DeepSpeed's default was none)
TOFU_PROTOCOL = {"epochs": 10, "lr": 1e-5, "grad_accum": 8, "warmup_epochs": 1.0, "weight_decay": 0.01,
                 "schedule": "warmup_linear"}
TOY_PROTOCOL = {"steps": 50, "lr": 5e-4}
HF_ONLY = ("epochs", "grad_accum", "warmup_epochs", "weight_decay", "schedule", "clip_norm", "precision", "lora",
           "lora_alpha", "gradient_checkpointing", "alternatives", "template", "save", "logprob_chunk",
           "fused_logprobs", "compile")


@dataclass(frozen=True)
class RunConfig:
    """``unlearn run``: a toy model (``MODELS``) or a Hugging Face model and task. A field that differs from its
    default must apply to the run (``inapplicable``). Fields whose default is None take the protocol's value
    (``training``): TOY_PROTOCOL for the toy models, TOFU_PROTOCOL for Hugging Face models."""

    model: str = "markov"
    task: str = "markov"  # Hugging Face models: markov, facts, jsonl (with forget and retain files) or tofu
    forget: str | None = None  # --task jsonl: the forget set's file
    retain: str | None = None  # --task jsonl: the retain set's file
    data: str | None = None  # --task tofu: a TOFU directory (real, or `unlearn data tofu-like`)
    split: str = "forget10"  # --task tofu: forget01, forget05 or forget10
    method: str = "NPO"
    # beta, gamma, lam, mismatch, retain_norm (MethodParams): only those the method reads (METHODS'
    # hyperparameters); None: the method's value under the protocol (method_defaults)
    beta: float | None = None
    gamma: float | None = None
    lam: float | None = None
    mismatch: float | None = None
    retain_norm: str | None = None
    steps: int | None = None  # toy models: 50; Hugging Face models: epochs x steps per epoch, unless given
    epochs: int | None = None  # Hugging Face models: passes over the forget set (TOFU_PROTOCOL); not with steps
    batch_size: int = 4  # forget (and retain) sequences per micro-batch
    grad_accum: int | None = None  # Hugging Face models: micro-batches per step
    lr: float | None = None
    warmup_epochs: float | None = None  # Hugging Face models: linear warm-up over this many epochs
    weight_decay: float | None = None  # Hugging Face models: AdamW's decoupled decay
    schedule: str | None = None  # Hugging Face models: after the warm-up, constant or warmup_linear (decay to 0)
    clip_norm: float = 0.0  # Hugging Face models: gradient-norm clipping; 0: none
    precision: str = "auto"  # Hugging Face models: PRECISION_CHOICES (auto: float32 on the CPU, what fits on CUDA)
    lora: int | None = None  # Hugging Face models: the LoRA adapter's rank; None: every weight trains
    lora_alpha: float = 16.0
    gradient_checkpointing: bool = False
    mask: str | None = None
    mu: float = 1e-6  # WAGLE's Hessian scale: a wagle:R mask only
    seed: int = 0
    # evaluate on the first N sequences of each evaluation set: the toy models' test splits, a Hugging Face
    # model's forget and retain sets; None: all of them
    eval_limit: int | None = None
    eval_every: int | None = None  # steps between evaluations; None: every epoch (Hugging Face), a tenth of the steps
    eval: str | None = None  # Hugging Face models, --task tofu: "tofu" or "mia" metrics at every evaluation
    retain_logs: str | None = None  # --eval tofu: the retain model's eval.json, for forget quality
    device: str = "cpu"
    reference: str = "auto"  # REFERENCES; the toy models use the cached one
    alternatives: str | None = None  # Hugging Face models: a JSONL of alternative responses (unlearn.alternatives)
    template: str | None = None  # Hugging Face models: a plain prompt template with {prompt}; None: the tokenizer's
    save: str | None = None  # Hugging Face models: adapter (the default with LoRA) or merged weights in OUT/hf
    overwrite: bool = False  # replace the run in an existing --out folder (module docstring)
    stop_on: str | None = None  # "collapse": end at the first collapsed evaluation, keep the last healthy model
    # Hugging Face models: log-probs from the hidden states, this many response positions at a time
    # (unlearn.logprobs.head_token_logprobs: memory O(chunk x vocabulary)); None: from full logits
    logprob_chunk: int | None = None
    # Hugging Face models on CUDA: log-probs from the hidden states by cut-cross-entropy's fused kernel
    # (unlearn.logprobs.fused_head_token_logprobs; the gpu extra), in bf16 or bf16-mixed
    fused_logprobs: bool = False
    compile: bool = False  # Hugging Face models: torch.compile the model's forward (unlearn.models.hf.compile_in_place)

    def __post_init__(self):
        for key in ("steps", "epochs", "grad_accum", "lora"):
            value = getattr(self, key)
            if value is not None and value < 1:
                flag = "--" + key.replace("_", "-")
                raise ValueError(f"{flag} must be >= 1, got {value}; leave it out for "
                                 + ("full fine-tuning without LoRA" if key == "lora" else "the protocol's value"))
        if self.model not in MODELS:
            self.as_validate_config()  # an architecture name or a model directory, and a valid task
        if self.reference not in REFERENCES:
            raise ValueError(f"unknown reference {self.reference!r}; valid: {', '.join(REFERENCES)}")
        for key, valid in (("precision", PRECISION_CHOICES), ("save", (None, *SAVES)),
                           ("schedule", (None, *optim.SCHEDULES))):
            if getattr(self, key) not in valid:
                raise ValueError(f"unknown {key} {getattr(self, key)!r}; valid: {', '.join(map(str, valid))}")
        get_method(self.method)
        self.params()  # validates the method's hyperparameters (MethodParams)
        require_at_least_one(self, "batch_size")
        if self.steps is not None and self.epochs is not None:
            raise ValueError(f"--steps {self.steps} and --epochs {self.epochs}: a run counts one of them, not both")
        for key in ("warmup_epochs", "weight_decay", "clip_norm"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"--{key.replace('_', '-')} must be a finite number >= 0, got {value!r}")
        require_positive(self, "mu", "lora_alpha")
        if self.lr is not None:
            require_positive(self, "lr")
        if self.stop_on not in (None, "collapse"):
            raise ValueError(f"unknown stop_on {self.stop_on!r}; valid: collapse (or none)")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1 (steps), or none for the protocol's, got {self.eval_every}")
        if self.logprob_chunk is not None and self.logprob_chunk < 1:
            raise ValueError(f"logprob_chunk must be >= 1 (positions), or none for full logits, got "
                             f"{self.logprob_chunk}")
        if self.fused_logprobs and self.logprob_chunk is not None:
            raise ValueError("--fused-logprobs and --logprob-chunk are two ways to the same log-probs; give one")
        if self.fused_logprobs and self.precision == "float32":
            raise ValueError("--fused-logprobs runs a bf16 kernel; give --precision bf16 or bf16-mixed (or auto)")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ValueError(f"eval_limit must be >= 1 (sequences of each evaluation set), or none for all of them, "
                             f"got {self.eval_limit}")
        if self.lora is None and (self.reference == "adapter" or self.save == "adapter"):
            raise ValueError(f"--{'reference' if self.reference == 'adapter' else 'save'} adapter needs LoRA "
                             "(--lora RANK)")
        if self.lora is not None and self.mask is not None:
            raise ValueError("--mask selects weights of the whole model, and with --lora only the adapter trains; "
                             "give one of them")
        if self.alternatives is not None and not Path(self.alternatives).is_file():
            raise ValueError(f"--alternatives {self.alternatives}: no such file")
        if self.mask is not None:
            attribution.parse_mask_spec(self.mask)
        refused = self.inapplicable()
        if refused:
            raise ValueError("; ".join(f"{option} does not apply: {why}" for option, why in refused.items()))

    def inapplicable(self) -> dict[str, str]:
        """{"--option value": why} of every field that differs from its default but does not apply to this run
        (its model, task, method or mask): such a setting would be silently ignored, so it is refused."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        given = [key for key in defaults if getattr(self, key) != defaults[key]]
        method = get_method(self.method)
        spec = attribution.parse_mask_spec(self.mask) if self.mask else None  # (kind, ratio), or a file's Path
        toy = self.model in MODELS
        why = {}
        for key in given:
            if toy and key in HF_ONLY:
                why[key] = (f"the toy model {self.model} trains for --steps at a constant rate in float32; it is a "
                            "setting of Hugging Face models")
            elif toy and key in ("task", "forget", "retain", "data", "split", "eval", "retain_logs"):
                why[key] = (f"the toy model {self.model} trains on its own Markov world; task, forget and retain "
                            "choose the data of a Hugging Face model")
            elif toy and key == "reference" and self.reference != "cached":
                why[key] = (f"the toy models ({', '.join(MODELS)}) use the cached reference; the others are for "
                            "Hugging Face models")
            elif key == "method" and "alt_logp" in method.needs["forget"] and (
                    (toy and method.forget.alternative != "mismatch") or (not toy and self.task == "markov")):
                why[key] = ("it needs alternative responses to the forget prompts; " +
                            ("the Markov world has mismatched retain continuations only (GA+Mismatch+KL)" if toy
                             else "the markov task has no text prompts to answer (use --task facts, jsonl or "
                                  "tofu)"))
            elif key == "template" and not toy and self.task == "markov":
                why[key] = "the markov task reads state ids, not text prompts"
            elif key == "alternatives" and "alt_logp" not in method.needs["forget"]:
                why[key] = f"{self.method} reads no alternative responses (IDK+RT, DPO, DPO+RT, DPO+KL and " \
                           "GA+Mismatch+KL do)"
            elif key in ("forget", "retain") and self.task != "jsonl":
                why[key] = f"a file of --task jsonl, and the task is {self.task}"
            elif key in ("data", "split") and self.task != "tofu":
                why[key] = f"the TOFU directory and split of --task tofu, and the task is {self.task}"
            elif key == "reference" and not reads_reference(self.method):
                why[key] = f"{self.method} reads no reference model (no log pi_ref, no KL term)"
            elif key in HYPERPARAMETERS and key not in method.hyperparameters:
                reads = ", ".join(method.hyperparameters) or f"none of {', '.join(HYPERPARAMETERS)}"
                why[key] = f"{self.method} does not read {key} (it reads {reads})"
            elif key == "mu" and not (isinstance(spec, tuple) and spec[0] == "wagle"):
                why[key] = "WAGLE's Hessian scale, read only with --mask wagle:R"
            elif key == "lora_alpha" and self.lora is None:
                why[key] = "the LoRA adapter's scale, and there is no adapter (--lora RANK)"
        return {f"--{key.replace('_', '-')} {format_value(getattr(self, key))}": text for key, text in why.items()}

    def params(self) -> MethodParams:
        """The method's hyperparameters as this run uses them (given, else ``method_defaults``)."""
        protocol = self.protocol()
        return MethodParams(**{key: protocol[key] for key in HYPERPARAMETERS if key in protocol})

    def method_defaults(self) -> dict:
        """The defaults of the hyperparameters the method reads: MethodParams' (beta 0.1, every weight 1 and the
        retain NLL per sequence; the NPO paper's TOFU values), and on Hugging Face models those of the method's
        published TOFU runs on the split (``unlearn.tofu.published_hyperparameters``; forget10's for the other
        tasks)."""
        out = {key: getattr(MethodParams, key) for key in get_method(self.method).hyperparameters}
        if self.model not in MODELS:
            out |= tofu.published_hyperparameters(self.method, self.split if self.task == "tofu" else "forget10")
        return out

    def protocol(self) -> dict:
        """The values of the fields left at None: TOY_PROTOCOL or TOFU_PROTOCOL, by model, and the method's
        hyperparameters (``method_defaults``); a Hugging Face run given --steps counts steps (epochs None)."""
        base = (TOY_PROTOCOL if self.model in MODELS else {"steps": None, **TOFU_PROTOCOL}) | self.method_defaults()
        out = {key: getattr(self, key) if getattr(self, key) is not None else value for key, value in base.items()}
        if self.model not in MODELS and self.steps is not None:
            out["epochs"] = None
        return out

    def as_validate_config(self):
        """The ``recipes.validate.ValidateConfig`` that names the same model and task (its data and model code);
        the files and the template of other tasks stay out of it, for ``inapplicable`` to refuse in run's words."""
        from recipes.validate import ValidateConfig

        jsonl, tofu_task, text = self.task == "jsonl", self.task == "tofu", self.task != "markov"
        try:
            return ValidateConfig(model=self.model, task=self.task, forget=self.forget if jsonl else None,
                                  retain=self.retain if jsonl else None, data=self.data if tofu_task else None,
                                  split=self.split, eval=self.eval, retain_logs=self.retain_logs,
                                  eval_limit=self.eval_limit, seed=self.seed, device=self.device,
                                  precision="float32" if self.precision == "auto" else self.precision,
                                  lora_rank=self.lora, lora_alpha=self.lora_alpha,
                                  template=self.template if text else None,
                                  gradient_checkpointing=self.gradient_checkpointing)
        except ValueError as err:
            if hf.ModelSpec(self.model).is_architecture or Path(self.model).is_dir():
                raise  # the model is fine: the error names the setting that is not
            raise ValueError(f"model {self.model!r}: not a toy model ({', '.join(MODELS)}) and not a usable "
                             f"Hugging Face model or task: {err}") from None


def reads_reference(method: str) -> bool:
    """Whether ``method`` reads the reference model: log pi_ref of forget (or alternative) responses, or KL."""
    needs = get_method(method).needs
    return bool({"logp_ref", "alt_logp_ref"} & set(needs["forget"])) or "kl" in needs["retain"]


# ------------------------------------------------------------------------------------------ before any work


def check_out(out: Path, overwrite: bool) -> None:
    """``--out`` is a folder (or nothing yet) that holds no run, unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a folder")
    refuse_replacing(out, RUN_FILES, "a run", overwrite,
                     "replace it (the files that would no longer describe the model are removed)")


def _toy_model(name: str) -> Transformer:
    """The toy model ``name``'s architecture, untrained (for its parameter names and shapes)."""
    setup = MODELS[name]
    return Transformer(markov.model_config(setup.world_config(), setup.pretrain_config()))


# ------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    """What a Hugging Face run will do, decided before any weight is allocated: the precision and reference
    (``--precision auto``, ``--reference auto`` resolved from the memory plan), the schedule in steps, and the
    bytes planned (``unlearn.memory.plan_reference``)."""

    precision: str
    reference: str
    why: str
    bytes: dict
    n_parameters: int
    n_lora: int
    steps: int
    steps_per_epoch: int
    warmup_steps: int
    eval_every: int
    micro_batch: int  # forget sequences in a step's largest micro-batch (the step's batch cut in grad_accum parts)
    step_batch: int  # forget sequences per step (batch_size x grad_accum, or the whole forget set)

    def describe(self) -> str:
        gib = {k: v / 2**30 for k, v in self.bytes.items()}
        lora = f", LoRA adapter of {self.n_lora:,}" if self.n_lora else ""
        return (f"{self.n_parameters:,} parameters{lora} in {self.precision}; reference {self.reference} "
                f"({self.why}); about {gib['peak_bytes']:.2f} GiB at the peak (weights and optimizer "
                f"{gib['weights_and_optimizer_bytes']:.2f} GiB, reference {gib['reference_bytes']:.2f} GiB); "
                f"{self.steps} steps of {self.step_batch} forget sequences ({self.steps_per_epoch} per epoch, "
                f"warm-up {self.warmup_steps}), evaluated every {self.eval_every}")


def plan_run(cfg: RunConfig, n_forget: int, n_retain: int, retain_width: int, vocab: int | None,
             free_bytes: int | None, shards: int = 1) -> Plan:
    """The Plan of a Hugging Face run on data of these sizes, with ``free_bytes`` free on its device (None:
    unknown, everything fits) and the model sharded over ``shards`` ranks. Sizes come from the model on the meta
    device: nothing is allocated."""
    spec = cfg.as_validate_config().model_spec(vocab)
    meta = hf.meta_model(dataclasses.replace(spec, dtype="float32"))
    n, n_lora = hf.n_parameters(meta), hf.lora_size(meta, hf.LoraSpec(cfg.lora, cfg.lora_alpha)) if cfg.lora else 0
    with_logits = "kl" in get_method(cfg.method).needs["retain"]
    cached = memory.cached_reference_bytes(n_forget, n_retain, retain_width, meta.config.vocab_size, with_logits)
    on_cuda = torch.device(cfg.device).type == "cuda"
    precisions = (("bf16-mixed", "bf16") if on_cuda else ("float32",)) if cfg.precision == "auto" else \
        (cfg.precision,)
    reads = reads_reference(cfg.method)
    mode = cfg.reference if reads else "cached"  # no reference read: log-probs, never used
    error = None
    for precision in precisions:
        try:
            reference, planned, why = memory.plan_reference(mode, n, n_lora, precision, cached, free_bytes, shards)
            break
        except ValueError as err:
            error = err
    else:
        raise error
    if not reads:
        why = f"{cfg.method} reads no reference model"
    protocol = cfg.protocol()
    accum = protocol["grad_accum"]
    step_batch = min(cfg.batch_size * accum, n_forget)
    per_epoch = math.ceil(n_forget / step_batch)
    steps = protocol["steps"] if protocol.get("steps") is not None else protocol["epochs"] * per_epoch
    warmup = min(steps, round(protocol["warmup_epochs"] * per_epoch))
    eval_every = cfg.eval_every or (per_epoch if protocol.get("epochs") else max(1, steps // 10))
    return Plan(precision, reference, why, planned, n, n_lora, steps, per_epoch, warmup, eval_every,
                math.ceil(step_batch / min(accum, step_batch)), step_batch)


# ---------------------------------------------------------------------------------------------------- runs


def parameter_snapshot(model) -> dict[str, torch.Tensor]:
    """A CPU copy of every trainable parameter (for LoRA, the adapter), to measure what moved
    (``moved_fraction``)."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def moved_fraction(start: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> float:
    """The fraction of all parameter entries of ``start`` whose value in ``state`` differs from it."""
    changed = sum(int((state[name].to(before.device, before.dtype) != before).sum()) for name, before in start.items())
    return changed / max(1, sum(before.numel() for before in start.values()))


def _clear(out: Path, masks, hf_run: bool) -> None:
    """Remove the files of an overwritten run that would not describe this one."""
    import shutil

    for name in ("run.json", "relearn.json", "run.failed.json", *(() if masks is not None else ("mask.safetensors",)),
                 *(("model.safetensors",) if hf_run else ())):
        (out / name).unlink(missing_ok=True)
    if (out / "hf").exists():
        shutil.rmtree(out / "hf")


def _save(out: Path, model, masks, start, cfg: RunConfig, doc: dict, write_model: Callable[[dict], None]) -> dict:
    """Write the run folder (rank 0 only under torchrun; the weights gathered from the shards first): remove the
    files of an overwritten run that would not describe this one, then write the model (``write_model(state)``),
    the mask and, last, run.json. ``start``: ``parameter_snapshot`` of the model before the run (on rank 0)."""
    state = distributed.full_state_dict(model)  # collective when sharded: every rank takes part
    if not distributed.is_main():
        return doc
    doc["moved_fraction"] = moved_fraction(start, state)
    doc["mask_fraction"] = None if masks is None else \
        sum(int(m.sum()) for m in masks.values()) / sum(t.numel() for t in start.values())
    out.mkdir(parents=True, exist_ok=True)
    _clear(out, masks, cfg.model not in MODELS)
    write_model(state)
    if masks is not None:
        attribution.save_masks(masks, out / "mask.safetensors", {"spec": cfg.mask})
    atomic_write(out / "run.json", lambda p: Path(p).write_text(json.dumps(to_jsonable(doc), indent=1)))
    return doc


def _write_safetensors(out: Path) -> Callable[[dict], None]:
    from safetensors.torch import save_file

    return lambda state: atomic_write(out / "model.safetensors",
                                      lambda p: save_file({k: v.contiguous() for k, v in state.items()}, p))


def save_hf(model, folder: Path, save: str, tokenizer, state: dict | None = None) -> dict:
    """OUT/hf as a Hugging Face model: the base config (config.json), the tokenizer of a model directory, and
    a peft adapter (``save`` adapter: adapter_config.json, adapter_model.safetensors) or whole weights
    (merged: a LoRA adapter merged into the base weights first). Built under a temporary name and renamed, so
    the folder is whole or absent. {"save", "tokenizer"} for run.json."""
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".hf-", dir=folder.parent))
    try:
        lora = hasattr(model, "peft_config")
        if isinstance(tokenizer, ByteTokenizer):  # an architecture's config holds a Llama tokenizer's ids, not these
            base = model.get_base_model() if lora else model
            for config in (base.config, base.generation_config):
                for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
                    setattr(config, key, getattr(tokenizer, key))
        if lora and save == "merged":
            model, state = model.merge_and_unload(), None  # the merged weights are the model's own now
        # a peft model writes its adapter only; ``state``: the gathered weights of a sharded model
        model.save_pretrained(tmp, safe_serialization=True, **({"state_dict": state} if state else {}))
        if lora and save == "adapter":
            model.get_base_model().config.save_pretrained(tmp)
        saved = ("none: the markov task reads state ids" if tokenizer is None else
                 "bytes: unlearn.data.byte_tokenizer (an architecture's; not saved)")
        if tokenizer is not None and not isinstance(tokenizer, ByteTokenizer):
            tokenizer.save_pretrained(tmp)
            saved = "saved"
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"save": save, "tokenizer": saved}


def run_precision(doc: dict) -> str:
    """The precision a Hugging Face run trained in (its plan's, which resolved auto), from its run.json."""
    return doc.get("training", {}).get("precision") or doc["config"]["precision"]


def load_hf_run(folder: Path, device, trainable: bool = False):
    """The unlearned model of a Hugging Face run folder, from OUT/hf, in the precision the run trained in: merged
    weights through ``AutoModelForCausalLM.from_pretrained``, an adapter through ``PeftModel.from_pretrained`` on
    the run's base model (``--model``: a directory, or an architecture rebuilt from its seed). Reads run.json
    only (not the run's data). Training mode when ``trainable``."""
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    from recipes.validate import PRECISION_MODES

    try:
        doc = json.loads((folder / "run.json").read_text())
        config, precision = doc["config"], run_precision(doc)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{folder / 'run.json'}: not a run record of `unlearn run` ({err})") from None
    hf_dir, dtype = folder / "hf", PRECISION_MODES[precision][0]
    if (hf_dir / "adapter_config.json").is_file():
        spec = hf.ModelSpec(config["model"], dtype=dtype, device=str(device), seed=config["seed"],
                            vocab_size=doc["training"].get("vocab_size"))
        with hf.peft_quietly():
            model = PeftModel.from_pretrained(hf.load_model(spec), hf_dir, is_trainable=trainable).to(device)
    elif (hf_dir / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(
            hf_dir, local_files_only=True, dtype=hf.DTYPES[dtype],
            config=hf.without_dropout(AutoConfig.from_pretrained(hf_dir, local_files_only=True))).to(device)
    else:
        raise ValueError(f"{folder}: no hf/config.json; is this a Hugging Face run folder of `unlearn run`?")
    return model.train(trainable)


def watched_training(cfg: RunConfig, out: Path, model, monitor: CollapseMonitor, before: dict,
                     fit: Callable[[], History]) -> tuple[History, dict]:
    """(history, the evaluation the run ends with) of ``fit()``, a ``train`` call that evaluates through
    ``monitor``. A non-finite stop keeps what was computed in OUT/run.failed.json (the config, the error, the
    history, the evaluation before training, the collapse record) and names it in the error; a stop on
    collapse (``cfg.stop_on``) puts back the weights of the last healthy evaluation, which the run then ends
    with."""
    try:
        history = fit()
    except NonFiniteLossError as err:
        if distributed.is_main():
            path = write_failed(out, "run", failed_record(dataclasses.asdict(cfg), err, before=before,
                                                          **monitor.summary()))
            err.args = (f"{err}; what was computed is in {path}",)
        raise
    if monitor.stopped_at is not None:
        monitor.restore(model)
        return history, dict(monitor.last_healthy_values)
    return history, {k: v[-1] for k, v in history.evals.items()}


def _resumable(cfg: RunConfig) -> dict:
    """The settings a checkpoint must share with the run that resumes it: all but --overwrite and --compile
    (which change how, not what, the run computes), those left at None
    as the protocol resolves them (so that a value given equals the same value by default), and not precision
    and reference, whose resolved values the checkpoint's plan holds (checked against the new plan)."""
    given = {k: v for k, v in dataclasses.asdict(cfg).items()
             if k not in ("overwrite", "compile", "precision", "reference")}
    return given | cfg.protocol()


def read_checkpoint(path: Path, cfg: RunConfig) -> dict | None:
    """The checkpoint at ``path`` if there is one, refused (naming the file and the settings that differ) when a
    run with other settings wrote it, unless ``cfg.overwrite``: then it is deleted; None when there is none."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is named, with the remedy
        raise ValueError(f"{path}: unreadable checkpoint ({' '.join(str(err).split())[:200]}); delete it to start "
                         "over, or rerun with --overwrite") from None
    now = _resumable(cfg)
    then = {f.name: f.default for f in dataclasses.fields(RunConfig)} | state["config"]  # newer keys: defaults
    differ = [k for k, v in now.items() if then.get(k) != v]
    if differ and cfg.overwrite:
        path.unlink()
        return None
    if differ:
        shown = ", ".join(f"{k} {then.get(k)!r} there, {now[k]!r} now" for k in differ[:4])
        raise ValueError(f"{path}: a checkpoint of a run with other settings ({shown}); rerun those settings to "
                         "resume it, or give --overwrite to start over")
    return state


def alternative_set(cfg: RunConfig, vcfg, forget_examples, retain_examples, tokenizer):
    """The ``unlearn.alternatives.AlternativeSet`` of the method's alternative responses to the forget prompts
    (--alternatives FILE, or the built-in ones), tokenised as the forget set is; None when the method reads
    none."""
    from recipes import validate

    kind = get_method(cfg.method).forget.alternative
    if kind is None:
        return None
    prompts = [ex.prompt for ex in forget_examples]
    responses = (alternatives.read_alternatives(cfg.alternatives, prompts) if cfg.alternatives else
                 alternatives.builtin_alternatives(kind, prompts, [ex.response for ex in retain_examples], cfg.seed))
    data = validate.tokenize(vcfg, alternatives.examples(prompts, responses), tokenizer)
    return alternatives.AlternativeSet.build(data, responses)


def check_micro_batches(n: int, step_batch: int, accum: int, world: int, name: str) -> None:
    """Every micro-batch of a step (a step's batch of ``step_batch`` of ``n`` sequences, the epoch's last one
    included, cut into ``accum`` near-equal parts) splits evenly over ``world`` ranks; else an error before any
    work."""
    for size in {step_batch, n % step_batch} - {0}:
        for part in {len(p) for p in torch.arange(size).tensor_split(min(accum, size))}:
            if part % world:
                raise ValueError(f"{name}: a micro-batch of {part} sequences (steps of {step_batch} of {n}, in "
                                 f"{accum} micro-batches) does not split evenly over {world} ranks; choose "
                                 f"--batch-size and --grad-accum so that every micro-batch is a multiple of {world}")


def _refuse_under_torchrun(cfg: RunConfig, world: int) -> None:
    refused = {"--mask": (cfg.mask, "selects weights of the whole model"),
               "--logprob-chunk": (cfg.logprob_chunk, "applies the output head outside the model's forward"),
               "--fused-logprobs": (cfg.fused_logprobs, "applies the output head outside the model's forward"),
               "--compile": (cfg.compile, "compiles the whole model's forward"),
               "--stop-on collapse": (cfg.stop_on, "keeps the last healthy weights"),
               "--save merged": (cfg.save == "merged" and cfg.lora, "merges the adapter into the whole model")}
    for option, (given, what) in refused.items():
        if given:
            raise ValueError(f"{option} {what}, which FSDP2 shards over the {world} ranks; run it in one process")


def unlearn_language_model(cfg: RunConfig, out: Path, progress: bool | None = None, dry_run: bool = False) -> dict:
    """``unlearn run`` on a Hugging Face model (a directory or a named architecture) and task.

    Before anything is allocated: the data are read and tokenised, the alternative responses (methods that read
    them) checked against the forget prompts, and the run planned (``plan_run``: precision, reference, steps);
    ``dry_run`` returns the plan there. Then the model (``--precision``, ``--lora``, gradient checkpointing),
    masks, the reference of the plan (cached: forget log-probs and, for *+KL methods, the retain logits, computed
    once; adapter: the LoRA base; copy: a frozen model), and ``train`` with AdamW over epochs of the forget set:
    steps of ``grad_accum`` micro-batches of ``batch_size`` forget (and retain) sequences, a linear warm-up over
    ``warmup_epochs``, then the schedule. Forget and retain NLL per token (and --eval's metrics) at every
    evaluation, on the first ``eval_limit`` sequences of each set.

    Checkpoints: in one process, OUT/run.ckpt holds the trainable weights, the optimizer's moments, the history
    and the collapse record after every epoch (written atomically); the same command resumes from it, to the
    weights of an uninterrupted run (batches, alternative draws and the schedule depend on the step alone, and
    no dropout runs), and it is removed when run.json is written.

    Under ``torchrun --nproc_per_node N -m recipes.cli run ...`` the model is sharded with FSDP2
    (``unlearn.distributed``), LoRA included: every rank builds the same model, data and reference, takes its
    slice of each seeded micro-batch, and the run follows the one-process run up to reduction order; the
    recorded losses are averaged over ranks and rank 0 writes the folder (no checkpoints)."""
    from recipes import validate
    from recipes.validate import PRECISION_MODES
    from unlearn.losses import unlearning_losses
    from unlearn.reference import make_reference
    from unlearn.train import Checkpoint, TrainConfig, forward_precision, shuffled_batches, train

    with distributed.process_group(cfg.device) as (rank, world, device):
        began = time.perf_counter()
        if world > 1:
            _refuse_under_torchrun(cfg, world)
        if cfg.fused_logprobs:
            check_fused_logprobs(device)
        ckpt = out / CHECKPOINT / "state.pt"
        if cfg.overwrite and distributed.is_main():  # a finished run is replaced now, so that a rerun resumes
            _clear(out, None, True)  # a mask of the old run too
        resumed = read_checkpoint(ckpt, cfg) if world == 1 else None  # one of other settings is refused here
        vcfg = dataclasses.replace(cfg.as_validate_config(), device=str(device))
        if vcfg.task == "markov":
            forget, retain, vocab, _ = validate.task_data(vcfg)
            forget_ex = retain_ex = tokenizer = None
        else:
            forget_ex, retain_ex = validate.task_examples(vcfg, print if distributed.is_main() else lambda _: None)
            tokenizer = validate.tokenizer_of(cfg.model)
            forget, retain = (validate.tokenize(vcfg, ex, tokenizer) for ex in (forget_ex, retain_ex))
            vocab = len(tokenizer) if hf.ModelSpec(cfg.model).is_architecture else None
        alt = alternative_set(cfg, vcfg, forget_ex, retain_ex, tokenizer) if forget_ex is not None else None
        field = validate.field_evaluator(vcfg)  # --eval's sets, read and checked before any training
        plan = plan_run(cfg, len(forget), len(retain), retain.input_ids.shape[-1], vocab, memory.free_memory(device),
                        world)
        if distributed.is_main():
            print(f"{cfg.model}: {plan.describe()}")
        protocol = cfg.protocol()
        accum = protocol["grad_accum"]
        check_micro_batches(len(forget), plan.step_batch, accum, world, "the forget set")
        check_micro_batches(len(retain), min(plan.step_batch, len(retain)), accum, world, "the retain set")
        if dry_run:
            return {"config": dataclasses.asdict(cfg), "plan": dataclasses.asdict(plan)}
        chosen = {"precision": plan.precision, "reference": plan.reference}
        if resumed is not None and resumed["plan"] != chosen:
            raise ValueError(f"{ckpt}: the checkpoint ran with {resumed['plan']}, and this plan chose {chosen} (the "
                             "free memory changed); give --precision and --reference as the checkpoint has them, or "
                             "--overwrite to start over")
        forget, retain = forget.to(device), retain.to(device)
        alt_data = alt.data.to(device) if alt is not None else None
        spec = dataclasses.replace(vcfg, precision=plan.precision).model_spec(vocab, lora=True)
        model = hf.load_model(spec)

        def scores(kind):
            gradients = lambda: (attribution.nll_gradients(model, forget), attribution.nll_gradients(model, retain))
            return attribution.scores(kind, model, gradients=gradients, mu=cfg.mu,
                                      generator=generator(cfg.seed, "mask-random"))

        # masks before the reference (neither moves the model): a mask file that does not fit is refused first
        masks = (attribution.masks_for(cfg.mask, model, scores, generator(cfg.seed, "mask-threshold"))
                 if cfg.mask else None)
        with_logits = "kl" in get_method(cfg.method).needs["retain"]
        if plan.reference == "cached" and with_logits:  # the plan counted them; now measured with the model loaded
            state_bytes = 3 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
            memory.check_cached_logits(len(retain), retain.input_ids.shape[-1], model.config.vocab_size,
                                       math.ceil(state_bytes / world), memory.free_memory(device), device)
        autocast = forward_precision(device, PRECISION_MODES[plan.precision][1])  # as every training forward runs
        alt_ref = alt_data if "alt_logp_ref" in get_method(cfg.method).needs["forget"] else None  # DPO's
        with torch.no_grad(), autocast:
            reference = make_reference(plan.reference, model, forget, retain, with_logits=with_logits,
                                       alternatives=alt_ref, logprob_chunk=cfg.logprob_chunk,
                                       fused_logprobs=cfg.fused_logprobs)
        params = cfg.params()
        losses = unlearning_losses(cfg.method, params, forget, retain, reference,  # refuses what it can't run
                                   alternative=(lambda f, rows: alt_data.take(rows)) if alt is not None else None,
                                   logprob_chunk=cfg.logprob_chunk, fused_logprobs=cfg.fused_logprobs)
        if cfg.compile:
            hf.compile_in_place(model)
        start = parameter_snapshot(model) if distributed.is_main() else None
        forget_batches, _ = shuffled_batches(len(forget), plan.step_batch, cfg.seed, "run", "forget")
        retain_batches, _ = shuffled_batches(len(retain), min(plan.step_batch, len(retain)), cfg.seed, "run",
                                             "retain")

        retain_tokens = retain.n_tokens.cpu()  # the batches' indices are on the CPU: no device sync per part
        retain_size = (lambda rows: float(retain_tokens[rows].sum())) if params.retain_norm == "token" else len

        def micro_batches(step):
            """The step's batch in ``accum`` near-equal parts, each with the weights that make the loop's mean of
            micro-batch means (and FSDP2's mean over ranks) the step's mean: a term's losses on this rank's slice
            times parts x world x |slice| / |batch| (1 when the parts and slices are equal), where a
            token-normalised retain term counts response tokens, not sequences."""
            f, r = forget_batches(step)[0], retain_batches(step)[0]
            parts, r_size = min(accum, len(f)), retain_size(r)
            r_parts = parts if len(r) >= parts else 1  # a retain set smaller than the parts: all of it in each
            fs, rs = f.tensor_split(parts), r.tensor_split(parts) if r_parts > 1 else [r] * parts
            out = []
            for i, (fi, ri) in enumerate(zip(fs, rs, strict=True)):
                rows = alt.draw(fi, cfg.seed, step, i) if alt is not None else None
                pick = lambda index: distributed.rank_slice(index, rank, world)
                f_rank, r_rank = pick(fi), pick(ri)
                scale = {"forget": parts * world * len(f_rank) / len(f),
                         "retain": r_parts * world * retain_size(r_rank) / r_size}
                out.append((f_rank, r_rank, None if rows is None else pick(rows), scale))
            return out

        def weighted_losses(m, batch):
            *indices, scale = batch
            return {key: value * scale[key] if scale[key] != 1.0 else value
                    for key, value in losses(m, tuple(indices)).items()}

        limit = slice(0, cfg.eval_limit)
        forget_eval, retain_eval = forget.take(limit), retain.take(limit)

        def evaluate(m, step):  # every rank runs the same passes over the same sets (FSDP2 gathers in each)
            return {"forget_nll": nll_per_token(m, forget_eval), "retain_nll": nll_per_token(m, retain_eval),
                    **(field(m) if field else {})}

        monitor = CollapseMonitor(evaluate, vocab_size_of(model), stop=cfg.stop_on == "collapse", data=retain_eval)
        with torch.no_grad(), autocast:
            model.eval()
            before = monitor(model, 0)
            model.train()
        resume = None
        if resumed is not None:
            with torch.no_grad():
                named = dict(model.named_parameters())
                for name, value in resumed["weights"].items():
                    named[name].copy_(value)
            monitor.load_state_dict(resumed["monitor"])
            resume = Checkpoint(resumed["step"], resumed["optimizer"], History(**resumed["history"]))
            print(f"resuming from {ckpt} at step {resumed['step']} of {plan.steps}")

        def write_checkpoint(c: Checkpoint):
            state = {"config": _resumable(cfg), "plan": chosen, "step": c.step, "optimizer": c.optimizer,
                     "history": vars(c.history), "monitor": monitor.state_dict(),
                     "weights": parameter_snapshot(model)}
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(ckpt, lambda p: torch.save(state, p))

        no_decay = hf.no_decay_names(model)  # as the Hugging Face Trainer: biases and norm weights
        if world > 1:
            model = distributed.wrap(model, "fsdp")
        tc = TrainConfig(steps=plan.steps, lr=protocol["lr"], optimizer="adamw", weight_decay=protocol["weight_decay"],
                         schedule=protocol["schedule"], warmup_steps=plan.warmup_steps, clip_norm=cfg.clip_norm,
                         eval_every=plan.eval_every, checkpoint_every=plan.steps_per_epoch if world == 1 else 0,
                         precision=PRECISION_MODES[plan.precision][1], device=str(device),
                         progress=progress if distributed.is_main() else False, name=f"unlearn {cfg.method}")
        history, after = watched_training(cfg, out, model, monitor, before, lambda: train(
            model, weighted_losses, micro_batches, tc, evaluate=monitor, masks=masks, resume=resume,
            checkpoint=write_checkpoint, no_decay=no_decay))
        history.loss = distributed.mean_over_ranks(history.loss)
        history.terms = {k: distributed.mean_over_ranks(v) for k, v in history.terms.items()}
        save = cfg.save or ("adapter" if cfg.lora else "merged")
        doc = {"config": dataclasses.asdict(cfg),
               "training": {**protocol, **dataclasses.asdict(plan), "vocab_size": spec.vocab_size},
               "template": vcfg.prompt(), "world_size": world, "seconds": time.perf_counter() - began,
               "peak_memory_bytes": memory.peak_bytes(device),
               "environment": {**environment(str(device)), **package_versions("transformers", "peft")},
               "before": before, "after": after, **monitor.summary(), "history": vars(history)}
        # the adapter or model is written where the run folder's model goes, on rank 0 after the gather
        doc = _save(out, model, masks, start, cfg, doc, lambda state: doc.setdefault(
            "hf", save_hf(model, out / "hf", save, tokenizer, state)))
        if distributed.is_main():
            ckpt.unlink(missing_ok=True)
            if ckpt.parent.exists():
                ckpt.parent.rmdir()
        return doc


def run_unlearning(cfg: RunConfig, out: Path, progress: bool | None = None, dry_run: bool = False) -> dict:
    """Unlearn the cached original model with ``cfg`` and write the run folder (module docstring); a model
    that is not a toy goes to ``unlearn_language_model`` (``dry_run``: its plan only). ``out`` is checked first
    (``check_out``; not for a dry run, which writes nothing), and a toy model's mask file against the model's
    architecture, before any work."""
    if not dry_run:
        check_out(out, cfg.overwrite)
    if cfg.model not in MODELS:
        return unlearn_language_model(cfg, out, progress, dry_run)
    if dry_run:
        raise ValueError(f"--dry-run plans the memory of Hugging Face models; the toy model {cfg.model} needs none")
    if cfg.mask and isinstance(attribution.parse_mask_spec(cfg.mask), Path):
        attribution.load_masks(cfg.mask, _toy_model(cfg.model))
    device = resolve_device(cfg.device)
    setup = MODELS[cfg.model]
    world, original, _ = setup.models(device, progress)
    model = original
    start = parameter_snapshot(model)
    masks = markov.masks(cfg.mask, model, world, cfg.mu, cfg.seed) if cfg.mask else None
    retain_test = world["retain_test"].take(slice(0, cfg.eval_limit)).to(device)
    monitor = CollapseMonitor(markov.summary_evaluator(world, device, cfg.eval_limit), vocab_size_of(model),
                              stop=cfg.stop_on == "collapse", data=retain_test, limit=None)
    before = monitor(model, 0)
    protocol = cfg.protocol()
    steps = protocol["steps"]
    history, after = watched_training(cfg, out, model, monitor, before, lambda: markov.unlearn_run(
        model, cfg.method, cfg.params(), world, steps=steps, batch_size=cfg.batch_size, lr=protocol["lr"],
        generator=generator(cfg.seed, "markov-unlearn", cfg.method),
        evaluate_every=cfg.eval_every or max(1, steps // 10),
        evaluate=monitor, masks=masks, progress=progress))
    doc = {"config": dataclasses.asdict(cfg), "training": protocol, "before": before, "after": after,
           **monitor.summary(), "history": vars(history)}
    return _save(out, model, masks, start, cfg, doc, _write_safetensors(out))


def read_run_config(folder: Path) -> RunConfig:
    """The RunConfig of a run folder's run.json; errors name the file and what is wrong."""
    if not (folder / "run.json").is_file():
        raise ValueError(f"{folder}: no run.json; is this a folder written by `unlearn run`?")
    try:
        return RunConfig(**_current(json.loads((folder / "run.json").read_text())["config"]))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{folder / 'run.json'}: not a run record ({err})") from None
    except ValueError as err:
        raise ValueError(f"{folder / 'run.json'}: its config is refused ({err})") from None


def _current(config: dict) -> dict:
    """A run.json config in today's terms. Runs written before the hyperparameters defaulted to None (by method)
    recorded all of them, those their method does not read at the old fixed values: these become None; an RT
    term without retain_norm summed its NLL per sequence; and a toy run's precision float32 was the default
    then."""
    method = get_method(config.get("method", RunConfig.method))
    out = {**config, **{key: None for key in HYPERPARAMETERS if key not in method.hyperparameters}}
    if "retain_norm" in method.hyperparameters and "retain_norm" not in config:
        out["retain_norm"] = "sequence"
    if config.get("model", RunConfig.model) in MODELS and config.get("precision") == "float32":
        out["precision"] = RunConfig.precision  # the former default, which the toy models do not read
    return out


def load_run(folder: Path, device) -> tuple[RunConfig, Transformer]:
    """The RunConfig and unlearned model of a toy model's run folder; errors name the folder or file and what
    is wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg = read_run_config(folder)
    if cfg.model not in MODELS:
        raise ValueError(f"{folder}: a run of the Hugging Face model {cfg.model!r}; its model is in {folder / 'hf'} "
                         "(load_hf_run)")
    path = folder / "model.safetensors"
    if not path.is_file():
        raise ValueError(f"{folder}: no model.safetensors; is this a folder written by `unlearn run`?")
    redo = f"redo the run with `unlearn run ... --out {folder} --overwrite`"
    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise ValueError(f"{path}: damaged, not readable as safetensors ({' '.join(str(err).split())}); "
                         f"{redo}") from None
    model = _toy_model(cfg.model)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path}: not the weights of run.json's model {cfg.model} "
                         f"({' '.join(str(err).split())[:200]}); {redo}") from None
    return cfg, model.to(device).eval()


@dataclass(frozen=True)
class RelearnConfig:
    """``unlearn relearn`` on a run folder."""

    subset: str = "shortest"  # SUBSETS: the shortest responses, or random draws
    frac: float = 0.2  # of the forget set
    epochs: int = 3
    batch_size: int = 32
    lr: float | None = None  # None: 1e-4 on the toy models, 1e-5 on Hugging Face models (the SimNPO paper's WMDP)
    draws: int = 3  # random subsets to draw (subset random); the relearn figure and the SimNPO paper draw 5
    device: str = "cpu"

    def __post_init__(self):
        if self.subset not in SUBSETS:
            raise ValueError(f"unknown relearning subset {self.subset!r}; valid: {', '.join(SUBSETS)}")
        if not 0 < self.frac <= 1:
            raise ValueError(f"frac must lie in (0, 1], got {self.frac!r}")
        require_at_least_one(self, "draws", "epochs", "batch_size")
        if self.subset == "shortest" and self.draws != RelearnConfig.draws:
            raise ValueError(f"--draws {self.draws} does not apply: the shortest responses are one subset; draws "
                             "are of --subset random")
        if self.lr is not None:
            require_positive(self, "lr")

    def learning_rate(self, toy: bool) -> float:
        return self.lr if self.lr is not None else (1e-4 if toy else 1e-5)


def run_relearning(folder: Path, cfg: RelearnConfig = RelearnConfig(), progress: bool | None = None) -> dict:
    """Relearning attacks on the model of a run folder (``unlearn.relearn``): one run on the shortest ``cfg.frac``
    of the forget set, or ``cfg.draws`` runs on random subsets; forget metrics after each epoch (toy models:
    forget KL, retain KL, entropy; Hugging Face models: forget and retain NLL per token, and the run's --eval
    metrics), written to relearn.json in the folder with ``cfg``."""
    dev = resolve_device(cfg.device)
    run = read_run_config(folder)
    toy = run.model in MODELS
    if toy:
        _, unlearned = load_run(folder, dev)
        world = markov.make_world(MODELS[run.model].world_config())
        forget = world.forget_set().to(dev)
        evaluate = markov.summary_evaluator(world, dev, run.eval_limit)

        def fresh():
            model = Transformer(unlearned.cfg).to(dev)
            model.load_state_dict(unlearned.state_dict())
            return model

        precision = "float32"
    else:
        from recipes import validate
        from recipes.validate import PRECISION_MODES

        vcfg = dataclasses.replace(run.as_validate_config(), device=str(dev))
        forget, retain, _, _ = validate.task_data(vcfg, report=None)
        forget, retain = forget.to(dev), retain.to(dev)
        field = validate.field_evaluator(vcfg)
        forget_eval, retain_eval = forget.take(slice(0, run.eval_limit)), retain.take(slice(0, run.eval_limit))

        def evaluate(m, step):
            return {"forget_nll": nll_per_token(m, forget_eval), "retain_nll": nll_per_token(m, retain_eval),
                    **(field(m) if field else {})}

        fresh = lambda: load_hf_run(folder, dev, trainable=True)
        precision = PRECISION_MODES[run_precision(json.loads((folder / "run.json").read_text()))][1]
    indices = ([relearn_subset(forget.n_tokens, cfg.frac, "shortest")] if cfg.subset == "shortest" else
               [relearn_subset(forget.n_tokens, cfg.frac, "random", generator(run.seed, "relearn-subset", d))
                for d in range(cfg.draws)])
    lr = cfg.learning_rate(toy)
    runs = []
    for d, index in enumerate(indices):
        model = fresh()
        part = forget.take(index)
        history = relearn(model, token_mean_nll(part), len(part), epochs=cfg.epochs, batch_size=cfg.batch_size,
                          lr=lr, seed=run.seed, keys=(cfg.subset, d), evaluate=evaluate, precision=precision,
                          progress=progress)
        runs.append({"epochs": list(range(len(history.eval_steps))), **history.evals})
    doc = {"run": str(folder), "subset": cfg.subset, "frac": cfg.frac, "epochs": cfg.epochs,
           "batch_size": cfg.batch_size, "lr": lr, "draws": len(indices), "config": {**config_dict(cfg), "lr": lr},
           "relearn": runs}
    atomic_write(folder / "relearn.json", lambda p: Path(p).write_text(json.dumps(to_jsonable(doc), indent=1)))
    return doc
