"""One unlearning run, and relearning attacks on its result: what ``unlearn run`` and ``unlearn relearn`` do with
``--model markov`` (the paper's setup) or ``--model markov-fast`` (the fast presets' smaller world and model).
``unlearn run`` also takes a Hugging Face model (a directory, or an architecture such as ``tiny``) with a task
(``--task markov|facts|jsonl|tofu``, the data of ``unlearn validate``). A run folder holds:

    run.json            the settings, the metrics before and after (forget KL, retain KL, entropy), the History,
                        moved_fraction (the fraction of all weight entries that differ after the run from before,
                        compared entry by entry) and mask_fraction (the fraction the mask let move; None unmasked)
    model.safetensors   the unlearned model's weights
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
``--overwrite`` is given; then run.json, relearn.json and (for a run without a mask) mask.safetensors are removed
before the new files are written, run.json last, so that the folder never pairs a record with another model.
Cached retain logits (*+KL methods, ``--reference cached``) are sized before they are allocated and refused,
with ``--reference copy`` as the remedy, when they would not fit the device's free memory (``check_cached_logits``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sims import markov
from unlearn import attribution, distributed
from unlearn.config import config_dict, format_value, require_at_least_one, require_positive
from unlearn.io import atomic_write, failed_record, to_jsonable, write_failed
from unlearn.losses import token_mean_nll
from unlearn.metrics.collapse import CollapseMonitor, vocab_size_of
from unlearn.metrics.tokens import nll_per_token
from unlearn.models.transformer import Transformer
from unlearn.objectives import MethodParams, get_method
from unlearn.relearn import SUBSETS, relearn, relearn_subset
from unlearn.rng import generator
from unlearn.train import History, NonFiniteLossError, resolve_device

MODELS = {"markov": markov.Setup(), "markov-fast": markov.Setup(**markov.FAST_SETUP)}
REFERENCES = ("cached", "copy")  # the adapter reference needs LoRA, which `unlearn run` does not train
RUN_FILES = ("run.json", "model.safetensors", "mask.safetensors", "relearn.json")  # what marks a run folder
HYPERPARAMETERS = ("beta", "gamma", "lam", "mismatch")  # MethodParams: each method reads some (Method.hyperparameters)


@dataclass(frozen=True)
class RunConfig:
    """``unlearn run``: a toy model (``MODELS``) or a Hugging Face model and task. A field that differs from its
    default must apply to the run (``inapplicable``)."""

    model: str = "markov"
    task: str = "markov"  # Hugging Face models: markov, facts or jsonl (with forget and retain files)
    forget: str | None = None  # --task jsonl: the forget set's file
    retain: str | None = None  # --task jsonl: the retain set's file
    data: str | None = None  # --task tofu: a TOFU directory (real, or `unlearn data tofu-like`)
    split: str = "forget10"  # --task tofu: forget01, forget05 or forget10
    method: str = "NPO"
    beta: float = 0.1  # beta, gamma, lam, mismatch: only those the method reads (METHODS' hyperparameters)
    gamma: float = 0.0
    lam: float = 1.0
    mismatch: float = 1.0
    steps: int = 50
    batch_size: int = 4
    lr: float = 5e-4
    mask: str | None = None
    mu: float = 1e-6  # WAGLE's Hessian scale: a wagle:R mask only
    seed: int = 0
    # evaluate on the first N sequences of each evaluation set: the toy models' test splits, a Hugging Face
    # model's forget and retain sets; None: all of them
    eval_limit: int | None = None
    eval_every: int | None = None  # steps between evaluations; None: a tenth of the steps
    eval: str | None = None  # Hugging Face models, --task tofu: "tofu" or "mia" metrics at every evaluation
    retain_logs: str | None = None  # --eval tofu: the retain model's eval.json, for forget quality
    device: str = "cpu"
    reference: str = "cached"  # Hugging Face models: cached or copy (unlearn.reference); toy models: cached
    overwrite: bool = False  # replace the run in an existing --out folder (module docstring)
    stop_on: str | None = None  # "collapse": end at the first collapsed evaluation, keep the last healthy model
    # Hugging Face models: log-probs from the hidden states, this many response positions at a time
    # (unlearn.logprobs.head_token_logprobs: memory O(chunk x vocabulary)); None: from full logits
    logprob_chunk: int | None = None

    def __post_init__(self):
        if self.model not in MODELS:
            self.as_validate_config()  # an architecture name or a model directory, and a valid task
        if self.reference not in REFERENCES:
            raise ValueError(f"unknown reference {self.reference!r}; valid: {', '.join(REFERENCES)}")
        get_method(self.method)
        self.params()  # validates beta, gamma, lam, mismatch
        require_at_least_one(self, "steps", "batch_size")
        require_positive(self, "lr", "mu")
        if self.stop_on not in (None, "collapse"):
            raise ValueError(f"unknown stop_on {self.stop_on!r}; valid: collapse (or none)")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1 (steps), or none for a tenth of the steps, got "
                             f"{self.eval_every}")
        if self.logprob_chunk is not None and self.logprob_chunk < 1:
            raise ValueError(f"logprob_chunk must be >= 1 (positions), or none for full logits, got "
                             f"{self.logprob_chunk}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ValueError(f"eval_limit must be >= 1 (sequences of each evaluation set), or none for all of them, "
                             f"got {self.eval_limit}")
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
        why = {}
        for key in given:
            if self.model in MODELS and key == "logprob_chunk":
                why[key] = f"the toy model {self.model} has a small vocabulary; it is for Hugging Face models' heads"
            elif self.model in MODELS and key in ("task", "forget", "retain", "data", "split", "eval", "retain_logs"):
                why[key] = (f"the toy model {self.model} trains on its own Markov world; task, forget and retain "
                            "choose the data of a Hugging Face model")
            elif self.model in MODELS and key == "reference":
                why[key] = (f"the toy models ({', '.join(MODELS)}) use the cached reference; the others are for "
                            "Hugging Face models")
            elif key == "method" and self.model not in MODELS and {"alt_logp", "alt_logp_ref"} & set(
                    method.needs["forget"]):
                why[key] = ("it needs alternative responses to the forget prompts, which a Hugging Face task does "
                            f"not give (the toy models' data does: --model {' or '.join(MODELS)})")
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
        return {f"--{key.replace('_', '-')} {format_value(getattr(self, key))}": text for key, text in why.items()}

    def params(self) -> MethodParams:
        return MethodParams(beta=self.beta, gamma=self.gamma, lam=self.lam, mismatch=self.mismatch)

    def evaluate_every(self) -> int:
        """Steps between evaluations: eval_every, or a tenth of the steps."""
        return self.eval_every or max(1, self.steps // 10)

    def as_validate_config(self):
        """The ``recipes.validate.ValidateConfig`` that names the same model and task (its data and model code)."""
        from recipes.validate import ValidateConfig

        try:
            return ValidateConfig(model=self.model, task=self.task, forget=self.forget, retain=self.retain,
                                  data=self.data, split=self.split, eval=self.eval, retain_logs=self.retain_logs,
                                  eval_limit=self.eval_limit, seed=self.seed, device=self.device,
                                  precision="float32")
        except ValueError as err:
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
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not overwrite:
        raise ValueError(f"--out {out}: already holds a run ({', '.join(found)}); give a new folder, or --overwrite "
                         "to replace it (the files that would no longer describe the model are removed)")


def _toy_model(name: str) -> Transformer:
    """The toy model ``name``'s architecture, untrained (for its parameter names and shapes)."""
    setup = MODELS[name]
    return Transformer(markov.model_config(setup.world_config(), setup.pretrain_config()))


def free_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (CUDA: ``torch.cuda.mem_get_info``; CPU: ``available_ram``), None where unknown
    (then nothing is checked). Tests monkeypatch it."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return available_ram() if device.type == "cpu" else None


def available_ram(meminfo: str | Path = "/proc/meminfo") -> int | None:
    """MemAvailable of ``meminfo`` in bytes; where that is unreadable, the free physical pages (sysconf), else
    None."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


CACHE_HEADROOM = 1.25  # activations and the allocator's rounding, on top of what check_cached_logits counts


def check_cached_logits(n: int, width: int, vocab: int, state_bytes: int, free_bytes: int | None,
                        device="the device") -> None:
    """Refuse, before they are allocated, cached retain logits (n x width x vocab float32) that do not fit
    ``free_bytes`` (None: unknown, not checked). While they are built the chunks and their concatenation are both
    held (2x), and afterwards they stay beside the gradients and AdamW moments that the first step allocates
    (``state_bytes``): CACHE_HEADROOM x (logits + max(logits, state)) must be free."""
    logits = 4 * n * width * vocab
    need = CACHE_HEADROOM * (logits + max(logits, state_bytes))
    if free_bytes is None or need <= free_bytes:
        return
    gib = 2.0**30
    raise ValueError(f"--reference cached: the retain logits ({n} sequences x {width} tokens x {vocab} vocabulary x "
                     f"4 bytes = {logits / gib:.2f} GiB; about {need / gib:.2f} GiB with their building and the "
                     f"gradients and AdamW moments) do not fit the {free_bytes / gib:.2f} GiB free on {device}; "
                     "use --reference copy (a frozen copy of the model instead of the logits)")


# ---------------------------------------------------------------------------------------------------- runs


def parameter_snapshot(model) -> dict[str, torch.Tensor]:
    """A CPU copy of every parameter, to measure what moved (``moved_fraction``)."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters()}


def moved_fraction(start: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> float:
    """The fraction of all parameter entries of ``start`` whose value in ``state`` differs from it."""
    changed = sum(int((state[name].to(before.device, before.dtype) != before).sum()) for name, before in start.items())
    return changed / max(1, sum(before.numel() for before in start.values()))


def _save(out: Path, model, masks, start, cfg: RunConfig, doc: dict) -> dict:
    """Write the run folder (rank 0 only under torchrun; the weights gathered from the shards first): remove the
    files of an overwritten run that would not describe this one, then write the model, the mask and, last,
    run.json. ``start``: ``parameter_snapshot`` of the model before the run (on rank 0)."""
    from safetensors.torch import save_file

    state = distributed.full_state_dict(model)  # collective when sharded: every rank takes part
    if not distributed.is_main():
        return doc
    doc["moved_fraction"] = moved_fraction(start, state)
    doc["mask_fraction"] = None if masks is None else \
        sum(int(m.sum()) for m in masks.values()) / sum(t.numel() for t in start.values())
    out.mkdir(parents=True, exist_ok=True)
    for name in ("run.json", "relearn.json", "run.failed.json", *(() if masks is not None else ("mask.safetensors",))):
        (out / name).unlink(missing_ok=True)
    atomic_write(out / "model.safetensors", lambda p: save_file({k: v.contiguous() for k, v in state.items()}, p))
    if masks is not None:
        attribution.save_masks(masks, out / "mask.safetensors", {"spec": cfg.mask})
    atomic_write(out / "run.json", lambda p: Path(p).write_text(json.dumps(to_jsonable(doc), indent=1)))
    return doc


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


def unlearn_language_model(cfg: RunConfig, out: Path, progress: bool | None = None) -> dict:
    """``unlearn run`` on a Hugging Face model (a directory or a named architecture) and task: the reference of
    ``cfg.reference`` (cached: the forget log-probs and, for *+KL methods, the retain logits, n_retain x T x V
    floats on the device, refused before they are allocated when they would not fit: ``check_cached_logits``;
    copy: a frozen model), masks from NLL gradients summed over the forget and retain sets, forget and retain
    NLL per token before and after (on the first ``cfg.eval_limit`` sequences of each, or all).

    Under ``torchrun --nproc_per_node N -m recipes.cli run ...`` the model is sharded with FSDP2
    (``unlearn.distributed``): every rank builds the same model, data and reference, takes its slice of each
    seeded global batch, and the run follows the one-process run up to reduction order; the recorded losses
    are averaged over ranks and rank 0 writes the folder. Masks need the whole model: one process only."""
    from recipes import validate
    from unlearn.losses import unlearning_losses
    from unlearn.models import hf
    from unlearn.reference import make_reference
    from unlearn.train import TrainConfig, shuffled_batches, train

    with distributed.process_group(cfg.device) as (rank, world, device):
        if world > 1 and cfg.mask:
            raise ValueError(f"--mask selects weights of the whole model, which FSDP2 shards over the {world} "
                             "ranks; run masked runs in one process")
        if world > 1 and cfg.logprob_chunk:
            raise ValueError(f"--logprob-chunk applies the output head outside the model's forward, which FSDP2 "
                             f"shards over the {world} ranks; run it in one process")
        if world > 1 and cfg.stop_on:
            raise ValueError("--stop-on collapse keeps the last healthy weights, which FSDP2 shards over the "
                             f"{world} ranks; run it in one process")
        vcfg = dataclasses.replace(cfg.as_validate_config(), device=str(device))
        forget, retain, vocab, _ = validate.task_data(vcfg)
        field = validate.field_evaluator(vcfg)  # --eval's sets, read and checked before any training
        size = min(cfg.batch_size, len(forget))
        distributed.check_batches(len(forget), size, world, "--batch-size on the forget set")
        distributed.check_batches(len(retain), min(size, len(retain)), world, "--batch-size on the retain set")
        forget, retain = forget.to(device), retain.to(device)
        model = hf.load_model(vcfg.model_spec(vocab))
        with_logits = "kl" in get_method(cfg.method).needs["retain"]
        if cfg.reference == "cached" and with_logits:
            state_bytes = 3 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
            check_cached_logits(len(retain), retain.input_ids.shape[-1], model.config.vocab_size,
                                math.ceil(state_bytes / world), free_memory(device), device)

        def scores(kind):
            gradients = lambda: (attribution.nll_gradients(model, forget), attribution.nll_gradients(model, retain))
            return attribution.scores(kind, model, gradients=gradients, mu=cfg.mu,
                                      generator=generator(cfg.seed, "mask-random"))

        # masks before the reference (neither moves the model): a mask file that does not fit is refused first
        masks = (attribution.masks_for(cfg.mask, model, scores, generator(cfg.seed, "mask-threshold"))
                 if cfg.mask else None)
        reference = make_reference(cfg.reference, model, forget, retain, with_logits=with_logits)
        losses = unlearning_losses(cfg.method, cfg.params(), forget, retain, reference,  # refuses what it can't run
                                   logprob_chunk=cfg.logprob_chunk)
        start = parameter_snapshot(model) if distributed.is_main() else None
        forget_batches, _ = shuffled_batches(len(forget), size, cfg.seed, "run", "forget")
        retain_batches, _ = shuffled_batches(len(retain), min(size, len(retain)), cfg.seed, "run", "retain")

        def micro_batches(step):
            return [(distributed.rank_slice(forget_batches(step)[0], rank, world),
                     distributed.rank_slice(retain_batches(step)[0], rank, world), None)]

        limit = slice(0, cfg.eval_limit)
        forget_eval, retain_eval = forget.take(limit), retain.take(limit)

        def evaluate(m, step):  # every rank runs the same passes over the same sets (FSDP2 gathers in each)
            return {"forget_nll": nll_per_token(m, forget_eval), "retain_nll": nll_per_token(m, retain_eval),
                    **(field(m) if field else {})}

        monitor = CollapseMonitor(evaluate, vocab_size_of(model), stop=cfg.stop_on == "collapse", data=retain_eval)
        before = monitor(model, 0)
        if world > 1:
            model = distributed.wrap(model, "fsdp")
        tc = TrainConfig(steps=cfg.steps, lr=cfg.lr, optimizer="adamw", eval_every=cfg.evaluate_every(),
                         device=str(device), progress=progress if distributed.is_main() else False,
                         name=f"unlearn {cfg.method}")
        history, after = watched_training(cfg, out, model, monitor, before, lambda: train(
            model, losses, micro_batches, tc, evaluate=monitor, masks=masks))
        history.loss = distributed.mean_over_ranks(history.loss)
        history.terms = {k: distributed.mean_over_ranks(v) for k, v in history.terms.items()}
        doc = {"config": dataclasses.asdict(cfg), "world_size": world, "before": before, "after": after,
               **monitor.summary(), "history": vars(history)}
        return _save(out, model, masks, start, cfg, doc)


def run_unlearning(cfg: RunConfig, out: Path, progress: bool | None = None) -> dict:
    """Unlearn the cached original model with ``cfg`` and write the run folder (module docstring); a model
    that is not a toy goes to ``unlearn_language_model``. ``out`` is checked first (``check_out``), and a toy
    model's mask file against the model's architecture, before any work."""
    check_out(out, cfg.overwrite)
    if cfg.model not in MODELS:
        return unlearn_language_model(cfg, out, progress)
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
    history, after = watched_training(cfg, out, model, monitor, before, lambda: markov.unlearn_run(
        model, cfg.method, cfg.params(), world, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
        generator=generator(cfg.seed, "markov-unlearn", cfg.method), evaluate_every=cfg.evaluate_every(),
        evaluate=monitor, masks=masks, progress=progress))
    doc = {"config": dataclasses.asdict(cfg), "before": before, "after": after, **monitor.summary(),
           "history": vars(history)}
    return _save(out, model, masks, start, cfg, doc)


def load_run(folder: Path, device) -> tuple[RunConfig, Transformer]:
    """The RunConfig and unlearned model of a run folder; errors name the folder or file and what is wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    for name in ("run.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise ValueError(f"{folder}: no {name}; is this a folder written by `unlearn run`?")
    try:
        cfg = RunConfig(**json.loads((folder / "run.json").read_text())["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{folder / 'run.json'}: not a run record ({err})") from None
    except ValueError as err:
        raise ValueError(f"{folder / 'run.json'}: its config is refused ({err})") from None
    if cfg.model not in MODELS:
        raise ValueError(f"{folder}: `unlearn relearn` takes runs of the toy models ({', '.join(MODELS)}), "
                         f"this one is {cfg.model!r}")
    path = folder / "model.safetensors"
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
    """``unlearn relearn`` on a run folder of a toy model."""

    subset: str = "shortest"  # SUBSETS: the shortest responses, or random draws
    frac: float = 0.2  # of the forget set
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-4
    draws: int = 3  # random subsets to draw (subset random); the relearn figure and the SimNPO paper draw 5
    device: str = "cpu"

    def __post_init__(self):
        if self.subset not in SUBSETS:
            raise ValueError(f"unknown relearning subset {self.subset!r}; valid: {', '.join(SUBSETS)}")
        if not 0 < self.frac <= 1:
            raise ValueError(f"frac must lie in (0, 1], got {self.frac!r}")
        require_at_least_one(self, "draws", "epochs", "batch_size")
        require_positive(self, "lr")


def run_relearning(folder: Path, cfg: RelearnConfig = RelearnConfig(), progress: bool | None = None) -> dict:
    """Relearning attacks on the model of a run folder (``unlearn.relearn``): one run on the shortest ``cfg.frac``
    of the forget set, or ``cfg.draws`` runs on random subsets; forget metrics after each epoch, written to
    relearn.json in the folder with ``cfg``."""
    dev = resolve_device(cfg.device)
    run, unlearned = load_run(folder, dev)
    world = markov.make_world(MODELS[run.model].world_config())
    forget = world.forget_set().to(dev)
    evaluate = markov.summary_evaluator(world, dev, run.eval_limit)
    indices = ([relearn_subset(forget.n_tokens, cfg.frac, "shortest")] if cfg.subset == "shortest" else
               [relearn_subset(forget.n_tokens, cfg.frac, "random", generator(run.seed, "relearn-subset", d))
                for d in range(cfg.draws)])
    runs = []
    for d, index in enumerate(indices):
        model = Transformer(unlearned.cfg).to(dev)
        model.load_state_dict(unlearned.state_dict())
        part = forget.take(index)
        history = relearn(model, token_mean_nll(part), len(part), epochs=cfg.epochs, batch_size=cfg.batch_size,
                          lr=cfg.lr, seed=run.seed, keys=(cfg.subset, d), evaluate=evaluate, progress=progress)
        runs.append({"epochs": list(range(len(history.eval_steps))), **history.evals})
    doc = {"run": str(folder), "subset": cfg.subset, "frac": cfg.frac, "epochs": cfg.epochs,
           "batch_size": cfg.batch_size, "lr": cfg.lr, "draws": len(indices), "config": config_dict(cfg),
           "relearn": runs}
    atomic_write(folder / "relearn.json", lambda p: Path(p).write_text(json.dumps(to_jsonable(doc), indent=1)))
    return doc
