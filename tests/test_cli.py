"""The command line: discoverable, and bad input stops before any work with a message naming the problem."""

import json
import subprocess
import sys

import pytest

from unlearn.cli import main


def test_list_names_every_experiment_with_its_claim(capsys):
    from sims.experiments import EXPERIMENTS

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name, exp in EXPERIMENTS.items():
        assert name in out and exp.claim[:40] in out


def test_figures_help_explains_presets_and_overrides():
    out = subprocess.run([sys.executable, "-m", "unlearn.cli", "figures", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for word in ("--preset", "fast", "full", "--out", "--device", "--set", "key=value", "--show-config", "seed=7"):
        assert word in out


def test_validate_help_names_every_architecture():
    from unlearn.models.hf import ARCHITECTURES

    out = subprocess.run([sys.executable, "-m", "unlearn.cli", "validate", "--help"], capture_output=True,
                         text=True, check=True).stdout
    options = out[out.index("options:"):]
    model_help = options[options.index("--model MODEL"):options.index("--task TASK")]
    for name in ARCHITECTURES:
        assert name in model_help


def test_show_config_prints_the_resolved_config(capsys):
    assert main(["figures", "npo-synthetic", "--preset", "fast", "--set", "seed=7", "--show-config"]) == 0
    out = capsys.readouterr().out
    assert '"seed": 7' in out and '"seeds": 1' in out and '"steps": 2000' in out


@pytest.mark.parametrize("argv, message", [
    (["figures", "nope"], "unknown experiment 'nope'; valid experiments: npo-synthetic"),
    (["figures", "npo-synthetic", "--set", "beta=1"], "--set beta: unknown config key"),
    (["figures", "npo-synthetic", "--set", "steps=many"], "--set steps='many': expected an integer"),
    (["figures", "npo-synthetic", "--set", "sweep_betas=0,1"], "sweep_betas: every beta must be > 0"),
    (["figures", "npo-synthetic", "--set", "sweep_lr=-0.1"], "sweep_lr must be a finite number > 0"),
    (["figures", "npo-synthetic", "--set", "methods=GA,NPOO"], "methods: unknown method 'NPOO'; valid methods"),
    (["figures", "npo-synthetic", "--preset", "huge"], None),
])
def test_bad_input_fails_before_work_naming_the_problem(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) if message is None else _no_exit():
        code = main(argv + ["--out", str(tmp_path)])
        assert code == 2
    err = capsys.readouterr().err
    assert (message or "invalid choice: 'huge'") in err
    assert not list(tmp_path.iterdir())


def test_missing_gpu_fails_with_a_clear_message(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["figures", "npo-synthetic", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err


@pytest.mark.parametrize("package", ["transformers", "peft"])
def test_a_missing_llm_extra_is_named_with_its_install_command(package, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as it would without the package
    argv = ["validate", "--lora", "2", "--steps", "1", "--memorise-epochs", "0", "--out", str(tmp_path / "v")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"Hugging Face models need {package}, which is not installed" in err
    assert "pip install 'unlearn-mechanics[llm]'" in err


def test_non_finite_loss_keeps_what_was_computed(tmp_path, capsys):
    """An absurd learning rate overflows GA to inf; the run stops naming the step and the method, and the
    history up to that step is written where the figure would have gone."""
    argv = ["figures", "npo-synthetic", "--preset", "fast", "--out", str(tmp_path)]
    for override in ("progress=false", "alphas=1", "methods=GA", "pretrain_steps=200", "steps=400",
                     "sweep_steps=10", "lr_multiplier=1e306"):
        argv += ["--set", override]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "non-finite loss at step" in err and "GA/forget" in err
    kept = json.loads((tmp_path / "npo-synthetic.failed.json").read_text())
    assert kept["step"] > 0 and len(kept["history"]["loss"]) == kept["step"]
    assert not (tmp_path / "npo-synthetic.png").exists()


class _no_exit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_seeds_sets_the_replicates_of_experiments_that_have_them(capsys, tmp_path):
    assert main(["figures", "markov-length", "--preset", "fast", "--seeds", "4", "--show-config"]) == 0
    assert '"seeds": 4' in capsys.readouterr().out
    assert main(["figures", "collapse", "--seeds", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--seeds: collapse has no replicates" in err and "npo-synthetic" in err and "markov-length" in err
    out = subprocess.run([sys.executable, "-m", "unlearn.cli", "figures", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "--seeds" in out and "--timing" in out and "20 minutes" in out


def test_seeds_and_timing_run_end_to_end(tmp_path, capsys):
    """--seeds 2 gives two replicate curves per method with their mean and std; --timing prints the table."""
    argv = ["figures", "markov-length", "--preset", "fast", "--seeds", "2", "--timing", "--out", str(tmp_path),
            "--set", "progress=false", "--set", "sweep_npo_betas=none", "--set", "sweep_simnpo_betas=none"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "experiment" in out and "wall s" in out and "total" in out and "budget" in out
    doc = json.loads((tmp_path / "markov-length.json").read_text())
    assert doc["config"]["seeds"] == 2 and doc["series"]["seeds"] == 2 and doc["wall_s"] > 0
    run = doc["series"]["runs"]["NPO"]["forget1_kl"]
    assert len(run["seeds"]) == 2 and run["seeds"][0] != run["seeds"][1]  # replicates differ in batch order
    assert max(run["std"]) > 0
