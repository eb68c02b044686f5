"""Deterministic random streams: every draw in the project comes from an explicit torch.Generator.

A stream is named by the experiment seed and a tuple of keys, e.g. ``generator(seed, "data", replicate)``;
distinct keys give statistically independent streams, and the same keys always give the same stream, whatever
else ran before (no global RNG state is read or written).
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed that depends only on (seed, *keys)."""
    digest = hashlib.blake2b(repr((int(seed), *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(seed: int, *keys: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded with ``derive_seed(seed, *keys)``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *keys))
    return g
