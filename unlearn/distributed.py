"""Data-parallel unlearning under ``torchrun``: FSDP2 (``torch.distributed.fsdp.fully_shard``) or DDP.

    torchrun --nproc_per_node N -m recipes.cli run --model DIR|ARCH ...           (FSDP2; recipes.run)
    torchrun --nproc_per_node N -m unlearn.distributed [--shard fsdp|ddp] ...      (the check below)

Every rank builds the same model from the same seed, wraps it (FSDP2: each decoder layer, then the root, so
parameters, gradients and AdamW state are sharded across ranks; DDP: replicated, gradients all-reduced), and
reads its own slice of every global batch: the global order comes from one seeded permutation that all ranks
draw identically (``unlearn.train.shuffled_batches``), and rank r takes positions r, r + N, ... of each global
batch of size N * per_rank. The loop's per-rank batch means, averaged over ranks by the gradient reduction,
equal the global batch mean when every rank holds as many sequences, so N processes follow the single-process
trajectory up to floating-point reduction order. Warm-up is given in sequences and converted to steps from
the world size (``warmup_steps``). Only rank 0 shows progress and writes files (``is_main``); a sharded model's
weights are gathered for it by ``full_state_dict``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

SHARDING = ("fsdp", "ddp")


@contextmanager
def process_group(device: str = "cpu") -> Iterator[tuple[int, int, torch.device]]:
    """(rank, world size, device) for the body. Under torchrun the process group (``backend``) is open for the
    body, on GPU LOCAL_RANK when ``device`` is cuda, else on the CPU; without torchrun, (0, 1, device)."""
    from unlearn.train import resolve_device

    device = resolve_device(device)  # a missing GPU is refused here, on every rank
    if "RANK" not in os.environ:
        yield 0, 1, device
        return
    cuda = device.type == "cuda"
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group(backend(device))
    try:
        yield dist.get_rank(), dist.get_world_size(), device
    finally:
        dist.destroy_process_group()


def refuse_torchrun(command: str) -> None:
    """Refuse, before any work, to run ``command`` as more than one torchrun process: each would run it whole."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"{command} runs in one process, and torchrun started {os.environ['WORLD_SIZE']}: each "
                         "would run it whole into the same folder; launch it without torchrun")


def exit_process(code: int) -> None:
    """End the process with ``code``; a rank of torchrun (RANK set) that succeeded by ``os._exit`` once stdout and
    stderr are flushed: gloo's threads can abort the interpreter's own teardown ("terminate called without an
    active exception") after the work is done and every file written, which torchrun would report as a failed
    rank. A failing rank exits as usual, so that torchrun stops the others only after its error is printed."""
    if code == 0 and "RANK" in os.environ:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def backend(device: torch.device) -> str:
    """The process group's backend: gloo on the CPU; with GPUs, nccl for CUDA tensors and gloo for CPU ones
    (``mean_over_ranks``' losses), as a collective on a tensor whose device type has no backend fails ("No
    backend type associated with device type cpu" under nccl alone)."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def is_main() -> bool:
    """Rank 0, or the only process (also after a torchrun process group has closed: torchrun's RANK)."""
    return dist.get_rank() == 0 if dist.is_initialized() else int(os.environ.get("RANK", "0")) == 0


def warmup_steps(warmup_sequences: int, per_rank_batch: int, world_size: int) -> int:
    """Warm-up steps for a warm-up measured in sequences: the same number of sequences whatever N."""
    return math.ceil(warmup_sequences / (per_rank_batch * world_size))


def check_batches(n: int, batch_size: int, world_size: int, name: str) -> None:
    """Every global batch of ``shuffled_batches(n, batch_size)`` (the last one included) splits evenly over the
    ranks; else an error before any work, naming the set and what would."""
    sizes = {batch_size} | ({n % batch_size} if n % batch_size else set())
    if any(size % world_size for size in sizes):
        raise ValueError(f"{name}: batches of {sorted(sizes)} sequences (of {n}) do not split evenly over "
                         f"{world_size} ranks; choose a batch size that divides {n} and is a multiple of "
                         f"{world_size}")


def mean_over_ranks(values: list[float]) -> list[float]:
    """The average over ranks of per-rank values (a loss per step: each rank's is its shard's mean, so their
    average is the global batch mean); the values themselves without a process group."""
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return (tensor / dist.get_world_size()).tolist()


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on the CPU: gathered from the shards on rank 0 (an empty dict elsewhere) for a
    sharded model, ``state_dict()`` otherwise."""
    if not dist.is_initialized():
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def rank_slice(index: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank r's share of a global batch: positions r, r + N, r + 2N, ... (equal shares when N divides it)."""
    if len(index) % world_size:
        raise ValueError(f"a global batch of {len(index)} does not split evenly over {world_size} ranks")
    return index[rank::world_size]


def wrap(model: nn.Module, sharding: str) -> nn.Module:
    """FSDP2 (each decoder layer, then the root) or DDP."""
    if sharding == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # the decoder layers: a ModuleList named "layers" (Llama's model.layers, also under a peft LoRA wrapper)
        layers = next((m for name, m in model.named_modules()
                       if name.rsplit(".", 1)[-1] == "layers" and isinstance(m, nn.ModuleList)), [])
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
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (nccl, one GPU per rank)")
    args = parser.parse_args(argv)
    with process_group(args.device) as (rank, world, device):
        n = 8  # forget sequences, and as many retain ones
        check_batches(n, args.global_batch, world, "the check's forget set")  # before any work
        model = hf.load_model(hf.ModelSpec("tiny", device=str(device)))
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, 128, (2 * n, 13), generator=g)
        mask = torch.zeros(2 * n, 12, dtype=torch.bool)
        mask[:, 4:] = True
        data = TokenSet(ids[:, :-1], torch.ones(2 * n, 12, dtype=torch.bool), ids[:, 1:], mask).to(device)
        forget, retain = data.take(slice(0, n)), data.take(slice(n, 2 * n))
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
        losses = mean_over_ranks(history.loss)
        if is_main():
            print(json.dumps({"world_size": world, "shard": args.shard, "loss": losses}))
    return 0


if __name__ == "__main__":
    exit_process(main())
