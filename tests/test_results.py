"""The committed measurements in benchmarks/results/ agree with themselves and with the README: each
validate.json's metrics follow from the curves it stores, each ``bench llm`` JSON's ratios from the values it
records, and the README's tables quote both. Nothing is re-run: these guard the reports, not the code."""

import json
from pathlib import Path

import numpy as np
import pytest

from sims.curves import rate_fits

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
VALIDATE = sorted(RESULTS.glob("validate-*/validate.json"))
BENCH = sorted(RESULTS.glob("llm-*.json"))


def _name(path: Path) -> str:
    return path.parent.name if path.name == "validate.json" else path.stem


def test_there_are_reports_to_check():
    assert len(VALIDATE) >= 4 and len(BENCH) >= 4


@pytest.mark.parametrize("path", VALIDATE, ids=_name)
def test_validate_metrics_follow_from_their_curves(path):
    doc = json.loads(path.read_text())
    metrics, lengths = doc["metrics"], np.asarray(doc["lengths"], float)
    for method, curve in doc["curves"].items():
        x = f"validate.{method.lower()}"
        steps, nll = np.asarray(curve["steps"], float), np.asarray(curve["forget_nll"])
        keep = steps >= curve["fit_from"]
        fits = rate_fits(steps[keep], nll[keep])
        assert metrics[f"{x}.linear_r2"] == pytest.approx(fits["linear_r2"], abs=1e-9)
        assert metrics[f"{x}.log_r2"] == pytest.approx(fits["log_r2"], abs=1e-9)
        assert metrics[f"{x}.retain_nll_drift"] == pytest.approx(curve["retain_nll"][-1] - curve["retain_nll"][0])
        assert metrics[f"{x}.forget_nll_per_token.end"] == pytest.approx(nll[-1])
        w0 = np.asarray(curve["weights_start"])
        if np.std(w0) > 0:
            assert metrics[f"{x}.pearson_weight_length.step0"] == pytest.approx(np.corrcoef(w0, lengths)[0, 1])
        else:
            assert metrics[f"{x}.pearson_weight_length.step0"] is None
    if "NPO" in doc["curves"]:
        w0 = np.asarray(doc["curves"]["NPO"]["weights_start"])
        assert metrics["validate.npo.weight_step0_max_abs_dev_from_1"] == pytest.approx(np.max(np.abs(w0 - 1)))


@pytest.mark.parametrize("path", VALIDATE, ids=_name)
def test_the_readme_validate_table_quotes_each_report(path):
    """The README's row of each key holds this report's value, rounded as the table rounds it."""
    m = {k.removeprefix("validate."): v for k, v in json.loads(path.read_text())["metrics"].items()}
    rows = {line.split("|")[1].strip(): line for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith("| `validate.")}
    quoted = {
        "`validate.ga.linear_r2` / `validate.ga.log_r2`": f"{m['ga.linear_r2']:.3f} / {m['ga.log_r2']:.3f}",
        "`validate.npo.log_r2` / `validate.npo.linear_r2`": f"{m['npo.log_r2']:.3f} / {m['npo.linear_r2']:.3f}",
        "`validate.simnpo.pearson_weight_length.step0`": f"{m['simnpo.pearson_weight_length.step0']:.2f}",
    }
    for key, text in quoted.items():
        assert text in rows[key], f"README row {key} lacks {text} ({path.parent.name})"


@pytest.mark.parametrize("path", BENCH, ids=_name)
def test_bench_ratios_follow_from_their_recorded_values(path):
    doc = json.loads(path.read_text())
    cases = doc["cases"]
    pairs = [key.rsplit(".", 2) for key in doc if key.endswith(".peak_mem_ratio")]  # prefix, a_vs_b, ratio
    assert pairs, "no comparison in the report"
    for prefix, names, _ in pairs:
        key = f"{prefix}.{names}.peak_mem_ratio"
        a, b = (cases[f"{prefix}.{name}"] for name in names.split("_vs_"))
        assert doc[key] == pytest.approx(a["peak_bytes"] / b["peak_bytes"])
        step_key = key.replace("peak_mem_ratio", "step_time_ratio")
        assert doc[step_key] == pytest.approx(a["step_s"] / b["step_s"])
        assert a["tokens_per_s"] > 0 and b["tokens_per_s"] > 0
    if "full.npo.saved_bytes" in doc:
        saved = cases["full.npo.copy"]["peak_bytes"] - cases["full.npo.cached"]["peak_bytes"]
        assert doc["full.npo.saved_bytes"] == saved
        assert doc["full.npo.saved_over_model_bytes"] == pytest.approx(saved / cases["full.npo.copy"]["param_bytes"])
