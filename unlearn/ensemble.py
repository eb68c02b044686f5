"""Ensembles: M independent copies of one model trained as one batched model, through the same loop.

    Ensemble([model_0, ..., model_{M-1}])      every parameter and buffer stacked:  (M, *shape)
    ensemble(x, ...)                           = stack_m model_m(x, ...)   via torch.func.vmap(functional_call)

A sweep over seeds (differently initialised members), learning rates (``train(lr_scale=...)``), betas and
methods (``member_losses``) then costs one batched forward and backward per step instead of M small ones: on
toy models, whose single runs are dominated by per-op overhead, M runs take about the time of one
(``unlearn bench toy`` measures it). Members share nothing: a member's gradient is that of its own loss, and
``unlearn.train`` clips, decays and steps each member on its own, so each follows the trajectory it would
follow alone (tests/test_ensemble.py: 1e-9 relative in float64, 1e-4 in float32).

Logits (M, B, T, V) go to per-sequence statistics through ``unlearn.logprobs`` with the member axis folded into
the batch (``member_logprobs``, ``member_kl``); ``member_losses`` evaluates the ``unlearn.objectives`` terms for
all members of one method at once, each with its own hyperparameters.

Limits: dropout-free models only (vmap refuses random ops, and members would otherwise share one mask
stream), and buffers are per-member constants: modules that update buffers in forward (BatchNorm's running
statistics) are refused. Inputs are shared by all members, or carry a leading member axis (``per_member``);
a model whose forward branches on input values (e.g. validates ids with ``if ids.max() >= V``) works with
shared inputs only, since vmap cannot branch on a per-member value. Fused attention kernels have no vmap
batching rule on the CPU, so forward runs scaled_dot_product_attention on its math backend (batched matmuls).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from types import SimpleNamespace

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._pytree import tree_flatten, tree_map

from unlearn.logprobs import SequenceLogprobs, sequence_kl, sequence_logprobs
from unlearn.objectives import MethodParams, SequenceStats, get_method, per_sequence_losses


def _check_supported(module: nn.Module) -> None:
    for name, sub in module.named_modules():
        if isinstance(sub, nn.modules.dropout._DropoutNd) and sub.p > 0:
            raise ValueError(f"Ensemble supports dropout-free models only; {name or 'the model'} is {sub}")
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.track_running_stats:
            raise ValueError(f"Ensemble cannot stack {name or 'the model'} ({type(sub).__name__}): it updates "
                             "running statistics in forward; use track_running_stats=False or a LayerNorm")


def _state(module: nn.Module, remove_duplicate: bool = True) -> dict[str, torch.Tensor]:
    """{name: tensor} of every parameter and buffer; with remove_duplicate=False, tied tensors under each name."""
    return {**dict(module.named_parameters(remove_duplicate=remove_duplicate)),
            **dict(module.named_buffers(remove_duplicate=remove_duplicate))}


def _with_tensors(module: nn.Module, make) -> nn.Module:
    """A deep copy of ``module`` whose every parameter and buffer is ``make(name, tensor)``: the architecture is
    copied without its tensors (the memo maps each to None), then each name, tied ones included, is pointed at
    the new tensor; parameters stay parameters with their requires_grad."""
    requires_grad = {name: p.requires_grad for name, p in module.named_parameters()}
    made = {}
    for name, tensor in _state(module).items():
        value = make(name, tensor)
        made[id(tensor)] = nn.Parameter(value, requires_grad[name]) if name in requires_grad else value
    aliases = _state(module, remove_duplicate=False)
    out = copy.deepcopy(module, memo={id(t): None for t in aliases.values()})
    for name, tensor in aliases.items():
        owner, _, leaf = name.rpartition(".")
        setattr(out.get_submodule(owner), leaf, made[id(tensor)])
    return out


class Ensemble(nn.Module):
    """M independent copies of one architecture: parameters and buffers stacked along a leading member axis.

    ``members`` is M (``unlearn.train`` reads it to clip per member).
    ``self.module`` is the architecture with every tensor stacked, so parameter names are the member model's
    prefixed by "module." (masks and lr_scale use them) and each has shape (M, *shape). It is only ever called
    through ``forward``, which maps it over members.
    """

    def __init__(self, modules: Sequence[nn.Module]):
        super().__init__()
        if not modules:
            raise ValueError("an Ensemble needs at least one member")
        first = modules[0]
        _check_supported(first)
        states = [_state(m) for m in modules]
        layout = {k: (v.shape, v.dtype, v.device) for k, v in states[0].items()}
        if not layout:
            raise ValueError(f"{type(first).__name__} has no parameters or buffers to stack")
        for i, (m, state) in enumerate(zip(modules, states, strict=True)):
            if type(m) is not type(first) or layout != {k: (v.shape, v.dtype, v.device) for k, v in state.items()}:
                raise ValueError(f"member {i} ({type(m).__name__}) does not have member 0's parameters and buffers "
                                 "(names, shapes, dtypes, devices)")
        self.members = len(modules)
        self.module = _with_tensors(first, lambda name, _: torch.stack([state[name].detach() for state in states]))

    @classmethod
    def replicate(cls, module: nn.Module, members: int) -> Ensemble:
        """``members`` identical copies of ``module`` (e.g. one pretrained model swept over betas)."""
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        return cls([module] * members)

    def extra_repr(self) -> str:
        return f"members={self.members}"

    def forward(self, *args, per_member: bool = False, **kwargs):
        """stack_m member_m(*args, **kwargs): each output tensor gains a leading member axis (M, ...).

        Tensor inputs are shared by all members, or with ``per_member=True`` each has a leading member axis
        (M, ...) and member m reads entry m. An output that is a dataclass (a Hugging Face-style
        ``CausalLMOutput``) comes back as the same dataclass with each tensor field stacked, e.g. .logits
        (M, B, T, V).
        """
        M = self.members
        if per_member:
            for x in tree_flatten((args, kwargs))[0]:
                if isinstance(x, torch.Tensor) and (x.ndim == 0 or x.shape[0] != M):
                    raise ValueError(f"per_member inputs need a leading axis of {M} members, got {tuple(x.shape)}")
        in_dims = tree_map(lambda x: 0 if per_member and isinstance(x, torch.Tensor) else None, (args, kwargs))
        shell = {}

        def member(state, inputs):
            out = functional_call(self.module, state, inputs[0], inputs[1])
            if dataclasses.is_dataclass(out):  # vmap returns tensors (and pytrees of them) only
                shell["out"] = out
                fields = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
                return {name: value for name, value in fields.items() if isinstance(value, torch.Tensor)}
            return out

        with sdpa_kernel([SDPBackend.MATH]):
            out = vmap(member, in_dims=(0, in_dims), randomness="error")(_state(self.module), (args, kwargs))
        return dataclasses.replace(shell["out"], **out) if "out" in shell else out

    def member_state_dict(self, m: int) -> dict[str, torch.Tensor]:
        """Member m's state_dict, loadable into a plain model (views into the ensemble's tensors)."""
        return {k: v[m] for k, v in self.module.state_dict().items()}

    def member(self, m: int) -> nn.Module:
        """Member m as a plain model of the original class, with copies of its parameters and buffers."""
        if not -self.members <= m < self.members:
            raise IndexError(f"member {m} of an ensemble of {self.members}")
        return _with_tensors(self.module, lambda _, tensor: tensor[m].detach().clone())


# ------------------------------------------------------------------ statistics and losses of M members at once


def _fold(x: torch.Tensor, M: int, dims: int) -> torch.Tensor:
    """(M, B, ...) -> (M*B, ...); a shared x with ``dims`` dims (B, ...) is first expanded to (M, B, ...)."""
    x = x.expand(M, *x.shape) if x.ndim == dims else x
    return x.flatten(0, 1)


def member_logprobs(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> SequenceLogprobs:
    """``unlearn.logprobs.sequence_logprobs`` of M members: logits (M, B, T, V), labels and mask (B, T) shared
    or (M, B, T) per member -> logp and n_tokens of shape (M, B)."""
    M, B = logits.shape[:2]
    out = sequence_logprobs(logits.flatten(0, 1), _fold(labels, M, 2), _fold(mask, M, 2))
    return SequenceLogprobs(out.logp.view(M, B), out.n_tokens.view(M, B))


def member_kl(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``unlearn.logprobs.sequence_kl`` of M members: logits (M, B, T, V), reference logits (B, T, V) shared or
    (M, B, T, V), mask (B, T) or (M, B, T) -> (M, B)."""
    M, B = logits.shape[:2]
    return sequence_kl(logits.flatten(0, 1), _fold(ref_logits, M, 3), _fold(mask, M, 2)).view(M, B)


class MemberParams(SimpleNamespace):
    """``MethodParams`` of G members as (G, 1) tensors, one attribute per ``MethodParams`` field (so a new
    hyperparameter needs nothing here): the objectives' arithmetic (beta * logp, 2 / beta, ...) broadcasts them
    over per-sequence statistics (G, B), so one call serves G members with G betas. A choice (a str field, such
    as retain_norm) is one value that the G members share."""

    @classmethod
    def stack(cls, params: Sequence[MethodParams], like: torch.Tensor) -> MemberParams:
        """From validated ``MethodParams``, in the dtype and on the device of ``like``."""
        def column(key):
            values = [getattr(p, key) for p in params]
            if isinstance(values[0], str):
                if len(set(values)) > 1:
                    raise ValueError(f"ensemble members run together must share {key}; got {sorted(set(values))}")
                return values[0]
            return torch.tensor([[v] for v in values], dtype=like.dtype, device=like.device)

        return cls(**{f.name: column(f.name) for f in dataclasses.fields(MethodParams)})


def _rows(stats: SequenceStats | None, index: torch.Tensor | None, M: int) -> SequenceStats | None:
    if stats is None:
        return None
    values = {}
    for f in dataclasses.fields(stats):
        value = getattr(stats, f.name)
        if value is not None and (value.ndim != 2 or value.shape[0] != M):
            raise ValueError(f"member statistics must be (M={M}, B); {f.name} has shape {tuple(value.shape)}")
        values[f.name] = value if value is None or index is None else value.index_select(0, index)
    return SequenceStats(**values)


def member_losses(methods: Sequence[str], params: Sequence, forget: SequenceStats,
                  retain: SequenceStats | None = None) -> dict[str, torch.Tensor]:
    """Per-sequence losses of M members, member m running ``methods[m]`` with ``params[m]`` (MethodParams).

    Statistics are (M, B) (expand shared ones, e.g. a reference's logp_ref). Members of one method go through
    its ``unlearn.objectives`` terms in one call with their hyperparameters stacked (``MemberParams``);
    returns {"<method>/forget": (G, B_f), "<method>/retain": (G, B_r)} per method, which ``unlearn.train``
    reduces by batch mean and sums over members, so member m's gradient is that of its own method's loss.
    """
    M = forget.logp.shape[0]
    if len(methods) != M or len(params) != M:
        raise ValueError(f"{M} members in the statistics but {len(methods)} methods and {len(params)} params")
    losses = {}
    for name in dict.fromkeys(methods):
        chosen = [m for m in range(M) if methods[m] == name]
        index = None if len(chosen) == M else torch.tensor(chosen, device=forget.logp.device)
        method = get_method(name)
        p = MemberParams.stack([params[m] for m in chosen], forget.logp)
        retain_rows = _rows(retain, index, M) if method.retain else None
        terms = per_sequence_losses(method, p, _rows(forget, index, M), retain_rows)
        losses.update({f"{name}/{key}": loss for key, loss in terms.items()})
    return losses
