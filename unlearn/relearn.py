"""Relearning attacks: fine-tune an unlearned model on part of its forget set and watch what comes back.

SimNPO paper Fig. 6 (Fan et al. 2024): after unlearning, fine-tune on 20% of the forget set,
either the shortest 20% of the responses or a random 20% (several seeded draws), for a few epochs, and track
the forget metrics after each epoch. A method whose forgetting is shallow recovers quickly; the paper finds NPO
weaker under shortest-relearn (NPO spends little on short responses, see ``theory.allocation``), SimNPO robust
to both. The fine-tuning is plain NLL through ``unlearn.train`` (AdamW, a fresh shuffle per epoch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from unlearn.config import require_at_least_one
from unlearn.train import History, TrainConfig, shuffled_batches, train

SUBSETS = ("shortest", "random")


def relearn_subset(lengths: torch.Tensor, frac: float, mode: str,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of round(frac * n) forget examples: the shortest responses (ties by position) or a uniformly
    random subset drawn from ``generator``; sorted ascending."""
    if mode not in SUBSETS:
        raise ValueError(f"unknown relearning subset {mode!r}; valid: {', '.join(SUBSETS)}")
    if not 0 < frac <= 1:
        raise ValueError(f"frac must lie in (0, 1], got {frac!r}")
    n = len(lengths)
    k = max(1, round(frac * n))
    if mode == "shortest":
        order = torch.sort(lengths.cpu(), stable=True).indices
    else:
        if generator is None:
            raise ValueError("a random relearning subset needs a generator (one per draw)")
        order = torch.randperm(n, generator=generator)
    return order[:k].sort().values


def relearn(model: torch.nn.Module, losses_fn: Callable[[torch.nn.Module, torch.Tensor], Mapping[str, Any]], n: int,
            *, epochs: int, batch_size: int, lr: float, seed: int, keys: tuple = (),
            evaluate: Callable | None = None, precision: str = "float32", progress: bool | None = None,
            name: str = "relearn") -> History:
    """Fine-tune ``model`` in place for ``epochs`` epochs over n examples and evaluate before the first step and
    after every epoch (History.eval_steps are the epoch boundaries). ``losses_fn(model, index)`` returns the
    per-sequence NLL of the examples at ``index`` (positions in the relearning subset); batches come from
    ``unlearn.train.shuffled_batches`` on the stream (seed, "relearn", *keys)."""
    require_at_least_one({"epochs": epochs, "batch_size": batch_size, "n": n})
    micro_batches, per_epoch = shuffled_batches(n, batch_size, seed, "relearn", *keys)
    device = next(model.parameters()).device
    cfg = TrainConfig(steps=epochs * per_epoch, lr=lr, optimizer="adamw", precision=precision, device=str(device),
                      eval_at=tuple(e * per_epoch for e in range(1, epochs)), progress=progress, name=name)
    return train(model, losses_fn, micro_batches, cfg, evaluate=evaluate)
