"""The command line: discoverable, and bad input stops before any work with a message naming the problem."""

import json
import subprocess
import sys

import pytest

from recipes.cli import main
from unlearn.config import config_dict


def test_list_names_every_experiment_with_its_claim(capsys):
    from sims.experiments import EXPERIMENTS

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name, exp in EXPERIMENTS.items():
        assert name in out and exp.claim[:40] in out


def test_figures_help_explains_presets_and_overrides():
    out = subprocess.run([sys.executable, "-m", "recipes.cli", "figures", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for word in ("--preset", "fast", "full", "--out", "--device", "--set", "key=value", "--show-config", "seed=7"):
        assert word in out


def test_help_says_what_an_empty_default_means_and_shows_a_newline():
    """A tuple default of () reads "none" like None, so its meaning follows it; a template's newline shows as \\n,
    which the help formatter would otherwise fold into a space."""
    from recipes import bench
    from recipes.cli import alias_help, bench_llm_aliases, eval_tofu_aliases
    from recipes.eval import TofuEvalConfig

    cases = {a.option: a for a in bench_llm_aliases()}["--cases"]
    assert alias_help(cases, bench.LLMBench).endswith("(default none: all)")
    template = {a.option: a for a in eval_tofu_aliases()}["--template"]
    assert alias_help(template, TofuEvalConfig).endswith("(default Question: {prompt}\\nAnswer: )")


def test_validate_help_names_every_architecture():
    from unlearn.models.hf import ARCHITECTURES

    out = subprocess.run([sys.executable, "-m", "recipes.cli", "validate", "--help"], capture_output=True,
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
    (["figures", "--set", "methods=GA,NPO+RT"], "logistic-rates: --set methods: unknown config key"),
    (["figures", "yao", "--set", "device=cuda", "--device", "cpu"],
     "yao: --device cpu and --set device=cuda disagree; give one of them"),
    (["figures", "markov-length", "--set", "seeds=2", "--seeds", "3"], "--seeds 3 and --set seeds=2 disagree"),
    (["figures", "yao", "yao"], "an experiment named twice: yao, yao"),
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
    assert main(["figures", "yao", "--seeds", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--seeds: yao has no replicates" in err and "npo-synthetic" in err and "collapse" in err
    assert not any(tmp_path.iterdir())
    out = subprocess.run([sys.executable, "-m", "recipes.cli", "figures", "--help"], capture_output=True,
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


# ------------------------------------------------- run, relearn, validate, bench: one way to configure them


def _configured():
    """(argv, config class, its --quick preset or None, a key, the option that aliases it, a value as --set
    spells it, another value) of every command configured by a dataclass."""
    from recipes import bench
    from recipes.run import RelearnConfig, RunConfig
    from recipes.validate import ValidateConfig

    return [
        (["run"], RunConfig, None, "steps", "--steps", "7", "8"),
        (["relearn"], RelearnConfig, None, "epochs", "--epochs", "2", "5"),
        (["validate"], ValidateConfig, None, "lora_rank", "--lora", "4", "8"),
        (["bench", "toy"], bench.ToyBench, bench.QUICK, "members", "--members", "2,3", "2"),
        (["bench", "llm"], bench.LLMBench, bench.QUICK_LLM, "seq_len", "--seq-len", "64", "32"),
    ]


CONFIGURED = pytest.mark.parametrize("argv, cls, preset, key, option, value, other", _configured(),
                                     ids=lambda x: " ".join(x) if isinstance(x, list) else None)


def _with_out(argv, out, *rest):
    """The command ``argv`` with its output folder or file (relearn's is its positional DIR), then ``rest``."""
    return [*argv, str(out), *rest] if argv == ["relearn"] else [*argv, "--out", str(out), *rest]


def _show(argv, capsys):
    assert main([*argv, "--show-config"]) == 0
    return json.loads(capsys.readouterr().out)


@CONFIGURED
def test_show_config_prints_the_defaults_and_does_no_work(argv, cls, preset, key, option, value, other, tmp_path,
                                                          capsys):
    from unlearn.config import config_dict

    out = tmp_path / "out"
    expected = {"command": " ".join(argv), "config": config_dict(cls())}
    if hasattr(cls, "protocol"):  # what the fields left at None take
        expected["protocol"] = cls().protocol()
    assert _show(_with_out(argv, out), capsys) == expected
    assert not out.exists()
    if preset is not None:
        assert _show([*argv, "--quick"], capsys)["config"] == config_dict(preset)


@CONFIGURED
def test_set_changes_its_key_as_the_named_option_does(argv, cls, preset, key, option, value, other, capsys):
    from unlearn.config import format_value

    by_set = _show([*argv, "--set", f"{key}={value}"], capsys)
    assert format_value(by_set["config"][key]) == value != format_value(getattr(cls(), key))
    assert _show([*argv, option, value], capsys) == by_set
    assert _show([*argv, option, value, "--set", f"{key}={value}"], capsys) == by_set  # they agree


@CONFIGURED
def test_an_option_and_a_set_that_disagree_are_refused(argv, cls, preset, key, option, value, other, tmp_path,
                                                       capsys):
    out = tmp_path / "out"
    assert main(_with_out(argv, out, option, value, "--set", f"{key}={other}")) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"unlearn {' '.join(argv)}: error: {option} {value} and --set {key}={other} disagree; " \
                          "give one of them"
    assert not out.exists()


@CONFIGURED
@pytest.mark.parametrize("override, message", [("nope=1", "--set nope: unknown config key; valid keys: "),
                                               ("{key}=x", "--set {key}='x': expected an integer"),
                                               ("{key}", "--set '{key}': expected key=value")])
def test_a_bad_set_is_refused_naming_the_key(argv, cls, preset, key, option, value, other, override, message,
                                             tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_with_out(argv, out, "--set", override.format(key=key))) == 2
    err = capsys.readouterr().err
    assert message.format(key=key) in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_the_preset_comes_first_then_the_options_then_set(capsys):
    from recipes import bench

    cfg = _show(["bench", "toy", "--quick", "--members", "2", "--set", "repeats=3"], capsys)["config"]
    assert cfg == {**config_dict(bench.QUICK), "members": [2], "repeats": 3}


def test_a_default_derived_from_other_keys_follows_the_final_values(capsys):
    """validate's learning rates default by model: --set model=... takes that model's, as --model does."""
    from recipes.validate import LEARNING_RATES

    for argv in (["--set", "model=llama-20m-shape"], ["--model", "llama-20m-shape"]):
        cfg = _show(["validate", *argv], capsys)["config"]
        assert (cfg["memorise_lr"], cfg["lr"]) == LEARNING_RATES["llama-20m-shape"]


def _subparsers(parser, prefix=()):
    """{"bench toy": parser, ...}: every leaf command of ``parser``."""
    import argparse

    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_subparsers(sub, (*prefix, name)) or {" ".join((*prefix, name)): sub})
    return found


def test_every_option_help_shows_its_config_default_read_from_the_dataclass():
    """Each alias is absent by default (None: the dataclass default stands), and its help's "(default X)" is
    the field's default as --set spells it (and --quick's, where a preset differs), never a second literal."""
    import dataclasses
    import re
    import typing

    from recipes.cli import build_parser
    from unlearn.config import format_value, parse_value

    commands = _subparsers(build_parser())
    checked = 0
    for argv, cls, preset, *_ in _configured():
        parser = commands[" ".join(argv)]
        defaults, hints = {f.name: f.default for f in dataclasses.fields(cls)}, typing.get_type_hints(cls)
        for action in parser._actions:
            if not action.dest.startswith("config_"):
                assert action.dest in ("help", "set", "show_config", "out", "quick", "run", "dry_run"), action.dest
                continue
            key = action.dest.removeprefix("config_")
            assert action.default is None, action.option_strings
            (shown,) = re.findall(r"\(default ([^;:)]*)", action.help)
            assert shown == format_value(defaults[key]), (action.option_strings, shown)
            assert parse_value(hints[key], shown, key) == defaults[key]
            if preset is not None and getattr(preset, key) != defaults[key]:
                assert f"; --quick {format_value(getattr(preset, key))}" in action.help
            checked += 1
    assert checked >= 40


def test_run_method_help_lists_every_method():
    from unlearn.objectives import METHODS

    out = subprocess.run([sys.executable, "-m", "recipes.cli", "run", "--help"], capture_output=True, text=True,
                         check=True).stdout
    options = out[out.index("options:"):]
    method_help = " ".join(options[options.index("--method METHOD"):options.index("--beta BETA")].split())
    for name in METHODS:
        assert f" {name}," in method_help or f" {name} " in method_help, name


def test_figures_ask_for_no_font_an_install_may_lack(monkeypatch, caplog):
    """The README's first command drew its log axes' tick labels ($\\mathdefault{10^k}$) with the default math
    font set, which also asks for 'DejaVu Sans Display', and an install without it printed "findfont: Font family
    ['DejaVu Sans Display'] not found" on every run. Drawn as that command draws it, with that font gone from
    matplotlib's list, the npo-synthetic figure logs no findfont warning."""
    import io
    import logging
    from pathlib import Path

    import matplotlib.font_manager as fm
    import matplotlib.mathtext
    import matplotlib.pyplot as plt

    from sims.experiment import load
    from sims.experiments import get_experiment

    saved = Path(__file__).resolve().parents[1] / "figures" / "npo-synthetic.json"
    monkeypatch.setattr(fm.fontManager, "ttflist", [f for f in fm.fontManager.ttflist if "Display" not in f.name])
    fm.FontManager._findfont_cached.cache_clear()  # forget fonts found before (and after: the list comes back)
    matplotlib.mathtext.MathTextParser._parse_cached.cache_clear()
    with caplog.at_level(logging.WARNING, logger="matplotlib.font_manager"):
        fig = get_experiment("npo-synthetic").plot(load(saved))
        fig.savefig(io.BytesIO(), format="png")
        plt.close(fig)
    fm.FontManager._findfont_cached.cache_clear()
    assert not [r.getMessage() for r in caplog.records if "findfont" in r.getMessage()]


def test_version_names_the_installed_package(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"unlearn {version('unlearn-mechanics')}"
