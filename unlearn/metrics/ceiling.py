"""The final-norm ceiling of a causal LM's forget tokens, from its weights (``theory.ceiling`` in torch).

A Llama-type model's logits are W (g * h / rms(h)): no hidden state can give a token y an NLL above
C_y + log V, C_y = sqrt(d) max_{v != y} ||g * (w_v - w_y)|| (``theory.ceiling``, which derives it). As GA
unlearns, the forget NLL climbs toward this ceiling and can then grow only as the head W and the gain g grow;
``forget_ceiling`` is the mean of C_y + log V over a set's response tokens, comparable with its NLL per token.
Computed on the model's device, in float32 (bf16 weights are cast), in chunks of targets (chunk x V at a time).
"""

from __future__ import annotations

import math

import torch


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
def margin_ceiling(head: torch.Tensor, gain: torch.Tensor, targets: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """C_y = sqrt(d) max_{v != y} ||g * (w_v - w_y)|| for each target y, float32 (``theory.ceiling.margin_ceiling``)."""
    scaled = head.float() * gain.float()
    norms = (scaled * scaled).sum(-1)
    out = []
    for y in targets.reshape(-1).split(chunk):
        sq = norms[None, :] + norms[y, None] - 2.0 * scaled[y] @ scaled.T
        sq[torch.arange(len(y), device=sq.device), y] = -torch.inf
        out.append(sq.max(-1).values.clamp_min(0).sqrt())
    return math.sqrt(head.shape[1]) * torch.cat(out)


def forget_ceiling(model: torch.nn.Module, data) -> float | None:
    """Mean of C_y + log V over the response tokens y of ``data`` (a ``unlearn.data.TokenSet``: labels and mask),
    each distinct token computed once; None when the model has no RMSNorm-and-head ceiling (``head_and_gain``)."""
    found = head_and_gain(model)
    if found is None:
        return None
    head, gain = found
    tokens, counts = data.labels[data.mask.bool()].unique(return_counts=True)
    ceiling = margin_ceiling(head, gain, tokens.to(head.device)) + math.log(head.shape[0])
    return float((ceiling.double().cpu() * counts.double().cpu()).sum() / counts.sum())
