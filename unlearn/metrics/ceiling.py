"""The final-norm ceiling of a causal LM's forget tokens, from its weights (``theory.ceiling`` in torch).

A Llama-type model's logits are W (g * h / rms(h)): no hidden state can give a token y an NLL above
C_y + log V, C_y = sqrt(d) max_{v != y} ||g * (w_v - w_y)|| (``theory.ceiling``, which derives it). As GA
unlearns, the forget NLL climbs toward this ceiling and can then grow only as the head W and the gain g grow;
``forget_ceiling`` is the mean of C_y + log V over a set's response tokens, comparable with its NLL per token.
``forget_head_growth`` is the rate at which GA moves that mean once the NLL sits on it: dC_y/dt per step under
AdamW's full-step regime (lr (2 ||g * u*||_1 + ||(w_v* - w_y) * u*||_1) for a token alone; the sign of the summed
gradient when tokens share the head and the gain) or under plain SGD (``theory.ceiling.head_growth_rate``, which
derives both). Computed on the model's device, in float32 (bf16 weights are cast), in chunks of targets
(chunk x V at a time).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from unlearn.metrics.curves import bootstrap_interval, fit_r2


def head_and_gain(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(W (V, d), g (d,)) of a model whose logits are a bias-free head over an RMSNorm (Llama, Mistral, Qwen; a
    LoRA-wrapped one too), or None for another architecture (a LayerNorm with a bias, a head with a bias, none)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, getattr(base, "base_model_prefix", ""), None)
    norm = getattr(inner, "norm", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if norm is None or head is None or not type(norm).__name__.endswith("RMSNorm"):
        return None
    if getattr(head, "bias", None) is not None or getattr(norm, "bias", None) is not None:
        return None
    return head.weight, norm.weight


@torch.no_grad()
def _farthest(scaled: torch.Tensor, targets: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(max_{v != y} ||g*(w_v - w_y)||, its argmax v*) of each target y, from ``scaled`` = W * g (V, d)."""
    norms = (scaled * scaled).sum(-1)
    top, arg = [], []
    for y in targets.reshape(-1).split(chunk):
        sq = norms[None, :] + norms[y, None] - 2.0 * scaled[y] @ scaled.T
        sq[torch.arange(len(y), device=sq.device), y] = -torch.inf
        found = sq.max(-1)
        top.append(found.values.clamp_min(0).sqrt())
        arg.append(found.indices)
    return torch.cat(top), torch.cat(arg)


@torch.no_grad()
def margin_ceiling(head: torch.Tensor, gain: torch.Tensor, targets: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """C_y = sqrt(d) max_{v != y} ||g * (w_v - w_y)|| for each target y, float32 (``theory.ceiling.margin_ceiling``)."""
    return math.sqrt(head.shape[1]) * _farthest(head.float() * gain.float(), targets, chunk)[0]


@torch.no_grad()
def head_growth_rate(head: torch.Tensor, gain: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                     lr: float, optimizer: str = "adamw", frozen: tuple[str, ...] = (),
                     chunk: int = 256) -> torch.Tensor:
    """dC_y/dt per step of each target y under GA on the ceiling, float32 (``theory.ceiling.head_growth_rate``):
    the summed GA gradient G at the targets' ceiling directions u*_y (loss weights ``weights``), the update
    lr * sign(G) ("adamw") or lr * G ("sgd"), none for a ``frozen`` "head" or "norm" (its gain), and
    dC_y = u*_y . (g * (dW[v*] - dW[y]) + dg * (w_v* - w_y)). Only the rows v* and y of G are formed
    (|rows| x d), and the softmax in chunks of targets (chunk x V)."""
    if optimizer not in ("adamw", "sgd"):
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: adamw, sgd")
    W, g = head.float(), gain.float()
    ys = targets.reshape(-1)
    far = _farthest(W * g, ys, chunk)[1]
    diff = W[far] - W[ys]  # (n, d)
    u = diff * g
    u = math.sqrt(W.shape[1]) * u / u.norm(dim=1, keepdim=True)
    rows, where = torch.unique(torch.cat([far, ys]), return_inverse=True)  # the rows whose update moves C_y
    grad_rows, grad_gain = torch.zeros(len(rows), W.shape[1], device=W.device), torch.zeros_like(g)
    for part in torch.arange(len(ys), device=W.device).split(chunk):
        dz = torch.softmax((u[part] * g) @ W.T, dim=-1)  # (chunk, V)
        dz[torch.arange(len(part), device=W.device), ys[part]] -= 1.0
        dz *= weights.reshape(-1)[part].float()[:, None]
        grad_gain += ((dz @ W) * u[part]).sum(0)
        grad_rows += dz[:, rows].T @ (u[part] * g)
    step = torch.sign if optimizer == "adamw" else (lambda G: G)
    update = lambda name, G: torch.zeros_like(G) if name in frozen else lr * step(G)
    d_rows, d_gain = update("head", grad_rows), update("norm", grad_gain)
    d_far, d_y = d_rows[where[:len(ys)]], d_rows[where[len(ys):]]
    return (u * (g * (d_far - d_y) + d_gain * diff)).sum(-1)


def _response_tokens(data) -> tuple[torch.Tensor, torch.Tensor]:
    """(distinct response tokens, their counts) of a ``unlearn.data.TokenSet``."""
    return data.labels[data.mask.bool()].unique(return_counts=True)


def forget_ceiling(model: torch.nn.Module, data) -> float | None:
    """Mean of C_y + log V over the response tokens y of ``data`` (a ``unlearn.data.TokenSet``: labels and mask),
    each distinct token computed once; None when the model has no RMSNorm-and-head ceiling (``head_and_gain``)."""
    found = head_and_gain(model)
    if found is None:
        return None
    head, gain = found
    tokens, counts = _response_tokens(data)
    ceiling = margin_ceiling(head, gain, tokens.to(head.device)) + math.log(head.shape[0])
    return float((ceiling.double().cpu() * counts.double().cpu()).sum() / counts.sum())


def forget_head_growth(model: torch.nn.Module, data, lr: float, optimizer: str = "adamw",
                       frozen: tuple[str, ...] = ()) -> float | None:
    """The predicted growth per step of ``forget_ceiling`` under GA at learning rate ``lr``: the mean of
    ``head_growth_rate`` over the response tokens of ``data``, each token weighing in GA's loss its occurrences over
    the number of sequences (a per-sequence sum, averaged over a batch), with ``frozen`` parts left out; None
    without the ceiling."""
    found = head_and_gain(model)
    if found is None:
        return None
    head, gain = found
    tokens, counts = _response_tokens(data)
    tokens, counts = tokens.to(head.device), counts.to(head.device)
    rate = head_growth_rate(head, gain, tokens, counts / len(data), lr, optimizer, frozen)
    return float((rate.double() * counts.double()).sum().cpu() / counts.sum().cpu())


def late_slope_ratio(t, units, predicted, start: float, weights=None, n_boot: int = 1000, level: float = 0.95,
                     seed: int = 0) -> dict[str, float | None]:
    """The measured late slope over the predicted rate: the least-squares slope of the weighted mean curve of
    ``units`` (n_units, len(t)) over the late half of the window t >= ``start`` (split at its middle t, as
    ``unlearn.metrics.curves.acceleration`` splits it; "slope"), over the mean of ``predicted`` (one rate per
    record) on the same records ("predicted"); with a percentile bootstrap interval over units resampled with
    replacement (weights with their units; ``n_boot`` draws of a seeded generator), the prediction (the whole
    set's) held fixed. {"value", "ci_low", "ci_high", "slope", "predicted"}: all None with fewer than 2 late
    records; without a prediction (None) "predicted" and the ratio are None, and the ratio is None as well when
    the predicted rate is not positive (a frozen head and norm: nothing to divide by)."""
    t, units = np.asarray(t, float), np.atleast_2d(np.asarray(units, float))
    found = dict.fromkeys(("value", "ci_low", "ci_high", "slope", "predicted"))
    window = t[t >= start]
    late = t >= (window[0] + window[-1]) / 2 if len(window) else np.zeros(len(t), bool)
    if late.sum() < 2:
        return found
    slope = lambda curve: fit_r2(t[late], curve)[1]
    w = np.ones(len(units)) if weights is None else np.asarray(weights, float)
    found["slope"] = slope((w @ units[:, late]) / w.sum())
    if predicted is None or any(p is None for p in predicted):
        return found
    rate = found["predicted"] = float(np.mean(np.asarray(predicted, float)[late]))
    if rate <= 0:
        return found
    ratio = bootstrap_interval(units[:, late], lambda curve: slope(curve) / rate, weights, n_boot, level, seed)
    return {**found, **ratio}
