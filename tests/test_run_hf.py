"""`unlearn run` on Hugging Face models under the TOFU protocol: epochs, accumulation, LoRA, bf16, the memory
plan, alternative responses, OUT/hf, resuming, and `unlearn relearn` on the result."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from recipes.cli import main
from theory import objectives as T


@pytest.fixture(scope="module")
def tofu_dir(tmp_path_factory):
    """A generated TOFU directory of 10 authors: forget10 is 1 author (20 questions), retain90 the other 9."""
    out = tmp_path_factory.mktemp("tofu")
    assert main(["data", "tofu-like", "--out", str(out), "--authors", "10", "--set", "n_retain_perturbed=1"]) == 0
    return out


def tofu_run(tofu_dir, *extra):
    return ["run", "--model", "tiny", "--task", "tofu", "--data", str(tofu_dir), "--split", "forget10",
            "--eval-limit", "8", *extra]


def _nll_of_loaded(model, tofu_dir, which):
    """NLL per token of ``model`` on the run's first 8 forget or retain sequences, under the run's bf16
    autocast."""
    from recipes import validate
    from unlearn.metrics.tokens import nll_per_token

    vcfg = validate.ValidateConfig(model="tiny", task="tofu", data=str(tofu_dir), split="forget10", device="cpu")
    forget, retain, _, _ = validate.task_data(vcfg, report=None)
    data = (forget if which == "forget" else retain).take(slice(0, 8))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return nll_per_token(model.eval(), data)


@pytest.mark.parametrize("save", ["adapter", "merged"])
def test_the_run_folder_is_a_hugging_face_model(save, tofu_dir, tmp_path):
    """LoRA in bf16 for 3 epochs: OUT/hf loads with peft (adapter) or transformers (merged), and the loaded model
    gives the retain NLL the run recorded at its end (NPO+RT's retain term moves it most), not the one it started
    from."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from unlearn.models import hf

    out = tmp_path / save
    argv = tofu_run(tofu_dir, "--method", "NPO+RT", "--epochs", "3", "--lora", "4", "--precision", "bf16",
                    "--lr", "5e-2", "--save", save, "--out", str(out))
    assert main(argv) == 0
    doc = json.loads((out / "run.json").read_text())
    assert doc["hf"]["save"] == save and doc["training"]["steps"] == 3 and doc["training"]["epochs"] == 3
    assert {"torch", "transformers", "peft", "git_sha"} <= set(doc["environment"])
    assert doc["seconds"] > 0 and doc["peak_memory_bytes"] > 0
    config = json.loads((out / "hf" / "config.json").read_text())
    assert (config["pad_token_id"], config["eos_token_id"], config["bos_token_id"]) == (0, 1, None)  # bytes
    before, after = doc["before"]["retain_nll"], doc["after"]["retain_nll"]
    assert abs(after - before) > 0.05  # the adapter moved the model: a loader of the base model would be caught
    if save == "adapter":
        assert (out / "hf" / "adapter_config.json").is_file() and (out / "hf" / "config.json").is_file()
        base = hf.load_model(hf.ModelSpec("tiny", dtype="bf16", vocab_size=258))
        model = PeftModel.from_pretrained(base, out / "hf")
    else:
        assert not (out / "hf" / "adapter_config.json").exists()
        model = AutoModelForCausalLM.from_pretrained(out / "hf", dtype=torch.bfloat16)
    assert _nll_of_loaded(model, tofu_dir, "retain") == pytest.approx(after, abs=0.01)
    from recipes.eval import ModelConfig, load_for_eval  # what `unlearn eval --model OUT` reads

    loaded, _, _ = load_for_eval(str(out), ModelConfig(device="cpu"))
    assert next(loaded.parameters()).dtype == torch.bfloat16  # the run's precision
    assert _nll_of_loaded(loaded, tofu_dir, "retain") == pytest.approx(after, abs=0.01)


def test_gradient_checkpointing_trains_every_lora_b(tofu_dir, tmp_path):
    """peft with gradient checkpointing: every LoRA B matrix (zero at the start) has moved after a few steps."""
    out = tmp_path / "gc"
    assert main(tofu_run(tofu_dir, "--method", "NPO", "--steps", "3", "--lora", "4", "--gradient-checkpointing",
                         "--lr", "1e-2", "--out", str(out))) == 0
    adapter = load_file(str(out / "hf" / "adapter_model.safetensors"))
    b = {k: v for k, v in adapter.items() if "lora_B" in k}
    assert len(b) == 2 * 7 and all(v.norm() > 0 for v in b.values())


def test_epochs_accumulation_and_warmup_follow_the_protocol(tofu_dir, tmp_path):
    """The TOFU protocol by default: 10 epochs of steps of 4 x 8 sequences (20 forget questions: one step of
    20 per epoch, in 8 micro-batches of 2 or 3), a warm-up of one epoch, weight decay 0.01, lr 1e-5, evaluated
    every epoch, SimNPO+RT with its released forget10 values; --batch-size 2 --grad-accum 5 gives two steps of 10
    per epoch."""
    out = tmp_path / "p"
    assert main(tofu_run(tofu_dir, "--method", "SimNPO+RT", "--out", str(out))) == 0
    t = json.loads((out / "run.json").read_text())["training"]
    assert (t["epochs"], t["steps"], t["steps_per_epoch"], t["step_batch"], t["micro_batch"]) == (10, 10, 1, 20, 3)
    assert (t["warmup_steps"], t["weight_decay"], t["lr"], t["eval_every"]) == (1, 0.01, 1e-5, 1)
    assert (t["beta"], t["gamma"], t["lam"], t["retain_norm"]) == (4.5, 0.0, 8.0, "token")
    out = tmp_path / "q"
    assert main(tofu_run(tofu_dir, "--method", "GA", "--epochs", "2", "--batch-size", "2", "--grad-accum", "5",
                         "--out", str(out))) == 0
    doc = json.loads((out / "run.json").read_text())
    assert (doc["training"]["steps"], doc["training"]["steps_per_epoch"]) == (4, 2)
    assert doc["history"]["eval_steps"] == [0, 2, 4] and len(doc["history"]["loss"]) == 4


def test_accumulated_micro_batches_of_unequal_sizes_make_the_step_of_the_whole_batch(tofu_dir, tmp_path):
    """Steps of 20 forget (and 20 retain) sequences in 8 micro-batches of 3 or 2 record the losses of one
    micro-batch of 20 and end at its weights (float32 sums in another order aside): each micro-batch's mean is
    weighted by its size, the token-normalised retain term's by its response tokens. Unweighted, every
    micro-batch 1/8, the recorded step loss would be the mean of the micro-batch means instead (checked to differ
    here)."""
    docs, weights = {}, {}
    for name, extra in (("whole", ["--batch-size", "20", "--grad-accum", "1"]),
                        ("parts", ["--batch-size", "3", "--grad-accum", "8"])):
        out = tmp_path / name
        assert main(tofu_run(tofu_dir, "--method", "GA+RT", "--retain-norm", "token", "--steps", "3", "--lr", "1e-2",
                             *extra, "--out", str(out))) == 0
        weights[name] = load_file(str(out / "hf" / "model.safetensors"))
        docs[name] = json.loads((out / "run.json").read_text())
        assert docs[name]["training"]["step_batch"] == 20
    for term in ("forget", "retain"):
        assert docs["parts"]["history"]["terms"][term] == pytest.approx(docs["whole"]["history"]["terms"][term],
                                                                          rel=1e-5)
    for key, value in weights["whole"].items():
        torch.testing.assert_close(weights["parts"][key], value, rtol=1e-3, atol=2e-5)  # Adam: ~3e-2 moves
    # the unweighted mean of the first step's micro-batch means, from the per-sequence NLL of the original model
    from recipes import validate
    from unlearn.models import hf
    from unlearn.train import shuffled_batches

    vcfg = validate.ValidateConfig(model="tiny", task="tofu", data=str(tofu_dir), split="forget10", device="cpu")
    forget, _, _, _ = validate.task_data(vcfg, report=None)
    model = hf.load_model(hf.ModelSpec("tiny", vocab_size=258))
    batch = shuffled_batches(len(forget), 20, 0, "run", "forget")[0](0)[0]
    with torch.no_grad():
        data = forget.take(batch).trim()
        from unlearn.logprobs import sequence_logprobs

        logp = sequence_logprobs(model(data.input_ids, attention_mask=data.attention_mask).logits, data.labels,
                                 data.mask).logp
    unweighted = float(torch.stack([part.mean() for part in logp.tensor_split(8)]).mean())
    assert docs["whole"]["history"]["terms"]["forget"][0] == pytest.approx(float(logp.mean()), rel=1e-5)
    assert abs(unweighted - float(logp.mean())) > 1e-3


@pytest.mark.parametrize("method, extra", [("NPO+RT", []), ("DPO+RT", ["--lora", "4"])])
def test_an_interrupted_run_resumes_to_the_same_weights(method, extra, tofu_dir, tmp_path, monkeypatch):
    """Killed right after the first epoch's checkpoint, the same command resumes there and ends at the weights
    and history of an uninterrupted run, bitwise (CPU): every weight training, or a LoRA adapter with DPO's
    alternative answers drawn per step; run.ckpt is gone once run.json is written."""
    from recipes import run as run_recipe

    saved = "adapter_model.safetensors" if extra else "model.safetensors"
    argv = lambda out: tofu_run(tofu_dir, "--method", method, "--epochs", "3", "--batch-size", "2",
                                "--grad-accum", "5", "--lr", "1e-2", *extra, "--out", str(out))
    assert main(argv(tmp_path / "whole")) == 0

    written = []
    real = run_recipe.atomic_write

    def killed_after_checkpoint(path, write):
        real(path, write)
        if path.name == "state.pt":
            written.append(path)
            raise KeyboardInterrupt  # as Ctrl-C would, right after the file is whole

    monkeypatch.setattr(run_recipe, "atomic_write", killed_after_checkpoint)
    assert main(argv(tmp_path / "cut")) == 130  # the CLI's exit status for an interrupt
    assert written and not (tmp_path / "cut" / "run.json").exists()
    monkeypatch.setattr(run_recipe, "atomic_write", real)
    assert main(argv(tmp_path / "cut")) == 0
    assert not (tmp_path / "cut" / "run.ckpt").exists()
    whole, cut = (load_file(str(tmp_path / d / "hf" / saved)) for d in ("whole", "cut"))
    assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)
    docs = [json.loads((tmp_path / d / "run.json").read_text()) for d in ("whole", "cut")]
    assert docs[0]["history"] == docs[1]["history"] and docs[0]["after"] == docs[1]["after"]


def test_a_checkpoint_of_other_settings_is_refused(tofu_dir, tmp_path, monkeypatch, capsys):
    from recipes import run as run_recipe

    real = run_recipe.atomic_write

    def killed(path, write):
        real(path, write)
        if path.name == "state.pt":
            raise KeyboardInterrupt

    monkeypatch.setattr(run_recipe, "atomic_write", killed)
    assert main(tofu_run(tofu_dir, "--method", "GA", "--epochs", "2", "--out", str(tmp_path / "x"))) == 130
    monkeypatch.setattr(run_recipe, "atomic_write", real)
    assert main(tofu_run(tofu_dir, "--method", "GA", "--epochs", "3", "--out", str(tmp_path / "x"))) == 2
    assert "a checkpoint of a run with other settings (epochs 2 there, 3 now)" in capsys.readouterr().err
    assert main(tofu_run(tofu_dir, "--method", "GA", "--epochs", "3", "--overwrite", "--out", str(tmp_path / "x"))) == 0


def test_a_checkpoint_written_before_a_setting_existed_resumes_at_its_default(tofu_dir, tmp_path, monkeypatch,
                                                                             capsys):
    """A checkpoint whose recorded settings lack a key that RunConfig has gained since (here fused_logprobs, as in
    checkpoints written before it existed) counts that key at its default, so the same command resumes it, also
    with values given that equal what it resolved (the protocol's lr, precision float32 for auto on the CPU)."""
    from recipes import run as run_recipe

    real = run_recipe.atomic_write

    def killed(path, write):
        real(path, write)
        if path.name == "state.pt":
            raise KeyboardInterrupt

    argv = tofu_run(tofu_dir, "--method", "GA", "--epochs", "2", "--out", str(tmp_path / "x"))
    monkeypatch.setattr(run_recipe, "atomic_write", killed)
    assert main(argv) == 130
    monkeypatch.setattr(run_recipe, "atomic_write", real)
    path = tmp_path / "x" / "run.ckpt" / "state.pt"
    state = torch.load(path, weights_only=True)
    del state["config"]["fused_logprobs"]
    torch.save(state, path)
    assert main([*argv, "--lr", "1e-5", "--precision", "float32"]) == 0
    assert f"resuming from {path} at step" in capsys.readouterr().out
    assert json.loads((tmp_path / "x" / "run.json").read_text())["training"]["precision"] == "float32"


@pytest.mark.parametrize("method", ["IDK+RT", "DPO", "DPO+RT", "GA+Mismatch+KL"])
def test_alternative_response_methods_run_on_a_hugging_face_model(method, tofu_dir, tmp_path):
    out = tmp_path / "alt"
    assert main(tofu_run(tofu_dir, "--method", method, "--epochs", "1", "--lr", "1e-2", "--out", str(out))) == 0
    doc = json.loads((out / "run.json").read_text())
    assert doc["config"]["method"] == method and np.isfinite(doc["history"]["loss"]).all()


def _alternative_batch(tofu_dir, tmp_path, method, alternatives=None):
    """(model, reference, losses_fn, forget, alternative set) of a tiny run's first step, built by the run's own
    functions, with the model moved off its reference (every weight jittered) so that log-ratios are not 0."""
    from recipes import run as run_recipe
    from recipes import validate
    from unlearn.losses import unlearning_losses
    from unlearn.models import hf
    from unlearn.objectives import get_method
    from unlearn.reference import make_reference

    cfg = run_recipe.RunConfig(model="tiny", task="tofu", data=str(tofu_dir), split="forget10", method=method,
                               alternatives=alternatives)
    vcfg = cfg.as_validate_config()
    forget_ex, retain_ex = validate.task_examples(vcfg, lambda line: None)
    tok = validate.tokenizer_of("tiny")
    forget, retain = (validate.tokenize(vcfg, ex, tok) for ex in (forget_ex, retain_ex))
    alt = run_recipe.alternative_set(cfg, vcfg, forget_ex, retain_ex, tok)
    model = hf.load_model(vcfg.model_spec(258))
    reference = make_reference("cached", model, forget, retain, alternatives=alt.data,
                               with_logits="kl" in get_method(method).needs["retain"])
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    losses = unlearning_losses(method, cfg.params(), forget, retain, reference,
                               alternative=lambda f, rows: alt.data.take(rows))
    return model, reference, losses, forget, alt


def _grad(model, value):
    model.zero_grad()
    value.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _theory_weights(method, r_w, r_l, logp_l, params):
    """(dL/dlogp_alt, dL/dlogp_forget) of the method's forget term, from theory.objectives (and by hand: the
    NLL of an answer has weight -1)."""
    if method == "DPO":
        return T.dpo_weights(r_w, r_l, params.beta)
    if method == "IDK+RT":  # L = -logp_alt
        return -np.ones_like(r_w), np.zeros_like(r_l)
    return -params.mismatch * np.ones_like(r_w), T.ga_weight(logp_l)  # GA+Mismatch: L = logp - mismatch logp_alt


@pytest.mark.parametrize("method", ["DPO", "IDK+RT", "GA+Mismatch+KL"])
def test_alternative_gradients_are_the_theory_weights_times_the_log_prob_gradients(method, tofu_dir, tmp_path):
    """The forget term's gradient through the run's data, alternatives and cached reference equals
    theory.objectives' closed form: sum_b [w_alt(b) grad logp_alt(b) + w_f(b) grad logp_f(b)] / B, with the
    weights at log-ratios computed here from the model and the reference model's log-probs on the same texts
    (DPO: a refusal answer wins, the forget answer loses; IDK: the refusal's NLL; GA+Mismatch: ascent on the
    forget answer plus the NLL of a retain answer)."""
    from recipes.run import RunConfig
    from unlearn.logprobs import sequence_logprobs
    from unlearn.models import hf

    model, reference, losses, forget, alt = _alternative_batch(tofu_dir, tmp_path, method)
    f_index = torch.arange(6)
    rows = alt.draw(f_index, 0, 0, 0)
    got = _grad(model, losses(model, (f_index, torch.arange(6), rows))["forget"].mean())

    ref_model = hf.load_model(hf.ModelSpec("tiny", vocab_size=258))  # the unjittered model is the reference

    def logp(m, data):
        batch = data.trim()
        return sequence_logprobs(m(batch.input_ids, attention_mask=batch.attention_mask).logits, batch.labels,
                                 batch.mask).logp

    lose, win = forget.take(f_index), alt.data.take(rows)
    with torch.no_grad():
        logp_l = logp(model, lose).double().numpy()
        r_l = logp_l - logp(ref_model, lose).double().numpy()
        r_w = (logp(model, win) - logp(ref_model, win)).double().numpy()
    assert np.abs(r_l).max() > 0.1  # the model is off its reference: DPO's weights are not all 2 sigma(0) = 1
    w_alt, w_f = _theory_weights(method, r_w, r_l, logp_l, RunConfig().params())
    expected = sum(float(w_alt[b]) * _grad(model, logp(model, win.take(slice(b, b + 1)))[0]) +
                   float(w_f[b]) * _grad(model, logp(model, lose.take(slice(b, b + 1)))[0])
                   for b in range(len(f_index))) / len(f_index)
    assert expected.abs().max() > 1e-2  # float32 sums of ~35k products: agreement to 2e-6 absolute
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=2e-6)


def test_idk_draws_built_in_refusals_and_a_file_replaces_them(tofu_dir, tmp_path):
    """IDK+RT's alternatives are the built-in refusals (one drawn per forget sequence, seeded by the step), and
    a file of alternatives replaces them."""
    from unlearn import alternatives

    model, _, losses, forget, alt = _alternative_batch(tofu_dir, tmp_path, "IDK+RT")
    assert alt.counts.tolist() == [len(alternatives.IDK_ANSWERS)] * len(forget)
    first, again, other = (alt.draw(torch.arange(20), 0, s, 0) for s in (0, 0, 1))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert ((first >= alt.offsets) & (first < alt.offsets + alt.counts)).all()  # each row is its prompt's
    path = tmp_path / "alt.jsonl"
    from unlearn import tofu

    questions = [ex.prompt for ex in tofu.read_training(tofu_dir, "forget10")[0]]
    path.write_text("\n".join(json.dumps({"prompt": q, "alternatives": ["No idea.", "Unknown to me."]})
                              for q in questions))
    _, _, _, _, alt = _alternative_batch(tofu_dir, tmp_path, "IDK+RT", str(path))
    assert alt.counts.tolist() == [2] * len(questions)


def test_the_reference_plan_picks_what_fits():
    """Llama-2-7B's shape (6.74e9 weights), LoRA rank 32 (~40M), bf16, TOFU retain90's cached retain logits
    (3,600 x 128 x 32,000 floats: 59 GB): auto takes cached when it fits, the adapter when the logits do not,
    a copy without LoRA, and refuses with the sizes when nothing fits."""
    from unlearn import memory

    n, lora, logits = 6_738_415_616, 39_976_960, memory.cached_reference_bytes(400, 3600, 128, 32000, True)
    assert logits == 4 * 400 + 4 * 3600 * 128 * 32000
    gib = 2**30
    assert memory.plan_reference("auto", n, lora, "bf16", logits, 200 * gib)[0] == "cached"
    assert memory.plan_reference("auto", n, lora, "bf16", logits, 80 * gib)[0] == "adapter"
    assert memory.plan_reference("auto", n, 0, "bf16", 4 * 400, 80 * gib)[0] == "cached"  # NPO: log-probs only
    assert memory.plan_reference("auto", n, 0, "bf16", logits, 140 * gib)[0] == "cached"  # 122 GiB: fits an H200
    mode, plan, why = memory.plan_reference("auto", n, 0, "bf16", logits, 120 * gib)
    assert mode == "copy" and plan["peak_bytes"] == 2 * n + 2 * n + 3 * 2 * n and "frozen copy" in why
    with pytest.raises(ValueError, match=r"--reference auto: no reference fits the 60.00 GiB free .*cached 122.41 GiB; "
                                         r"copy 62.76 GiB"):
        memory.plan_reference("auto", n, 0, "bf16", logits, 60 * gib)
    assert memory.plan_reference("copy", n, lora, "bf16", logits, None)[0] == "copy"  # unknown free: as asked
    # FSDP2 over 2 ranks: the model, gradients and moments halve on each; a frozen copy stays whole on every rank
    one, two = (memory.plan_reference("copy", n, 0, "bf16", 0, None, shards)[1] for shards in (1, 2))
    assert two["weights_and_optimizer_bytes"] == one["weights_and_optimizer_bytes"] // 2 == 4 * n
    assert two["reference_bytes"] == one["reference_bytes"] == 2 * n and two["peak_bytes"] == 4 * n + 2 * n


def test_the_tofu_protocol_on_a_7b_shape_plans_within_one_80_gb_gpu():
    """NPO+RT and NPO+KL with LoRA 32 in bf16-mixed on Llama-2-7B's shape and TOFU forget10's sizes (400 forget,
    3,600 retain answers of 128 tokens), planned on the meta device against an H100's 79 GiB free: both fit, NPO+RT
    with the cached forget log-probs, NPO+KL with the adapter (its retain logits would need 59 GB more)."""
    from recipes.run import RunConfig, plan_run

    cfg = RunConfig(model="llama-7b-shape", task="facts", method="NPO+RT", lora=32, precision="bf16-mixed")
    plan = plan_run(cfg, 400, 3600, 128, None, 79 * 2**30)
    assert plan.reference == "cached" and plan.n_parameters == 6_738_415_616
    assert 1.05 * plan.bytes["peak_bytes"] + 2**30 <= 79 * 2**30 and plan.bytes["peak_bytes"] > 6.7e9 * 6
    assert (plan.steps, plan.steps_per_epoch, plan.step_batch, plan.warmup_steps) == (130, 13, 32, 13)
    kl = plan_run(RunConfig(model="llama-7b-shape", task="facts", method="NPO+KL", lora=32, precision="bf16-mixed"),
                  400, 3600, 128, None, 79 * 2**30)
    assert kl.reference == "adapter" and kl.bytes["reference_bytes"] == 0


@pytest.mark.parametrize("method, model, split, want", [
    ("NPO+RT", "tiny", "forget10", {"beta": 0.1, "lam": 1.0, "retain_norm": "token"}),
    ("NPO+KL", "tiny", "forget05", {"beta": 0.1, "lam": 1.0}),
    ("GA+RT", "tiny", "forget05", {"lam": 1.0, "retain_norm": "sequence"}),
    ("IDK+RT", "tiny", "forget05", {"lam": 1.0, "retain_norm": "sequence"}),
    ("DPO+RT", "tiny", "forget05", {"beta": 0.1, "lam": 1.0, "retain_norm": "token"}),
    ("SimNPO+RT", "tiny", "forget05", {"beta": 2.5, "gamma": 0.0, "lam": 1 / 0.1375, "retain_norm": "token"}),
    ("SimNPO+RT", "tiny", "forget10", {"beta": 4.5, "gamma": 0.0, "lam": 8.0, "retain_norm": "token"}),
    ("SimNPO+RT", "tiny", "forget01", {"beta": 4.5, "gamma": 0.0, "lam": 8.0, "retain_norm": "token"}),
    ("SimNPO+KL", "tiny", "forget05", {"beta": 2.5, "gamma": 0.0, "lam": 1 / 0.1375}),
    ("SimNPO", "tiny", "forget05", {"beta": 2.5, "gamma": 0.0}),
    ("SimNPO+RT", "markov", None, {"beta": 0.1, "gamma": 0.0, "lam": 1.0, "retain_norm": "sequence"}),
])
def test_each_method_takes_its_published_hyperparameters(method, model, split, want, tofu_dir):
    """Hugging Face models: beta 0.1 and weights 1 (the NPO paper's TOFU runs), the retain NLL per token beside
    NPO, SimNPO and DPO (per sequence beside GA and IDK, whose released terms are token means too); the SimNPO
    methods SimNPO's released TOFU values (forget05: beta 2.5, forget weight 0.1375, so lam = 1/0.1375; forget10
    and forget01: 4.5, 0.125). The toy models keep MethodParams' defaults. The method reads exactly these keys,
    and a given value wins."""
    from recipes.run import HYPERPARAMETERS, RunConfig
    from unlearn.objectives import MethodParams

    data = {"task": "tofu", "data": str(tofu_dir), "split": split} if split else {}
    cfg = RunConfig(model=model, method=method, **data)
    protocol = cfg.protocol()
    assert {key: protocol[key] for key in HYPERPARAMETERS if key in protocol} == pytest.approx(want)
    assert cfg.params() == MethodParams(**want)
    other = {"beta": 3.0, "lam": 0.5, "retain_norm": {"token": "sequence", "sequence": "token"}.get(
        want.get("retain_norm"))}
    given = {key: value for key, value in other.items() if key in want}
    assert RunConfig(model=model, method=method, **given, **data).params() == MethodParams(**{**want, **given})


def test_a_run_folder_is_evaluated_with_the_prompt_it_trained_on(tofu_dir, tmp_path, capsys, monkeypatch):
    """A run on TOFU's Llama-2 template: `unlearn eval tofu|mia --model RUN` asks its model the same way (eval.json
    and --show-config show the template); a template given to eval explicitly stays. RUN/hf alone (an
    architecture's weights, without a tokenizer) is refused, naming the run folder to give instead; an
    architecture's name is not a folder, also where the working directory is a run folder."""
    run = tmp_path / "run"
    template = "[INST] {prompt} [/INST]"
    assert main(tofu_run(tofu_dir, "--method", "NPO", "--steps", "1", "--template", template, "--out", str(run))) == 0
    for benchmark, extra in (("tofu", ["--data", str(tofu_dir), "--limit", "2"]),
                             ("mia", ["--data", str(tofu_dir), "--limit", "4"]),
                             ("tofu", ["--data", str(tofu_dir), "--limit", "2", "--template", "Q: {prompt} A:"])):
        out = tmp_path / f"eval-{benchmark}-{len(extra)}"
        assert main(["eval", benchmark, "--model", str(run), *extra, "--out", str(out)]) == 0
        config = json.loads((out / "eval.json").read_text())["config"]
        asked = extra[-1] if "--template" in extra else template
        assert (config["prompt_format"], config["template"]) == ("plain" if asked == template else "auto", asked)
    capsys.readouterr()
    weights_alone = ["eval", "tofu", "--model", str(run / "hf"), "--data", str(tofu_dir), "--out", str(tmp_path / "x")]
    assert main(weights_alone) == 2
    assert f"a model without its tokenizer; evaluate the run folder {run}," in capsys.readouterr().err
    assert main(["eval", "tofu", "--model", str(run), "--data", str(tofu_dir), "--show-config"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["template"] == template
    from recipes.eval import ModelConfig, load_for_eval

    monkeypatch.chdir(run)
    assert load_for_eval("tiny", ModelConfig(device="cpu"))[0] is not None


def test_a_runs_adapter_alone_is_refused_naming_the_run_folder(tofu_dir, tmp_path, capsys):
    """RUN/hf of a LoRA run is a peft adapter, which names no base model or precision: eval refuses it before
    any work, pointing at the run folder."""
    run = tmp_path / "run"
    assert main(tofu_run(tofu_dir, "--method", "NPO", "--steps", "1", "--lora", "2", "--out", str(run))) == 0
    capsys.readouterr()
    adapter = ["eval", "tofu", "--model", str(run / "hf"), "--data", str(tofu_dir), "--out", str(tmp_path / "x")]
    assert main(adapter) == 2
    assert f"--model {run / 'hf'}: a peft adapter; evaluate the run folder {run}," in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_run_folder_is_evaluated_on_the_split_it_unlearned(tofu_dir, tmp_path):
    """A run on forget05: `unlearn eval tofu|mia --model RUN` evaluates forget05 where --split is left at its
    default (forget10 would count authors the run kept as forgotten); a split given explicitly stays."""
    run = tmp_path / "run"
    assert main(tofu_run(tofu_dir, "--method", "NPO", "--steps", "1", "--split", "forget05", "--out", str(run))) == 0
    for benchmark, extra, split in (("tofu", [], "forget05"), ("mia", [], "forget05"),
                                    ("tofu", ["--split", "forget01"], "forget01")):
        out = tmp_path / f"eval-{benchmark}-{split}"
        argv = ["eval", benchmark, "--model", str(run), "--data", str(tofu_dir), "--limit", "2", *extra]
        assert main([*argv, "--out", str(out)]) == 0
        assert json.loads((out / "eval.json").read_text())["config"]["split"] == split


def test_weight_decay_skips_the_biases_and_norm_weights_of_a_run(tofu_dir, tmp_path, monkeypatch):
    """Full fine-tuning: the loop is told to keep the tiny Llama's RMSNorm gains out of weight decay (the
    Trainer's rule, ``hf.no_decay_names``); with LoRA, nothing (the adapter decays whole)."""
    import unlearn.train
    from unlearn.models import hf

    told, train = [], unlearn.train.train
    monkeypatch.setattr(unlearn.train, "train", lambda *a, **kw: told.append(set(kw["no_decay"])) or train(*a, **kw))
    for name, extra in (("full", []), ("lora", ["--lora", "4"])):
        assert main(tofu_run(tofu_dir, "--method", "GA", "--steps", "1", *extra, "--out", str(tmp_path / name))) == 0
    norms = hf.no_decay_names(hf.load_model(hf.ModelSpec("tiny", vocab_size=258)))
    assert len(norms) == 5 and told == [norms, set()]


def test_a_run_folder_of_an_older_config_still_reads(tmp_path):
    """run.json of a run made when every hyperparameter had one fixed default (beta 0.1, gamma 0, lam 1,
    mismatch 1, no retain_norm) and precision defaulted to float32: those its method does not read are dropped
    rather than refused, its RT term reads as what it was, summed per sequence, and a toy run's float32 (which
    the toys do not read) is not refused."""
    import dataclasses

    from recipes.run import RunConfig, read_run_config
    from unlearn.objectives import MethodParams

    for model, method, want in (("tiny", "GA", MethodParams()), ("tiny", "NPO+RT", MethodParams()),
                                ("markov-fast", "NPO+RT", MethodParams())):
        old = dataclasses.asdict(RunConfig(model=model, method=method))
        old.update(beta=0.1, gamma=0.0, lam=1.0, mismatch=1.0, precision="float32")  # the defaults then
        del old["retain_norm"]
        folder = tmp_path / f"{model}-{method}"
        folder.mkdir()
        (folder / "run.json").write_text(json.dumps({"config": old}))
        assert read_run_config(folder).params() == want


@pytest.mark.parametrize("optimizer, eps, rel, agree", [("adamw", 0.0, 1e-12, True), ("adamw", 1e-8, 1e-4, True),
                                                       ("sgd", 0.0, 1e-2, False)])
def test_adamw_steps_take_the_released_forget_weight_as_lam(optimizer, eps, rel, agree):
    """SimNPO's release trains c_f L_f + L_RT; the protocol here trains L_f + (1/c_f) L_RT, the same loss over
    c_f. AdamW's step m / (sqrt(v) + eps) does not see a constant factor when eps = 0, so 30 steps of the two
    from the same start (warm-up and decay, weight decay 0.01, SimNPO+RT on a bigram model, unequal response
    lengths) end at the same weights to 1e-12 of the largest move; with eps = 1e-8, the default, to 1e-4 here
    (gradients of rarely seen bigrams come near eps); plain gradient descent, which the factor does change,
    ends elsewhere."""
    from unlearn.logprobs import sequence_logprobs
    from unlearn.objectives import METHODS, MethodParams, SequenceStats, per_sequence_losses
    from unlearn.train import TrainConfig, train

    g = torch.Generator().manual_seed(0)
    vocab, forget_weight = 11, 0.1375
    tokens = {split: torch.randint(vocab, (6, 9), generator=g) for split in ("forget", "retain")}
    masks = {split: torch.arange(8) < torch.randint(2, 9, (6, 1), generator=g) for split in tokens}
    start = torch.randn(vocab, vocab, generator=g, dtype=torch.float64)

    def stats(model, split):
        out = sequence_logprobs(model(tokens[split][:, :-1]), tokens[split][:, 1:], masks[split])
        return SequenceStats(out.logp, out.n_tokens)

    def run(forget_scale, lam):
        model = torch.nn.Embedding(vocab, vocab, _weight=start.clone())
        params = MethodParams(beta=2.5, lam=lam, retain_norm="token")

        def losses(m, _):
            terms = per_sequence_losses(METHODS["SimNPO+RT"], params, stats(m, "forget"), stats(m, "retain"))
            return {"forget": forget_scale * terms["forget"], "retain": terms["retain"]}

        cfg = TrainConfig(steps=30, lr=0.05 if optimizer == "adamw" else 2.0, optimizer=optimizer, adam_eps=eps,
                          weight_decay=0.01, schedule="warmup_linear", warmup_steps=3, precision="float64",
                          progress=False)
        train(model, losses, lambda step: [None], cfg)
        return model.weight.detach()

    released, here = run(forget_weight, 1.0), run(1.0, 1 / forget_weight)
    moved = float((released - start).abs().max())
    assert moved > 0.5
    assert (float((released - here).abs().max()) <= rel * moved) == agree


@pytest.mark.parametrize("free_gib, chosen", [(None, "cached"), (1.0 + 1e-3, "adapter")])
def test_dry_run_prints_the_plan_and_allocates_nothing(free_gib, chosen, tofu_dir, tmp_path, monkeypatch, capsys):
    """--dry-run reads the data, plans on the meta device and exits: no weight is built (load_model is never
    called) and nothing is written; with a constructed free-memory figure too small for the cached retain
    logits, auto takes the LoRA adapter and says why."""
    from unlearn import memory
    from unlearn.models import hf

    monkeypatch.setattr(memory, "free_memory", lambda device: None if free_gib is None else int(free_gib * 2**30))
    monkeypatch.setattr(hf, "load_model", lambda spec: pytest.fail("the dry run built a model"))
    out = tmp_path / "dry"
    assert main(tofu_run(tofu_dir, "--method", "NPO+KL", "--lora", "4", "--dry-run", "--out", str(out))) == 0
    printed = capsys.readouterr().out
    assert f"reference {chosen} (" in printed and "GiB at the peak" in printed
    assert not out.exists()


def test_a_method_that_reads_no_reference_is_planned_with_the_cached_one_and_says_why(tofu_dir, tmp_path,
                                                                                      capsys):
    """GA+RT reads no reference model: --reference copy is refused as not applying, and auto plans the cached
    one (log-probs never read), naming the reason rather than a memory figure."""
    assert main(tofu_run(tofu_dir, "--method", "GA+RT", "--dry-run", "--out", str(tmp_path / "dry"))) == 0
    assert "GA+RT reads no reference model" in capsys.readouterr().out


def test_relearning_a_hugging_face_run_brings_the_forget_nll_back(tofu_dir, tmp_path):
    """GA pushes the forget NLL up; relearning on the shortest 20% of the forget set for 3 epochs brings it back
    below its unlearned value."""
    out = tmp_path / "ga"
    assert main(tofu_run(tofu_dir, "--method", "GA", "--steps", "4", "--lr", "3e-3", "--warmup-epochs", "0",
                         "--out", str(out))) == 0
    unlearned = json.loads((out / "run.json").read_text())["after"]["forget_nll"]
    assert unlearned > json.loads((out / "run.json").read_text())["before"]["forget_nll"]
    assert main(["relearn", str(out), "--lr", "3e-3", "--batch-size", "4"]) == 0
    doc = json.loads((out / "relearn.json").read_text())
    forget_nll = doc["relearn"][0]["forget_nll"]
    assert forget_nll[0] == pytest.approx(unlearned, rel=1e-5) and forget_nll[-1] < unlearned
    assert doc["relearn"][0]["epochs"] == [0, 1, 2, 3]


TINY_TOFU = ["--model", "tiny", "--task", "tofu", "--split", "forget10"]


@pytest.mark.parametrize("extra, message", [
    (["--split", "forget99"], "split 'forget99' does not exist"),
    (["--template", "[INST] [/INST]"], "--template '[INST] [/INST]': a plain template must hold {prompt} once"),
    (["--lora", "0"], "--lora must be >= 1, got 0"),
    (["--grad-accum", "0"], "--grad-accum must be >= 1, got 0"),
    (["--method", "IDK+RT", "--alternatives", "{tmp}/alt.jsonl"], "forget prompts have no alternative response"),
    (["--method", "NPO", "--alternatives", "{tmp}/alt.jsonl"], "--alternatives {tmp}/alt.jsonl does not apply"),
    (["--steps", "3", "--epochs", "2"], "--steps 3 and --epochs 2: a run counts one of them"),
    (["--reference", "adapter"], "--reference adapter needs LoRA"),
    (["--lora", "4", "--mask", "random:0.5"], "--mask selects weights of the whole model, and with --lora"),
])
def test_bad_hugging_face_run_settings_are_refused_before_work(extra, message, tofu_dir, tmp_path, capsys,
                                                               monkeypatch):
    from unlearn.models import hf

    (tmp_path / "alt.jsonl").write_text(json.dumps({"prompt": "not a forget question", "response": "No."}))
    monkeypatch.setattr(hf, "load_model", lambda spec: pytest.fail("a model was built"))
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    argv = ["run", *TINY_TOFU, "--data", str(tofu_dir), *extra, "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message.replace("{tmp}", str(tmp_path)) in err and "\n" not in err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
