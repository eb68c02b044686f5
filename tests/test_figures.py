"""The committed figures and the code that regenerates them agree.

- figures/NAME.json holds the config that the current code's full preset resolves to (a changed default, preset
  or new config key makes the committed figure stale; the failure names the command that regenerates it);
- the fast preset of every experiment still measures what it measured when tests/golden/fast-metrics.json was
  recorded (so a refactoring that changes a number is caught; an intended change re-records the file with
  ``UNLEARN_RECORD_GOLDEN=1 python -m pytest tests/test_figures.py``).
"""

import json
import math
import os
from pathlib import Path

import pytest

from sims.experiments import EXPERIMENTS
from unlearn.config import config_dict

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "fast-metrics.json"
PRESENTATION = ("progress",)  # config keys that change how a run looks, not what it computes
# CPU runs are bitwise reproducible on one machine with the same torch thread count (recorded with torch's
# default on 2 cores; OMP_NUM_THREADS=1 moves the Markov pretraining at 1e-4); this leaves room for other kernels
GOLDEN_REL = 1e-4


def stale_keys(doc: dict, experiment) -> dict:
    """{key: (committed, current)} for every config key where a NAME.json differs from the full preset."""
    current = config_dict(experiment.config("full"))
    keys = (set(doc["config"]) | set(current)) - set(PRESENTATION)
    return {k: (doc["config"].get(k), current.get(k)) for k in sorted(keys) if doc["config"].get(k) != current.get(k)}


def changed_metrics(measured: dict, recorded: dict, rel: float = GOLDEN_REL) -> dict:
    """{key: (recorded, measured)} for every metric that appeared, vanished or moved by more than ``rel``."""
    def same(a, b):
        return a is None and b is None or None not in (a, b) and math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)

    return {k: (recorded.get(k), measured.get(k)) for k in sorted(set(measured) | set(recorded))
            if k not in measured or k not in recorded or not same(recorded[k], measured[k])}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_committed_figure_was_made_by_the_current_full_preset(name):
    doc = json.loads((ROOT / "figures" / f"{name}.json").read_text())
    assert doc["preset"] == "full" and (ROOT / "figures" / f"{name}.png").is_file()
    stale = stale_keys(doc, EXPERIMENTS[name])
    assert not stale, f"figures/{name}.json is stale (committed, current): {stale}; regenerate: unlearn figures {name}"


def test_a_changed_default_makes_a_figure_stale():
    doc = json.loads((ROOT / "figures" / "npo-synthetic.json").read_text())
    doc["config"]["seed"] += 1
    assert stale_keys(doc, EXPERIMENTS["npo-synthetic"]) == {"seed": (1, 0)}


def test_a_moved_metric_is_caught():
    recorded = {"a": 1.0, "b": None, "c": 2.0}
    assert changed_metrics(dict(recorded), recorded) == {}
    assert changed_metrics({"a": 1.0 + 2e-4, "b": None, "c": 2.0}, recorded) == {"a": (1.0, 1.0 + 2e-4)}
    assert changed_metrics({"a": 1.0, "b": 0.5}, recorded) == {"b": (None, 0.5), "c": (2.0, None)}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_fast_preset_measures_what_it_measured(name, fast_figure):
    measured = fast_figure(name)["metrics"]
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    if os.environ.get("UNLEARN_RECORD_GOLDEN"):
        GOLDEN.write_text(json.dumps({**golden, name: measured}, indent=1, sort_keys=True) + "\n")
        return
    changed = changed_metrics(measured, golden.get(name, {}))
    assert not changed, (f"{name}'s fast-preset metrics moved (recorded, now): {changed}; if intended, re-record: "
                         "UNLEARN_RECORD_GOLDEN=1 python -m pytest tests/test_figures.py")
