"""One explicit training loop for every model in the project: full-batch toys and mini-batch LLMs alike.

    for step in range(steps):
        evaluate every ``eval_every`` steps (before the update; eval mode, the steps' precision) and after the
            last one; an evaluation that raises StopRun ends the run there
        for micro in micro_batches(step):                       # gradient accumulation
            loss = sum_k sum_members mean_b losses_fn(model, micro)[k] / len(micro_batches)
            loss.backward()                                     # under bf16 autocast if asked
        stop with NonFiniteLossError if the loss is NaN or inf   # before the update: the model stays finite
        grad = where(mask, grad, 0);  the same stop if a gradient is NaN or inf
        clip;  p *= 1 - lr*scale*wd*mask (weights with a gradient);  optimizer.step() at the schedule's lr
        grad = None                                             # no evaluation or forward holds a gradient

The reduction is the only one in the project: ``losses_fn`` returns per-sequence losses by term (the
``unlearn.objectives`` contract), each term is averaged over its batch (last axis), summed over any leading
ensemble-member axes, and terms are added. Accumulating n equal micro-batches therefore equals one batch n
times larger.

Ensembles (``members`` = M > 0, e.g. an ``unlearn.ensemble.Ensemble``): every trainable parameter holds M
independent members along its leading axes, member m owning ``p.reshape(M, -1)[m]``. Summing member losses
gives each member the gradient of its own loss; clipping takes one norm per member; ``lr_scale`` gives each
member its own learning rate (and with it its own decay, lr*scale*wd); SGD and AdamW are elementwise. So each
member follows the trajectory it would follow alone, optimizer state and schedule included
(tests/test_ensemble.py: 1e-9 relative in float64, 1e-4 in float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from unlearn.rng import generator

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "warmup_linear")
PRECISIONS = {"float64": torch.float64, "float32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one run.

    optimizer: "sgd" (plain ``p -= lr * grad``) or "adamw" (betas ``adam_betas``, eps 1e-8).
    weight_decay: decoupled (AdamW-style, ``p *= 1 - lr*wd``) for both optimizers, multiplied by the gradient
        mask when there is one, so a masked weight never moves, not even by decay.
    schedule: "constant" or "warmup_linear": a linear warm-up over ``warmup_steps`` (0: none), then the
        constant rate, or a linear decay to 0 at ``steps``.
    clip_norm: gradient-norm clipping threshold, on the global norm of one model or on each ensemble member's
        own norm (``train(members=...)``); 0 disables it.
    eval_every: call ``evaluate`` every this many steps (0: only before the first and after the last step).
    eval_at: further steps at which to call ``evaluate`` (e.g. a log-spaced grid); the state evaluated at
        step s is the one after s updates.
    precision: "float64" or "float32" cast the model; "bf16" runs forward passes under bf16 autocast and leaves
        the parameters in their dtype (float32: mixed precision; a bf16 model stays bf16); log-probs are float32
        either way (``unlearn.logprobs``).
    progress: show a tqdm bar; None shows it only on a terminal.
    """

    steps: int
    lr: float
    optimizer: str = "sgd"
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    clip_norm: float = 0.0
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
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.weight_decay < 0 or self.clip_norm < 0 or self.warmup_steps < 0 or self.eval_every < 0:
            raise ValueError("weight_decay, clip_norm, warmup_steps and eval_every must be >= 0")


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


def resolve_device(name: str) -> torch.device:
    """torch.device(name), refusing a CUDA device that is not there with a message saying so."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was requested but no CUDA GPU is visible to torch")
    return device


def forward_precision(device: torch.device, precision: str):
    """The context of every forward pass of a run at ``precision``: bf16 autocast for "bf16", none otherwise.
    The training steps and evaluations run in it, and so must the building of a cached reference, so that
    log pi_ref is computed as the loss computes log pi (at step 0 they are then equal, and NPO's weights 1)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at ``step`` (0-based) for the configured schedule."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    return max(0.0, (cfg.steps - step) / max(1, cfg.steps - cfg.warmup_steps))


class PlainSGD:
    """p -= lr * scale * grad, nothing else: the paper's full-batch gradient descent, without torch.optim's
    per-call bookkeeping (which costs more than the update itself on the toy models). ``scales`` maps a
    parameter to a tensor broadcastable to it: per-member learning rates of an ensemble."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float, scales: dict[int, torch.Tensor]):
        self.params, self.scales, self.param_groups = params, scales, [{"lr": lr}]

    @torch.no_grad()
    def step(self) -> None:
        lr = self.param_groups[0]["lr"]
        for p in self.params:
            if p.grad is None:
                continue
            if id(p) in self.scales:
                p.addcmul_(p.grad, self.scales[id(p)], value=-lr)
            else:
                p.add_(p.grad, alpha=-lr)


class AdamW:
    """Adam's update with per-parameter lr ``scales`` (per-member learning rates of an ensemble), in a handful
    of foreach calls instead of ~10 tensor ops per parameter. Decoupled weight decay is the loop's job.

        t += 1;  m = lerp(m, g, 1 - beta1);  v = beta2 v + (1 - beta2) g^2
        p -= lr * scale / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Without scales this is torch.optim.AdamW's arithmetic (bitwise equal on the CPU, checked in
    tests/test_train.py); t counts the steps in which the parameter had a gradient, as in torch. One change that
    cannot show in the result: v is floored at the dtype's smallest normal number before the square root, since
    sqrt of zero or subnormal entries takes a slow path on x86 CPUs (about 10x per element; it dominated
    ensemble steps), and sqrt(tiny) / sqrt(1 - beta2^t) is below half an ulp of eps = 1e-8 in float32 and float64.
    Parameters are updated in groups of at most ``CHUNK_BYTES`` (or one larger parameter): the denominator is a
    temporary the size of its group, and a whole 7B model's would be one more copy of the weights. Grouping
    changes no number.
    """

    CHUNK_BYTES = 2**28

    def __init__(self, params: list[torch.nn.Parameter], lr: float, betas: tuple[float, float], eps: float,
                 scales: dict[int, torch.Tensor]):
        self.params, self.betas, self.eps, self.scales = params, betas, eps, scales
        self.param_groups = [{"lr": lr}]
        self.state: dict[int, tuple[list[int], torch.Tensor, torch.Tensor]] = {}  # id(p) -> ([t], m, v)

    @torch.no_grad()
    def step(self) -> None:
        lr, (beta1, beta2) = self.param_groups[0]["lr"], self.betas
        live = [p for p in self.params if p.grad is not None]
        if not live:
            return
        start, size = 0, 0
        for i, p in enumerate(live):
            if size and size + p.numel() * p.element_size() > self.CHUNK_BYTES:
                self._update(live[start:i], lr, beta1, beta2)
                start, size = i, 0
            size += p.numel() * p.element_size()
        self._update(live[start:], lr, beta1, beta2)

    def _update(self, live: list[torch.nn.Parameter], lr: float, beta1: float, beta2: float) -> None:
        for p in live:
            if id(p) not in self.state:
                self.state[id(p)] = ([0], torch.zeros_like(_local(p)), torch.zeros_like(_local(p)))
        states = [self.state[id(p)] for p in live]
        for t, _, _ in states:
            t[0] += 1
        weights, grads = [_local(p) for p in live], [_local(p.grad) for p in live]
        m, v = [s[1] for s in states], [s[2] for s in states]
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
        denom = torch._foreach_clamp_min(v, torch.finfo(v[0].dtype).tiny)  # see the class docstring
        torch._foreach_sqrt_(denom)
        torch._foreach_div_(denom, [(1 - beta2 ** t[0]) ** 0.5 for t, _, _ in states])
        torch._foreach_add_(denom, self.eps)
        for p, d in zip(live, denom, strict=True):
            if id(p) in self.scales:
                d.div_(self.scales[id(p)])  # p -= step * m / (d / scale) = step * scale * m / d
        torch._foreach_addcdiv_(weights, m, denom, [(lr / (1 - beta1 ** t[0])) * -1 for t, _, _ in states])


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of an FSDP2 parameter or gradient (a DTensor), sharing its storage; a plain tensor as
    it is. The update is elementwise, so each rank updates its own shard, with no DTensor dispatch (which also
    lacks some foreach ops, e.g. _foreach_clamp_min in torch 2.11)."""
    return t.to_local() if hasattr(t, "to_local") else t


def non_finite_gradients(named: Mapping[str, torch.nn.Parameter]) -> list[str]:
    """Names of the parameters whose gradient holds a NaN or inf; one device sync when all are finite. A function
    of its own so that no reference to this step's gradients outlives it: a loop variable holding them would
    keep them alive through the next step's backward, one more model's worth of gradients at the peak (25 GiB
    at Llama-2-7B's shape in float32, as an H200 run showed before this was a function: README, Real causal LMs)."""
    grads = [(name, _local(p.grad)) for name, p in named.items() if p.grad is not None]
    if not grads or bool(torch.stack([torch.isfinite(g).all() for _, g in grads]).all()):
        return []
    return [name for name, g in grads if not torch.isfinite(g).all()]


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig, scales: dict[int, torch.Tensor]):
    if cfg.optimizer == "sgd":
        return PlainSGD(params, cfg.lr, scales)
    return AdamW(params, cfg.lr, cfg.adam_betas, 1e-8, scales)


def member_shape(p: torch.Tensor, members: int, name: str = "parameter") -> tuple[int, ...]:
    """Shape that broadcasts one value per member over ``p``: the shortest prefix of p.shape whose product is
    ``members``, then ones; e.g. (M, 1, 1) for an Ensemble's (M, d, d) weight and (W, K, 1) for a
    LogisticHead's theta (W, K, p) with M = W*K. An error names the parameter when there is no such prefix."""
    size = 1
    for k, n in enumerate(p.shape):
        size *= n
        if size == members:
            return (*p.shape[: k + 1], *[1] * (p.ndim - k - 1))
    raise ValueError(f"{name} of shape {tuple(p.shape)} has no leading axes holding {members} ensemble members")


@torch.no_grad()
def clip_grad_norm_(params: list[torch.nn.Parameter], max_norm: float, members: int = 0) -> torch.Tensor:
    """Scale gradients by min(1, max_norm / (norm + 1e-6)) (torch.nn.utils.clip_grad_norm_'s rule) and return
    the norm. members = 0: one global norm over every gradient. members = M: member m's norm is taken over its
    own slices ``g.reshape(M, -1)[m]`` of every gradient and scales only those, so clipping never couples
    members; the result has shape (M,)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(max(members, 1))
    rows = max(members, 1)
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(rows, -1), dim=1) for g in grads])  # (P, rows)
    total = torch.linalg.vector_norm(norms, dim=0)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(member_shape(g, members)) if members else coef[0])
    return total if members else total[0]


def check_masks(model: torch.nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Validate {parameter name: bool mask} against the model; a mismatch names the offending parameter."""
    params = dict(model.named_parameters())
    checked = {}
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"mask for {name!r}, which is not a parameter of this model")
        if mask.shape != params[name].shape:
            shape = tuple(params[name].shape)
            raise ValueError(f"mask for {name!r} has shape {tuple(mask.shape)}, parameter {shape}")
        checked[name] = mask.to(device=params[name].device, dtype=params[name].dtype)
    return checked


def _lr_scales(named: Mapping[str, torch.nn.Parameter], lr_scale, members: int,
               shapes: Mapping[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """``train``'s lr_scale as {parameter name: tensor on that parameter's device and dtype}."""
    if lr_scale is None:
        return {}
    if not isinstance(lr_scale, Mapping):
        values = torch.as_tensor(lr_scale, dtype=torch.float64)
        if not members or values.shape != (members,):
            raise ValueError(f"lr_scale as a vector needs one value per ensemble member (members={members}), "
                             f"got shape {tuple(values.shape)}")
        lr_scale = {name: values.view(shapes[name]) for name in named}
    for name in lr_scale:
        if name not in named:
            raise ValueError(f"lr_scale for {name!r}, which is not a trainable parameter of this model")
    out = {name: torch.as_tensor(scale, dtype=named[name].dtype, device=named[name].device)
           for name, scale in lr_scale.items()}
    for name, scale in out.items():
        if not (torch.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError(f"lr_scale for {name!r} must be finite and > 0")
    return out


LossesFn = Callable[[torch.nn.Module, Any], Mapping[str, torch.Tensor]]


def train(
    model: torch.nn.Module,
    losses_fn: LossesFn,
    micro_batches: Callable[[int], Sequence[Any]],
    cfg: TrainConfig,
    *,
    evaluate: Callable[[torch.nn.Module, int], Mapping[str, float]] | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    lr_scale: Mapping[str, torch.Tensor] | torch.Tensor | Sequence[float] | None = None,
    members: int | None = None,
) -> History:
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
        lr_scale: multiplies ``cfg.lr`` (and with it the decay lr*wd): {parameter name: tensor broadcastable
            to it}, or, for an ensemble, one value per member (M,) applied to every parameter; with cfg.lr = 1
            the values are the members' own learning rates, and the schedule multiplies them all.
        members: M > 0 trains M independent ensemble members (module docstring): clipping per member, and a
            check that every trainable parameter has leading axes holding M members. None takes
            ``model.members`` when the model defines it (``unlearn.ensemble.Ensemble`` does), else 0.
    """
    device = resolve_device(cfg.device)
    if cfg.precision != "bf16":
        model.to(PRECISIONS[cfg.precision])
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}
    params = list(named.values())
    masks = check_masks(model, masks or {})
    mask_of = {id(named[name]): m for name, m in masks.items() if name in named}
    keep_of = {key: m.bool() for key, m in mask_of.items()}  # for where(): once, not every step
    members = getattr(model, "members", 0) if members is None else members
    if not (isinstance(members, int) and members >= 0):
        raise ValueError(f"members must be an integer >= 0, got {members!r}")
    shapes = {name: member_shape(p, members, f"parameter {name!r}") for name, p in named.items()} if members else {}
    scales = {id(named[name]): scale for name, scale in _lr_scales(named, lr_scale, members, shapes).items()}
    optimizer = make_optimizer(params, cfg, scales)
    history = History()

    autocast = forward_precision(device, cfg.precision)

    def run_eval(step) -> bool:
        """Evaluate at ``step`` (in eval mode, under the steps' autocast); False when the evaluation asked the run
        to stop (StopRun)."""
        if evaluate is None:
            return True
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), autocast:
                history.record_eval(step, evaluate(model, step))
        except StopRun as stop:
            history.record_eval(step, stop.values)
            return False
        finally:
            model.train(was_training)
        return True

    hide = None if cfg.progress is None else not cfg.progress  # tqdm: None = only on a terminal
    bar = tqdm(range(cfg.steps), desc=cfg.name, disable=hide, leave=False, dynamic_ncols=True)
    eval_at = set(cfg.eval_at)
    for p in params:
        p.grad = None
    for step in bar:
        if step == 0 or step in eval_at or (cfg.eval_every and step % cfg.eval_every == 0):
            if not run_eval(step):
                bar.close()
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
            bar.close()
            bad = [key for key, value in step_terms.items() if not math.isfinite(value)]
            raise NonFiniteLossError(step, cfg.name, bad, history)
        history.loss.append(step_loss)
        for key, value in step_terms.items():
            history.terms.setdefault(key, []).append(value)

        lr = cfg.lr * lr_factor(step, cfg)
        for p in params:
            if p.grad is not None and id(p) in keep_of:  # where, not *: an inf gradient of a frozen weight is 0
                p.grad = torch.where(keep_of[id(p)], p.grad, 0.0)
        bad = non_finite_gradients(named)
        if bad:
            bar.close()
            raise NonFiniteLossError(step, cfg.name, bad, history, what="gradient")
        if cfg.clip_norm:
            clip_grad_norm_(params, cfg.clip_norm, members)
        if cfg.weight_decay:
            with torch.no_grad():
                for p in (p for p in params if p.grad is not None):  # as torch's AdamW: no gradient, no step
                    decay = lr * cfg.weight_decay
                    decay = decay * scales[id(p)] if id(p) in scales else decay
                    p.mul_(1 - decay * mask_of[id(p)] if id(p) in mask_of else 1 - decay)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        for p in params:  # peak memory: an evaluation's autocast copies never sit beside a model's gradients
            p.grad = None
        if cfg.progress is not False and step % 50 == 0:
            bar.set_postfix(loss=f"{step_loss:.4g}", refresh=False)
    bar.close()
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
