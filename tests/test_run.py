"""unlearn run / unlearn relearn on the Markov toy, end to end through the CLI, and their bad input."""

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

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
    assert doc["config"]["mask"] == "wagle:0.5" and doc["mask_fraction"] == pytest.approx(0.5, abs=1e-6)
    assert doc["after"]["forget_kl"] > doc["before"]["forget_kl"]
    masks = load_file(str(run_dir / "mask.safetensors"))
    weights = load_file(str(run_dir / "model.safetensors"))
    world, original, _ = run_recipe.MODELS["markov-fast"].models("cpu", progress=False)
    start = original.state_dict()
    assert doc["moved_fraction"] == _moved(start, weights) <= doc["mask_fraction"]
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


def _moved(start, weights):
    """The fraction of the parameter entries of ``start`` that differ in ``weights``, counted directly."""
    changed = sum(int((weights[name] != value).sum()) for name, value in start.items())
    return changed / sum(value.numel() for value in start.values())


FAST = ["run", "--model", "markov-fast", "--steps", "2", "--batch-size", "2", "--eval-limit", "10"]
TINY = ["run", "--model", "tiny", "--steps", "2", "--batch-size", "2", "--eval-limit", "4"]


def _mask_file(tensors=None, name="m.safetensors", **metadata):
    """A setup that writes a mask file holding ``tensors`` (default none) with safetensors ``metadata``."""
    def setup(tmp, monkeypatch):
        save_file(tensors or {}, str(tmp / name), metadata=metadata or None)
    return setup


def _toy_pos_emb_mask():
    from recipes.run import _toy_model

    return {"pos_emb": torch.zeros_like(_toy_model("markov-fast").pos_emb, dtype=torch.bool)}


def _run_folder(*names):
    def setup(tmp, monkeypatch):
        (tmp / "x").mkdir()
        for name in names:
            (tmp / "x" / name).write_text("{}")
    return setup


def _damaged_run(tmp, monkeypatch):
    """A run folder of markov-fast whose model.safetensors was cut short."""
    from recipes.run import RunConfig, _toy_model

    (tmp / "x").mkdir()
    (tmp / "x" / "run.json").write_text(json.dumps({"config": dataclasses.asdict(RunConfig(model="markov-fast"))}))
    save_file(_toy_model("markov-fast").state_dict(), str(tmp / "x" / "model.safetensors"))
    data = (tmp / "x" / "model.safetensors").read_bytes()
    (tmp / "x" / "model.safetensors").write_bytes(data[: len(data) // 2])


def _no_memory(tmp, monkeypatch):
    from unlearn import memory

    monkeypatch.setattr(memory, "free_memory", lambda device: 1024)  # 1 KiB free


def _files(root):
    """{path: bytes} of every file under ``root`` (the CLI may create --out's folder, empty, when it checks it)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# (argv, message fragment, setup(tmp_path, monkeypatch) or None): "{tmp}" is the test's folder; a run command
# without --out gets --out {tmp}/x. Each is refused with exit status 2, one line, and nothing written.
REFUSALS = [
    (["run", "--mask", "wagle:1.5"], "the ratio must lie in (0, 1]", None),
    (["run", "--mask", "snip:0.5"], "expected KIND:RATIO with KIND one of wagle, magnitude, random", None),
    (["run", "--method", "NPOO"], "unknown method 'NPOO'", None),
    (["run", "--logprob-chunk", "64"], "--logprob-chunk 64 does not apply: the toy model markov", None),
    ([*TINY, "--logprob-chunk", "0"], "logprob_chunk must be >= 1 (positions)", None),
    (["run", "--fused-logprobs"], "--fused-logprobs true does not apply: the toy model markov", None),
    ([*TINY, "--fused-logprobs"], "fused log-probs run cut-cross-entropy's Triton kernel, on CUDA only; the device "
                                  "is cpu", None),
    ([*TINY, "--fused-logprobs", "--logprob-chunk", "4"], "two ways to the same log-probs; give one", None),
    ([*TINY, "--fused-logprobs", "--precision", "float32"], "runs a bf16 kernel; give --precision bf16", None),
    (["run", "--compile"], "--compile true does not apply: the toy model markov", None),
    (["run", "--beta", "0"], "beta must be a finite number > 0", None),
    (["run", "--model", "llama"], "model 'llama': not a toy model (markov, markov-fast)", None),
    # 1. settings that do not apply to the model, task, method or mask
    ([*FAST, "--reference", "copy"], "--reference copy does not apply: the toy models (markov, markov-fast) use the "
                                     "cached reference", None),
    ([*FAST, "--task", "jsonl", "--forget", "{tmp}/f.jsonl", "--retain", "{tmp}/r.jsonl"],
     "--task jsonl does not apply: the toy model markov-fast trains on its own Markov world", None),
    ([*FAST, "--task", "jsonl", "--forget", "{tmp}/f.jsonl", "--retain", "{tmp}/r.jsonl"],
     "; --retain {tmp}/r.jsonl does not apply: the toy model", None),
    ([*FAST, "--set", "task=facts"], "--task facts does not apply", None),
    ([*TINY, "--task", "markov", "--forget", "{tmp}/f.jsonl"],
     "--forget {tmp}/f.jsonl does not apply: a file of --task jsonl, and the task is markov", None),
    ([*TINY, "--task", "facts", "--retain", "{tmp}/r.jsonl"], "--retain {tmp}/r.jsonl does not apply", None),
    ([*TINY, "--method", "DPO"], "--method DPO does not apply: it needs alternative responses to the forget prompts",
     None),
    ([*TINY, "--method", "GA", "--reference", "copy"],
     "--reference copy does not apply: GA reads no reference model", None),
    ([*FAST, "--method", "NPO", "--gamma", "0.5"], "--gamma 0.5 does not apply: NPO does not read gamma (it reads "
                                                   "beta)", None),
    ([*FAST, "--method", "GA", "--beta", "0.2"], "--beta 0.2 does not apply: GA does not read beta (it reads none "
                                                 "of beta, gamma, lam, mismatch, retain_norm)", None),
    ([*FAST, "--method", "NPO+KL", "--retain-norm", "token"], "--retain-norm token does not apply: NPO+KL does not "
                                                              "read retain_norm (it reads beta, lam)", None),
    ([*FAST, "--method", "NPO", "--set", "lam=2"], "--lam 2.0 does not apply: NPO does not read lam", None),
    ([*FAST, "--method", "SimNPO", "--mismatch", "2"], "--mismatch 2.0 does not apply", None),
    ([*FAST, "--mu", "1e-3"], "--mu 0.001 does not apply: WAGLE's Hessian scale, read only with --mask wagle:R",
     None),
    ([*FAST, "--mu", "1e-3", "--mask", "random:0.5"], "--mu 0.001 does not apply", None),
    ([*FAST, "--mu", "1e-3", "--mask", "{tmp}/m.safetensors"], "--mu 0.001 does not apply", _mask_file()),
    # 2. mask files: every trainable parameter, or metadata that says what the missing ones do; a missing file
    ([*FAST, "--mask", "{tmp}/nofile.safetensors"], "mask file {tmp}/nofile.safetensors: no such file", None),
    ([*FAST, "--mask", "{tmp}/m.safetensors"], "mask file {tmp}/m.safetensors: no mask for 26 of the model's 26 "
     "trainable parameters ('pos_emb', 'tok_emb.weight', 'blocks.0.attn.q.weight' and 23 more); name every one, "
     "or say what they do in the file's metadata: missing=frozen or missing=free", _mask_file()),
    ([*FAST, "--mask", "{tmp}/m.safetensors"], "no mask for 25 of the model's 26 trainable parameters "
     "('tok_emb.weight',", lambda tmp, mp: _mask_file(_toy_pos_emb_mask())(tmp, mp)),
    ([*FAST, "--mask", "{tmp}/m.safetensors"], "mask file {tmp}/m.safetensors: metadata missing='some'; valid: "
                                               "frozen, free", _mask_file(missing="some")),
    ([*TINY, "--mask", "{tmp}/m.safetensors"], "mask file {tmp}/m.safetensors: no mask for", _mask_file()),
    # 3. cached retain logits that do not fit the free memory
    ([*TINY, "--method", "NPO+KL"], "--reference auto: no reference fits the 0.00 GiB free", _no_memory),
    ([*TINY, "--method", "NPO+KL", "--reference", "cached"], "--reference cached: no reference fits", _no_memory),
    # 4. weak messages: one line naming the option, before any work
    ([*FAST, "--eval-limit", "0"], "eval_limit must be >= 1 (sequences of each evaluation set), or none", None),
    ([*FAST, "--mu", "0", "--mask", "wagle:0.5"], "invalid config: mu must be a finite number > 0, got 0.0", None),
    ([*FAST, "--lr", "-1"], "lr must be a finite number > 0, got -1.0", None),
    ([*FAST, "--out", "{tmp}/x"], "--out {tmp}/x: already holds a run (run.json, relearn.json); give a new folder, "
                                  "or --overwrite", _run_folder("run.json", "relearn.json")),
    ([*FAST, "--out", "{tmp}/x"], "already holds a run (mask.safetensors)", _run_folder("mask.safetensors")),
    ([*FAST, "--out", "{tmp}/x/run.json"], "--out {tmp}/x/run.json: is a file, not a folder", _run_folder("run.json")),
    (["relearn", "{tmp}/x"], "{tmp}/x/model.safetensors: damaged, not readable as safetensors", _damaged_run),
    (["relearn", "{tmp}/x"], "redo the run with `unlearn run ... --out {tmp}/x --overwrite`", _damaged_run),
]


@pytest.mark.parametrize("argv, message, setup", REFUSALS, ids=[f"{i}" for i in range(len(REFUSALS))])
def test_bad_arguments_are_refused_before_work(argv, message, setup, capsys, tmp_path, monkeypatch):
    if setup is not None:
        setup(tmp_path, monkeypatch)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "run" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "x")]
    before = _files(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message.replace("{tmp}", str(tmp_path)) in err and len(err.strip().splitlines()) == 1, err
    assert _files(tmp_path) == before  # nothing written, nothing removed


def test_a_mask_file_for_another_model_is_refused(tmp_path, capsys):
    from unlearn.attribution import save_masks

    save_masks({"not.a.parameter": torch.ones(3, dtype=torch.bool)}, tmp_path / "m.safetensors")
    argv = ["run", "--model", "markov-fast", "--mask", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "'not.a.parameter' is not a trainable parameter of this model" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--subset", "random", "--draws", "0"], "draws must be >= 1, got 0"),
    (["--draws", "5"], "--draws 5 does not apply: the shortest responses are one subset"),
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
    masks, weights = load_file(str(out / "mask.safetensors")), load_file(str(out / "hf" / "model.safetensors"))
    start = hf.load_model(hf.ModelSpec("tiny", vocab_size=12)).state_dict()  # the same seed: the same start
    for name, mask in masks.items():
        assert torch.equal(weights[name][~mask], start[name][~mask]), name


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


def _frozen_file(tmp_path):
    from unlearn.attribution import save_masks

    return str(save_masks({}, tmp_path / "frozen.safetensors", {"missing": "frozen"}))


def _pos_emb_fixed_file(tmp_path):
    from unlearn.attribution import save_masks

    return str(save_masks(_toy_pos_emb_mask(), tmp_path / "free.safetensors", {"missing": "free"}))


@pytest.mark.parametrize("mask, mask_fraction", [
    ("random:0.5", 0.5),
    ("random:1.0", 1.0),  # none frozen
    (_frozen_file, 0.0),  # all frozen: an empty file that says missing=frozen
    (_pos_emb_fixed_file, 1 - 19 * 64 / 44234),  # one parameter frozen, the rest free by its metadata
    (None, None),
])
def test_the_moved_fraction_is_what_moved(mask, mask_fraction, tmp_path):
    """run.json's moved_fraction is the fraction of weight entries that differ after the run, counted here
    directly from the weights before and after; mask_fraction is what the mask let move."""
    from recipes import run as run_recipe

    spec = mask(tmp_path) if callable(mask) else mask
    out = tmp_path / "run"
    assert main([*FAST, *(["--mask", spec] if spec else []), "--lr", "1e-2", "--out", str(out)]) == 0
    doc = json.loads((out / "run.json").read_text())
    _, original, _ = run_recipe.MODELS["markov-fast"].models("cpu", progress=False)
    start = dict(original.named_parameters())
    moved = _moved({k: v.detach() for k, v in start.items()}, load_file(str(out / "model.safetensors")))
    assert doc["moved_fraction"] == moved
    if mask_fraction is None:
        assert doc["mask_fraction"] is None and moved > 0.5
    else:
        assert doc["mask_fraction"] == pytest.approx(mask_fraction, abs=1e-4) and moved <= doc["mask_fraction"]
        assert (moved == 0) == (mask_fraction == 0)
    assert (out / "mask.safetensors").exists() == (spec is not None)


def test_overwrite_replaces_a_run_and_removes_what_no_longer_describes_it(tmp_path, capsys):
    out = tmp_path / "x"
    assert main([*FAST, "--mask", "random:0.5", "--out", str(out)]) == 0
    (out / "relearn.json").write_text("{}")  # a relearning attack on the first model
    assert main([*FAST, "--out", str(out)]) == 2
    assert "already holds a run (run.json, model.safetensors, mask.safetensors, relearn.json)" in \
        capsys.readouterr().err
    assert main([*FAST, "--set", "overwrite=true", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "run.json"]
    doc = json.loads((out / "run.json").read_text())
    assert doc["config"]["mask"] is None and doc["config"]["overwrite"] is True and doc["mask_fraction"] is None
    assert main([*FAST, "--mask", "random:0.5", "--set", "overwrite=true", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["mask.safetensors", "model.safetensors", "run.json"]


def test_eval_limit_limits_the_evaluation_sets_of_a_hugging_face_run(tmp_path, monkeypatch):
    """--eval-limit N: every evaluation of a Hugging Face run reads the first N forget and retain sequences."""
    from recipes import run as run_recipe

    sizes, nll = [], run_recipe.nll_per_token
    monkeypatch.setattr(run_recipe, "nll_per_token", lambda model, data: sizes.append(len(data)) or nll(model, data))
    argv = ["run", "--model", "tiny", "--steps", "2", "--batch-size", "2", "--set", "eval_limit=3"]
    assert main([*argv, "--out", str(tmp_path / "x")]) == 0
    assert len(sizes) >= 4 and set(sizes) == {3}


def test_chunked_log_probs_train_a_hugging_face_model_as_full_logits_do(tmp_path):
    """--logprob-chunk 3: the same run, its log-probs taken from the hidden states 3 positions at a time, ends at
    the same weights as from full logits (float32 reduction order aside)."""
    from safetensors.torch import load_file

    weights = []
    for extra in ([], ["--logprob-chunk", "3"], ["--lr", "2e-2"]):  # the last: the weights do depend on training
        out = tmp_path / f"run{len(weights)}"
        assert main([*TINY, "--method", "NPO+RT", "--steps", "3", "--lr", "1e-2", *extra, "--out", str(out)]) == 0
        weights.append(load_file(str(out / "hf" / "model.safetensors")))
    assert json.loads((tmp_path / "run1" / "run.json").read_text())["config"]["logprob_chunk"] == 3
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=1e-4, atol=1e-5)  # AdamW: ~3e-6 from sum order
    assert any(not torch.allclose(weights[2][key], value, rtol=1e-4, atol=1e-5) for key, value in weights[0].items())


@pytest.mark.slow
def test_a_compiled_run_trains_as_the_eager_one(tmp_path):
    """--compile: the same run under torch.compile (its model and its decoder, for --logprob-chunk) ends at the
    eager run's weights, to the reordering of float32 sums that compiled kernels bring."""
    from safetensors.torch import load_file
    from torch._dynamo.utils import counters

    weights, frames = [], []
    for extra in ([], ["--compile"]):
        out = tmp_path / f"run{len(weights)}"
        argv = [*TINY, "--method", "NPO+RT", "--steps", "3", "--lr", "1e-2", "--logprob-chunk", "5", *extra]
        counters.clear()
        assert main([*argv, "--out", str(out)]) == 0
        weights.append(load_file(str(out / "hf" / "model.safetensors")))
        frames.append(counters["frames"]["ok"])  # frames that dynamo compiled
    assert frames[0] == 0 and frames[1] > 0
    assert json.loads((tmp_path / "run1" / "run.json").read_text())["config"]["compile"] is True
    assert weights[1].keys() == weights[0].keys()  # compiled in place: the state dict's names are the model's
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=1e-4, atol=1e-5)


def test_cached_logits_that_do_not_fit_are_refused_with_their_sizes():
    """Retain logits of 8k sequences x 256 tokens x a 32k vocabulary (about 61 GiB) beside 3 x 27 GiB of
    gradients and AdamW moments: refused one byte below CACHE_HEADROOM x (logits + max(logits, state)), run at it."""
    from unlearn.memory import CACHE_HEADROOM, check_cached_logits

    n, width, vocab, state = 8000, 256, 32000, 3 * 4 * 7 * 10**9
    logits = 4 * n * width * vocab
    need = CACHE_HEADROOM * (logits + max(logits, state))
    check_cached_logits(n, width, vocab, state, int(need))
    check_cached_logits(n, width, vocab, state, None)  # unknown free memory: not checked
    with pytest.raises(ValueError) as err:
        check_cached_logits(n, width, vocab, state, int(need) - 1, "cuda:0")
    message = str(err.value)
    assert f"= {logits / 2**30:.2f} GiB" in message and f"about {need / 2**30:.2f} GiB" in message
    assert f"the {(int(need) - 1) / 2**30:.2f} GiB free on cuda:0; use --reference copy" in message
    small = 4 * 10 * 8 * 12  # without the training state, twice the logits
    check_cached_logits(10, 8, 12, 0, int(CACHE_HEADROOM * 2 * small))
    with pytest.raises(ValueError, match="do not fit"):
        check_cached_logits(10, 8, 12, 0, int(CACHE_HEADROOM * 2 * small) - 1)


def test_free_memory_reads_memavailable_and_falls_back(tmp_path):
    import os

    from unlearn.memory import available_ram, free_memory

    (tmp_path / "meminfo").write_text("MemTotal:  8000 kB\nMemFree:  100 kB\nMemAvailable:  2048 kB\n")
    assert available_ram(tmp_path / "meminfo") == 2048 * 1024
    fallback = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert abs(available_ram(tmp_path / "nothing") - fallback) < 2**30  # free pages move while we look
    assert free_memory(torch.device("cpu")) > 0 and free_memory(torch.device("meta")) is None


def test_a_diverging_toy_run_keeps_what_it_computed(tmp_path, capsys):
    """lr 1e6 makes the loss non-finite at step 1: the run stops before that update, and OUT/run.failed.json
    holds the config, the step, the losses and evaluations so far; the error names the file."""
    out = tmp_path / "r"
    argv = ["run", "--model", "markov-fast", "--method", "GA", "--lr", "1e6", "--steps", "5", "--eval-limit", "20",
            "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite loss at step 1" in err[0] and str(out / "run.failed.json") in err[0]
    record = json.loads((out / "run.failed.json").read_text())
    assert record["config"]["lr"] == 1e6 and record["step"] == 1 and len(record["history"]["loss"]) == 1
    assert record["before"]["forget_kl"] > 0 and not (out / "run.json").exists()


def test_stop_on_collapse_keeps_the_last_healthy_model(tmp_path, capsys):
    """GA at lr 0.05 collapses the Markov toy within a few steps (retain NLL far above log 10): with --stop-on
    collapse the run ends at the first collapsed evaluation, run.json names it, and the saved weights are those
    of the last healthy evaluation (here step 0: the original model, bitwise); without it the run goes on and
    only records the step."""
    from recipes import run as run_recipe

    common = ["run", "--model", "markov-fast", "--method", "GA", "--lr", "0.05", "--steps", "20", "--eval-limit", "20"]
    assert main([*common, "--stop-on", "collapse", "--out", str(tmp_path / "stop")]) == 0
    assert "the run stopped there and kept the model of step 0" in capsys.readouterr().out
    doc = json.loads((tmp_path / "stop" / "run.json").read_text())
    assert doc["collapse"] == "uniform" and doc["stopped_on_collapse"] == doc["collapsed_at_step"] > 0
    assert doc["kept_step"] == 0 and doc["after"] == doc["before"]
    _, original, _ = run_recipe.MODELS["markov-fast"].models("cpu", progress=False)
    weights = load_file(str(tmp_path / "stop" / "model.safetensors"))
    assert all(torch.equal(weights[k], v) for k, v in original.state_dict().items())
    assert main([*common, "--out", str(tmp_path / "go")]) == 0
    went_on = json.loads((tmp_path / "go" / "run.json").read_text())
    assert went_on["collapsed_at_step"] == doc["collapsed_at_step"] and went_on["stopped_on_collapse"] is None
    assert went_on["history"]["eval_steps"][-1] == 20 and went_on["after"]["retain_nll"] > math.log(10)


def test_a_hugging_face_run_that_diverges_is_named_collapsed(tmp_path, capsys):
    """AdamW at lr 1e6 keeps the loss finite (every weight near 1e6) and leaves a uniform model, which looked
    like successful unlearning (forget NLL = log V); run.json names it. A random-weight model is already near
    uniform, so the record also says it started there."""
    argv = ["run", "--model", "tiny", "--task", "markov", "--method", "GA", "--lr", "1e6", "--steps", "2",
            "--batch-size", "4", "--eval-limit", "8", "--warmup-epochs", "0", "--schedule", "constant",
            "--weight-decay", "0", "--out", str(tmp_path / "hf")]
    assert main(argv) == 0
    assert "collapse: uniform at step 0" in capsys.readouterr().out
    doc = json.loads((tmp_path / "hf" / "run.json").read_text())
    assert doc["collapse"] == "uniform" and doc["collapsed_at_step"] == 0 and doc["started_collapsed"]
    assert all(kind == "uniform" for kind in doc["collapse_kinds"])
