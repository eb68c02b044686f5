"""Files and records: atomic writes, JSON-ready values, and the environment a result was computed in.

Every command and experiment writes through ``atomic_write`` (readers never see half a file) and records
``environment`` beside its numbers.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def to_jsonable(value: Any) -> Any:
    """Nested dicts/lists/arrays -> JSON data; NaN and inf become null."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    return _finite_or_none(value)


def git_sha() -> str | None:
    """The commit of the checkout this package runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: str) -> dict[str, Any]:
    """Versions, platform, device and git sha: what every result file records beside its numbers."""
    import matplotlib
    import scipy
    import torch

    return {
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "scipy": scipy.__version__, "matplotlib": matplotlib.__version__, "platform": platform.platform(),
        "device": device, "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "threads": torch.get_num_threads(), "git_sha": git_sha(),
    }


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """``write(tmp)`` into a temporary file of its own in the same folder, flush it to disk, then rename it over
    ``path``: readers never see half a file, an interruption leaves the old file (or none), and two writers of
    the same path never share a temporary file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
