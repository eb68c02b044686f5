"""`unlearn eval tofu`, `unlearn eval mia` and `unlearn data tofu-like` end to end, and the attacks against a model
that memorised its data."""

import json

import numpy as np
import pytest

from recipes.cli import main
from unlearn import tofu
from unlearn.metrics.mia import auc
from unlearn.metrics.tofu import FORGET_SET, SPLIT_KEYS, summarise

SPLIT_METRICS = [f"{s}.{k}" for s in tofu.EVAL_SETS for k in SPLIT_KEYS]


@pytest.fixture(scope="module")
def tofu_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tofu")
    assert main(["data", "tofu-like", "--out", str(out), "--authors", "10", "--set", "n_retain_perturbed=1"]) == 0
    return out


def eval_tofu(tofu_dir, out, *extra):
    argv = ["eval", "tofu", "--model", "tiny", "--data", str(tofu_dir), "--out", str(out), "--limit", "6",
            "--max-new-tokens", "4", "--device", "cpu", *extra]
    assert main(argv) == 0
    return json.loads((out / "eval.json").read_text())


@pytest.fixture(scope="module")
def tiny_eval(tofu_dir, tmp_path_factory):
    return eval_tofu(tofu_dir, tmp_path_factory.mktemp("eval"))


def test_eval_tofu_writes_every_metric_but_forget_quality_without_retain_logs(tiny_eval, capsys):
    assert set(tiny_eval["metrics"]) == {*SPLIT_METRICS, "model_utility"}
    assert "forget_quality" not in json.dumps(tiny_eval["metrics"])
    assert any("--retain-logs" in note for note in tiny_eval["notes"])
    assert all(np.isfinite(v) for v in tiny_eval["metrics"].values())


def test_eval_json_recomputes_its_aggregates(tiny_eval):
    """Every aggregate follows from the per-question values it keeps (nothing reported that cannot be checked)."""
    per_question = tiny_eval["per_question"]
    assert all(len(v["prob"]) == 6 for v in per_question.values())
    recomputed = summarise({name: {k: v for k, v in values.items()} for name, values in per_question.items()})
    assert recomputed == pytest.approx(tiny_eval["metrics"], rel=1e-12)
    assert tiny_eval["config"]["split"] == "forget10" and len(tiny_eval["model"]["identity"]) == 64


def test_a_model_scored_against_its_own_logs_has_forget_quality_one(tofu_dir, tiny_eval, tmp_path):
    own = tmp_path / "own.json"
    own.write_text(json.dumps(tiny_eval))
    doc = eval_tofu(tofu_dir, tmp_path / "again", "--retain-logs", str(own))
    assert doc["metrics"]["forget_quality"] == 1.0
    assert doc["per_question"][FORGET_SET]["truth_ratio"] == tiny_eval["per_question"][FORGET_SET]["truth_ratio"]


def test_open_unlearning_retain_logs_are_read(tofu_dir, tiny_eval, tmp_path):
    """open-unlearning's TOFU_EVAL.json stores R (false over true) per index: the same values give quality 1."""
    ratios = tiny_eval["per_question"][FORGET_SET]["truth_ratio"]
    logs = tmp_path / "TOFU_EVAL.json"
    logs.write_text(json.dumps({"forget_truth_ratio": {"agg_value": 0.5, "value_by_index": {
        str(i): {"score": r} for i, r in enumerate(ratios)}}}))
    assert eval_tofu(tofu_dir, tmp_path / "ou", "--retain-logs", str(logs))["metrics"]["forget_quality"] == 1.0


@pytest.mark.parametrize("argv, message", [
    (["--split", "forget05"], "was computed on split 'forget10', this evaluation is on 'forget05'"),
    (["--split", "forget50"], "splits there: forget01, forget05, forget10"),
])
def test_eval_tofu_refuses_mismatched_input_before_work(tofu_dir, tiny_eval, tmp_path, capsys, argv, message):
    logs = tmp_path / "retain.json"
    logs.write_text(json.dumps(tiny_eval))
    out = tmp_path / "out"
    assert main(["eval", "tofu", "--model", "tiny", "--data", str(tofu_dir), "--out", str(out),
                 "--retain-logs", str(logs), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "eval.json").exists()


def test_a_tofu_file_with_a_missing_field_is_named(tofu_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in tofu_dir.iterdir():
        (broken / path.name).write_text(path.read_text())
    lines = (broken / "retain_perturbed.json").read_text().splitlines()
    record = json.loads(lines[2])
    del record["paraphrased_answer"]
    lines[2] = json.dumps(record)
    (broken / "retain_perturbed.json").write_text("\n".join(lines) + "\n")
    assert main(["eval", "tofu", "--model", "tiny", "--data", str(broken), "--out", str(tmp_path / "o")]) == 2
    assert "retain_perturbed.json:3: missing field 'paraphrased_answer'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # a refused evaluation leaves no folder behind


def test_tiny_holds_an_evaluation_of_the_default_length():
    """Prompt and answer (max_length) plus greedy new tokens fit tiny's positions, so evaluating it does not make
    transformers warn that generation ran past the model's length."""
    from recipes.eval import TofuEvalConfig
    from unlearn.models.hf import ARCHITECTURES

    cfg = TofuEvalConfig(data="unused")
    assert cfg.max_length + cfg.max_new_tokens <= ARCHITECTURES["tiny"]["max_position_embeddings"]


def test_an_evaluation_never_replaces_eval_json_without_overwrite(tofu_dir, tmp_path, capsys):
    """Another benchmark's (or the retain model's) eval.json in --out is refused before any work, and replaced only
    with --overwrite; a TOFU directory likewise."""
    out = tmp_path / "e"
    eval_tofu(tofu_dir, out)
    before = (out / "eval.json").read_text()
    mia = ["eval", "mia", "--model", "tiny", "--data", str(tofu_dir), "--device", "cpu", "--limit", "6", "--out",
           str(out)]
    assert main(mia) == 2
    assert f"--out {out}: already holds an evaluation (eval.json); give a new folder, or --overwrite" in \
        capsys.readouterr().err
    assert (out / "eval.json").read_text() == before
    assert main([*mia, "--overwrite"]) == 0
    assert json.loads((out / "eval.json").read_text())["command"] == "eval mia"
    assert main(["data", "tofu-like", "--out", str(tofu_dir)]) == 2
    assert "already holds a TOFU directory (full.json)" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--attacks", "loss,loss"], "attacks must be distinct"),
    (["--attacks", "loss,reference"], "the reference attack needs --reference-model"),
    (["--k", "0"], "k must lie in (0, 1]"),
])
def test_eval_mia_refuses_bad_options(tofu_dir, tmp_path, capsys, argv, message):
    assert main(["eval", "mia", "--model", "tiny", "--data", str(tofu_dir), "--out", str(tmp_path / "o"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_eval_mia_refuses_a_split_that_chooses_no_file(tofu_dir, tmp_path, capsys):
    files = ["--forget", str(tofu_dir / "forget05.json"), "--holdout", str(tofu_dir / "holdout05.json")]
    assert main(["eval", "mia", "--model", "tiny", *files, "--split", "forget05", "--out", str(tmp_path / "o")]) == 2
    assert "--split forget05 chooses the files of --data; --forget and --holdout name them" in capsys.readouterr().err


def test_eval_mia_end_to_end_with_priv_leak(tofu_dir, tmp_path, capsys):
    base = ["eval", "mia", "--model", "tiny", "--data", str(tofu_dir), "--device", "cpu", "--limit", "12"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    first = json.loads((tmp_path / "a" / "eval.json").read_text())
    attacks = ("loss", "zlib", "min_k", "min_k++")
    assert set(first["metrics"]) == {f"mia.{a}.auc" for a in attacks}
    for a in attacks:  # the AUC is the rank statistic of the per-sample scores it keeps
        scores = first["per_sample"]
        assert first["metrics"][f"mia.{a}.auc"] == auc(scores["forget"][a], scores["holdout"][a])
    assert main([*base, "--out", str(tmp_path / "b"), "--retain-logs", str(tmp_path / "a" / "eval.json"),
                 "--attacks", "loss,min_k"]) == 0
    second = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert second["metrics"]["mia.loss.priv_leak"] == 0.0  # the same model: no leakage relative to itself
    other = [*base[:-1], "6", "--out", str(tmp_path / "x"), "--retain-logs", str(tmp_path / "a" / "eval.json")]
    capsys.readouterr()
    assert main(other) == 2 and not (tmp_path / "x" / "eval.json").exists()  # retain logs of other data (limit)
    assert "was computed on other forget/holdout data" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "c"), "--reference-model", "tiny", "--attacks", "reference"]) == 0
    third = json.loads((tmp_path / "c" / "eval.json").read_text())
    assert third["metrics"] == {"mia.reference.auc": 0.5}  # the same model as its own reference: all scores 0


def test_loss_attack_detects_memorised_facts():
    """A model fine-tuned on its facts (tofu-toy's original, fast preset) tells its forget set from authors it never
    saw: the LOSS attack's AUC on forget10 against holdout10 is at least 0.9; the retain model, which never saw the
    forget authors either, cannot (AUC near chance)."""
    from sims.experiments import tofu_toy
    from unlearn.data import word_tokenizer
    from unlearn.metrics.mia import mia_scores

    cfg = tofu_toy.PRESETS["fast"]
    files = tofu.tofu_like(cfg.data_config())
    tokenizer = word_tokenizer(tofu_toy.texts_of(files))
    data = {name: tofu_toy.tokens(tokenizer, tofu_toy.examples(files, name))
            for name in ("forget10.json", "holdout10.json")}
    texts = {name: [r["answer"] for r in files[name]] for name in data}
    aucs = {}
    for which, trained_on in (("original", "full.json"), ("forget10", "retain90.json")):
        model = tofu_toy.finetuned(cfg, len(tokenizer), tofu_toy.tokens(
            tokenizer, tofu_toy.examples(files, trained_on, *tofu_toy.PRETRAINING)), which)
        scores = {name: mia_scores(model, data[name], texts[name], ["loss"], 0.4)["loss"] for name in data}
        aucs[which] = auc(scores["forget10.json"], scores["holdout10.json"])
    assert aucs["original"] >= 0.9, aucs
    assert abs(aucs["forget10"] - 0.5) < 0.25, aucs


def test_data_tofu_like_refuses_a_bad_size(tmp_path, capsys):
    assert main(["data", "tofu-like", "--out", str(tmp_path / "d"), "--authors", "3"]) == 2
    assert "n_authors must be >= 10" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_greedy_answers_follow_left_padding():
    """Batched greedy answers equal one-at-a-time answers (left padding must not change what a prompt yields)."""
    from unlearn.data import byte_tokenizer
    from unlearn.metrics.generate import greedy_answers
    from unlearn.metrics.tofu import TofuEvalSettings
    from unlearn.models import hf

    model = hf.load_model(hf.ModelSpec("tiny", vocab_size=258, seed=3)).eval()
    prompts = ["Who?", "Where was the author born, and when?", "Why"]
    settings = TofuEvalSettings(batch_size=3, max_new_tokens=6)
    batched = greedy_answers(model, byte_tokenizer(), prompts, settings)
    single = [greedy_answers(model, byte_tokenizer(), [p], settings)[0] for p in prompts]
    assert batched == single and not model.training  # the model's mode is restored


def test_run_and_validate_record_the_field_metrics_at_every_evaluation(tofu_dir, tmp_path):
    common = ["--model", "tiny", "--task", "tofu", "--data", str(tofu_dir), "--eval-every", "2", "--eval-limit", "4"]
    assert main(["run", *common, "--method", "NPO+RT", "--steps", "4", "--eval", "tofu", "--out",
                 str(tmp_path / "run")]) == 0
    history = json.loads((tmp_path / "run" / "run.json").read_text())["history"]
    assert history["eval_steps"] == [0, 2, 4]
    assert {f"tofu.{k}" for k in SPLIT_METRICS} | {"tofu.model_utility"} <= set(history["evals"])
    assert all(len(history["evals"][f"tofu.{k}"]) == 3 for k in SPLIT_METRICS)
    assert main(["validate", *common, "--methods", "NPO", "--steps", "4", "--memorise-epochs", "0", "--eval", "mia",
                 "--out", str(tmp_path / "val")]) == 0
    curves = json.loads((tmp_path / "val" / "validate.json").read_text())["curves"]["NPO"]
    assert set(curves["eval"]) == {f"mia.{a}.auc" for a in ("loss", "zlib", "min_k", "min_k++")}
    assert all(len(v) == len(curves["steps"]) for v in curves["eval"].values())


@pytest.mark.parametrize("argv, message", [
    (["run", "--task", "facts", "--eval", "tofu"], "--eval takes tofu or mia and reads the TOFU directory"),
    (["run", "--task", "facts", "--data", "D"], "--data D does not apply"),
    (["run", "--task", "tofu"], "--task tofu needs --data DIR"),
    (["validate", "--task", "tofu", "--data", "D", "--retain-logs", "x.json"], "--retain-logs is read only with"),
    (["run", "--model", "markov", "--eval", "tofu"], "--eval tofu does not apply"),
])
def test_field_evaluation_options_are_refused_where_they_do_not_apply(tmp_path, capsys, argv, message):
    argv = [argv[0], *(["--model", "tiny"] if "--model" not in argv else []), *argv[1:], "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
