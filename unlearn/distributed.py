"""Data-parallel unlearning under ``torchrun``: FSDP2 (``torch.distributed.fsdp.fully_shard``) or DDP.

    torchrun --nproc_per_node N -m unlearn.distributed [--shard fsdp|ddp] ...      (the check below)

Every rank builds the same model from the same seed, wraps it (FSDP2: each decoder layer, then the root, so
parameters, gradients and AdamW state are sharded across ranks; DDP: replicated, gradients all-reduced), and
reads its own slice of every global batch: the global order comes from one seeded permutation that all ranks
draw identically (``unlearn.train.shuffled_batches``), and rank r takes positions r, r + N, ... of each global
batch of size N * per_rank. The loop's per-rank batch means, averaged over ranks by the gradient reduction,
equal the global batch mean when every rank holds as many sequences, so N processes follow the single-process
trajectory up to floating-point reduction order. Warm-up is given in sequences and converted to steps from
the world size (``warmup_steps``). Only rank 0 shows progress and writes files (``is_main``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

SHARDING = ("fsdp", "ddp")


def setup() -> tuple[int, int, torch.device]:
    """(rank, world size, device) under torchrun (nccl on GPUs, gloo on CPUs); (0, 1, cpu) without it."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cpu")
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return rank, dist.get_world_size(), device


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def warmup_steps(warmup_sequences: int, per_rank_batch: int, world_size: int) -> int:
    """Warm-up steps for a warm-up measured in sequences: the same number of sequences whatever N."""
    return math.ceil(warmup_sequences / (per_rank_batch * world_size))


def rank_slice(index: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank r's share of a global batch: positions r, r + N, r + 2N, ... (equal shares when N divides it)."""
    if len(index) % world_size:
        raise ValueError(f"a global batch of {len(index)} does not split evenly over {world_size} ranks")
    return index[rank::world_size]


def wrap(model: nn.Module, sharding: str) -> nn.Module:
    """FSDP2 (every module listed in ``_no_split_modules``-style decoder layers, then the root) or DDP."""
    if sharding == "fsdp":
        from torch.distributed.fsdp import fully_shard

        layers = getattr(getattr(model, "model", model), "layers", [])
        for layer in layers:
            fully_shard(layer)
        fully_shard(model)
        return model
    if sharding == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)
    raise ValueError(f"unknown sharding {sharding!r}; valid: {', '.join(SHARDING)}")


def main(argv: list[str] | None = None) -> int:
    """The equivalence check: NPO+RT on random sequences with a tiny Llama, printing (on rank 0) the loss of
    every step as JSON; run it with 1 and with N processes and compare."""
    from unlearn.data import TokenSet
    from unlearn.losses import unlearning_losses
    from unlearn.models import hf
    from unlearn.objectives import MethodParams
    from unlearn.reference import make_reference
    from unlearn.train import TrainConfig, shuffled_batches, train

    parser = argparse.ArgumentParser(prog="python -m unlearn.distributed", description=main.__doc__)
    parser.add_argument("--shard", choices=SHARDING, default="fsdp")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--warmup-sequences", type=int, default=4)
    args = parser.parse_args(argv)
    rank, world, device = setup()
    model = hf.load_model(hf.ModelSpec("tiny", device=str(device)))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 128, (16, 13), generator=g)
    mask = torch.zeros(16, 12, dtype=torch.bool)
    mask[:, 4:] = True
    data = TokenSet(ids[:, :-1], torch.ones(16, 12, dtype=torch.bool), ids[:, 1:], mask).to(device)
    forget, retain = data.take(slice(0, 8)), data.take(slice(8, 16))
    reference = make_reference("cached", model, forget)  # before wrapping: every rank caches every sequence
    if world > 1:
        model = wrap(model, args.shard)
    order, _ = shuffled_batches(len(forget), args.global_batch, 0, "distributed-check")

    def micro_batches(step):
        index = rank_slice(order(step)[0].to(device), rank, world)
        return [(index, index, None)]

    per_rank = args.global_batch // world
    cfg = TrainConfig(steps=args.steps, lr=1e-3, optimizer="adamw", schedule="warmup_linear",
                      warmup_steps=warmup_steps(args.warmup_sequences, per_rank, world), device=str(device),
                      progress=False, name="distributed check")
    history = train(model, unlearning_losses("NPO+RT", MethodParams(beta=0.5), forget, retain, reference),
                    micro_batches, cfg)
    losses = torch.tensor(history.loss, dtype=torch.float64)
    if world > 1:  # each rank's loss is its shard's mean: the global mean is their average
        dist.all_reduce(losses)
        losses /= world
    if is_main():
        print(json.dumps({"world_size": world, "shard": args.shard, "loss": losses.tolist()}))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
