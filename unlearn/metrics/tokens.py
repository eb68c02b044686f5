"""Token-level evaluators of a model on a split of tokenised sequences: KL to the true next-token
distribution, entropy, and per-sequence log-probs, for one model or an ensemble's members.

A split is a ``unlearn.data.Rows`` with input_ids (n, T), labels (n, T), mask (n, T) bool, target_probs
(n, T, V) (the true next-token rows, for ``token_kl``) and ``trim()`` (drop all-padding columns), as
``sims.markov.Split``. Every statistic is a token mean over the non-pad positions, from the log-probs of
``unlearn.logprobs`` (float32 log-softmax), so padding never counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

from unlearn.ensemble import member_kl, member_logprobs
from unlearn.logprobs import SequenceLogprobs, sequence_kl, sequence_logprobs


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model lives (its first parameter or buffer; the CPU for a model with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def batched_logits(model: torch.nn.Module, split, batch_size: int) -> Iterator[tuple[Any, torch.Tensor]]:
    """(batch on the model's device, its logits) for consecutive batches of ``split``, trailing padding trimmed.
    An ensemble of M members (``unlearn.ensemble``) gives logits (M, B, T, V) and reads batch_size // M
    sequences at a time, so its activations take the memory of one model's."""
    device = model_device(model)
    step = max(1, batch_size // max(1, getattr(model, "members", 0)))
    for start in range(0, len(split), step):
        batch = split.take(slice(start, start + step)).to(device).trim()
        yield batch, model(batch.input_ids, attention_mask=batch.attention_mask).logits


def _kl(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence KL(ref || model) of one model (logits (B, T, V) -> (B,)) or of an ensemble's members
    (logits (M, B, T, V) -> (M, B)), through ``unlearn.logprobs.sequence_kl``."""
    return (member_kl if logits.ndim == 4 else sequence_kl)(logits, ref_logits, mask)


@torch.no_grad()
def _token_means(model, split, per_token: dict[str, Callable[[torch.Tensor, Any], torch.Tensor]],
                 batch_size: int = 1024) -> dict[str, float | list[float]]:
    """{name: sum_b n_b * m_b / sum_b n_b} for each per-sequence token mean m_b = per_token[name](logits, batch):
    the mean over all non-pad positions, a float, or one float per member of an ensemble (``per_token`` then
    returns (M, B)). Every statistic reads the same forward pass, so asking for two costs one."""
    totals, count = dict.fromkeys(per_token, 0), 0
    for batch, logits in batched_logits(model, split, batch_size):
        n = batch.mask.sum(-1)
        for name, fn in per_token.items():
            totals[name] = totals[name] + (fn(logits, batch).double() * n).sum(-1)
        count = count + n.sum()
    return {name: (total / count).tolist() for name, total in totals.items()}


def _true_kl(logits: torch.Tensor, batch) -> torch.Tensor:
    """Per-sequence token mean of KL(T_c(s_t, .) || p_model): the true rows as reference logits (a
    log-probability row is a valid logit row), so the log-softmax stays in ``unlearn.logprobs``."""
    return _kl(logits, batch.target_probs.log(), batch.mask)


def _entropy(logits: torch.Tensor, batch) -> torch.Tensor:
    """Per-sequence token mean of H(q) = log V - KL(q || uniform) (uniform = zero logits)."""
    return math.log(logits.shape[-1]) - _kl(torch.zeros_like(logits), logits, batch.mask)


def _nll(logits: torch.Tensor, batch) -> torch.Tensor:
    """Per-sequence token mean of -log q(y_t | ctx) over the labelled positions."""
    found = (member_logprobs if logits.ndim == 4 else sequence_logprobs)(logits, batch.labels, batch.mask)
    return -found.logp / found.n_tokens


def _nonnegative(value: float | list[float]) -> float | list[float]:
    """An entropy clamped at 0 (float32 rounding can give -1e-7), a float or one per member."""
    return [max(0.0, v) for v in value] if isinstance(value, list) else max(0.0, value)


def token_kl(model: torch.nn.Module, split, batch_size: int = 1024) -> float | list[float]:
    """Mean over non-pad positions of KL(T_c(s_t, .) || p_model(. | s_<=t)), summed over the next state.

    The SimNPO paper's forget quality / retain distance (``F.kl_div(log_probs, true_probs)`` per position,
    App. H), through ``unlearn.logprobs.sequence_kl``. An ensemble gives one value per member.
    """
    return _token_means(model, split, {"kl": _true_kl}, batch_size)["kl"]


def mean_entropy(model: torch.nn.Module, split, batch_size: int = 1024) -> float | list[float]:
    """Mean over non-pad positions of the entropy (nats) of the model's next-state distribution q.

    H(q) = log V - KL(q || uniform), with the KL from ``unlearn.logprobs.sequence_kl``. log 10 = 2.303 is the
    maximum; a collapsed (degenerate) model scores near 0. An ensemble gives one value per member.
    """
    return _nonnegative(_token_means(model, split, {"entropy": _entropy}, batch_size)["entropy"])


def kl_and_entropy(model: torch.nn.Module, split, batch_size: int = 1024) -> dict[str, float | list[float]]:
    """{"kl": token_kl, "entropy": mean_entropy} of ``split`` from one forward pass."""
    out = _token_means(model, split, {"kl": _true_kl, "entropy": _entropy}, batch_size)
    return {"kl": out["kl"], "entropy": _nonnegative(out["entropy"])}


def nll_and_entropy(model: torch.nn.Module, split, batch_size: int = 1024) -> dict[str, float | list[float]]:
    """{"nll": mean negative log-likelihood per labelled token, "entropy": ``mean_entropy``} from one forward pass;
    one value per member for an ensemble."""
    out = _token_means(model, split, {"nll": _nll, "entropy": _entropy}, batch_size)
    return {"nll": out["nll"], "entropy": _nonnegative(out["entropy"])}


@torch.no_grad()
def per_sequence_stats(model: torch.nn.Module, split, batch_size: int = 1024) -> SequenceLogprobs:
    """log p(y|x) summed over each sequence's labels, and |y|, for every sequence of ``split`` (on its device):
    shaped (n,), or (M, n) for an ensemble of M members."""
    out = []
    for batch, logits in batched_logits(model, split, batch_size):
        logprobs = member_logprobs if logits.ndim == 4 else sequence_logprobs
        out.append(logprobs(logits, batch.labels, batch.mask))
    return SequenceLogprobs(torch.cat([o.logp for o in out], -1), torch.cat([o.n_tokens for o in out], -1))


def nll_per_token(model: torch.nn.Module, data) -> float:
    """-sum_b log p(y_b | x_b) / sum_b |y_b|: the negative log-likelihood per response token of a causal LM on a
    ``unlearn.data.TokenSet`` (batched, in the forward passes' precision; log-probs in float32 as everywhere)."""
    from unlearn.reference import batched_logprobs

    logp = batched_logprobs(model, data)
    return float(-logp.sum() / data.n_tokens.sum())
