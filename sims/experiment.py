"""The experiment contract shared by the CLI, the notebooks and the tests.

An experiment is a module with a frozen ``Config`` dataclass (always with ``seed`` and ``device`` keys), named
presets of it ("fast": seconds for CI and notebooks; "full": the paper's settings), ``run(cfg) -> Result`` and
``plot(result) -> Figure``; ``sims.experiments.EXPERIMENTS`` lists them. ``plot`` reads only ``result.series``,
so a figure can be redrawn from a saved NAME.json without rerunning anything.

NAME.json = {"name", "preset", "config", "metrics": {"dotted.key": number | null}, "paper": {same keys},
             "series": {...curves...}, "env": {versions, device, git sha}, "wall_s"}

Helpers the experiments share: ``method_params`` (a method's hyperparameters from a config), ``member_curves``
and ``mean_std`` (an ensemble's per-member History into curves, and their mean and std over replicates).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unlearn.config import apply_overrides, config_dict
from unlearn.io import atomic_write, environment, to_jsonable, writable_dir
from unlearn.objectives import MethodParams, get_method


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


def record(experiment: Experiment, preset: str, cfg: Any, result: Result, wall_s: float) -> dict[str, Any]:
    """The NAME.json document (module docstring)."""
    return to_jsonable({
        "name": experiment.name, "preset": preset, "config": config_dict(cfg),
        "metrics": result.metrics, "paper": result.paper, "series": result.series,
        "env": environment(getattr(cfg, "device", "cpu")), "wall_s": wall_s,
    })


def run_and_save(experiment: Experiment, preset: str, cfg: Any, out: Path) -> dict[str, Any]:
    """Check that ``out`` is a folder it can write (created if need be) before running, so that a bad folder is
    refused in a second rather than after the run (a one-line ValueError naming it); then run, and write
    out/NAME.json and out/NAME.png; returns the JSON document."""
    import matplotlib.pyplot as plt

    out = writable_dir(out, "output folder")
    start = time.perf_counter()
    result = experiment.run(cfg)
    doc = record(experiment, preset, cfg, result, wall_s=time.perf_counter() - start)
    fig = experiment.plot(Result(doc["metrics"], doc["series"], doc["paper"]))
    atomic_write(out / f"{experiment.name}.png", lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)
    atomic_write(out / f"{experiment.name}.json", lambda p: Path(p).write_text(json.dumps(doc, indent=1)))
    return doc


def load(path: str | Path) -> Result:
    """A saved NAME.json as a Result, for redrawing its figure."""
    doc = json.loads(Path(path).read_text())
    return Result(doc["metrics"], doc["series"], doc.get("paper", {}))


def method_params(cfg: Any, method: str, **given: float) -> MethodParams:
    """``method``'s hyperparameters in an experiment: each one it reads (``Method.hyperparameters``) from
    ``given``, else from the config: beta from the field of its family (``npo_beta`` for NPO, NPO+RT and NPO+KL,
    ``simnpo_beta`` for the SimNPO family, ...; required), lam, gamma and mismatch from the field of that name
    where the config has one. The rest keep MethodParams' defaults (the method does not read them)."""
    values = {}
    for key in get_method(method).hyperparameters:
        field_name = f"{method.split('+')[0].lower()}_beta" if key == "beta" else key
        if key in given:
            values[key] = given[key]
        elif hasattr(cfg, field_name):
            values[key] = getattr(cfg, field_name)
        elif key == "beta":
            raise ValueError(f"{type(cfg).__name__} has no {field_name} for {method}")
    return MethodParams(**values)


def member_curves(history: Any, keys: Iterable[str]) -> list[dict[str, list]]:
    """Each member's curves from the ``unlearn.train.History`` of an ensemble (evals[key][step][member]):
    [{key: [member m's value at every evaluated step]} for m in members]."""
    keys = list(keys)
    members = len(history.evals[keys[0]][0])
    return [{key: [values[m] for values in history.evals[key]] for key in keys} for m in range(members)]


def mean_std(curves: Any) -> dict[str, list[float]]:
    """{"mean", "std"} over replicates of curves (one row per replicate, one column per evaluated step)."""
    values = np.asarray(curves, dtype=float)
    return {"mean": values.mean(0).tolist(), "std": values.std(0).tolist()}
