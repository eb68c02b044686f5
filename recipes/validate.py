"""``unlearn validate``: do the toy models' predictions hold on a real causal LM?

1. Data and model: a built-in task (``markov``: the SimNPO Markov mixture as tokens, with Forget1 length 20 and
   Forget2 length 5 so that response lengths differ; ``facts``: fictitious authors, TOFU-like) or JSONL/TOFU
   files (``--task jsonl --forget F --retain R``); a local Hugging Face model directory, or a named
   architecture with random weights (``tiny``, ``llama-100m-shape``, ``llama-7b-shape``; ``unlearn.models.hf``).
2. Memorise: fine-tune (one AdamW run: 10-step warm-up, linear decay; token-mean NLL, batches of at least
   64) on forget + retain until the forget set's NLL per response token is below ``memorise_nll``, stops falling, or
   ``memorise_epochs`` pass; for a model that already knows its data (a real checkpoint with
   ``--memorise-epochs 0``) this is skipped.
3. Unlearn from the memorised model with each method for ``steps`` steps (AdamW, forget batches of
   ``batch_size``), through the same loop, objectives and reference handling as every run (``unlearn.losses``,
   ``unlearn.reference``), optionally with LoRA; every ``eval_every`` steps record each forget sequence's
   log-likelihood and the retain NLL per token. Fits use the steps after the first ``fit_from`` fraction (the
   early transient is neither linear nor logarithmic, as in the collapse experiment).
4. Measure, beside each the toy model's prediction (``PREDICTIONS``): forget NLL against steps with linear and
   log-step fits (NPO paper Theorem 2: GA linear, NPO logarithmic), the per-sequence weights dL/dlogp (by
   autograd through the objective) against |y| at the first and last evaluation (NPO exactly 1 at step 0;
   SimNPO's 2/|y| factor: SimNPO paper Sec. 4, ``theory.allocation``), and the retain drift.

Precision, optimizer and memory (``PRECISION_MODES``, ``memory_plan``): AdamW everywhere, its moments in the
weights' dtype. ``float32`` (the CPU default); ``bf16-mixed``: float32 weights and moments, bf16 autocast
(16 bytes per weight, plus autocast's bf16 copy of the weights); ``bf16``: bf16 weights and moments (8 bytes
per weight), which rounds away an update smaller than half the bf16 spacing of its weight (2^-9 to 2^-8 of
the weight: an AdamW step of ~lr = 5e-5 no longer moves weights above ~0.026). On CUDA, ``auto`` takes
bf16-mixed when its plan fits the GPU's free memory (Llama-2-7B's shape: 113 GiB, within an H200's 140 GiB)
and bf16 otherwise (50 GiB: one 80 GB GPU); a run whose plan does not fit is refused before anything is
allocated. The memorised weights wait in host memory while each method unlearns from a copy of them on the
device. Learning rates default by model (``LEARNING_RATES``): AdamW's usable rate falls with width.

Checkpoints: the memorised model and each finished method's measurements are written to OUT/validate.ckpt
(atomically) under a key of everything they depend on, so an interrupted run resumes without redoing finished
work, and a changed setting never reads a stale entry. Each stage's wall time is kept with it (validate.json's
``seconds``) and printed as the stage ends, so a log shows how far a run got.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sims import markov
from theory.markov import N_STATES
from unlearn import data as llm_data
from unlearn.config import require_at_least_one, require_positive
from unlearn.io import atomic_write, environment, to_jsonable
from unlearn.losses import token_mean_nll, unlearning_losses
from unlearn.metrics.curves import rate_fits
from unlearn.models import hf
from unlearn.objectives import MethodParams, SequenceStats, forget_weights
from unlearn.reference import MODES, batched_logprobs, make_reference
from unlearn.train import StopRun, TrainConfig, forward_precision, resolve_device, shuffled_batches, train

TASKS = ("markov", "facts", "jsonl")
# (memorise lr, unlearning lr) by model, AdamW; docs/llm.md has the runs behind them. Memorising:
# tiny 3e-3, llama-20m-shape 1e-3 (3e-3 diverged) and llama-100m-shape 2e-4 (6e-4 diverged) measured on the CPU,
# llama-7b-shape 5e-5 extrapolated (the usable rate fell about like 1/width). Unlearning: slow enough that NPO
# is still moving after the first 20% of steps, where the rate fits start (llama-20m-shape: at 3e-4 NPO
# saturated within 30 steps, at 3e-5 it did not), fast enough that GA's collapse ends before them (at
# llama-100m-shape 3e-6 moved it from step ~50 to ~120); 3e-5 at width 256 and 1e-5 at width 768 both ran
# (docs/llm.md), and llama-7b-shape's 2e-6 is their 1/width extrapolation to width 4096. 1e-5, the NPO paper's
# rate for real 7B models, is a local checkpoint's default.
LEARNING_RATES = {"tiny": (3e-3, 1e-3), "llama-20m-shape": (1e-3, 3e-5), "llama-100m-shape": (2e-4, 1e-5),
                  "llama-7b-shape": (5e-5, 2e-6), "checkpoint": (1e-5, 1e-5)}
MEMORISE_WARMUP = 10  # optimizer steps
PRECISION_MODES = {"float32": ("float32", "float32"), "bf16-mixed": ("float32", "bf16-autocast"),
                   "bf16": ("bf16", "bf16-autocast")}
# name -> (the weights' dtype, unlearn.train precision: forward passes in float32 or under bf16 autocast)
VALIDATED_METHODS = ("GA", "NPO", "SimNPO")
PREDICTIONS = {
    "ga.linear_r2": "GA's forget NLL grows linearly in the step (NPO paper Thm. 2): linear_r2 >= log_r2",
    "npo.log_r2": "NPO's forget NLL grows like log t (NPO paper Thm. 2): log_r2 >= linear_r2",
    "npo.weight_step0_max_abs_dev_from_1": "NPO's weights 2 sigma(beta (logp - logp_ref)) are exactly 1 at step 0, "
                                           "where the model is its reference (cached: the reference numbers line "
                                           "up with the data; adapter, copy: the reference reproduces the model)",
    "npo.pearson_weight_length.step0": "undefined at step 0: every NPO weight is 1 (GA-like)",
    "simnpo.pearson_weight_length.step0": "SimNPO's weight (2/|y|) sigma(beta lbar + gamma) falls with |y|: the "
                                          "correlation of 1/|y| with |y| if length alone set it (equal likelihood "
                                          "per token lbar); a spread of lbar moves the measurement toward 0",
}


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
    memorise_epochs: int = 300
    memorise_nll: float = 0.05
    memorise_lr: float | None = None  # None: LEARNING_RATES
    eval_every: int = 5
    lora_rank: int | None = None
    lora_alpha: float = 16.0
    reference: str = "cached"
    precision: str = "auto"  # PRECISION_MODES; auto: float32 on the CPU, on CUDA what fits (module docstring)
    gradient_checkpointing: bool = False
    max_length: int = 256
    prompt_format: str = "auto"
    seed: int = 0
    device: str = "auto"  # cuda when a GPU is visible, else cpu

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
        if not self.methods:
            raise ValueError(f"methods: give at least one of {', '.join(VALIDATED_METHODS)}")
        for name in self.methods:
            if name not in VALIDATED_METHODS:
                raise ValueError(f"validate runs {', '.join(VALIDATED_METHODS)}; got {name!r}")
        if self.precision not in (*PRECISION_MODES, "auto"):
            raise ValueError(f"unknown precision {self.precision!r}; valid: auto, {', '.join(PRECISION_MODES)}")
        if self.reference not in MODES:
            raise ValueError(f"unknown reference {self.reference!r}; valid: {', '.join(MODES)}")
        if self.reference == "adapter" and self.lora_rank is None:
            raise ValueError("the adapter reference needs LoRA (--lora RANK)")
        require_at_least_one(self, "steps", "batch_size", "eval_every", "n_forget", "n_retain", "max_length")
        require_positive(self, "lr", "npo_beta", "simnpo_beta", "memorise_lr")
        if self.memorise_epochs < 0:
            raise ValueError(f"memorise_epochs must be >= 0, got {self.memorise_epochs}")
        if not hf.ModelSpec(self.model).is_architecture:
            hf.check_directory(Path(self.model))

    def params(self, method: str) -> MethodParams:
        return MethodParams(beta={"GA": 1.0, "NPO": self.npo_beta, "SimNPO": self.simnpo_beta}[method])

    def model_spec(self, vocab_size: int | None = None, lora: bool = False) -> hf.ModelSpec:
        return hf.ModelSpec(self.model, dtype=PRECISION_MODES[self.precision][0], device=self.device,
                            gradient_checkpointing=self.gradient_checkpointing, seed=self.seed,
                            vocab_size=vocab_size if self.model == "tiny" else None,
                            lora=hf.LoraSpec(self.lora_rank, self.lora_alpha) if lora and self.lora_rank else None)


# ----------------------------------------------------------------------------------------------------- data


def task_data(cfg: ValidateConfig):
    """(forget TokenSet, retain TokenSet, vocab size or None, description) of the task."""
    if cfg.task == "markov":
        half = max(1, cfg.n_forget // 2)  # draw twice as many as needed: each train split keeps >= half of them
        world = markov.make_world(markov.MarkovWorldConfig(seed=cfg.seed, n_retain=2 * cfg.n_retain,
                                                           n_forget1=2 * half, n_forget2=2 * (cfg.n_forget - half)))
        forget = markov.Split.concat([world["forget1_train"].take(slice(0, half)),
                                      world["forget2_train"].take(slice(0, cfg.n_forget - half))])
        retain = world["retain_train"].take(slice(0, cfg.n_retain))
        return markov.token_set(forget), markov.token_set(retain), N_STATES + 2, "markov mixture"
    if cfg.task == "facts":
        forget_ex, retain_ex = llm_data.facts_task(cfg.n_forget, cfg.facts_split, cfg.seed)
        retain_ex = retain_ex[: cfg.n_retain * len(llm_data.ATTRIBUTES)]
    else:
        forget_ex, retain_ex = llm_data.read_examples(cfg.forget), llm_data.read_examples(cfg.retain)
    if hf.ModelSpec(cfg.model).is_architecture:
        texts = [f"{e.prompt} {e.response}" for e in forget_ex + retain_ex] + [llm_data.PLAIN_TEMPLATE]
        tokenizer = llm_data.word_tokenizer(texts)
    else:
        tokenizer = hf.load_tokenizer(cfg.model)
    tok = [llm_data.tokenize_examples(ex, tokenizer, cfg.max_length, cfg.prompt_format)
           for ex in (forget_ex, retain_ex)]
    vocab = len(tokenizer) if hf.ModelSpec(cfg.model).is_architecture else None
    return tok[0], tok[1], vocab, cfg.task


# --------------------------------------------------------------------------------------------------- memory


def memory_plan(n_parameters: int, n_lora: int, precision: str, reference: str, memorise: bool = True) -> dict:
    """Device bytes of weights, gradients and AdamW moments (two per trained weight) in each phase; activations
    (the built-in tasks' batches are at most 64 x 20 tokens) and AdamW's temporary (one chunk of at most 256 MiB
    or one larger weight: ``unlearn.optim.AdamW``) are left out, and ``plan_precision`` adds room for them:

        memorise   4 N b + c                       weights, gradients, two moments (every weight trains)
        unlearn    N b + 3 N b + c  (+ N b copy)   the working model, its gradients and moments, the frozen
                                                   copy of the ``copy`` reference
                   N b + 16 L + c   (+ N b copy)   with a LoRA adapter of L weights, which peft keeps in float32
                                                   (weights, gradients, moments: 4 x 4 bytes)

    N parameters, b bytes per weight (4 float32 and bf16-mixed, 2 bf16), c = 2 N for bf16-mixed (autocast's bf16
    copy of the weights, held for the backward pass: an upper bound), else 0; n_lora = 0 is full fine-tuning.
    The memorised weights wait in host memory. Llama-2-7B's shape (N = 6.74e9): 54 GB (50.2 GiB) in bf16,
    121 GB (113 GiB) in bf16-mixed."""
    b = torch.finfo(hf.DTYPES[PRECISION_MODES[precision][0]]).bits // 8
    weights, cast = n_parameters * b, 2 * n_parameters if precision == "bf16-mixed" else 0
    trained = 16 * n_lora if n_lora else 3 * weights
    plan = {"memorise_bytes": 4 * weights + cast if memorise else 0,
            "unlearn_bytes": weights + trained + cast + (weights if reference == "copy" else 0)}
    plan["peak_bytes"] = max(plan.values())
    return plan


HEADROOM = (1.05, 2**30)  # a plan fits when 1.05 x its bytes + 1 GiB (activations, CUDA context) are free


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
        if free_bytes is None or HEADROOM[0] * plan["peak_bytes"] + HEADROOM[1] <= free_bytes:
            return precision, plan
    precision, plan = choices[-1], plans[choices[-1]]
    gib = {k: v / 2**30 for k, v in plan.items()}
    raise ValueError(f"{cfg.model} in {precision} needs about {gib['peak_bytes']:.1f} GiB on {cfg.device} for "
                     f"weights, gradients and AdamW moments (memorise {gib['memorise_bytes']:.1f} GiB, unlearn "
                     f"{gib['unlearn_bytes']:.1f} GiB) and room for activations, more than its "
                     f"{free_bytes / 2**30:.1f} GiB free; use "
                     f"--precision bf16, --lora RANK, a smaller model, or a GPU with more memory")


# ------------------------------------------------------------------------------------------------- training


def nll_per_token(model, data) -> float:
    logp = batched_logprobs(model, data)
    return float(-logp.sum() / data.n_tokens.sum())


def memorise(model, forget, retain, cfg: ValidateConfig, progress) -> tuple[list[float], int]:
    """Fine-tune on forget + retain (one AdamW run: MEMORISE_WARMUP warm-up steps, then a linear decay to 0 at
    memorise_epochs; batches of ``memorise_batch_size``) until the forget NLL per token is below memorise_nll,
    stops falling (less than 2% over 10 epochs), or memorise_epochs pass; returns the forget NLL every 10
    epochs and the epochs run."""
    both = llm_data.TokenSet.concat([forget, retain])
    micro_batches, per_epoch = shuffled_batches(len(both), memorise_batch_size(cfg), cfg.seed, "memorise")
    curve = []

    def evaluate(m, step):
        curve.append(nll_per_token(m, forget))
        plateau = len(curve) >= 3 and curve[-1] > 0.98 * curve[-2]  # what is left is not memorisable
        if curve[-1] <= cfg.memorise_nll or plateau:
            raise StopRun({"forget_nll": curve[-1]})
        return {"forget_nll": curve[-1]}

    tc = TrainConfig(steps=cfg.memorise_epochs * per_epoch, lr=cfg.memorise_lr, optimizer="adamw",
                     schedule="warmup_linear", warmup_steps=MEMORISE_WARMUP, eval_every=10 * per_epoch,
                     device=cfg.device, precision=_precision(cfg), progress=progress, name="memorise")
    history = train(model, token_mean_nll(both), micro_batches, tc, evaluate=evaluate)
    return curve, history.eval_steps[-1] // per_epoch


def memorise_batch_size(cfg: ValidateConfig) -> int:
    return max(cfg.batch_size, 64)


def _precision(cfg: ValidateConfig) -> str:
    return PRECISION_MODES[cfg.precision][1]


def unlearn_method(memorised, method: str, forget, retain, cfg: ValidateConfig, progress) -> dict:
    """One method from a copy of the memorised model; the recorded forget log-likelihoods and retain NLL."""
    model = copy.deepcopy(memorised).to(cfg.device)
    if cfg.lora_rank:
        model = hf.add_lora(model, hf.LoraSpec(cfg.lora_rank, cfg.lora_alpha))
    with torch.no_grad(), forward_precision(cfg.device, _precision(cfg)):  # as the loss and the evaluations run
        reference = make_reference(cfg.reference, model, forget)
        # log pi_ref(y|x) as the loss reads it: the NPO weights are taken against these
        reference_logp = reference.forget_logp(model, torch.arange(len(forget), device=cfg.device), forget.trim())
    size = min(cfg.batch_size, len(forget))
    forget_batches, _ = shuffled_batches(len(forget), size, cfg.seed, "validate", method, "forget")
    retain_batches, _ = shuffled_batches(len(retain), min(size, len(retain)), cfg.seed, "validate", method, "retain")
    losses = unlearning_losses(method, cfg.params(method), forget, retain, reference)
    record = {"steps": [], "forget_logp": [], "retain_nll": [], "reference_logp": reference_logp.tolist()}

    def evaluate(m, step):
        record["steps"].append(step)
        record["forget_logp"].append(batched_logprobs(m, forget).tolist())
        record["retain_nll"].append(nll_per_token(m, retain))
        return {}

    tc = TrainConfig(steps=cfg.steps, lr=cfg.lr, optimizer="adamw", eval_every=cfg.eval_every, device=cfg.device,
                     precision=_precision(cfg), progress=progress, name=f"validate {method}")
    train(model, losses, lambda step: [(forget_batches(step)[0], retain_batches(step)[0], None)], tc,
          evaluate=evaluate)
    return record


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


def measure(method: str, record: dict, lengths, params: MethodParams, fit_from: float) -> tuple[dict, dict]:
    """(metrics, curves) of one method (module docstring)."""
    x = method.lower()
    steps = np.asarray(record["steps"], float)
    logp = np.asarray(record["forget_logp"], float)  # (evals, n)
    nll = -logp.sum(1) / np.sum(lengths)  # forget NLL per token
    keep = steps >= max(1.0, fit_from * steps[-1])
    fits = rate_fits(steps[keep], nll[keep]) if keep.sum() >= 3 else {"linear_r2": None, "log_r2": None}
    w0 = weights(method, logp[0], record["reference_logp"], lengths, params)
    w1 = weights(method, logp[-1], record["reference_logp"], lengths, params)
    metrics = {f"{x}.linear_r2": fits["linear_r2"], f"{x}.log_r2": fits["log_r2"],
               f"{x}.retain_nll_drift": record["retain_nll"][-1] - record["retain_nll"][0],
               f"{x}.forget_nll_per_token.start": float(nll[0]), f"{x}.forget_nll_per_token.end": float(nll[-1]),
               f"{x}.pearson_weight_length.step0": _pearson(w0, lengths),
               f"{x}.pearson_weight_length.end": _pearson(w1, lengths)}
    if method == "NPO":
        metrics[f"{x}.weight_step0_max_abs_dev_from_1"] = float(np.max(np.abs(w0 - 1)))
    curves = {"steps": record["steps"], "fit_from": float(steps[keep][0]), "forget_nll": nll.tolist(),
              "retain_nll": record["retain_nll"],
              "weights_start": w0.tolist(), "weights_end": w1.tolist()}
    return metrics, curves


def predictions(metrics: dict, lengths) -> dict:
    """The toy models' prediction beside each measurement: a number where theory gives one, and its rule."""
    lengths = np.asarray(lengths, float)
    values = {"npo.weight_step0_max_abs_dev_from_1": 0.0,
              "simnpo.pearson_weight_length.step0": _pearson(1 / lengths, lengths),  # 2/|y| at equal lbar
              "ga.linear_r2": metrics.get("ga.log_r2"),  # predicted: at least the other fit's R^2
              "npo.log_r2": metrics.get("npo.linear_r2")}
    return {f"validate.{key}": {"value": values.get(key), "rule": rule} for key, rule in PREDICTIONS.items()
            if any(k.startswith(key.split(".")[0] + ".") for k in metrics)}  # the methods that ran


# --------------------------------------------------------------------------------------------- checkpoints


def _key(cfg: ValidateConfig, stage: str) -> str:
    """A hash of everything the stage's checkpoint depends on (and of the record format, 2)."""
    fields = dataclasses.asdict(cfg)
    if stage == "memorised":
        fields = {k: v for k, v in fields.items() if k not in ("methods", "steps", "lr", "npo_beta", "simnpo_beta",
                                                                "eval_every", "lora_rank", "lora_alpha",
                                                                "reference", "batch_size")}
        fields["memorise_batch_size"] = memorise_batch_size(cfg)
    return hashlib.sha256(json.dumps({"stage": stage, "format": 2, **fields}, sort_keys=True).encode()).hexdigest()[:16]


def _read_checkpoint(path: Path) -> dict:
    """A stage's JSON record; one that cannot be read is named, with what to do (written atomically, it only
    breaks when edited or copied by hand)."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable checkpoint ({err}); delete it to redo that stage") from None


def _timed(run: Callable[[], dict]) -> dict:
    """``run()``'s record with its wall time under ``seconds``."""
    start = time.perf_counter()
    record = run()
    record["seconds"] = time.perf_counter() - start
    return record


def memorised_model(cfg: ValidateConfig, vocab: int | None, forget, retain, ckpt: Path, progress):
    """(model, record) after step 2 of the module docstring, read from its checkpoint when there is one."""
    from safetensors.torch import load_file, save_file

    model = hf.load_model(cfg.model_spec(vocab))
    state_path = ckpt / f"memorised-{_key(cfg, 'memorised')}.safetensors"
    info_path = state_path.with_suffix(".json")
    if state_path.is_file() and info_path.is_file():
        model.load_state_dict(load_file(str(state_path), device=str(next(model.parameters()).device)))
        return model, _read_checkpoint(info_path)

    def run():
        curve, epochs = memorise(model, forget, retain, cfg, progress)
        return {"forget_nll_per_token": curve, "epochs": epochs}

    record = _timed(run)
    if record["epochs"]:  # a model that did not train is its own checkpoint
        atomic_write(state_path, lambda p: save_file({k: v.contiguous() for k, v in model.state_dict().items()}, p))
        atomic_write(info_path, lambda p: Path(p).write_text(json.dumps(record)))
    return model, record


def method_record(memorised, method: str, forget, retain, cfg: ValidateConfig, ckpt: Path, progress) -> dict:
    """``unlearn_method``'s record (step 3), read from its checkpoint when there is one, else written there."""
    path = ckpt / f"{method}-{_key(cfg, method)}.json"
    if path.is_file():
        return _read_checkpoint(path)
    record = _timed(lambda: unlearn_method(memorised, method, forget, retain, cfg, progress))
    atomic_write(path, lambda p: Path(p).write_text(json.dumps(record)))
    return record


def run_validate(cfg: ValidateConfig, out: Path, progress: bool | None = None,
                 report: Callable[[str], None] = print) -> dict:
    """Everything of the module docstring; writes OUT/validate.json and OUT/validate.png and returns the JSON."""
    forget, retain, vocab, description = task_data(cfg)
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
    ckpt = out / "validate.ckpt"
    ckpt.mkdir(parents=True, exist_ok=True)
    model, memorised = memorised_model(cfg, vocab, forget, retain, ckpt, progress)
    nll = memorised["forget_nll_per_token"]
    report(f"memorised: forget NLL per token {nll[0]:.3g} -> {nll[-1]:.3g} in {memorised['epochs']} epochs"
           f"{_took(memorised)}")
    model = model.cpu()  # the memorised weights wait in host memory; each method unlearns a copy on the device
    lengths = forget.n_tokens.cpu().numpy()
    metrics, curves, seconds = {}, {}, {"memorise": memorised.get("seconds")}
    for method in cfg.methods:
        record = method_record(model, method, forget, retain, cfg, ckpt, progress)
        found, curves[method] = measure(method, record, lengths, cfg.params(method), cfg.fit_from)
        x = method.lower()
        report(f"{method}: {cfg.steps} steps{_took(record)}; forget NLL per token "
               f"{found[f'{x}.forget_nll_per_token.start']:.3g} -> {found[f'{x}.forget_nll_per_token.end']:.3g}")
        metrics.update({f"validate.{k}": v for k, v in found.items()})
        seconds[method] = record.get("seconds")
    plain = {k.removeprefix("validate."): v for k, v in metrics.items()}
    doc = {"config": dataclasses.asdict(cfg), "task": description, "metrics": metrics,
           "predictions": predictions(plain, lengths), "memorised": memorised, "curves": curves,
           "lengths": lengths.tolist(), "n_parameters": size[0], "env": environment(cfg.device),
           "seconds": seconds,  # wall time of each stage, as first run (a resumed run reads it back)
           "memory_plan": {"n_lora": size[1], **plan,  # and what CUDA measured (activations included)
                           "measured_peak_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                           else None}}
    doc = to_jsonable(doc)
    write_report(doc, out)
    return doc


def write_report(doc: dict, out: Path) -> None:
    """OUT/validate.json and OUT/validate.png (``plot``), each written atomically."""
    import matplotlib.pyplot as plt

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
        axes[0].plot(c["steps"], c["forget_nll"], color=color, label=f"{method}: {r2}")
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
    panel_label(axes[0], "(a) forget NLL; fits right of the dotted line")
    panel_label(axes[1], "(b) NPO weights (predicted: all 1 at step 0)")
    panel_label(axes[2], "(c) SimNPO weights (predicted: ~ 1/|y|)")
    panel_label(axes[3], "(d) retain drift")
    cfg = doc["config"]
    fig.suptitle(f"unlearn validate: {cfg['model']} ({doc['n_parameters']:,} parameters) on {doc['task']}, "
                 f"reference {cfg['reference']}, LoRA {cfg['lora_rank'] or 'off'}", fontsize=11)
    return fig
