"""A controlled analogue of App. G's speed model (SimNPO paper), trained by the project's own loop and losses.

n forget sequences; sequence i owns one parameter, its logit z_i (orthogonal unit features), and each of its |y_i|
response tokens is the label 1 of the two-class logits (0, z_i). So every token of sequence i has the log-prob
log sigma(z_i), and

    logp_i = |y_i| log sigma(z_i),      lbar_i = log sigma(z_i) ~ z_i - e^{z_i}   (z_i << 0),

i.e. App. G's "lbar linear in theta with unit gradient" up to dlbar/dz = 1 - sigma(z) = 1 - e^{lbar}, which is
1 to within e^{lbar_0} once the run starts deep in the region where log sigma(z) ~ z (``theory.allocation.
gd_first_passage_bounds`` turns that factor into a bound). Logits go through ``unlearn.logprobs``, losses through
``unlearn.objectives`` (NPO's and SimNPO's own terms, logp_ref = the start's logp: unlearning starts at the
reference), the steps through ``unlearn.train``, whose batch mean gives each sequence the learning rate lr / n of
the theory's flow (eta = lr / n for gradient descent; Adam and sign descent do not see the 1/n).

Limits: the sequences never interact (no shared features), and every token of a sequence is the same token.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from unlearn.logprobs import sequence_logprobs
from unlearn.models.transformer import CausalLMOutput
from unlearn.objectives import MethodParams, SequenceStats, get_method, per_sequence_losses
from unlearn.train import StopRun, TrainConfig, train


class SharedLogitSequences(nn.Module):
    """Sequences of ``lengths`` tokens whose tokens all carry their sequence's logit: logits (n, max |y|, 2),
    position t of sequence i = (0, z_i); ``labels`` (all 1) and ``mask`` (the first |y_i| positions) go with them."""

    def __init__(self, lengths: ArrayLike, logit0: ArrayLike):
        super().__init__()
        lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.long)
        if lengths.ndim != 1 or len(lengths) == 0 or bool((lengths < 1).any()):
            raise ValueError(f"lengths must be a non-empty list of token counts >= 1, got {lengths.tolist()}")
        z0 = torch.as_tensor(np.broadcast_to(np.asarray(logit0, dtype=np.float64), lengths.shape).copy())
        self.z = nn.Parameter(z0)
        self.mask = torch.arange(int(lengths.max())) < lengths[:, None]
        self.labels = torch.ones_like(self.mask, dtype=torch.long)

    def forward(self, input_ids=None, attention_mask=None) -> CausalLMOutput:
        """The logits (n, max |y|, 2); inputs are accepted for the shared ``model(ids, attention_mask)`` contract
        and ignored (every sequence reads its own logit)."""
        z = self.z[:, None].expand(self.mask.shape)
        return CausalLMOutput(torch.stack([torch.zeros_like(z), z], dim=-1))

    def mean_token_loglik(self) -> torch.Tensor:
        """lbar_i = logp_i / |y_i| (n,), through ``unlearn.logprobs``."""
        stats = sequence_logprobs(self().logits, self.labels, self.mask)
        return stats.logp / stats.n_tokens


def lbar_curves(method: str, lengths: ArrayLike, logit0: ArrayLike, *, beta: float, lr: float, steps: int,
                gamma: float = 0.0, optimizer: str = "sgd", adam_betas: tuple[float, float] = (0.9, 0.999),
                adam_eps: float = 0.0, stop_below: float | None = None) -> np.ndarray:
    """Every sequence's lbar after 0, 1, ..., k updates (k + 1, n), float64: ``method`` (a METHODS name with a
    forget term only, e.g. "NPO", "SimNPO", "GA") trained by ``unlearn.train`` from logits ``logit0`` (one, or one
    per sequence) at learning rate ``lr`` with ``optimizer`` ("sgd", "adamw" with weight decay 0, "signsgd").
    The run ends after ``steps`` updates, or as soon as every lbar is at or below ``stop_below``."""
    spec = get_method(method)
    if spec.retain is not None:
        raise ValueError(f"method {method!r} has a retain term; this analogue has forget sequences only")
    model = SharedLogitSequences(lengths, logit0)
    params = MethodParams(beta=beta, gamma=gamma)
    with torch.no_grad():
        logp_ref = sequence_logprobs(model().logits, model.labels, model.mask).logp

    def losses_fn(m, _batch):
        stats = sequence_logprobs(m().logits, m.labels, m.mask)
        return per_sequence_losses(spec, params, SequenceStats(stats.logp, stats.n_tokens, logp_ref=logp_ref), None)

    def evaluate(m, _step):
        lbar = m.mean_token_loglik()
        if stop_below is not None and bool((lbar <= stop_below).all()):
            raise StopRun({"lbar": lbar})
        return {"lbar": lbar}

    cfg = TrainConfig(steps=steps, lr=lr, optimizer=optimizer, adam_betas=adam_betas, adam_eps=adam_eps,
                      eval_every=1, precision="float64", progress=False, name=f"speed {method}")
    history = train(model, losses_fn, lambda step: [None], cfg, evaluate=evaluate)
    return np.asarray(history.evals["lbar"], dtype=np.float64).reshape(len(history.eval_steps), -1)


def first_passage_steps(curves: ArrayLike, target: ArrayLike) -> np.ndarray:
    """Per sequence (column of ``curves``), the first number of updates k with lbar_k <= target (one, or one per
    sequence); inf where the curve never gets there."""
    curves = np.asarray(curves, dtype=np.float64)
    below = curves <= np.broadcast_to(np.asarray(target, dtype=np.float64), curves.shape[1:])
    return np.where(below.any(axis=0), below.argmax(axis=0), np.inf)
