"""The optimizers, gradient clipping and learning-rate schedules of ``unlearn.train``.

One step of the loop, after the gradients are masked and found finite:

    clip_gradients(params, clip_norm, members)           # one norm per model, or per ensemble member
    optimizer.param_groups[0]["lr"] = lr * lr_factor(step, steps, schedule, warmup_steps)
    optimizer.step()                                     # decoupled decay, then the SGD or AdamW update

Every rule is elementwise or, for clipping, per member, so the M members of an ensemble (a parameter's leading
axes hold them, member m owning ``p.reshape(M, -1)[m]``: ``member_shape``) each follow the trajectory they
would follow alone, optimizer state, schedule and learning rate (``lr_scales``) included.

Limits: one parameter group, 2-norm clipping only, no AMSGrad/Nesterov/momentum SGD.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch

OPTIMIZERS = ("sgd", "adamw", "signsgd")
SCHEDULES = ("constant", "warmup_linear")


def lr_factor(step: int, steps: int, schedule: str = "constant", warmup_steps: int = 0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of a run of ``steps`` steps, W = warmup_steps:

        f(s) = (s + 1) / W                          for s < W     (linear warm-up; none when W = 0)
        f(s) = 1                                    "constant", s >= W
        f(s) = max(0, (steps - s) / max(1, steps - W))   "warmup_linear", s >= W: linear decay to 0 at ``steps``

    so the last step (s = steps - 1) of "warmup_linear" still moves, by 1 / (steps - W) of the rate."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    return max(0.0, (steps - step) / max(1, steps - warmup_steps))


class _Optimizer:
    """What both optimizers share: one parameter group {"lr": lr} (the loop sets its lr every step), per-parameter
    lr ``scales`` {id(p): tensor broadcastable to p}, and decoupled weight decay (Loshchilov & Hutter 2019)

        p *= 1 - lr * scale * weight_decay * mask

    applied first in ``step`` to every parameter that has a gradient (torch.optim.AdamW skips the others too)
    except those in ``no_decay`` {id(p)}, ``masks`` {id(p): 0/1 tensor in p's dtype} keeping a masked weight where
    it is, decay included."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float, scales: Mapping[int, torch.Tensor] | None,
                 weight_decay: float, masks: Mapping[int, torch.Tensor] | None, no_decay: Collection[int] = ()):
        self.params, self.scales, self.param_groups = params, dict(scales or {}), [{"lr": lr}]
        self.weight_decay, self.masks, self.no_decay = weight_decay, dict(masks or {}), set(no_decay)

    def state_dict(self) -> dict:
        """What a resumed run needs besides the weights: {"steps": [t per parameter], "m": [...], "v": [...]} in
        the order of ``params`` (t = 0 and no moments for a parameter never stepped); empty for the stateless
        optimizers."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Put back what ``state_dict`` returned (for the same parameters, in the same order)."""

    @torch.no_grad()
    def _decay(self, lr: float) -> None:
        if not self.weight_decay:
            return
        for p in (p for p in self.params if p.grad is not None and id(p) not in self.no_decay):
            decay = lr * self.weight_decay
            decay = decay * self.scales[id(p)] if id(p) in self.scales else decay
            p.mul_(1 - decay * self.masks[id(p)] if id(p) in self.masks else 1 - decay)


class PlainSGD(_Optimizer):
    """p -= lr * scale * grad (after the decoupled decay), nothing else: the paper's full-batch gradient descent,
    without torch.optim's per-call bookkeeping (which costs more than the update itself on the toy models)."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float, scales: Mapping[int, torch.Tensor] | None = None,
                 weight_decay: float = 0.0, masks: Mapping[int, torch.Tensor] | None = None,
                 no_decay: Collection[int] = ()):
        super().__init__(params, lr, scales, weight_decay, masks, no_decay)

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        return grad

    @torch.no_grad()
    def step(self) -> None:
        lr = self.param_groups[0]["lr"]
        self._decay(lr)
        for p in self.params:
            if p.grad is None:
                continue
            if id(p) in self.scales:
                p.addcmul_(self.direction(p.grad), self.scales[id(p)], value=-lr)
            else:
                p.add_(self.direction(p.grad), alpha=-lr)


class SignSGD(PlainSGD):
    """p -= lr * scale * sign(grad) (after the decoupled decay): sign descent, Adam's limit as beta1, beta2 -> 0
    and eps -> 0. A masked gradient entry is 0 and its sign too, so masked weights stay where they are."""

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.sign()


class AdamW(_Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019)
    and per-parameter lr ``scales`` (per-member learning rates of an ensemble), in a handful of foreach calls
    instead of ~10 tensor ops per parameter. For each parameter with a gradient g, after the decay:

        t += 1;  m = lerp(m, g, 1 - beta1);  v = beta2 v + (1 - beta2) g^2
        p -= lr * scale / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    (the bias-corrected m_hat / (sqrt(v_hat) + eps), in torch's order of operations). Without scales and masks
    this is torch.optim.AdamW's arithmetic (bitwise equal on the CPU, checked in tests/test_optim.py); t counts
    the steps in which the parameter had a gradient, as in torch. One change that cannot show in the result: v is
    floored at the dtype's smallest normal number before the square root, since sqrt of zero or subnormal entries
    takes a slow path on x86 CPUs (about 10x per element), and sqrt(tiny) /
    sqrt(1 - beta2^t) is below half an ulp of eps = 1e-8 in float32 and float64. Parameters are updated in groups
    of at most ``CHUNK_BYTES`` (or one larger parameter): the denominator is a temporary the size of its group,
    and a whole 7B model's would be one more copy of the weights. Grouping changes no number. A sharded (FSDP2
    DTensor) parameter is updated through its local shard.
    """

    CHUNK_BYTES = 2**28

    def __init__(self, params: list[torch.nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, scales: Mapping[int, torch.Tensor] | None = None, weight_decay: float = 0.0,
                 masks: Mapping[int, torch.Tensor] | None = None, no_decay: Collection[int] = ()):
        super().__init__(params, lr, scales, weight_decay, masks, no_decay)
        self.betas, self.eps = betas, eps
        self.state: dict[int, tuple[list[int], torch.Tensor, torch.Tensor]] = {}  # id(p) -> ([t], m, v)

    def state_dict(self) -> dict:
        found = [self.state.get(id(p)) for p in self.params]
        return {"steps": [s[0][0] if s else 0 for s in found],
                "m": [s[1] if s else None for s in found], "v": [s[2] if s else None for s in found]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["steps"]) != len(self.params):
            raise ValueError(f"optimizer state for {len(state['steps'])} parameters, this run trains "
                             f"{len(self.params)}")
        self.state = {id(p): ([t], m.to(_local(p).device), v.to(_local(p).device))
                      for p, t, m, v in zip(self.params, state["steps"], state["m"], state["v"], strict=True) if t}

    @torch.no_grad()
    def step(self) -> None:
        lr, (beta1, beta2) = self.param_groups[0]["lr"], self.betas
        self._decay(lr)
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


def make_optimizer(name: str, params: list[torch.nn.Parameter], lr: float, *,
                   betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                   scales: Mapping[int, torch.Tensor] | None = None,
                   masks: Mapping[int, torch.Tensor] | None = None, no_decay: Collection[int] = ()) -> PlainSGD | AdamW:
    """``name`` in OPTIMIZERS: "sgd" (PlainSGD), "adamw" (AdamW) or "signsgd" (SignSGD); ``betas`` and ``eps`` only
    matter to AdamW; ``no_decay``: ids of the parameters that weight decay skips."""
    if name == "sgd":
        return PlainSGD(params, lr, scales, weight_decay, masks, no_decay)
    if name == "signsgd":
        return SignSGD(params, lr, scales, weight_decay, masks, no_decay)
    if name == "adamw":
        return AdamW(params, lr, betas, eps, scales, weight_decay, masks, no_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of an FSDP2 parameter or gradient (a DTensor), sharing its storage; a plain tensor as
    it is. The update is elementwise, so each rank updates its own shard, with no DTensor dispatch (which also
    lacks some foreach ops, e.g. _foreach_clamp_min in torch 2.11)."""
    return t.to_local() if hasattr(t, "to_local") else t


def non_finite_gradients(named: Mapping[str, torch.nn.Parameter]) -> list[str]:
    """Names of the parameters whose gradient holds a NaN or inf; one device sync when all are finite. A function
    of its own so that no reference to this step's gradients outlives it: a loop variable holding them would
    keep them alive through the next step's backward: one more model's worth of gradients at the peak (25 GiB
    at Llama-2-7B's shape in float32)."""
    grads = [(name, _local(p.grad)) for name, p in named.items() if p.grad is not None]
    if not grads or bool(torch.stack([torch.isfinite(g).all() for _, g in grads]).all()):
        return []
    return [name for name, g in grads if not torch.isfinite(g).all()]


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
def clip_gradients(params: list[torch.nn.Parameter], max_norm: float, members: int = 0) -> torch.Tensor:
    """Scale the gradients by c = min(1, max_norm / (||g|| + 1e-6)) (torch's rule) and return the norm ||g||.

    members = 0: one 2-norm over every gradient, by torch.nn.utils.clip_grad_norm_ (foreach=False: one norm
    kernel per gradient, on every device; bitwise equal to the rule written out on the CPU in float32 and
    float64, tests/test_optim.py). torch sums the gradients' norms grouped by dtype,
    which reorders that sum only for a model of mixed dtypes (possible under bf16 autocast, which leaves the
    dtypes as they are). members = M: member m's norm ||g_m|| is taken over its
    own slices ``g.reshape(M, -1)[m]`` of every gradient, and c_m = min(1, max_norm / (||g_m|| + 1e-6)) scales
    only those, so clipping never couples members; the result has shape (M,). Parameters without a gradient
    are skipped (no gradient at all: zero norms, nothing scaled)."""
    if not members:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(members)
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(members, -1), dim=1) for g in grads])  # (P, M)
    total = torch.linalg.vector_norm(norms, dim=0)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(member_shape(g, members)))
    return total


def lr_scales(named: Mapping[str, torch.nn.Parameter], lr_scale, members: int) -> dict[int, torch.Tensor]:
    """``train``'s lr_scale as {id(p): tensor on p's device and dtype}: a mapping {parameter name: tensor
    broadcastable to it} as given, or one value per ensemble member, (M,), viewed as ``member_shape(p)`` for
    every parameter p; None: {}. Every scale must be finite and > 0. With ``members`` = M > 0 every parameter
    must hold the M members along its leading axes (``member_shape``), lr_scale or not."""
    if not (isinstance(members, int) and members >= 0):
        raise ValueError(f"members must be an integer >= 0, got {members!r}")
    shapes = {name: member_shape(p, members, f"parameter {name!r}") for name, p in named.items()} if members else {}
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
    return {id(named[name]): scale for name, scale in out.items()}
