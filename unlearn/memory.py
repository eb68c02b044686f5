"""Memory plans, made before anything is allocated: what a run's weights, gradients, AdamW moments and reference
need on the device, and what is free there. ``unlearn run``, ``unlearn validate`` and ``unlearn bench`` plan
with these functions; a plan that does not fit is refused with its sizes and what would help.

Bytes of one run (N parameters, b bytes per weight: 4 in float32 and bf16-mixed, 2 in bf16; L LoRA weights,
which peft keeps in float32; c = 2 N in bf16-mixed, autocast's bf16 copy of the weights held for the backward
pass, an upper bound, else 0):

    memorise   4 N b + c                         weights, gradients, two moments (every weight trains)
    unlearn    N b + 3 N b + c                   the working model, its gradients and moments
               N b + 16 L + c                    with a LoRA adapter (weights, gradients, moments: 4 x 4 bytes)
    reference  cached  4 n_f (+ 4 n_r T V)       forget log-probs (and *+KL methods' retain logits, float32;
                                                 twice that while they are built, before any gradient exists)
               adapter 0                         the base model is the reference (LoRA only)
               copy    N b                       a frozen copy of the model

Activations and AdamW's temporary (one chunk of at most 256 MiB or one larger weight: ``unlearn.optim.AdamW``)
are not counted: a plan fits when HEADROOM[0] x its bytes + HEADROOM[1] are free. Llama-2-7B's shape
(N = 6.74e9): 54 GB (50.2 GiB) in bf16, 121 GB (113 GiB) in bf16-mixed; TOFU's retain90 (3,600 answers of
~128 tokens) at a 32k vocabulary caches 59 GB of retain logits.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

HEADROOM = (1.05, 2**30)  # a plan fits when 1.05 x its bytes + 1 GiB (activations, CUDA context) are free
CACHE_HEADROOM = 1.25  # activations and the allocator's rounding, on top of what check_cached_logits counts
WEIGHT_BYTES = {"float32": 4, "bf16-mixed": 4, "bf16": 2}  # bytes per weight of each precision
REFERENCE_ORDER = ("cached", "adapter", "copy")  # auto's preference: fastest first


def memory_plan(n_parameters: int, n_lora: int, precision: str, reference: str, memorise: bool = True) -> dict:
    """{"memorise_bytes", "unlearn_bytes", "peak_bytes"} of the module docstring's table, the reference a copy or
    nothing (a cached reference's bytes are ``cached_reference_bytes``); n_lora = 0 is full fine-tuning."""
    b = WEIGHT_BYTES[precision]
    weights, cast = n_parameters * b, 2 * n_parameters if precision == "bf16-mixed" else 0
    trained = 16 * n_lora if n_lora else 3 * weights
    plan = {"memorise_bytes": 4 * weights + cast if memorise else 0,
            "unlearn_bytes": weights + trained + cast + (weights if reference == "copy" else 0)}
    plan["peak_bytes"] = max(plan.values())
    return plan


def cached_reference_bytes(n_forget: int, n_retain: int, width: int, vocab: int, with_logits: bool) -> int:
    """Bytes of a cached reference: float32 forget log-probs, and retain logits (n_retain x width x vocab) for
    *+KL methods."""
    return 4 * n_forget + (4 * n_retain * width * vocab if with_logits else 0)


def fits(need_bytes: float, free_bytes: int | None) -> bool:
    """Whether a plan of ``need_bytes`` fits ``free_bytes`` with HEADROOM (None: unknown, taken to fit)."""
    return free_bytes is None or HEADROOM[0] * need_bytes + HEADROOM[1] <= free_bytes


def plan_reference(mode: str, n_parameters: int, n_lora: int, precision: str, cached_bytes: int,
                   free_bytes: int | None, shards: int = 1) -> tuple[str, dict, str]:
    """(reference, plan, why) for an unlearning run: ``mode`` "auto" takes the first of cached, adapter (with
    LoRA), copy whose plan fits ``free_bytes``; a named mode is planned as asked. The plan is ``memory_plan``'s
    unlearn phase plus the reference: {"weights_and_optimizer_bytes", "reference_bytes", "peak_bytes"}, a cached
    reference counted twice before training (built in chunks and concatenated) and once beside the gradients
    and moments. Under FSDP2 over ``shards`` ranks the model, its gradients and moments are split, while a cached
    reference and a frozen copy (made before sharding) are whole on every rank. A plan that fits nowhere is
    refused, naming every candidate's size and the free memory."""
    base = math.ceil(memory_plan(n_parameters, n_lora, precision, "cached", memorise=False)["unlearn_bytes"] / shards)
    whole = WEIGHT_BYTES[precision] * n_parameters
    weights = math.ceil(whole / shards)
    trained = base - weights  # gradients, moments (and autocast's copy) of whatever trains
    reference = {"cached": cached_bytes, "adapter": 0, "copy": whole}
    candidates = [m for m in REFERENCE_ORDER if m != "adapter" or n_lora] if mode == "auto" else [mode]
    plans = {m: {"weights_and_optimizer_bytes": base, "reference_bytes": reference[m],
                 "peak_bytes": weights + reference[m] + max(trained, reference[m] if m == "cached" else 0)}
             for m in candidates}
    for m, plan in plans.items():
        if fits(plan["peak_bytes"], free_bytes):
            why = ("asked for" if mode != "auto" else
                   {"cached": "the reference's numbers computed once are the cheapest reference, and they fit",
                    "adapter": "the cached retain logits do not fit; the LoRA base model is the reference at no "
                               "memory",
                    "copy": "the cached retain logits do not fit and there is no LoRA adapter; a frozen copy "
                            "fits"}[m])
            return m, plan, why
    gib = 2.0**30
    sizes = "; ".join(f"{m} {p['peak_bytes'] / gib:.2f} GiB" for m, p in plans.items())
    raise ValueError(f"--reference {mode}: no reference fits the {free_bytes / gib:.2f} GiB free (with 5% and 1 GiB "
                     f"of headroom): {sizes}; use --lora RANK (the adapter reference costs nothing), "
                     "--precision bf16, or a device with more memory")


def free_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (CUDA: ``torch.cuda.mem_get_info``; CPU: ``available_ram``), None where unknown
    (then nothing is checked). Tests monkeypatch it."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return available_ram() if device.type == "cpu" else None


def peak_bytes(device: torch.device) -> int:
    """Peak bytes so far: CUDA's max allocated (since the last reset), or this process's peak resident set on the
    CPU (VmHWM; ru_maxrss where /proc is missing, which would carry a launching process's over across exec)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):  # not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def available_ram(meminfo: str | Path = "/proc/meminfo") -> int | None:
    """MemAvailable of ``meminfo`` in bytes; where that is unreadable, the free physical pages (sysconf), else
    None."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_cached_logits(n: int, width: int, vocab: int, state_bytes: int, free_bytes: int | None,
                        device="the device") -> None:
    """Refuse, before they are allocated, cached retain logits (n x width x vocab float32) that do not fit
    ``free_bytes`` (None: unknown, not checked), measured with the model already loaded. While they are built
    the chunks and their concatenation are both held (2x), and afterwards they stay beside the gradients and
    AdamW moments that the first step allocates (``state_bytes``): CACHE_HEADROOM x (logits + max(logits,
    state)) must be free."""
    logits = 4 * n * width * vocab
    need = CACHE_HEADROOM * (logits + max(logits, state_bytes))
    if free_bytes is None or need <= free_bytes:
        return
    gib = 2.0**30
    raise ValueError(f"--reference cached: the retain logits ({n} sequences x {width} tokens x {vocab} vocabulary x "
                     f"4 bytes = {logits / gib:.2f} GiB; about {need / gib:.2f} GiB with their building and the "
                     f"gradients and AdamW moments) do not fit the {free_bytes / gib:.2f} GiB free on {device}; "
                     "use --reference copy (a frozen copy of the model instead of the logits), or adapter with LoRA")
