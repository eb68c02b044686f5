"""The experiment contract shared by the CLI, the notebooks and the tests.

An experiment is a module with a frozen ``Config`` dataclass (always with ``seed`` and ``device`` keys), named
presets of it ("fast": seconds for CI and notebooks; "full": the paper's settings), ``run(cfg) -> Result`` and
``plot(result) -> Figure``; ``sims.experiments.EXPERIMENTS`` lists them. ``plot`` reads only ``result.series``,
so a figure can be redrawn from a saved NAME.json without rerunning anything.

NAME.json = {"name", "preset", "config", "metrics": {"dotted.key": number | null}, "paper": {same keys},
             "series": {...curves...}, "env": {versions, device, git sha}, "wall_s"}
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unlearn.config import apply_overrides, config_dict


@dataclass
class Result:
    """What an experiment measured: flat metrics, the paper's readings under the same keys, and curves."""

    metrics: dict[str, float | None]
    series: dict[str, Any]
    paper: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    name: str
    claim: str
    presets: dict[str, Any]
    run: Callable[[Any], Result]
    plot: Callable[[Result], Any]

    def config(self, preset: str = "fast", overrides: Iterable[str] = ()) -> Any:
        """The preset's config with ``key=value`` overrides applied (errors name the key)."""
        if preset not in self.presets:
            raise ValueError(f"unknown preset {preset!r} for {self.name}; valid: {', '.join(self.presets)}")
        return apply_overrides(self.presets[preset], overrides)


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
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: str) -> dict[str, Any]:
    import matplotlib
    import scipy
    import torch

    return {
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "scipy": scipy.__version__, "matplotlib": matplotlib.__version__, "platform": platform.platform(),
        "device": device, "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "threads": torch.get_num_threads(), "git_sha": git_sha(),
    }


def record(experiment: Experiment, preset: str, cfg: Any, result: Result, wall_s: float) -> dict[str, Any]:
    """The NAME.json document (module docstring)."""
    return to_jsonable({
        "name": experiment.name, "preset": preset, "config": config_dict(cfg),
        "metrics": result.metrics, "paper": result.paper, "series": result.series,
        "env": environment(getattr(cfg, "device", "cpu")), "wall_s": wall_s,
    })


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run_and_save(experiment: Experiment, preset: str, cfg: Any, out: Path) -> dict[str, Any]:
    """Run, then write out/NAME.json and out/NAME.png; returns the JSON document."""
    import matplotlib.pyplot as plt

    start = time.perf_counter()
    result = experiment.run(cfg)
    doc = record(experiment, preset, cfg, result, wall_s=time.perf_counter() - start)
    out.mkdir(parents=True, exist_ok=True)
    fig = experiment.plot(Result(doc["metrics"], doc["series"], doc["paper"]))
    atomic_write(out / f"{experiment.name}.png", lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)
    atomic_write(out / f"{experiment.name}.json", lambda p: Path(p).write_text(json.dumps(doc, indent=1)))
    return doc


def load(path: str | Path) -> Result:
    """A saved NAME.json as a Result, for redrawing its figure."""
    doc = json.loads(Path(path).read_text())
    return Result(doc["metrics"], doc["series"], doc.get("paper", {}))
