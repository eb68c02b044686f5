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
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from unlearn.config import config_dict, resolve
from unlearn.io import atomic_write, environment, to_jsonable, writable_dir
from unlearn.objectives import MethodParams, get_method
from unlearn.optim import OPTIMIZERS
from unlearn.train import TrainConfig


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

    def config(self, preset: str = "fast", overrides: Iterable[str] = (),
               flags: Mapping[str, tuple[str, Any]] | None = None) -> Any:
        """The preset's config with named flags ({key: (flag, value)}) and ``key=value`` overrides applied
        (``unlearn.config.resolve``: errors name the key; a flag and an override that disagree are refused)."""
        if preset not in self.presets:
            raise ValueError(f"unknown preset {preset!r} for {self.name}; valid: {', '.join(self.presets)}")
        return resolve(self.presets[preset], flags or {}, overrides)


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


def method_params(cfg: Any, method: str, defaults: Mapping[str, Any] | None = None, **given: Any) -> MethodParams:
    """``method``'s hyperparameters in an experiment: each one it reads (``Method.hyperparameters``) from
    ``given``, else from the config: beta from the field of its family (``npo_beta`` for NPO, NPO+RT and NPO+KL,
    ``simnpo_beta`` for the SimNPO family, ...), the others (lam, gamma, mismatch, retain_norm) from the field of
    that name where the config has one and it is not None, else from ``defaults`` (e.g. a method's published
    values, ``unlearn.tofu.published_hyperparameters``); beta is required. The rest keep MethodParams' defaults
    (the method does not read them)."""
    values = {}
    for key in get_method(method).hyperparameters:
        field_name = f"{method.split('+')[0].lower()}_beta" if key == "beta" else key
        if key in given:
            values[key] = given[key]
        elif getattr(cfg, field_name, None) is not None:
            values[key] = getattr(cfg, field_name)
        elif defaults and key in defaults:
            values[key] = defaults[key]
        elif key == "beta":
            raise ValueError(f"{type(cfg).__name__} gives no {field_name} for {method}")
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


@dataclass(frozen=True)
class UnlearningOptimizer:
    """The optimizer of an experiment's unlearning runs (``unlearn.optim``), as config fields every toy
    experiment's Config inherits, so that ``--set optimizer=...`` works on each and the figure JSON records it:

        optimizer "sgd":     p -= lr g                                             (plain gradient descent)
        optimizer "adamw":   p -= lr m_hat / (sqrt(v_hat) + adam_eps),  betas (0.9, adam_beta2)
        optimizer "signsgd": p -= lr sign(g)

    The default here is gradient descent, the optimizer of the NPO paper's Theorem 2 and synthetic experiments
    (App. D); the Markov and TOFU-like toys default to AdamW (``sims.markov.UnlearningSetup``,
    ``sims.experiments.tofu_toy.Config``). Only the unlearning runs read these fields: pretrained, reference and
    retrained models keep the optimizer they were cached under. adam_beta2 and adam_eps away from their defaults
    are refused unless optimizer is adamw, so that no option is silently ignored. A subclass calls
    ``check_optimizer`` from its ``__post_init__``.
    """

    optimizer: str = "sgd"
    adam_beta2: float = TrainConfig.adam_betas[1]
    adam_eps: float = TrainConfig.adam_eps

    def check_optimizer(self) -> None:
        """Refuse an unknown optimizer (listing the valid ones), adam_beta2 outside (0, 1), a negative or
        non-finite adam_eps, and either Adam field away from its default under another optimizer."""
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if not 0 < self.adam_beta2 < 1:
            raise ValueError(f"adam_beta2 must lie in (0, 1), got {self.adam_beta2!r}")
        if not (math.isfinite(self.adam_eps) and self.adam_eps >= 0):
            raise ValueError(f"adam_eps must be a finite number >= 0, got {self.adam_eps!r}")
        if self.optimizer != "adamw":
            for adam_field in fields(UnlearningOptimizer)[1:]:
                if getattr(self, adam_field.name) != adam_field.default:
                    raise ValueError(f"{adam_field.name} applies only to optimizer=adamw, got "
                                     f"optimizer={self.optimizer}")

    def train_options(self) -> dict[str, Any]:
        """The ``unlearn.train.TrainConfig`` fields these set: optimizer, adam_betas (0.9, adam_beta2), adam_eps."""
        return {"optimizer": self.optimizer, "adam_betas": (TrainConfig.adam_betas[0], self.adam_beta2),
                "adam_eps": self.adam_eps}
