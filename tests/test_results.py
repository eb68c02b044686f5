"""The committed measurements in benchmarks/results/ agree with themselves and with the docs: each validate.json's
metrics follow from the curves it stores, each ``bench`` JSON's ratios from the values it records, and the
tables of docs/llm.md and docs/performance.md quote them. Nothing is re-run: these guard the reports, not the
code."""

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from unlearn.metrics.curves import rate_fits

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LLM_DOC = ROOT / "docs" / "llm.md"
PERFORMANCE_DOC = ROOT / "docs" / "performance.md"
VALIDATE = sorted(RESULTS.glob("validate-*/validate.json"))
BENCH = sorted(RESULTS.glob("llm-*.json"))
COMPARISONS = [p for p in BENCH if not json.loads(p.read_text())["config"].get("tokens_per_step")]
SWEEPS = [p for p in BENCH if p not in COMPARISONS]  # bench llm --tokens-per-step
TIMING = sorted(RESULTS.glob("figures-*-timing-cpu.txt"))


def _name(path: Path) -> str:
    return path.parent.name if path.name == "validate.json" else path.stem


def cells(line: str) -> list[str]:
    """The cells of a Markdown table row (escaped pipes stay inside their cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def validate_table() -> tuple[list[str], dict[str, list[str]]]:
    """docs/llm.md's validate table: its header cells and {key cell: row cells}."""
    lines = LLM_DOC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| key |") and "validate-" in line)
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        row = cells(line)
        rows[row[0]] = row
    return cells(lines[start]), rows


def test_there_are_reports_to_check():
    assert len(VALIDATE) >= 4 and len(BENCH) >= 4 and len(TIMING) >= 2


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


def test_the_validate_table_has_one_column_per_report():
    """Every committed report has its column (the header links its validate.json), and every column a report."""
    header, _ = validate_table()
    reports = header[1:-1]
    assert header[0] == "key" and header[-1] == "toy prediction"
    found = [re.search(r"(validate-[^/]+)/validate\.json", c) for c in reports]
    assert all(found), f"a column of docs/llm.md's validate table links no report: {reports}"
    assert sorted(f.group(1) for f in found) == sorted(path.parent.name for path in VALIDATE)


@pytest.mark.parametrize("path", VALIDATE, ids=_name)
def test_the_validate_table_quotes_each_report(path):
    """docs/llm.md's column of each report holds its values, rounded as the table rounds them, and a failed
    prediction (GA not linear, NPO not logarithmic) is bold, a kept one is not."""
    m = {k.removeprefix("validate."): v for k, v in json.loads(path.read_text())["metrics"].items()}
    header, rows = validate_table()
    column = next(i for i, c in enumerate(header) if f"{path.parent.name}/" in c)
    quoted = {
        "`validate.ga.linear_r2` / `validate.ga.log_r2`":
            (f"{m['ga.linear_r2']:.3f} / {m['ga.log_r2']:.3f}", m["ga.linear_r2"] < m["ga.log_r2"]),
        "`validate.npo.log_r2` / `validate.npo.linear_r2`":
            (f"{m['npo.log_r2']:.3f} / {m['npo.linear_r2']:.3f}", m["npo.log_r2"] < m["npo.linear_r2"]),
        "`validate.npo.weight_step0_max_abs_dev_from_1`": (f"{m['npo.weight_step0_max_abs_dev_from_1']:g}", False),
        "`validate.simnpo.pearson_weight_length.step0`": (f"{m['simnpo.pearson_weight_length.step0']:.2f}", False),
        "`validate.ga.retain_nll_drift` / `npo` / `simnpo`":
            (" / ".join(f"{m[f'{x}.retain_nll_drift']:.2f}" for x in ("ga", "npo", "simnpo")), False),
    }
    for key, (text, failed) in quoted.items():
        assert key in rows, f"docs/llm.md's validate table lacks the row {key}"
        shown, expected = rows[key][column], (f"**{text}**" if failed else text)
        assert shown == expected, f"docs/llm.md row {key}, column {path.parent.name}: {shown!r}, the report " \
                                  f"gives {expected!r} (bold: the prediction fails)"


@pytest.mark.parametrize("path", BENCH, ids=_name)
def test_bench_ratios_follow_from_their_recorded_values(path):
    doc = json.loads(path.read_text())
    cases = doc["cases"]
    pairs = [key.rsplit(".", 2) for key in doc if key.endswith(".peak_mem_ratio")]  # prefix, a_vs_b, ratio
    assert pairs or path in SWEEPS, "no comparison in the report"
    for prefix, names, _ in pairs:
        key = f"{prefix}.{names}.peak_mem_ratio"
        a, b = (cases[f"{prefix}.{name}"] for name in names.split("_vs_"))
        assert doc[key] == pytest.approx(a["peak_bytes"] / b["peak_bytes"])
        step_key = key.replace("peak_mem_ratio", "step_time_ratio")
        assert doc[step_key] == pytest.approx(a["step_s"] / b["step_s"])
        assert a["tokens_per_s"] > 0 and b["tokens_per_s"] > 0
    for path in ("chunked", "fused"):
        if f"logprobs.{path}_over_logits_peak" in doc:
            assert doc[f"logprobs.{path}_over_logits_peak"] == pytest.approx(
                cases[f"logprobs.{path}"]["peak_bytes"] / cases["logprobs.logits"]["peak_bytes"])
    for key in (k for k in doc if k.endswith(".best_tokens_per_step")):
        case = key.removesuffix(".best_tokens_per_step")
        swept = {int(k.split("tokens=")[1]): cases[k]["mfu"] for k in cases if k.startswith(f"{case}.tokens=")
                 and "mfu" in cases[k]}
        assert doc[key] == max(swept, key=swept.get) and doc[f"{case}.best_mfu"] == max(swept.values())
    if "full.npo.saved_bytes" in doc:
        saved = cases["full.npo.copy"]["peak_bytes"] - cases["full.npo.cached"]["peak_bytes"]
        assert doc["full.npo.saved_bytes"] == saved
        assert doc["full.npo.saved_over_model_bytes"] == pytest.approx(saved / cases["full.npo.copy"]["param_bytes"])


@pytest.mark.parametrize("path", COMPARISONS, ids=_name)
def test_the_performance_table_quotes_each_bench_report(path):
    """docs/performance.md's row of each bench llm file holds its three ratio pairs and the bytes saved."""
    doc = json.loads(path.read_text())
    rows = [cells(line) for line in PERFORMANCE_DOC.read_text().splitlines()
            if line.startswith(f"| [{path.name}]")]
    assert len(rows) == 1, f"docs/performance.md needs one ratio row for {path.name}"
    expected = [f"{doc[f'{c}.peak_mem_ratio']:.2f} / {doc[f'{c}.step_time_ratio']:.2f}"
                for c in ("npo.cached_vs_copy", "npo+kl.adapter_vs_copy", "full.npo.cached_vs_copy")]
    assert rows[0][2:5] == expected, f"docs/performance.md row {path.name}"
    assert rows[0][5] == f"{doc['full.npo.saved_over_model_bytes']:.2f}"


@pytest.mark.parametrize("path", SWEEPS, ids=_name)
def test_the_performance_page_quotes_each_token_sweep(path):
    """docs/performance.md's table of each token sweep: per case, tokens/s / MFU / peak MiB at every batch."""
    doc = json.loads(path.read_text())
    text = PERFORMANCE_DOC.read_text()
    assert f"[{path.name}]" in text, f"docs/performance.md does not link {path.name}"
    after = text.split(f"[{path.name}]", 1)[1].splitlines()
    start = next(i for i, line in enumerate(after) if line.startswith("|"))
    table = itertools.takewhile(lambda line: line.startswith("|"), after[start:])  # the first table after the link
    rows = {cells(line)[0].strip("`"): cells(line)[1:] for line in table if line.startswith("| `")}
    for case in doc["config"]["cases"]:
        if case == "mask.wagle":
            continue
        expected = ["out of memory" if doc[f"{case}.tokens={n}.out_of_memory"] else
                    f"{doc[f'{case}.tokens={n}.tokens_per_s']:.0f} / {doc[f'{case}.tokens={n}.mfu']:.0%} / "
                    f"{doc[f'{case}.tokens={n}.peak_bytes'] / 2**20:.0f}" for n in doc["config"]["tokens_per_step"]]
        assert rows.get(case) == expected, f"docs/performance.md's sweep row {case} for {path.name}"


def test_the_performance_page_quotes_the_toy_bench():
    doc = json.loads((RESULTS / "toy-cpu.json").read_text())
    rows = {cells(line)[0].split()[0]: cells(line) for line in PERFORMANCE_DOC.read_text().splitlines()
            if line.startswith(("| logistic", "| markov"))}
    for model in ("logistic", "markov"):
        members = doc["config"]["members"]
        assert rows[model][1] == " / ".join(map(str, members))
        assert rows[model][2] == f"{doc[f'{model}.loop.runs_steps_per_s']:.0f}"
        assert rows[model][3] == " / ".join(f"{doc[f'{model}.members={m}.ensemble.runs_steps_per_s']:.0f}"
                                            for m in members)
        assert rows[model][4] == " / ".join(f"{doc[f'{model}.members={m}.speedup']:.1f}x" for m in members)


@pytest.mark.parametrize("path", TIMING, ids=_name)
def test_the_performance_page_quotes_each_timing_table(path):
    """The --timing summary table (from its header line on) appears verbatim in docs/performance.md."""
    lines = path.read_text().splitlines()
    table = "\n".join(lines[next(i for i, line in enumerate(lines) if line.startswith("experiment")):])
    table = table.split("\n\n")[0].rstrip()
    assert table in PERFORMANCE_DOC.read_text(), f"docs/performance.md does not quote {path.name}'s table"


def test_tofu_toy_records_the_hyperparameters_each_method_ran_with():
    """The committed tofu-toy.json names, per method, the hyperparameters it read, and they are the published TOFU
    values its config resolves (SimNPO+RT on forget10: beta 4.5, lam 8, the retain NLL per token)."""
    import dataclasses

    from sims.experiments import tofu_toy
    from unlearn.config import config_dict
    from unlearn.objectives import get_method

    doc = json.loads((ROOT / "figures" / "tofu-toy.json").read_text())
    cfg = dataclasses.replace(tofu_toy.PRESETS[doc["preset"]], progress=doc["config"]["progress"])
    assert config_dict(cfg) == doc["config"]
    for method, series in doc["series"]["methods"].items():
        params = cfg.params(method)
        assert series["params"] == {key: getattr(params, key) for key in get_method(method).hyperparameters}
    assert doc["series"]["methods"]["SimNPO+RT"]["params"] == {"beta": 4.5, "gamma": 0.0, "lam": 8.0,
                                                               "retain_norm": "token"}
