"""unlearn run / unlearn relearn on the Markov toy, end to end through the CLI, and their bad input."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from recipes.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    argv = ["run", "--model", "markov-fast", "--method", "NPO+RT", "--beta", "0.2", "--steps", "6",
            "--mask", "wagle:0.5", "--eval-limit", "100", "--out", str(out)]
    assert main(argv) == 0
    return out


def test_run_writes_the_model_the_mask_and_the_record(run_dir):
    from recipes import run as run_recipe

    doc = json.loads((run_dir / "run.json").read_text())
    assert doc["config"] == dataclasses.asdict(run_recipe.RunConfig(model="markov-fast", method="NPO+RT", beta=0.2,
                                                                    steps=6, mask="wagle:0.5", eval_limit=100))
    assert doc["config"]["mask"] == "wagle:0.5" and doc["moved_fraction"] == pytest.approx(0.5, abs=1e-6)
    assert doc["after"]["forget_kl"] > doc["before"]["forget_kl"]
    masks = load_file(str(run_dir / "mask.safetensors"))
    weights = load_file(str(run_dir / "model.safetensors"))
    world, original, _ = run_recipe.MODELS["markov-fast"].models("cpu", progress=False)
    start = original.state_dict()
    for name, mask in masks.items():  # frozen weights did not move, the others did
        assert torch.equal(weights[name][~mask], start[name][~mask])
    assert any(not torch.equal(weights[n][m], start[n][m]) for n, m in masks.items())


def test_relearn_on_a_run_folder(run_dir):
    assert main(["relearn", str(run_dir), "--subset", "random", "--draws", "2", "--epochs", "2"]) == 0
    doc = json.loads((run_dir / "relearn.json").read_text())
    assert doc["draws"] == 2 and len(doc["relearn"]) == 2
    assert doc["config"] == {"subset": "random", "frac": 0.2, "epochs": 2, "batch_size": 32, "lr": 1e-4, "draws": 2,
                             "device": "cpu"}  # the resolved RelearnConfig
    for r in doc["relearn"]:
        assert r["epochs"] == [0, 1, 2] and r["forget_kl"][-1] < r["forget_kl"][0]
    assert doc["relearn"][0]["forget_kl"][1:] != doc["relearn"][1]["forget_kl"][1:]  # different draws


@pytest.mark.parametrize("argv, message", [
    (["run", "--mask", "wagle:1.5"], "the ratio must lie in (0, 1]"),
    (["run", "--mask", "snip:0.5"], "expected KIND:RATIO with KIND one of wagle, magnitude, random"),
    (["run", "--method", "NPOO"], "unknown method 'NPOO'"),
    (["run", "--beta", "0"], "beta must be a finite number > 0"),
    (["run", "--model", "llama"], "model 'llama': not a toy model (markov, markov-fast)"),
    (["run", "--reference", "copy"], "the toy models (markov, markov-fast) use the cached reference"),
])
def test_bad_run_arguments_fail_before_work(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_mask_file_for_another_model_is_refused(tmp_path, capsys):
    from unlearn.attribution import save_masks

    save_masks({"not.a.parameter": torch.ones(3, dtype=torch.bool)}, tmp_path / "m.safetensors")
    argv = ["run", "--model", "markov-fast", "--mask", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "'not.a.parameter' is not a trainable parameter of this model" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--subset", "random", "--draws", "0"], "draws must be >= 1, got 0"),
    (["--epochs", "0"], "epochs must be >= 1, got 0"),
    (["--set", "frac=1.5"], "frac must lie in (0, 1], got 1.5"),
    (["--set", "subset=longest"], "unknown relearning subset 'longest'"),
])
def test_relearn_refuses_bad_sizes_before_work(run_dir, argv, message, capsys):
    assert main(["relearn", str(run_dir), *argv]) == 2
    assert message in capsys.readouterr().err


def test_relearn_refuses_a_folder_without_a_run(tmp_path, capsys):
    assert main(["relearn", str(tmp_path)]) == 2
    assert "no run.json; is this a folder written by `unlearn run`?" in capsys.readouterr().err


def test_run_with_a_mask_on_a_hugging_face_model(tmp_path, capsys):
    """`unlearn run --mask` on the tiny Llama: the masked-out weights stay bitwise where they started."""
    from unlearn.models import hf

    out = tmp_path / "lm"
    argv = ["run", "--model", "tiny", "--task", "markov", "--method", "NPO", "--mask", "wagle:0.3", "--steps", "4",
            "--lr", "1e-2", "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads((out / "run.json").read_text())
    assert doc["moved_fraction"] == pytest.approx(0.3, abs=1e-4)
    assert doc["after"]["forget_nll"] > doc["before"]["forget_nll"]
    masks, weights = load_file(str(out / "mask.safetensors")), load_file(str(out / "model.safetensors"))
    start = hf.load_model(hf.ModelSpec("tiny", vocab_size=12)).state_dict()  # the same seed: the same start
    for name, mask in masks.items():
        assert torch.equal(weights[name][~mask], start[name][~mask]), name
    assert main(["relearn", str(out)]) == 2
    assert "takes runs of the toy models" in capsys.readouterr().err


def test_a_kl_method_on_a_hugging_face_model_runs_alike_with_either_reference(tmp_path):
    """NPO+KL on the tiny Llama: the cached reference (forget log-probs and retain logits taken once) and a frozen
    copy give the same run, step for step."""
    docs = {}
    for reference in ("cached", "copy"):
        argv = ["run", "--model", "tiny", "--method", "NPO+KL", "--steps", "4", "--lr", "1e-2",
                "--reference", reference, "--out", str(tmp_path / reference)]
        assert main(argv) == 0
        docs[reference] = json.loads((tmp_path / reference / "run.json").read_text())
    assert docs["cached"]["after"]["forget_nll"] > docs["cached"]["before"]["forget_nll"]
    cached, copy = docs["cached"]["history"], docs["copy"]["history"]
    assert cached["loss"] == pytest.approx(copy["loss"], rel=1e-5, abs=1e-6)
    assert cached["terms"]["retain"] == pytest.approx(copy["terms"]["retain"], rel=1e-5, abs=1e-6)
    assert docs["cached"]["after"] == pytest.approx(docs["copy"]["after"], rel=1e-5)


def test_a_method_without_its_data_is_refused_before_training(tmp_path, capsys):
    argv = ["run", "--model", "tiny", "--method", "GA+Mismatch+KL", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    assert "needs alternative responses to the forget prompts" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
