"""unlearn validate on the tiny Llama: end to end through the CLI, the promised metric keys, and resuming
from its checkpoints without redoing finished work."""

import json
import shutil

import pytest

from sims import validate
from unlearn.cli import main

ARGS = ["validate", "--model", "tiny", "--task", "markov", "--steps", "10", "--memorise-epochs", "20"]
KEYS = {"validate.ga.linear_r2", "validate.ga.log_r2", "validate.npo.log_r2", "validate.npo.linear_r2",
        "validate.npo.weight_step0_max_abs_dev_from_1", "validate.npo.pearson_weight_length.step0",
        "validate.simnpo.pearson_weight_length.step0", "validate.ga.retain_nll_drift",
        "validate.npo.retain_nll_drift", "validate.simnpo.retain_nll_drift"}


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    out = tmp_path_factory.mktemp("validate")
    assert main([*ARGS, "--out", str(out)]) == 0
    return out, json.loads((out / "validate.json").read_text())


def test_validate_writes_the_promised_metrics_and_figure(first):
    out, doc = first
    assert KEYS <= set(doc["metrics"])
    m = doc["metrics"]
    assert m["validate.npo.weight_step0_max_abs_dev_from_1"] == 0.0  # NPO starts GA-like, exactly
    assert m["validate.npo.pearson_weight_length.step0"] is None  # all weights 1: no correlation to speak of
    assert m["validate.simnpo.pearson_weight_length.step0"] < -0.3  # short responses weigh more (1/|y|)
    assert doc["predictions"]["validate.simnpo.pearson_weight_length.step0"]["value"] == pytest.approx(
        m["validate.simnpo.pearson_weight_length.step0"])
    for x in ("ga", "npo", "simnpo"):
        assert m[f"validate.{x}.forget_nll_per_token.end"] > m[f"validate.{x}.forget_nll_per_token.start"]
    assert doc["memorised"]["forget_nll_per_token"][-1] < doc["memorised"]["forget_nll_per_token"][0]
    assert (out / "validate.png").read_bytes()[:4] == b"\x89PNG"


def test_an_interrupted_run_resumes_without_redoing_finished_work(first, tmp_path, monkeypatch):
    """Keep the memorised model and GA's record, lose the rest: the rerun memorises nothing, redoes NPO and
    SimNPO only, and ends where the uninterrupted run ended."""
    out, doc = first
    shutil.copytree(out / "validate.ckpt", tmp_path / "validate.ckpt")
    for path in (tmp_path / "validate.ckpt").glob("*.json"):
        if path.name.startswith(("NPO", "SimNPO")):
            path.unlink()
    ran = []
    original = validate.unlearn_method
    monkeypatch.setattr(validate, "memorise", lambda *a, **k: pytest.fail("the memorised model was rebuilt"))
    monkeypatch.setattr(validate, "unlearn_method", lambda m, method, *a: ran.append(method) or original(m, method, *a))
    assert main([*ARGS, "--out", str(tmp_path)]) == 0
    assert ran == ["NPO", "SimNPO"]
    again = json.loads((tmp_path / "validate.json").read_text())
    assert again["metrics"] == doc["metrics"]


def test_validate_on_jsonl_files(tmp_path):
    answers = ["in Oslo", "by the old harbour wall", "Lima"]
    rows = [{"prompt": f"Where does author {i} live ?", "response": answers[i % 3]} for i in range(6)]
    (tmp_path / "f.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:3]))
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows[3:]))
    argv = ["validate", "--task", "jsonl", "--forget", str(tmp_path / "f.jsonl"), "--retain", str(tmp_path / "r.jsonl"),
            "--steps", "4", "--memorise-epochs", "10", "--methods", "NPO", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "out" / "validate.json").read_text())
    assert doc["lengths"] == [3, 6, 2]  # response tokens + EOS


@pytest.mark.parametrize("argv, message", [
    (["validate", "--task", "jsonl"], "--task jsonl needs --forget FILE and --retain FILE"),
    (["validate", "--methods", "GA,DPO"], "validate runs GA, NPO, SimNPO; got 'DPO'"),
    (["validate", "--reference", "adapter"], "the adapter reference needs LoRA"),
    (["validate", "--model", "/nonexistent/model"], "neither a local model directory"),
])
def test_bad_validate_arguments(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
