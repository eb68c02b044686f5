"""unlearn validate on the tiny Llama: end to end through the CLI, the promised metric keys, resuming from its
checkpoints without redoing finished work, the memorisation rule and its verdicts, and bad settings or broken
checkpoints refused with a message that names them, leaving nothing behind."""

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch

from recipes import validate
from recipes.cli import main
from unlearn.memory import memory_plan

ARGS = ["validate", "--model", "tiny", "--task", "markov", "--steps", "10", "--memorise-epochs", "20"]
KEYS = {"validate.ga.linear_r2", "validate.ga.log_r2", "validate.npo.log_r2", "validate.npo.linear_r2",
        "validate.ga.acceleration", "validate.npo.acceleration", "validate.ga.acceleration.ci_low",
        "validate.npo.weight_step0_max_abs_dev_from_1", "validate.npo.pearson_weight_length.step0",
        "validate.simnpo.pearson_weight_length.step0", "validate.ga.retain_nll_drift",
        "validate.npo.retain_nll_drift", "validate.simnpo.retain_nll_drift", "validate.ga.late_slope_ratio",
        "validate.ga.late_slope_ratio.ci_low", "validate.ga.late_slope_ratio.ci_high", "validate.ga.late_slope",
        "validate.ga.late_head_growth", "validate.ga.nll_over_ceiling.final",
        "validate.ga.nll_over_margin_ceiling.final"}


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    out = tmp_path_factory.mktemp("validate")
    assert main([*ARGS, "--out", str(out)]) == 0
    return out, json.loads((out / "validate.json").read_text())


def test_the_figure_warns_when_the_forget_set_was_not_memorised(first):
    """The title says that no prediction applies exactly when validate.json says memorisation was not reached."""
    import matplotlib.pyplot as plt

    _, doc = first
    for reached in (True, False):
        fig = validate.plot({**doc, "memorised": {**doc["memorised"], "reached": reached}})
        assert ("WARNING: the forget set was not memorised" in fig._suptitle.get_text()) is not reached
        plt.close(fig)


def test_validate_writes_the_promised_metrics_and_figure(first):
    out, doc = first
    assert KEYS <= set(doc["metrics"])
    expected = validate.ValidateConfig(model="tiny", task="markov", steps=10, memorise_epochs=20)
    assert doc["config"] == json.loads(json.dumps(dataclasses.asdict(expected)))  # the resolved config, recorded
    m = doc["metrics"]
    assert m["validate.npo.weight_step0_max_abs_dev_from_1"] == 0.0  # NPO starts GA-like, exactly
    assert m["validate.npo.pearson_weight_length.step0"] is None  # all weights 1: no correlation to speak of
    assert m["validate.simnpo.pearson_weight_length.step0"] < -0.3  # short responses weigh more (1/|y|)
    # predicted from length alone: with two lengths (20 and 5) 1/|y| is a linear function of |y|, r = -1
    assert doc["predictions"]["validate.simnpo.pearson_weight_length.step0"]["value"] == pytest.approx(-1.0)
    for x in ("ga", "npo", "simnpo"):
        assert m[f"validate.{x}.forget_nll_per_token.end"] > m[f"validate.{x}.forget_nll_per_token.start"]
    assert doc["memorised"]["forget_nll_per_token"][-1] < doc["memorised"]["forget_nll_per_token"][0]
    assert (out / "validate.png").read_bytes()[:4] == b"\x89PNG"
    # 20 epochs do not memorise the markov task (it plateaus near 0.2 after ~200): every verdict says so
    memorised = doc["memorised"]
    assert memorised["reached"] is False and memorised["stopped"] == "budget"
    assert memorised["floor"] == pytest.approx(0.151, abs=1e-3) and memorised["target"] == memorised["floor"] + 0.15
    assert {p["verdict"] for p in doc["predictions"].values()} == {validate.NOT_MEMORISED}
    assert doc["evaluated"] == {"forget": 32, "retain": 32, "forget_total": 32, "retain_total": 32}


def test_every_method_records_whether_and_when_it_collapsed(first):
    """Each method's record holds the collapse kind of every evaluation (unlearn.metrics.collapse) and the step
    it first collapsed at, also as the metric validate.X.collapsed_at_step; the kinds follow the rule applied to
    the recorded retain NLL and entropy."""
    from unlearn.metrics.collapse import collapse_kind

    out, doc = first
    for method in ("GA", "NPO", "SimNPO"):
        record = validate._read_checkpoint(next((out / "validate.ckpt").glob(f"{method}-*.json")))
        log_v = record["collapse_rule"]["log_vocab"]
        kinds = [collapse_kind(n, h, round(math.exp(log_v))) for n, h in zip(record["retain_nll"], record["entropy"],
                                                                             strict=True)]
        assert record["collapse_kinds"] == kinds and len(kinds) == len(record["steps"])
        first_step = next((s for s, k in zip(record["steps"], kinds, strict=True) if k), None)
        metric = doc["metrics"][f"validate.{method.lower()}.collapsed_at_step"]
        assert metric == record["collapsed_at_step"] == first_step


def test_every_evaluation_records_the_final_norm_ceiling(first):
    """tiny is a Llama (RMSNorm, bias-free head): each evaluation records C(t) + log V averaged over the evaluated
    forget tokens (unlearn.metrics.ceiling), the forget NLL per token never exceeds it (theory.ceiling's bound),
    and validate.X.nll_over_ceiling.final is the last NLL over the last ceiling."""
    _, doc = first
    for method in ("GA", "NPO", "SimNPO"):
        curves, x = doc["curves"][method], method.lower()
        assert len(curves["forget_ceiling"]) == len(curves["steps"]) == len(curves["forget_nll"])
        assert all(nll <= c for nll, c in zip(curves["forget_nll"], curves["forget_ceiling"], strict=True))
        assert doc["metrics"][f"validate.{x}.nll_over_ceiling.final"] == pytest.approx(
            curves["forget_nll"][-1] / curves["forget_ceiling"][-1], rel=1e-12)


def _theory_at_step0(out, lr: float, optimizer: str = "adam") -> tuple[float, float]:
    """(C + log V, predicted growth per step) of theory.ceiling on the tiny model memorised in ``out``'s checkpoint
    (every method's model at step 0), averaged over the markov forget tokens, each token weighing its occurrences
    over the sequences in GA's loss."""
    from safetensors.torch import load_file

    from theory import ceiling as theory
    from unlearn.models import hf

    model = hf.load_model(validate.ValidateConfig(model="tiny", device="cpu").model_spec(validate.N_STATES + 2))
    model.load_state_dict(load_file(str(next((out / "validate.ckpt").glob("memorised-*")) / "model.safetensors")))
    W, g = (t.detach().double().numpy() for t in (model.lm_head.weight, model.model.norm.weight))
    forget, _, _, _ = validate.task_data(validate.ValidateConfig(model="tiny"), report=None)
    ys, counts = np.unique(forget.labels[forget.mask.bool()].numpy(), return_counts=True)
    mean = lambda per_token: float(np.sum(per_token * counts) / counts.sum())
    return (mean(theory.nll_ceiling(W, g, ys)),
            mean(theory.head_growth_rate(W, g, ys, counts / len(forget), lr, optimizer)))


def _with_memorised(out, dest):
    """``dest`` with a copy of ``out``'s memorised checkpoint (and none of its methods'), returned."""
    folder = next((out / "validate.ckpt").glob("memorised-*"))
    shutil.copytree(folder, dest / "validate.ckpt" / folder.name)
    return dest


def test_the_recorded_ceiling_and_its_growth_are_theorys_on_the_models_weights(first):
    """At step 0 every method's model is the memorised one: the recorded C(0) + log V and the predicted growth
    are theory.ceiling's nll_ceiling and head_growth_rate (AdamW at the run's lr, each token weighing its
    occurrences over the sequences) on its lm_head and final norm, averaged over the evaluated forget tokens."""
    out, doc = first
    ceiling, growth = _theory_at_step0(out, doc["config"]["lr"])
    for method in ("GA", "NPO", "SimNPO"):
        assert doc["curves"][method]["forget_ceiling"][0] == pytest.approx(ceiling, rel=1e-5)
        assert doc["curves"][method]["forget_head_growth"][0] == pytest.approx(growth, rel=1e-4)


def test_gas_ceiling_metrics_follow_from_its_curves(first, tmp_path):
    """late dNLL/dt is the least-squares slope of the forget NLL per token over the late half of the fit window
    (20 steps, an evaluation every 2: steps 12 to 20), the predicted growth the mean of the recorded rates there,
    the ratio theirs, inside its bootstrap interval; NLL / C(t) takes log V (V = 12 for tiny on markov) off the
    last recorded ceiling."""
    out = _with_memorised(first[0], tmp_path)
    assert main([*ARGS, "--methods", "GA", "--steps", "20", "--set", "eval_every=2", "--out", str(out)]) == 0
    doc = json.loads((out / "validate.json").read_text())
    c, m = doc["curves"]["GA"], doc["metrics"]
    steps = np.asarray(c["steps"], float)
    late = steps >= (c["fit_from"] + steps[-1]) / 2
    assert m["validate.ga.late_slope"] == pytest.approx(np.polyfit(steps[late], np.asarray(c["forget_nll"])[late],
                                                                   1)[0], rel=1e-6)
    assert m["validate.ga.late_head_growth"] == pytest.approx(np.mean(np.asarray(c["forget_head_growth"])[late]))
    ratio = m["validate.ga.late_slope_ratio"]
    assert ratio == pytest.approx(m["validate.ga.late_slope"] / m["validate.ga.late_head_growth"], rel=1e-9)
    assert m["validate.ga.late_slope_ratio.ci_low"] <= ratio <= m["validate.ga.late_slope_ratio.ci_high"]
    assert m["validate.ga.nll_over_margin_ceiling.final"] == pytest.approx(
        c["forget_nll"][-1] / (c["forget_ceiling"][-1] - math.log(12)), rel=1e-12)
    assert "validate.npo.late_slope_ratio" not in m  # the head-growth prediction is GA's


def test_a_frozen_head_and_norm_keep_the_ceiling_fixed(first, tmp_path):
    """--freeze head,norm: the head and the gain never move, so C(t) + log V is the same at every evaluation and
    the predicted growth is 0; --optimizer sgd is recorded and predicts SGD's rate (theory.ceiling, lr times the
    gradient). Both start from the first run's memorised model (its key ignores both options)."""
    out, doc = first
    frozen = _with_memorised(out, tmp_path / "frozen")
    assert main([*ARGS, "--methods", "GA", "--freeze", "head,norm", "--out", str(frozen)]) == 0
    curve = json.loads((frozen / "validate.json").read_text())["curves"]["GA"]
    assert curve["forget_nll"][-1] > curve["forget_nll"][0]  # GA still moved the layers below
    assert len(set(curve["forget_ceiling"])) == 1 and set(curve["forget_head_growth"]) == {0.0}
    sgd = _with_memorised(out, tmp_path / "sgd")
    assert main([*ARGS, "--methods", "GA", "--optimizer", "sgd", "--lr", "0.01", "--out", str(sgd)]) == 0
    ran = json.loads((sgd / "validate.json").read_text())
    assert ran["config"]["optimizer"] == "sgd"
    sgd_rate = _theory_at_step0(out, 0.01, "sgd")[1]
    assert ran["curves"]["GA"]["forget_head_growth"][0] == pytest.approx(sgd_rate, rel=1e-4)
    adam_rate = doc["curves"]["GA"]["forget_head_growth"][0] / doc["config"]["lr"]  # per unit lr
    assert abs(sgd_rate / 0.01 / adam_rate - 1) > 0.1  # the two rules differ here


def _ga_metrics(ratio, interval, nll_over_c=0.95, growth=0.01, slope=0.01, end=40.0):
    low, high = interval
    return {"ga.acceleration": 1.4, "ga.acceleration.ci_low": 1.3, "ga.acceleration.ci_high": 1.5,
            "ga.nll_over_margin_ceiling.final": nll_over_c, "ga.late_slope_ratio": ratio,
            "ga.late_slope_ratio.ci_low": low, "ga.late_slope_ratio.ci_high": high, "ga.late_head_growth": growth,
            "ga.late_slope": slope, "ga.forget_nll_per_token.end": end, "ga.nll_over_ceiling.final": 0.9}


def test_gas_verdict_on_the_ceiling_follows_the_head_growth_prediction():
    """On the ceiling (NLL >= 0.9 C) GA is judged by its late slope over the predicted head growth: an interval
    meeting [0.75, 1.25] passes, one at 1.6-1.9 (a curve growing faster than the head can carry it) or at 0.2-0.4
    (one that stalls under a growing head) fails, and the acceleration is not applicable. Below the ceiling the
    acceleration decides (here convex: fail) and the ratio is not applicable; without a ceiling (None) likewise.
    With the head and gain frozen (growth 0; C + log V = 40 / 0.9 = 44.4) a late slope adding 3 nats over the
    late half (120 steps) fails, 2 passes (5% of 44.4 is 2.2)."""
    lengths, window = [20, 5], (60.0, 300.0)
    judge = lambda metrics, key: validate.predictions(metrics, lengths, True, window)[f"validate.ga.{key}"][
        "verdict"]
    assert judge(_ga_metrics(1.05, (0.9, 1.2)), "late_slope_ratio") == "pass"
    assert judge(_ga_metrics(1.05, (0.9, 1.2)), "acceleration").startswith("not applicable")
    assert judge(_ga_metrics(1.75, (1.6, 1.9)), "late_slope_ratio") == "fail"
    assert judge(_ga_metrics(0.3, (0.2, 0.4)), "late_slope_ratio") == "fail"
    below = _ga_metrics(1.75, (1.6, 1.9), nll_over_c=0.5)
    assert judge(below, "acceleration") == "fail" and judge(below, "late_slope_ratio").startswith("not applicable")
    none = _ga_metrics(None, (None, None), nll_over_c=None, growth=None)
    assert judge(none, "acceleration") == "fail" and "no final RMSNorm" in judge(none, "late_slope_ratio")
    assert judge(_ga_metrics(None, (None, None), growth=0.0, slope=3 / 120), "late_slope_ratio") == "fail"
    assert judge(_ga_metrics(None, (None, None), growth=0.0, slope=2 / 120), "late_slope_ratio") == "pass"


def test_verdicts_of_memorised_data_follow_their_rules(first):
    """The same measurements, judged as if memorised: NPO's step-0 weights are all 1 (no correlation to speak
    of), SimNPO's fall with |y|; each prediction gets pass, fail or undetermined by its VERDICTS rule."""
    _, doc = first
    plain = {k.removeprefix("validate."): v for k, v in doc["metrics"].items()}
    found = validate.predictions(plain, doc["lengths"], memorised=True)
    assert set(found) == {f"validate.{k}" for k in validate.VERDICTS}
    for key in ("npo.weight_step0_max_abs_dev_from_1", "npo.pearson_weight_length.step0",
                "simnpo.pearson_weight_length.step0"):
        assert found[f"validate.{key}"]["verdict"] == "pass"
    assert validate.verdict("ga.acceleration", 1.1, 1.0, (0.9, 1.3)) == "pass"
    assert validate.verdict("ga.acceleration", 1.4, 1.0, (1.2, 1.6)) == "fail"  # convex: not linear
    assert validate.verdict("npo.acceleration", 0.5, None, (0.4, 0.7), "early") == "pass"
    assert validate.verdict("npo.acceleration", 0.9, None, (0.7, 1.1), "early") == "fail"
    assert validate.verdict("npo.acceleration", 1.0, 1.0, (0.9, 1.1), "late") == "pass"
    assert validate.verdict("npo.acceleration", 0.5, None, (0.4, 0.7), "crossover").startswith("undetermined")
    assert validate.verdict("simnpo.pearson_weight_length.step0", 0.2, -1.0) == "fail"
    assert validate.verdict("ga.acceleration", None, 1.0).startswith("undetermined")
    assert [validate.npo_regime(w) for w in ((60, 300), (2000, 3000), (3000, 9000), None)] == [
        "early", "crossover", "late", None]


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
    # each stage's wall time is kept with its checkpoint: the finished ones read back, the redone ones anew
    assert set(doc["seconds"]) == {"memorise", "GA", "NPO", "SimNPO"} and all(v > 0 for v in doc["seconds"].values())
    assert {k: again["seconds"][k] for k in ("memorise", "GA")} == {k: doc["seconds"][k] for k in ("memorise", "GA")}
    assert again["seconds"]["NPO"] != doc["seconds"]["NPO"]


def test_validate_on_jsonl_files(tmp_path):
    answers = ["in Oslo", "by the old harbour wall", "Lima"]
    rows = [{"prompt": f"Where does author {i} live ?", "response": answers[i] if i < 3 else "Lima"} for i in range(6)]
    (tmp_path / "f.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:3]))
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows[3:]))
    argv = ["validate", "--task", "jsonl", "--forget", str(tmp_path / "f.jsonl"), "--retain", str(tmp_path / "r.jsonl"),
            "--steps", "4", "--memorise-epochs", "10", "--methods", "NPO", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "out" / "validate.json").read_text())
    assert doc["lengths"] == [8, 24, 5]  # response bytes + EOS; the retain rows are narrower (memorised together)


@pytest.mark.parametrize("argv, message", [
    (["validate", "--task", "jsonl"], "--task jsonl needs --forget FILE and --retain FILE"),
    (["validate", "--methods", "GA,DPO"], "validate runs GA, NPO, SimNPO; got 'DPO'"),
    (["validate", "--reference", "adapter"], "the adapter reference needs LoRA"),
    (["validate", "--model", "/nonexistent/model"], "neither a local model directory"),
    (["validate", "--precision", "fp8"], "unknown precision 'fp8'; valid: auto, float32, bf16-mixed, bf16"),
    (["validate", "--set", "methods=none"], "methods: give at least one of GA, NPO, SimNPO"),
    (["validate", "--set", "npo_beta=0"], "npo_beta must be a finite number > 0"),
    (["validate", "--lora", "0"], "lora_rank (--lora) must be >= 1, got 0; leave it out (None) for full"),
    (["validate", "--lora", "0", "--reference", "adapter"], "lora_rank (--lora) must be >= 1, got 0"),
    (["validate", "--lora", "-2"], "lora_rank (--lora) must be >= 1, got -2"),
    (["validate", "--set", "eval_limit=0"], "eval_limit must be >= 1 (or None: evaluate every sequence), got 0"),
    (["validate", "--set", "memorise_nll=0"], "memorise_nll must be a finite number > 0"),
    (["validate", "--set", "memorised_within=-1"], "memorised_within must be a finite number > 0"),
    (["validate", "--set", "optimizer=adam"], "unknown optimizer 'adam'; valid: adamw, sgd"),
    (["validate", "--optimizer", "sgd"], "--optimizer sgd runs GA only (--methods GA)"),
    (["validate", "--freeze", "head,bias"], "--freeze takes head, norm; got 'bias'"),
    (["validate", "--freeze", "head", "--lora", "4"], "--freeze applies to full fine-tuning"),
    (["validate", "--forget", "f.jsonl"], "--forget is read by --task jsonl, and the task is markov"),
    (["validate", "--set", "data=/tmp"], "--data is read by --task tofu, and the task is markov"),
    (["validate", "--prompt-format", "plain"], "the markov task reads state ids"),
    (["validate", "--set", "prompt_format=weird"], "unknown prompt_format 'weird'; valid: auto, chat, plain"),
    (["validate", "--methods", "GA,GA"], "methods: each at most once, got GA, GA"),
])
def test_bad_validate_arguments(argv, message, capsys, tmp_path):
    """Refused at config time, before any data is read or anything is written."""
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_markov_task_holds_the_sequences_asked_for():
    forget, retain, _, _ = validate.task_data(validate.ValidateConfig(n_forget=10, n_retain=7))
    assert sorted(forget.n_tokens.tolist()) == [5] * 5 + [20] * 5 and len(retain) == 7


def test_defaults_resolve_device_precision_and_learning_rates_by_model():
    cfg = validate.ValidateConfig(model="llama-20m-shape")
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert cfg.device == expected_device and cfg.precision == ("auto" if expected_device == "cuda" else "float32")
    assert (cfg.memorise_lr, cfg.lr) == validate.LEARNING_RATES["llama-20m-shape"]
    assert validate.ValidateConfig(model="tiny", lr=0.5, device="cpu").lr == 0.5


SEVEN_B = 6_738_415_616  # Llama-2-7B's published parameter count


def test_memory_plan_by_hand():
    """Llama-2-7B's shape, read from the meta device without allocating: 4 N b to memorise; LoRA unlearning
    holds the weights plus 16 bytes per (float32) adapter weight, and a copy reference one more model;
    bf16-mixed adds autocast's 2 N bytes."""
    cfg = validate.ValidateConfig(model="llama-7b-shape", precision="bf16", device="cpu", lora_rank=16,
                                  reference="copy")
    n, lora = validate.model_size(cfg, None)
    assert n == SEVEN_B and lora == 16 * 32 * (4 * (4096 + 4096) + 3 * (4096 + 11008))
    plan = memory_plan(n, lora, "bf16", "copy")
    assert plan["memorise_bytes"] == 4 * n * 2 == plan["peak_bytes"]
    assert plan["unlearn_bytes"] == n * 2 + 16 * lora + n * 2
    assert memory_plan(n, 0, "float32", "cached", memorise=False) == {
        "memorise_bytes": 0, "unlearn_bytes": 16 * n, "peak_bytes": 16 * n}
    assert memory_plan(n, 0, "bf16-mixed", "cached")["peak_bytes"] == 18 * n


def test_the_lora_term_is_what_peft_trains():
    """peft keeps adapters in float32 even on a bf16 model: 4 bytes per weight, times weights, gradients and
    two moments."""
    from unlearn.models import hf

    model = hf.load_model(hf.ModelSpec("tiny", dtype="bf16", lora=hf.LoraSpec(rank=4)))
    trained = [p for p in model.parameters() if p.requires_grad]
    assert {p.dtype for p in trained} == {torch.float32}
    n_lora = sum(p.numel() for p in trained)
    base = memory_plan(1000, 0, "bf16", "cached", memorise=False)["unlearn_bytes"] - 3 * 1000 * 2
    assert memory_plan(1000, n_lora, "bf16", "cached", memorise=False)["unlearn_bytes"] == (
        base + 4 * sum(p.numel() * p.element_size() for p in trained))


@pytest.mark.parametrize("free_gib, precision", [(139, "bf16-mixed"), (119, "bf16"), (80, "bf16")])
def test_auto_precision_on_a_gpu_takes_what_fits(free_gib, precision):
    cfg = validate.ValidateConfig(model="llama-7b-shape", device="cuda")  # an H200's or an H100's free memory
    assert validate.plan_precision(cfg, (SEVEN_B, 0), free_gib * 2**30)[0] == precision


def test_a_run_that_does_not_fit_the_gpu_is_refused_naming_the_need():
    cfg = validate.ValidateConfig(model="llama-7b-shape", precision="float32", device="cuda")
    with pytest.raises(ValueError, match=r"llama-7b-shape in float32 needs about 100.4 GiB on cuda .* 80.0 GiB free; "
                                         r"use --precision bf16"):
        validate.plan_precision(cfg, (SEVEN_B, 0), 80 * 2**30)
    with pytest.raises(ValueError, match=r"in bf16 needs about 50.2 GiB .* 53.0 GiB free"):
        validate.plan_precision(dataclasses.replace(cfg, precision="auto"), (SEVEN_B, 0), 53 * 2**30)


@pytest.mark.parametrize("precision, bytes_per_weight", [("bf16", 8), ("bf16-mixed", 18)])
def test_reduced_precisions_run_end_to_end(precision, bytes_per_weight, tmp_path):
    """bf16 (bf16 weights and moments) and bf16-mixed (float32 weights, bf16 autocast) on the CPU: the plan
    the run records is the one it ran under, and NPO still starts exactly GA-like."""
    argv = ["validate", "--precision", precision, "--steps", "4", "--memorise-epochs", "10", "--methods", "NPO",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "validate.json").read_text())
    assert doc["config"]["precision"] == precision
    assert doc["memory_plan"]["peak_bytes"] == bytes_per_weight * doc["n_parameters"]
    assert doc["metrics"]["validate.npo.weight_step0_max_abs_dev_from_1"] == 0.0
    from safetensors.torch import load_file

    state = load_file(next((tmp_path / "validate.ckpt").glob("memorised-*/model.safetensors")))
    assert {t.dtype for t in state.values()} == {torch.bfloat16 if precision == "bf16" else torch.float32}


def test_the_memorised_checkpoint_key_follows_the_memorising_batch():
    """Memorising uses batches of max(batch_size, 64): 32 and 64 memorise alike and share a checkpoint, 128 does
    not; the unlearning settings do not touch the memorised key."""
    key = lambda **kw: validate._key(validate.ValidateConfig(device="cpu", **kw), "memorised")  # noqa: E731
    assert key(batch_size=32) == key(batch_size=64) == key(batch_size=32, lr=0.1, steps=7)
    assert key(batch_size=128) != key(batch_size=64)


def test_every_unlearning_setting_keys_the_method_checkpoints():
    """A changed beta, learning rate, step count or reference never reads a method's stale record."""
    base = validate.ValidateConfig(device="cpu")
    for method in validate.VALIDATED_METHODS:
        keys = {validate._key(dataclasses.replace(base, **change), method) for change in (
            {}, {"npo_beta": 1.0}, {"simnpo_beta": 1.0}, {"lr": 1e-4}, {"steps": 7}, {"reference": "copy"})}
        assert len(keys) == 6


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("entry, damage", [
    ("GA-*.json", lambda p: p.write_text('{"steps": [0, 5')),
    ("memorised-*/record.json", _truncate),
    ("memorised-*/model.safetensors", _truncate),  # was a raw SafetensorError
    ("memorised-*/model.safetensors", lambda p: p.write_bytes(b"")),
])
def test_an_unreadable_checkpoint_is_named(first, tmp_path, capsys, entry, damage):
    """A checkpoint entry broken by hand (truncated, emptied) is named with what to do, whatever its kind, and
    the run writes nothing."""
    out, _ = first
    shutil.copytree(out / "validate.ckpt", tmp_path / "validate.ckpt")
    broken = next((tmp_path / "validate.ckpt").glob(entry))
    damage(broken)
    assert main([*ARGS, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    delete = "it" if broken.parent.name == "validate.ckpt" else broken.parent  # the stage's folder, as a unit
    assert f"{broken}: not a readable checkpoint" in err and f"delete {delete} to redo that stage" in err
    assert not (tmp_path / "validate.json").exists()


def test_a_non_finite_memorising_run_keeps_its_history_and_no_checkpoint(tmp_path, capsys):
    """--memorise-lr 1e6 overflows: the error names the step and where the history went; the checkpoint folder
    is not left behind, empty or partial."""
    argv = ["validate", "--memorise-lr", "1e6", "--methods", "NPO", "--steps", "2", "--set", "n_forget=4",
            "--set", "n_retain=4", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    kept = tmp_path / "validate.failed.json"
    assert "non-finite" in err and "of run 'memorise'" in err and f"what was computed is in {kept}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["validate.failed.json"]
    doc = json.loads(kept.read_text())
    assert doc["stage"] == "memorise" and doc["config"]["memorise_lr"] == 1e6
    assert doc["step"] <= len(doc["history"]["loss"]) <= doc["step"] + 1 and doc["history"]["evals"]["forget_nll"]


def test_a_stage_that_fails_leaves_nothing_under_its_key(tmp_path, monkeypatch):
    """An error while the memorised checkpoint is written (here: the disk fills after its weights, before its
    record) leaves no memorised-KEY folder, no temporary one, and no empty validate.ckpt."""
    from pathlib import Path

    cfg = validate.ValidateConfig(device="cpu", memorise_epochs=1, n_forget=4, n_retain=4, methods=("NPO",), steps=2)

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="No space left"):
        validate.run_validate(cfg, tmp_path, progress=False, report=lambda line: None)
    assert list(tmp_path.iterdir()) == []


def test_a_forget_set_that_was_not_memorised_is_said_loudly(tmp_path, capsys):
    """One memorising epoch leaves the forget NLL far above the floor: validate.json records reached = false,
    the target and the NLL it ended at, every verdict is 'not applicable', a WARNING line says so and suggests
    the epochs (from the slope of the memorising curve) or the 3x learning rate that would get there."""
    argv = ["validate", "--memorise-epochs", "1", "--methods", "NPO", "--steps", "2", "--set", "n_forget=8",
            "--set", "eval_limit=6", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "validate.json").read_text())
    memorised = doc["memorised"]
    assert memorised["reached"] is False and memorised["stopped"] == "budget" and memorised["epochs"] == 1
    assert memorised["nll"] == memorised["forget_nll_per_token"][-1] > memorised["target"]
    assert memorised["target"] == pytest.approx(memorised["floor"] + 0.15)
    assert {p["verdict"] for p in doc["predictions"].values()} == {
        "not applicable: the forget set was not memorised"}
    warnings = [line for line in out.splitlines() if line.startswith("WARNING: the forget set was not memorised")]
    lines = out.splitlines()
    assert len(warnings) == 2 and lines.index(warnings[1], lines.index(warnings[0]) + 1) > lines.index(
        "validate.npo.acceleration: not applicable: the forget set was not memorised")  # repeated after verdicts
    assert "--memorise-epochs " in warnings[0] and "--memorise-lr 0.009 (3x the 0.003 used)" in warnings[0]
    # evaluation read the first 6 forget sequences (the retain set has 32, above the limit too); training all
    assert doc["evaluated"] == {"forget": 6, "retain": 6, "forget_total": 8, "retain_total": 32}
    assert len(doc["lengths"]) == 6 and doc["config"]["eval_limit"] == 6


def test_memorisation_rule_by_hand():
    """reached when the NLL ends within max(memorise_nll, memorised_within) of the floor; the suggestion reads
    the slope of the excess over the floor (halving every 10 epochs from 1.6 to 0.8 above it: 3 more halvings
    reach 0.1 above, 30 epochs), or a 3x rate after a plateau or without a slope."""
    cfg = validate.ValidateConfig(device="cpu", memorise_lr=1e-3)
    record = {"forget_nll_per_token": [1.8, 1.0], "curve_epochs": [10, 20], "epochs": 20, "floor": 0.2,
              "stopped": "budget"}
    judged = validate.memorisation(dataclasses.replace(cfg, memorised_within=0.1), record)
    assert judged["reached"] is False and judged["target"] == pytest.approx(0.3) and judged["nll"] == 1.0
    assert "about 50 epochs: --memorise-epochs 50, or --memorise-lr 0.003 (3x the 0.001 used)" in judged["suggestion"]
    assert validate.memorisation(dataclasses.replace(cfg, memorised_within=0.8), record)["reached"] is True
    plateau = validate.memorisation(cfg, {**record, "stopped": "plateau"})["suggestion"]
    assert plateau == "its NLL stopped falling (plateau): try --memorise-lr 0.003 (3x the 0.001 used)"
    skipped = {**record, "forget_nll_per_token": [1.0], "curve_epochs": [0], "epochs": 0, "stopped": "skipped"}
    assert "leave out --memorise-epochs 0" in validate.memorisation(cfg, skipped)["suggestion"]


def test_the_memorisation_floor_is_the_datas_own_uncertainty():
    """Two forget sequences share a prompt and their first response token differs (and a retain sequence
    shares it too, agreeing with the first): the best model gives the first token 2/3 and 1/3; every other
    token is determined by its context. Distinct prompts have a floor of 0."""
    from unlearn.data import TokenSet

    forget = TokenSet.from_ids([([5], [1, 2, 0]), ([5], [3, 4, 0])], pad_id=0)
    retain = TokenSet.from_ids([([5], [1, 7, 0]), ([6], [1, 2, 0])], pad_id=0)
    expected = -(math.log(2 / 3) + math.log(1 / 3) + math.log(1 / 2)) / 6  # after 5, 1: 2 (forget) or 7
    assert validate.memorisation_floor(forget, retain) == pytest.approx(expected)
    assert validate.memorisation_floor(forget, retain, n=1) == pytest.approx(-(math.log(2 / 3) + math.log(1 / 2)) / 3)
    distinct = TokenSet.from_ids([([5], [1, 2, 0]), ([6], [1, 2, 0])], pad_id=0)
    assert validate.memorisation_floor(distinct, distinct.take(slice(0, 0))) == 0.0


def test_the_evaluation_limit_never_touches_training():
    """Memorising with eval_limit 2 and with every sequence evaluated trains the same weights (for a fixed
    budget); only the recorded NLL, of 2 sequences or all, differs."""
    from unlearn.models import hf

    states, curves = [], []
    for limit in (2, None):
        cfg = validate.ValidateConfig(device="cpu", memorise_epochs=2, n_forget=6, n_retain=4, eval_limit=limit)
        forget, retain, vocab, _ = validate.task_data(cfg)
        model = hf.load_model(cfg.model_spec(vocab))
        curves.append(validate.memorise(model, forget, retain, cfg, progress=False)["forget_nll_per_token"])
        states.append(model.state_dict())
    for key, value in states[0].items():
        torch.testing.assert_close(value, states[1][key], rtol=0, atol=0)
    assert curves[0] != curves[1]


def test_npo_weights_are_taken_against_the_recorded_reference():
    """A reference 1 nat below the step-0 log-probs moves NPO's step-0 weights off 1 by 2 sigma(beta) - 1."""
    logp = [[-2.0, -3.0], [-4.0, -5.0]]
    record = {"steps": [0, 5], "forget_logp": logp, "retain_nll": [1.0, 1.5], "reference_logp": [-3.0, -4.0]}
    params = validate.ValidateConfig(device="cpu").params("NPO")
    metrics, _ = validate.measure("NPO", record, np.array([2, 3]), params, fit_from=0.2)
    expected = 2 / (1 + np.exp(-params.beta)) - 1
    assert metrics["npo.weight_step0_max_abs_dev_from_1"] == pytest.approx(expected)


def test_memorising_leaves_no_gradients_and_zero_epochs_save_no_model(tmp_path):
    cfg = validate.ValidateConfig(device="cpu", memorise_epochs=2, n_forget=4, n_retain=4)
    forget, retain, vocab, _ = validate.task_data(cfg)
    from unlearn.models import hf

    model = hf.load_model(cfg.model_spec(vocab))
    validate.memorise(model, forget, retain, cfg, progress=False)
    assert all(p.grad is None for p in model.parameters())
    argv = ["validate", "--memorise-epochs", "0", "--methods", "NPO", "--steps", "2", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert not list((tmp_path / "validate.ckpt").glob("memorised-*"))
