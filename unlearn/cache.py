"""An on-disk cache of trained models, keyed by the config that produced them.

Pretrained reference and retrained models are expensive and deterministic functions of their config, so every
experiment that needs them asks ``cached(kind, key, build)``: the first call builds and stores them, later
calls (other experiments, notebooks, a rerun with different unlearning settings) load them. The file name is a
hash of the key, and the key is stored inside and compared on load, so a changed config never reads a stale
entry. Writes are atomic (temporary file, then rename): an interrupted build leaves no half-written entry, and
an entry that cannot be read anyway (a full disk, a copy gone wrong) is rebuilt with a warning naming it.

Location: $UNLEARN_CACHE, else ~/.cache/unlearn-mechanics. Delete the folder to rebuild everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from unlearn.io import atomic_write

FORMAT = 1  # bump when the meaning of a cached entry changes
EVENTS: Counter[str] = Counter()  # "loaded" / "stored" entries in this process (``unlearn figures --timing``)


def cache_dir() -> Path:
    return Path(os.environ.get("UNLEARN_CACHE") or Path.home() / ".cache" / "unlearn-mechanics")


def entry_path(kind: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps({"format": FORMAT, **key}, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / kind / f"{digest}.pt"


def load(kind: str, key: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The stored tensors for ``key``, or None: silently when the entry is absent or was stored under another
    key (a hash collision or a copied file), with a warning naming the file when it is unreadable (truncated,
    corrupt, not a cache entry), so that ``cached`` rebuilds and overwrites it."""
    path = entry_path(kind, key)
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        stored = json.loads(entry["key"])
        tensors = entry["tensors"]
        if not (isinstance(tensors, dict) and all(isinstance(t, torch.Tensor) for t in tensors.values())):
            raise TypeError("the entry's 'tensors' is not a dict of tensors")
    except FileNotFoundError:
        return None
    except Exception as err:  # any unreadable entry is rebuilt: there is nothing in it worth keeping
        warnings.warn(f"unreadable model cache entry {path} ({type(err).__name__}: {err}); rebuilding it",
                      RuntimeWarning, stacklevel=2)
        return None
    if stored != json.loads(json.dumps(key, sort_keys=True)):  # as stored: tuples come back as lists
        return None
    EVENTS["loaded"] += 1
    return tensors


def store(kind: str, key: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write the entry atomically: into a temporary file in the same folder, flushed to disk, then renamed over
    the entry; an interruption at any point leaves the old entry (or none) and no partial file."""
    path = entry_path(kind, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"key": json.dumps(key, sort_keys=True), "tensors": {k: v.detach().cpu() for k, v in tensors.items()}}
    atomic_write(path, lambda tmp: torch.save(entry, tmp))
    EVENTS["stored"] += 1
    return path


def cached(kind: str, key: dict[str, Any], build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """load(kind, key), or build(), store and return it."""
    hit = load(kind, key)
    if hit is not None:
        return hit
    tensors = build()
    store(kind, key, tensors)
    return tensors
