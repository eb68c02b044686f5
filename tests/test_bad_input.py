"""Bad input fails at once, naming the problem: the core's building blocks (the library calls a script would make)
with a ValueError; the commands (CLI_CASES: a bad --out, an unknown or absent device) with one line before any
work, writing nothing; expected errors from inside the work and Ctrl-C with one line, no traceback."""

import sys
import time

import pytest
import torch

from unlearn import attribution, distributed, relearn
from unlearn import data as D
from unlearn.losses import unlearning_losses
from unlearn.models import hf
from unlearn.objectives import MethodParams
from unlearn.train import resolve_device


class NoEOS:
    eos_token_id, chat_template = None, None


def tiny_model():
    return hf.load_model(hf.ModelSpec("tiny"))


CASES = {
    "relearn subset": (lambda: relearn.relearn_subset(torch.ones(5), 0.2, "longest"),
                       "unknown relearning subset 'longest'; valid: shortest, random"),
    "relearn fraction": (lambda: relearn.relearn_subset(torch.ones(5), 0.0, "shortest"), "frac must lie in (0, 1]"),
    "relearn draw": (lambda: relearn.relearn_subset(torch.ones(5), 0.2, "random"),
                     "a random relearning subset needs a generator"),
    "WAGLE mu": (lambda: attribution.wagle_scores(tiny_model(), {}, {}, mu=0.0), "mu must be a finite number > 0"),
    "mask kind": (lambda: attribution.scores("snip", tiny_model()), "unknown mask kind 'snip'; valid: wagle"),
    "sharding": (lambda: distributed.wrap(tiny_model(), "zero3"), "unknown sharding 'zero3'; valid: fsdp, ddp"),
    "retain term without a retain set": (lambda: unlearning_losses("NPO+RT", MethodParams(), None, None, None),
                                         "method 'NPO+RT' has a retain term but there is no retain set"),
    "prompt format": (lambda: D.format_prompt(NoEOS(), "q", "markdown"), "unknown prompt format 'markdown'"),
    "tokenizer without EOS": (lambda: D.tokenize_examples([D.Example("q", "a", "f:1")], NoEOS(), 8),
                              "the tokenizer has no EOS token"),
    "LoRA rank": (lambda: hf.LoraSpec(rank=0), "LoRA needs rank >= 1 and alpha > 0, got rank=0"),
    "dtype": (lambda: hf.ModelSpec("tiny", dtype="fp16"), "unknown dtype 'fp16'; valid: float32, bf16"),
    "facts split": (lambda: D.facts_task(10, "forget50"), "unknown facts split 'forget50'"),
    "device": (lambda: resolve_device("tpu"), "unknown device 'tpu'; valid: cpu, cuda, cuda:N"),
    "device index on the CPU": (lambda: resolve_device("cpu:1", available=False), "unknown device 'cpu:1'"),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_names_the_problem(name):
    call, message = CASES[name]
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)


# ------------------------------------------------------------------------------------------ the commands
# Each case: (argv, the message's fragment, what must hold after: "nothing written" (no path under the test's
# folder was created) or "untouched" (the existing file FILE still holds what it held)). {tmp} is the test's
# folder, {file} an existing file in it; /proc/nope cannot be created (Linux). Every recipe's work function is
# replaced by one that fails the test, so a case passes only if the refusal comes before any work.

UNKNOWN_DEVICE = "unknown device 'tpu'; valid: cpu, cuda, cuda:N"
NO_FOLDER = "--out /proc/nope: cannot create a folder there ("
NO_GPU = "device 'cuda' was requested but no CUDA GPU is visible to torch"
CLI_CASES = {
    "figures: --out cannot be created": (["figures", "npo-synthetic", "--preset", "fast", "--out", "/proc/nope"],
                                         NO_FOLDER, "nothing written"),
    "figures: --out is a file": (["figures", "npo-synthetic", "--preset", "fast", "--out", "{file}"],
                                 "--out {file}: is a file, not a folder", "untouched"),
    "figures: device tpu": (["figures", "npo-synthetic", "--preset", "fast", "--set", "device=tpu", "--out",
                             "{tmp}/out"], UNKNOWN_DEVICE, "nothing written"),
    "run: --out cannot be created": (["run", "--steps", "1", "--out", "/proc/nope"], NO_FOLDER, "nothing written"),
    "run: --out is a file": (["run", "--out", "{file}"], "--out {file}: is a file, not a folder", "untouched"),
    "run: device tpu by --set": (["run", "--set", "device=tpu", "--out", "{tmp}/out"], UNKNOWN_DEVICE,
                                 "nothing written"),
    "run: device tpu by --device": (["run", "--device", "tpu", "--out", "{tmp}/out"], UNKNOWN_DEVICE,
                                    "nothing written"),
    "relearn: no such run folder": (["relearn", "{tmp}/missing"], "run folder {tmp}/missing: no such folder",
                                    "nothing written"),
    "relearn: the run folder is a file": (["relearn", "{file}"], "run folder {file}: is a file, not a folder",
                                          "untouched"),
    "relearn: device tpu": (["relearn", "{tmp}", "--set", "device=tpu"], UNKNOWN_DEVICE, "nothing written"),
    "validate: --out cannot be created": (["validate", "--out", "/proc/nope"], NO_FOLDER, "nothing written"),
    "validate: --out is a file": (["validate", "--out", "{file}"], "--out {file}: is a file, not a folder",
                                  "untouched"),
    "validate: device tpu by --set": (["validate", "--set", "device=tpu", "--out", "{tmp}/out"], UNKNOWN_DEVICE,
                                      "nothing written"),
    "validate: device tpu by --device": (["validate", "--device", "tpu", "--out", "{tmp}/out"], UNKNOWN_DEVICE,
                                         "nothing written"),
    "bench toy: --out's folder cannot be created": (["bench", "toy", "--quick", "--out", "/proc/nope/b.json"],
                                                    "--out /proc/nope/b.json: its folder /proc/nope: cannot create",
                                                    "nothing written"),
    "bench toy: --out is a folder": (["bench", "toy", "--quick", "--out", "{tmp}"],
                                     "--out {tmp}: is a folder, not a file", "nothing written"),
    "bench toy: device tpu": (["bench", "toy", "--quick", "--set", "device=tpu", "--out", "{tmp}/b.json"],
                              UNKNOWN_DEVICE, "nothing written"),
    "bench llm: --out's folder is a file": (["bench", "llm", "--quick", "--out", "{file}/b.json"],
                                            "--out {file}/b.json: its folder {file}: is a file, not a folder",
                                            "untouched"),
    "bench llm: device tpu": (["bench", "llm", "--quick", "--device", "tpu", "--out", "{tmp}/b.json"],
                              UNKNOWN_DEVICE, "nothing written"),
    "run: cuda without a GPU": (["run", "--device", "cuda", "--out", "{tmp}/out"], NO_GPU, "nothing written"),
    "relearn: cuda without a GPU": (["relearn", "{tmp}", "--device", "cuda"], NO_GPU, "nothing written"),
    "validate: cuda without a GPU": (["validate", "--device", "cuda", "--out", "{tmp}/out"], NO_GPU,
                                     "nothing written"),
}


@pytest.fixture
def no_work(monkeypatch):
    """Every command's work function, replaced by one that fails the test when called (or returns ``returns``'s
    value for the named function, for the tests below that simulate the work)."""
    from recipes import bench, run, validate
    from sims import experiment

    def started(*args, **kwargs):
        raise AssertionError("the command started its work before refusing its input")

    for module, name in ((experiment, "run_and_save"), (run, "run_unlearning"), (run, "run_relearning"),
                         (validate, "run_validate"), (bench, "bench_toy"), (bench, "bench_llm")):
        monkeypatch.setattr(module, name, started)
    return monkeypatch


def _command(argv: list[str]) -> str:
    """The words that name the command of ``argv``, as its messages begin: "run", "bench toy", "eval tofu"."""
    return " ".join(argv[:2] if argv[0] in ("bench", "eval", "data") else argv[:1])


@pytest.mark.parametrize("name", CLI_CASES)
def test_a_command_refuses_bad_input_before_any_work(name, tmp_path, capsys, no_work):
    from recipes.cli import main

    argv, fragment, expect = CLI_CASES[name]
    if "/proc/nope" in " ".join(argv) and not sys.platform.startswith("linux"):
        pytest.skip("/proc is Linux's")
    if fragment == NO_GPU and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    file = tmp_path / "results.json"
    file.write_text("keep")
    fill = {"tmp": str(tmp_path), "file": str(file)}
    start = time.perf_counter()
    assert main([arg.format(**fill) for arg in argv]) == 2
    assert time.perf_counter() - start < 30  # seconds: config, device and output checks only
    err = capsys.readouterr().err.strip()
    assert fragment.format(**fill) in err and err.startswith(f"unlearn {_command(argv)}: error: "), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert file.read_text() == "keep"
    if expect == "nothing written":
        assert sorted(tmp_path.iterdir()) == [file]
    else:
        assert expect == "untouched"


def test_run_and_save_checks_its_folder_before_running(tmp_path):
    """The library path (notebooks, scripts) refuses a bad folder before the experiment runs, as the CLI does."""
    from sims.experiment import Experiment, run_and_save

    def run(cfg):
        raise AssertionError("the experiment ran before its folder was checked")

    blocker = tmp_path / "blocker"
    blocker.write_text("keep")
    exp = Experiment("x", "claim", {"fast": None}, run, plot=None)
    with pytest.raises(ValueError, match="output folder .*blocker: is a file, not a folder"):
        run_and_save(exp, "fast", None, blocker)


# Expected errors from inside the work, and Ctrl-C: one line, no traceback, and (Ctrl-C) what was kept.


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_an_os_error_is_one_line_naming_the_path(tmp_path, capsys, no_work):
    import errno

    from recipes import run
    from recipes.cli import main

    def full(cfg, out, progress=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "model.safetensors"))

    no_work.setattr(run, "run_unlearning", full)
    assert main(["run", "--out", str(tmp_path)]) == 2
    assert _one_line(capsys) == f"unlearn run: error: {tmp_path / 'model.safetensors'}: No space left on device"


def test_an_unreadable_safetensors_file_is_one_line(tmp_path, capsys, no_work):
    from safetensors.torch import load_file, save_file

    from recipes import run
    from recipes.cli import main

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(64)}, str(path))
    path.write_bytes(path.read_bytes()[:40])  # truncated, as by a full disk or a killed copy
    no_work.setattr(run, "run_relearning", lambda folder, cfg: load_file(str(folder / "model.safetensors")))
    assert main(["relearn", str(tmp_path)]) == 2
    err = _one_line(capsys)
    assert err.startswith("unlearn relearn: error: a .safetensors file could not be read"), err


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _main(argv) -> int:
    """recipes.cli.main, with a Ctrl-C that escapes it failing the test (rather than stopping pytest)."""
    from recipes.cli import main

    try:
        return main(argv)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped main (a traceback, not one line)")


def test_ctrl_c_in_figures_names_the_experiments_it_kept(tmp_path, capsys, no_work):
    from sims import experiment

    def first_then_interrupt(exp, preset, cfg, out):
        if exp.name != "npo-synthetic":
            raise KeyboardInterrupt
        (out / "npo-synthetic.json").write_text("{}")
        return {"metrics": {}, "wall_s": 0.0}

    no_work.setattr(experiment, "run_and_save", first_then_interrupt)
    assert _main(["figures", "npo-synthetic", "collapse", "--preset", "fast", "--out", str(tmp_path)]) == 130
    err = _one_line(capsys)
    assert err == (f"unlearn figures: interrupted; kept npo-synthetic in {tmp_path} (NAME.png and NAME.json); "
                   "collapse did not finish")


def test_ctrl_c_before_any_figure_says_nothing_was_written(tmp_path, capsys, no_work):
    from sims import experiment

    no_work.setattr(experiment, "run_and_save", _interrupt)
    assert _main(["figures", "collapse", "--preset", "fast", "--out", str(tmp_path)]) == 130
    assert _one_line(capsys) == (f"unlearn figures: interrupted; no experiment had finished, nothing was written "
                                 f"to {tmp_path} (collapse did not finish)")


def test_ctrl_c_in_validate_says_that_rerunning_resumes(tmp_path, capsys, no_work):
    from recipes import validate

    def memorise_then_interrupt(cfg, out, progress=None, report=print):
        (out / "validate.ckpt").mkdir()
        (out / "validate.ckpt" / "memorised-0.safetensors").write_text("")
        raise KeyboardInterrupt

    argv = ["validate", "--device", "cpu", "--out", str(tmp_path)]
    no_work.setattr(validate, "run_validate", _interrupt)
    assert _main(argv) == 130
    assert _one_line(capsys) == "unlearn validate: interrupted; nothing had finished yet; rerunning starts over"
    no_work.setattr(validate, "run_validate", memorise_then_interrupt)
    assert _main(argv) == 130
    assert _one_line(capsys) == (f"unlearn validate: interrupted; what finished is kept in {tmp_path}/validate.ckpt; "
                                 "rerun the same command to resume from there")


@pytest.mark.parametrize("argv, work", [(["run", "--out", "{tmp}"], "run_unlearning"),
                                        (["bench", "toy", "--quick", "--out", "{tmp}/b.json"], "bench_toy")],
                         ids=["run", "bench toy"])
def test_ctrl_c_elsewhere_is_one_line_with_status_130(argv, work, tmp_path, capsys, no_work):
    from recipes import bench, run

    no_work.setattr(bench if work.startswith("bench") else run, work, _interrupt)
    assert _main([a.format(tmp=tmp_path) for a in argv]) == 130
    err = _one_line(capsys)
    assert err.startswith(f"unlearn {_command(argv)}: interrupted; ") and "did not finish" in err, err
