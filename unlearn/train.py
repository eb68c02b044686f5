"""One explicit training loop for every model in the project: full-batch toys and mini-batch LLMs alike.

    for step in range(steps):
        evaluate every ``eval_every`` steps (before the update; eval mode, the steps' precision) and after the
            last one; an evaluation that raises StopRun ends the run there
        for micro in micro_batches(step):                       # gradient accumulation
            loss = sum_k sum_members mean_b losses_fn(model, micro)[k] / len(micro_batches)
            loss.backward()                                     # under bf16 autocast if asked
        stop with NonFiniteLossError if the loss is NaN or inf   # before the update: the model stays finite
        grad = where(mask, grad, 0);  the same stop if a gradient is NaN or inf
        clip;  optimizer.step() at the schedule's lr: p *= 1 - lr*scale*wd*mask (weights with a gradient), update
        grad = None                                             # no evaluation or forward holds a gradient

The reduction is the only one in the project: ``losses_fn`` returns per-sequence losses by term (the
``unlearn.objectives`` contract), each term is averaged over its batch (last axis), summed over any leading
ensemble-member axes, and terms are added. Accumulating n equal micro-batches therefore equals one batch n
times larger.

Ensembles (``members`` = M > 0, e.g. ``unlearn.ensemble.Ensemble``): member m owns ``p.reshape(M, -1)[m]`` of
every trainable parameter. Summing member losses gives each member its own gradient, and ``unlearn.optim`` (the
optimizers, clipping, schedules) clips, decays and steps each member on its own, at its own ``lr_scale``: each
follows the trajectory it would follow alone (tests/test_ensemble.py: 1e-9 relative in float64, 1e-4 float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from unlearn import optim
from unlearn.rng import generator

PRECISIONS = {"float64": torch.float64, "float32": torch.float32, "bf16-autocast": torch.bfloat16}
LossesFn = Callable[[torch.nn.Module, Any], Mapping[str, torch.Tensor]]  # (model, micro-batch) -> {term: losses}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one run.

    optimizer: "sgd" (plain ``p -= lr * grad``), "adamw" (``adam_betas``, ``adam_eps``) or "signsgd"
        (``p -= lr * sign(grad)``): ``unlearn.optim``.
    weight_decay: decoupled (``p *= 1 - lr*wd``) for both optimizers, times the gradient mask when there is one.
    schedule: "constant" or "warmup_linear", after a linear warm-up of ``warmup_steps`` (``optim.lr_factor``).
    clip_norm: gradient-norm clipping threshold, of one model or of each ensemble member; 0 disables it.
    eval_every: call ``evaluate`` every this many steps (0: only before the first and after the last step).
    eval_at: further steps at which to call ``evaluate`` (e.g. a log-spaced grid); the state evaluated at
        step s is the one after s updates.
    precision: "float64" or "float32" cast the model; "bf16-autocast" runs forward passes under bf16 autocast and
        leaves the parameters in their dtype (float32: mixed precision; a bf16 model stays bf16); log-probs are float32
        either way (``unlearn.logprobs``).
    checkpoint_every: hand a ``Checkpoint`` to ``train``'s ``checkpoint`` callback after every this many updates
        (0: never; not after the last update, which ends the run).
    progress: show a tqdm bar; None shows it only on a terminal.
    """

    steps: int
    lr: float
    optimizer: str = "sgd"
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    clip_norm: float = 0.0
    checkpoint_every: int = 0
    eval_every: int = 0
    eval_at: tuple[int, ...] = ()
    precision: str = "float32"
    device: str = "cpu"
    progress: bool | None = None
    name: str = "run"

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        for key, valid in (("optimizer", optim.OPTIMIZERS), ("schedule", optim.SCHEDULES), ("precision", PRECISIONS)):
            if getattr(self, key) not in valid:
                raise ValueError(f"unknown {key} {getattr(self, key)!r}; valid: {', '.join(valid)}")
        if min(self.weight_decay, self.clip_norm, self.warmup_steps, self.eval_every, self.checkpoint_every) < 0:
            raise ValueError("weight_decay, clip_norm, warmup_steps, eval_every and checkpoint_every must be >= 0")
        if self.adam_eps < 0 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"adam_eps must be >= 0 and adam_betas in [0, 1), got {self.adam_eps}, {self.adam_betas}")


@dataclass
class History:
    """What a run recorded: the loss of every step, and evaluations at ``eval_steps``."""

    loss: list[float] = field(default_factory=list)
    terms: dict[str, list[float]] = field(default_factory=dict)
    eval_steps: list[int] = field(default_factory=list)
    evals: dict[str, list[float]] = field(default_factory=dict)

    def record_eval(self, step: int, values: Mapping[str, Any]) -> None:
        """Append one evaluation; a value is a number, or a vector (one entry per ensemble member)."""
        self.eval_steps.append(step)
        for key, value in values.items():
            value = torch.as_tensor(value).detach().cpu().double()
            self.evals.setdefault(key, []).append(value.item() if value.ndim == 0 else value.tolist())


@dataclass
class Checkpoint:
    """Where a run stands after ``step`` updates, besides its weights (which the caller saves and puts back):
    the optimizer's state (``optim`` state_dict) and the History so far. ``train(..., resume=c)`` on a model
    holding the weights of that moment continues as if never stopped: batches, schedule and evaluations depend
    on the step alone (bitwise on the CPU, tests/test_train.py)."""

    step: int
    optimizer: dict
    history: History


class StopRun(Exception):
    """Raised by ``evaluate`` to end a run at that evaluation (e.g. a target reached): ``train`` records
    ``values`` as the evaluation and returns the history, leaving the model as it was evaluated."""

    def __init__(self, values: Mapping[str, Any]):
        super().__init__("run stopped by its evaluation")
        self.values = values


class NonFiniteLossError(RuntimeError):
    """The loss, or a gradient of a weight that would move, became NaN or inf; ``terms`` names the offending
    loss terms or parameters and ``history`` holds everything recorded before that step (the model itself is
    left as it was before the step). An ensemble stops as a whole: the members share the step."""

    def __init__(self, step: int, name: str, terms: list[str], history: History, what: str = "loss"):
        where = "term(s)" if what == "loss" else "parameter(s)"
        super().__init__(
            f"non-finite {what} at step {step} of run {name!r} in {where} {', '.join(terms)}; the run stopped "
            f"before updating the model ({len(history.loss)} steps and {len(history.eval_steps)} evaluations kept)"
        )
        self.step, self.name, self.terms, self.history = step, name, terms, history


def resolve_device(name: str, available: bool = True) -> torch.device:
    """torch.device(name) for ``name`` one of cpu, cuda, cuda:N; any other name is refused with a ValueError
    naming it and those choices (not torch's list of every device type it knows). With ``available`` (the
    default) a CUDA device that is not there is refused too (RuntimeError), saying so; ``available=False``
    checks the name only (a config written on one machine for another)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise ValueError(f"unknown device {name!r}; valid: cpu, cuda, cuda:N")
    if available and device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} was requested but no CUDA GPU is visible to torch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {name!r} was requested but torch sees {torch.cuda.device_count()} "
                               "CUDA GPU(s), numbered from 0")
    return device


def forward_precision(device: torch.device, precision: str):
    """The context of every forward pass of a run at ``precision``: bf16 autocast for "bf16-autocast", none
    otherwise.
    The training steps and evaluations run in it, and so must the building of a cached reference, so that
    log pi_ref is computed as the loss computes log pi (at step 0 they are then equal, and NPO's weights 1)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16-autocast")


def check_masks(model: torch.nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Validate {parameter name: bool mask} against the model; a mismatch names the offending parameter."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"mask for {name!r}, which is not a parameter of this model")
        if mask.shape != params[name].shape:
            shape = tuple(params[name].shape)
            raise ValueError(f"mask for {name!r} has shape {tuple(mask.shape)}, parameter {shape}")
    return {name: mask.to(device=params[name].device, dtype=params[name].dtype) for name, mask in masks.items()}


def train(model: torch.nn.Module, losses_fn: LossesFn, micro_batches: Callable[[int], Sequence[Any]],
          cfg: TrainConfig, *, evaluate: Callable[[torch.nn.Module, int], Mapping[str, float]] | None = None,
          masks: Mapping[str, torch.Tensor] | None = None,
          lr_scale: Mapping[str, torch.Tensor] | torch.Tensor | Sequence[float] | None = None,
          members: int | None = None, resume: Checkpoint | None = None,
          checkpoint: Callable[[Checkpoint], None] | None = None, no_decay: Collection[str] = ()) -> History:
    """Train ``model`` in place and return its History.

    Args:
        model: any module; it must already live on ``cfg.device`` (this function casts it for float64/32).
        losses_fn: (model, micro_batch) -> {term: per-sequence losses (B,)}; each term is averaged over the
            batch here. A term shaped (M, B) belongs to M independent ensemble members: its batch means are
            summed, so each member's gradient is that of its own mean loss.
        micro_batches: step -> the micro-batches of that step (one for full batch; n for n-fold accumulation).
        cfg: optimisation settings.
        evaluate: (model, step) -> {name: value}, run without gradients every ``cfg.eval_every`` steps; it may
            raise StopRun to end the run there.
        masks: {parameter name: bool tensor}; only True entries may change (see TrainConfig.weight_decay).
        lr_scale: multiplies ``cfg.lr`` and the decay lr*wd (``optim.lr_scales``): {parameter name: tensor}, or
            one value per ensemble member (M,); with cfg.lr = 1 they are the members' own learning rates.
        members: M > 0 trains M independent ensemble members (module docstring), which every trainable parameter
            must hold along its leading axes; None takes ``model.members`` if the model has it, else 0.
        resume: continue from this Checkpoint (the model must hold its weights); None starts at step 0.
        checkpoint: called with a Checkpoint every ``cfg.checkpoint_every`` updates.
        no_decay: names of parameters that ``cfg.weight_decay`` skips (e.g. ``unlearn.models.hf.no_decay_names``).
    """
    device = resolve_device(cfg.device)
    if cfg.precision != "bf16-autocast":
        model.to(PRECISIONS[cfg.precision])
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}
    params = list(named.values())
    masks = check_masks(model, masks or {})
    unknown = sorted(set(no_decay) - set(named))
    if unknown:
        raise ValueError(f"no_decay names {unknown[:3]} that are not trainable parameters of the model")
    mask_of = {id(named[name]): m for name, m in masks.items() if name in named}
    keep_of = {key: m.bool() for key, m in mask_of.items()}  # for where(): once, not every step
    members = getattr(model, "members", 0) if members is None else members
    scales = optim.lr_scales(named, lr_scale, members)  # also checks that every parameter holds the members
    optimizer = optim.make_optimizer(cfg.optimizer, params, cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps,
                                     weight_decay=cfg.weight_decay, scales=scales, masks=mask_of,
                                     no_decay={id(named[name]) for name in no_decay})
    history, first = History(), 0
    if resume is not None:
        optimizer.load_state_dict(resume.optimizer)
        history, first = resume.history, resume.step
    autocast = forward_precision(device, cfg.precision)

    def run_eval(step) -> bool:
        """Evaluate at ``step`` (eval mode, the steps' autocast); False when the evaluation raised StopRun."""
        if evaluate is None:
            return True
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), autocast:
                history.record_eval(step, evaluate(model, step))
            return True
        except StopRun as stop:
            history.record_eval(step, stop.values)
            return False
        finally:
            model.train(was_training)

    hide = None if cfg.progress is None else not cfg.progress  # tqdm: None = only on a terminal
    eval_at = set(cfg.eval_at)
    for p in params:
        p.grad = None
    with tqdm(range(first, cfg.steps), desc=cfg.name, disable=hide, leave=False, dynamic_ncols=True,
              initial=first, total=cfg.steps) as bar:
        for step in bar:
            if step == 0 or step in eval_at or (cfg.eval_every and step % cfg.eval_every == 0):
                if not run_eval(step):
                    return history
            micro = micro_batches(step)
            step_loss, step_terms = 0.0, {}
            for batch in micro:
                with autocast:
                    means = {key: t.mean(-1).sum() for key, t in losses_fn(model, batch).items()}
                loss = sum(means.values())
                (loss / len(micro) if len(micro) > 1 else loss).backward()
                step_loss += loss.item() / len(micro)
                for key, value in means.items():
                    step_terms[key] = step_terms.get(key, 0.0) + value.item() / len(micro)
            if not math.isfinite(step_loss):
                bad = [key for key, value in step_terms.items() if not math.isfinite(value)]
                raise NonFiniteLossError(step, cfg.name, bad, history)
            history.loss.append(step_loss)
            for key, value in step_terms.items():
                history.terms.setdefault(key, []).append(value)

            for p in params:
                if p.grad is not None and id(p) in keep_of:  # where, not *: an inf gradient of a frozen weight is 0
                    p.grad = torch.where(keep_of[id(p)], p.grad, 0.0)
            bad = optim.non_finite_gradients(named)
            if bad:
                raise NonFiniteLossError(step, cfg.name, bad, history, what="gradient")
            if cfg.clip_norm:
                optim.clip_gradients(params, cfg.clip_norm, members)
            optimizer.param_groups[0]["lr"] = cfg.lr * optim.lr_factor(step, cfg.steps, cfg.schedule, cfg.warmup_steps)
            optimizer.step()  # decoupled decay, then the update
            for p in params:  # peak memory: an evaluation's autocast copies never sit beside a model's gradients
                p.grad = None
            done = step + 1
            if checkpoint is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 \
                    and done < cfg.steps:
                checkpoint(Checkpoint(done, optimizer.state_dict(), history))
            if cfg.progress is not False and step % 50 == 0:
                bar.set_postfix(loss=f"{step_loss:.4g}", refresh=False)
    run_eval(cfg.steps)
    return history


def shuffled_batches(n: int, batch_size: int, seed: int, *keys: object) -> tuple[Callable[[int], list], int]:
    """(step -> [index tensor], steps per epoch): epoch e visits a fresh permutation of range(n), drawn from
    the stream (seed, *keys, e), in batches of ``batch_size`` (the last one smaller when it does not divide n).
    A step's batch depends only on the step, so the schedule is reproducible and can be entered anywhere."""
    per_epoch = math.ceil(n / batch_size)
    current: dict[int, torch.Tensor] = {}

    def micro_batches(step: int) -> list:
        epoch, i = divmod(step, per_epoch)
        if epoch not in current:
            current.clear()
            current[epoch] = torch.randperm(n, generator=generator(seed, *keys, epoch))
        return [current[epoch][i * batch_size: (i + 1) * batch_size]]

    return micro_batches, per_epoch
