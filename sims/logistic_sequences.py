"""The "sequence" logistic model of ``theory.adam``: forget sequences whose tokens each own one coordinate.

Every forget token k has a logit z_k of its own (a unit feature orthogonal to every other: Theorem 2's setting
with X X^T = I, per token), its label is 1, so log p = log sigma(z_k), and every token starts memorised at
``LOGIT0`` (p = sigma(3) = 0.95). A sequence's log-prob is the sum over its |y| tokens, so its log-ratio r sums
|y| token log-ratios: the smallest model in which NPO's sequence-level weight and SimNPO's length-normalised one
differ.

The runs (a method of ``unlearn.objectives`` with its hyperparameters) are the members of one ``TokenLogits``
and train side by side through ``unlearn.train`` with any of ``unlearn.optim``'s optimizers: logits (M, S, T, 2)
= (0, z) go through ``unlearn.ensemble.member_logprobs`` (padding masked), per-sequence losses through
``member_losses``, and the loop takes each member's mean over its S sequences. That mean matters to plain
gradient descent (a step lr on the mean is lr / S on the sum) and to Adam's eps (it meets gradients S times
smaller than the summed loss's); Adam without eps and sign descent do not see it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unlearn.ensemble import member_logprobs, member_losses
from unlearn.objectives import MethodParams, SequenceStats
from unlearn.train import TrainConfig, train

LOGIT0 = 3.0  # every token starts memorised: p = sigma(3) = 0.95


@dataclass(frozen=True)
class SequenceRun:
    """One member: ``method`` (a METHODS name) with ``params``."""

    method: str
    params: MethodParams


class TokenLogits(nn.Module):
    """M members' token logits z (M, S, T), all at ``LOGIT0``: forward() -> logits (M, S, T, 2) = (0, z), so that
    log p(label 1) = log sigma(z). Entries past a sequence's length are padding (masked, never moved)."""

    def __init__(self, members: int, lengths: list[int]):
        super().__init__()
        self.members = members
        self.z = nn.Parameter(torch.full((members, len(lengths), max(lengths)), LOGIT0, dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return F.pad(self.z.unsqueeze(-1), (1, 0))


def response_mask(lengths: list[int]) -> torch.Tensor:
    """(S, T) True on each sequence's first |y| positions."""
    if not lengths or min(lengths) < 1:
        raise ValueError(f"lengths must be >= 1, got {lengths}")
    return torch.arange(max(lengths)) < torch.tensor(lengths).unsqueeze(1)


def simulate(runs: list[SequenceRun], lengths: list[int], steps: int, record_at, optimizer: str = "adamw",
             lr: float = 0.05, beta2: float = 0.99, eps: float = 0.0) -> np.ndarray:
    """Every run's token displacements z_t - LOGIT0 at the steps ``record_at`` (each in 0..steps): an array
    (len(record_at), len(runs), sum(lengths)), tokens in sequence order. Adam runs with beta1 = 0.9."""
    mask = response_mask(lengths)
    labels = torch.ones(mask.shape, dtype=torch.long)
    model = TokenLogits(len(runs), lengths)
    with torch.no_grad():
        ref = member_logprobs(model(), labels, mask)
    names, params = [run.method for run in runs], [run.params for run in runs]

    def losses_fn(m, _batch):
        stats = member_logprobs(m(), labels, mask)
        return member_losses(names, params, SequenceStats(stats.logp, stats.n_tokens, ref.logp))

    def evaluate(m, step):
        return {"moved": (m.z - LOGIT0)[:, mask]}

    record_at = sorted({int(s) for s in record_at})
    if record_at and not 0 <= record_at[0] <= record_at[-1] <= steps:
        raise ValueError(f"record_at must lie in 0..steps={steps}, got {record_at[0]}..{record_at[-1]}")
    cfg = TrainConfig(steps=steps, lr=lr, optimizer=optimizer, adam_betas=(0.9, beta2), adam_eps=eps,
                      eval_at=tuple(record_at), precision="float64", progress=False, name="token logits")
    history = train(model, losses_fn, lambda step: [None], cfg, evaluate=evaluate)
    at = {step: i for i, step in enumerate(history.eval_steps)}
    return np.asarray(history.evals["moved"])[[at[s] for s in record_at]]
