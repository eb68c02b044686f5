"""An on-disk cache of trained models, keyed by the config that produced them.

Pretrained reference and retrained models are expensive and deterministic functions of their config, so every
experiment that needs them asks ``cached(kind, key, build)``: the first call builds and stores them, later
calls (other experiments, notebooks, a rerun with different unlearning settings) load them. The file name is a
hash of the key, and the key is stored inside and compared on load, so a changed config never reads a stale
entry. Writes are atomic (temporary file, then rename): an interrupted build leaves no half-written entry.

Location: $UNLEARN_CACHE, else ~/.cache/unlearn-mechanics. Delete the folder to rebuild everything.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

FORMAT = 1  # bump when the meaning of a cached entry changes


def cache_dir() -> Path:
    return Path(os.environ.get("UNLEARN_CACHE") or Path.home() / ".cache" / "unlearn-mechanics")


def entry_path(kind: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps({"format": FORMAT, **key}, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / kind / f"{digest}.pt"


def load(kind: str, key: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The stored tensors for ``key``, or None when absent, unreadable or stored under another key."""
    path = entry_path(kind, key)
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError):
        return None
    stored = json.loads(entry.get("key", "null")) if isinstance(entry, dict) else None
    return entry["tensors"] if stored == key else None


def store(kind: str, key: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    path = entry_path(kind, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"key": json.dumps(key, sort_keys=True), "tensors": {k: v.cpu() for k, v in tensors.items()}}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def cached(kind: str, key: dict[str, Any], build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """load(kind, key), or build(), store and return it."""
    hit = load(kind, key)
    if hit is not None:
        return hit
    tensors = build()
    store(kind, key, tensors)
    return tensors
