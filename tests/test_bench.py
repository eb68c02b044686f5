"""unlearn bench toy / llm run end to end and write the promised keys; their numbers are measurements, so only
their consistency is tested (ratios are the ratios of the recorded values), never a speed."""

import contextlib
import dataclasses
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from recipes import bench
from recipes.cli import main
from unlearn.config import config_dict
from unlearn.models import hf


def test_bench_toy_writes_a_speedup_per_model_and_size(tmp_path, capsys):
    out = tmp_path / "bench" / "toy.json"
    assert main(["bench", "toy", "--quick", "--members", "2,3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "speedup" in printed and "matmul rate" in printed
    doc = json.loads(out.read_text())
    for model in ("logistic", "markov"):
        assert doc[f"{model}.loop.runs_steps_per_s"] > 0
        for m in (2, 3):
            assert doc[f"{model}.members={m}.speedup"] == pytest.approx(
                doc[f"{model}.members={m}.ensemble.runs_steps_per_s"] / doc[f"{model}.loop.runs_steps_per_s"])
            assert 0 < doc[f"{model}.members={m}.fraction_of_peak"] < 10
    assert doc["env"]["command"].endswith("--out " + str(out)) and doc["env"]["device"] == "cpu"
    assert doc["config"] == {**config_dict(bench.QUICK), "members": [2, 3]}  # the resolved config, recorded


@pytest.mark.parametrize("members", ["0,8", "8,x"])
def test_bench_toy_refuses_bad_sizes(members, capsys):
    assert main(["bench", "toy", "--members", members]) == 2
    assert f"--members must be comma-separated positive integers, got '{members}'" in capsys.readouterr().err
    assert main(["bench", "toy", "--set", f"members={members}"]) == 2
    assert "members" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--lora", "0"], "lora_rank must be >= 1, got 0"),
    (["--seq-len", "0"], "seq_len must be >= 1, got 0"),
    (["--set", "dtype=fp8"], "unknown dtype 'fp8'; valid: float32, bf16"),
    (["--set", "warmup=-1"], "warmup must be >= 0, got -1"),
])
def test_bench_llm_refuses_bad_sizes_before_any_case_starts(argv, message, capsys):
    assert main(["bench", "llm", "--quick", *argv]) == 2
    assert message in capsys.readouterr().err


def test_bench_llm_writes_the_ratios_of_every_comparison(tmp_path, capsys):
    out = tmp_path / "llm.json"
    argv = ["bench", "llm", "--model", "llama-20m-shape", "--seq-len", "32", "--lora", "2", "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    for key in ("npo.cached_vs_copy", "npo+kl.adapter_vs_copy", "full.npo.cached_vs_copy"):
        # a CPU peak is the rise of the case process's own resident-set high-water mark over its imports
        assert doc[f"{key}.peak_mem_ratio"] > 0 and doc[f"{key}.step_time_ratio"] > 0
        prefix, name = key.rsplit(".", 1)  # e.g. "npo", "cached_vs_copy"
        setting, baseline = (f"{prefix}.{ref}" for ref in name.split("_vs_"))
        peaks = doc[f"{setting}.peak_bytes"], doc[f"{baseline}.peak_bytes"]
        assert doc[f"{key}.peak_mem_ratio"] == pytest.approx(peaks[0] / peaks[1])
        assert doc[f"{key}.step_time_ratio"] == pytest.approx(  # step time ratio = inverse ratio of the token rates
            doc[f"{baseline}.tokens_per_s"] / doc[f"{setting}.tokens_per_s"])
    assert doc["n_parameters"] > doc["lora.trainable_parameters"] > 0
    assert doc["mask.wagle.seconds"] > 0 and "full.npo.saved_over_model_bytes" in doc
    assert doc["matmul_tflops"] > 0
    for case in ("npo.cached", "npo.copy", "npo+kl.adapter", "npo+kl.copy", "full.npo.cached", "full.npo.copy"):
        assert doc[f"{case}.tokens_per_s"] > 0 and 0 < doc[f"{case}.mfu"] < 1.5  # of a measured, not a spec, peak
    assert doc["env"]["command"].startswith("unlearn bench llm --model llama-20m-shape")
    evaluated = doc["cases"]["eval.tofu"]  # the TOFU evaluation's throughput: its rates follow from its counts
    assert evaluated["questions"] == 16 and evaluated["scored_tokens"] > 16 * 7 * 10
    assert doc["eval.tofu.scored_tokens_per_s"] == evaluated["scored_tokens_per_s"] > 0
    assert doc["eval.tofu.answers_per_s"] == evaluated["answers_per_s"] > 0
    assert doc["attention"] == "sdpa" and doc["logprob_path"] == "logits"
    assert doc["attention_kernels"] == ["flash_attention_for_cpu"]  # what SDPA picks on the CPU, probed per case
    assert doc["logprobs.chunk"] == 1024 and doc["logprobs.tokens"] == 2 * 2048  # batch 2 x logprob_seq_len
    assert doc["logprobs.chunked_over_logits_peak"] == pytest.approx(
        doc["logprobs.chunked.peak_bytes"] / doc["logprobs.logits.peak_bytes"])
    assert doc["cases"]["logprobs.chunked"]["path"] == "chunked" and doc["cases"]["logprobs.logits"]["path"] == "logits"


def test_bench_llm_sweeps_token_batches_through_chunked_log_probs(tmp_path):
    """Every case at each token batch, the best batch named per case, and the chunked log-prob path recorded."""
    out = tmp_path / "llm.json"
    argv = ["bench", "llm", "--quick", "--seq-len", "16", "--tokens-per-step", "16,32", "--logprob-chunk", "8",
            "--set", "full_finetuning=false", "--set", "eval_questions=0", "--set", "logprob_seq_len=0",
            "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["logprob_path"] == "chunks of 8" and "logprobs.chunk" not in doc  # the memory case is off
    for case in ("npo.cached", "npo.copy", "npo+kl.adapter", "npo+kl.copy"):
        mfus = {n: doc[f"{case}.tokens={n}.mfu"] for n in (16, 32)}
        assert doc[f"{case}.best_tokens_per_step"] == max(mfus, key=mfus.get)
        assert doc[f"{case}.best_mfu"] == max(mfus.values()) > 0
        assert doc["cases"][f"{case}.tokens=32"]["tokens_per_s"] == doc[f"{case}.tokens=32.tokens_per_s"]


@pytest.mark.parametrize("argv, message", [
    (["--tokens-per-step", "100"], "tokens_per_step 100 is not a positive multiple of seq_len 128"),
    (["--tokens-per-step", "128,x"], "--tokens-per-step must be comma-separated positive integers"),
    (["--logprob-chunk", "-1"], "logprob_chunk must be >= 0, got -1"),
    (["--cases", "npo.cached,npo.foo"], "unknown case 'npo.foo'; valid: npo.cached, npo.copy"),
    (["--compile", "--tokens-per-step", "256"], "compile applies to the comparison at batch_size"),
    (["--fused-logprobs", "--logprob-chunk", "8"], "two ways to the same log-probs; give one"),
    (["--model", "nosuch"], "model 'nosuch' is neither a local model directory nor one of the built-in"),
    (["--fused-logprobs"], "fused_logprobs runs a bf16 kernel; give --dtype bf16 (got float32)"),
    (["--fused-logprobs", "--dtype", "bf16"], "on CUDA only; the device is cpu"),
])
def test_bench_llm_refuses_token_batches_it_cannot_make(argv, message, capsys):
    assert main(["bench", "llm", "--quick", *argv]) == 2
    assert message in capsys.readouterr().err


def test_bench_llm_cases_take_the_fused_path_when_asked(fused_kernel_on_cpu):
    """--fused-logprobs reaches the training step and the log-prob case: here on the CPU, the CUDA kernel
    replaced by the cross entropy it computes, counting the response positions it is given (the cached
    reference and a training step: the forget batch's, 2 x 12 each; the log-prob case: 2 x 32)."""
    calls = fused_kernel_on_cpu
    cfg = bench.LLMBench(model="tiny", dtype="bf16", fused_logprobs=True, seq_len=16, steps=1, warmup=0,
                         logprob_seq_len=32)
    found = bench.llm_case(cfg, "NPO", "cached", True, torch.device("cpu"))
    assert calls == [2 * 12, 2 * 12] and found["tokens_per_s"] > 0  # the response: the last 3/4 of each sequence
    assert bench.llm_case(cfg, "NPO", "logprobs", False, torch.device("cpu"))["path"] == "fused"
    assert calls[2:] == [1 * 8, 2 * 32]  # the case's warm-up call, then the measured one
    assert bench.logprob_path(dataclasses.replace(cfg, fused_logprobs=False, logprob_chunk=8), detail=True) \
        == "chunks of 8"


@pytest.mark.parametrize("attention, backend, kernels", [
    ("sdpa", None, ["flash_attention_for_cpu"]), ("sdpa", "MATH", ["attention_math"]), ("eager", None, [])])
def test_sdpa_kernels_names_the_kernel_attention_ran(attention, backend, kernels):
    """The probe reads the kernel off the run, not off the config: forcing SDPA's math fallback changes it, and
    eager attention calls no SDPA kernel at all."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = hf.load_model(hf.ModelSpec("tiny", attn_implementation=attention))
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with sdpa_kernel(getattr(SDPBackend, backend)) if backend else contextlib.nullcontext():
        assert bench.sdpa_kernels(lambda: model(ids)) == kernels


@pytest.mark.parametrize("lora, rel", [(None, 0.01), (hf.LoraSpec(2, 4.0), 0.05)])
def test_training_flops_per_token_is_what_a_training_step_multiplies(lora, rel):
    """4 N + 2 N_trainable + 12 L d T per token against torch's own FLOP counter over one forward and backward
    of the tiny Llama (eager attention, whose matmuls the counter sees), N without the input embedding, a lookup
    without FLOPs (not tied to the output layer here). Every weight trained (6 N): equal to 1%, the rest being
    the norms' weights, which no matmul multiplies. LoRA (4 N + 6 N_lora): within 5%, since autograd also skips
    the input gradients of the first layer's frozen projections (3% of this 2-layer model, 0.2% of 32 layers)."""
    model = hf.load_model(hf.ModelSpec("tiny", attn_implementation="eager", lora=lora))
    B, T = 2, 64
    ids = torch.randint(0, model.config.vocab_size, (B, T), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        model(ids).logits.sum().backward()
    embedding = model.get_input_embeddings().weight.numel()
    n = hf.n_parameters(model) - embedding
    trained = hf.n_parameters(model, trainable_only=True) - (embedding if lora is None else 0)
    per_token = bench.training_flops_per_token(n, trained, model.config.num_hidden_layers,
                                               model.config.hidden_size, T)
    assert counter.get_total_flops() == pytest.approx(per_token * B * T, rel=rel)


def test_a_case_that_runs_out_of_memory_reports_it(monkeypatch, capsys):
    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(bench, "llm_case", out_of_memory)
    bench.case_main(json.dumps({"cfg": {}, "method": "NPO", "reference": "copy", "lora": False, "device": "cpu"}))
    assert json.loads(capsys.readouterr().out) == {"out_of_memory": True,
                                                   "error": "CUDA out of memory. Tried to allocate 2.00 GiB"}


def test_bench_llm_keeps_going_when_a_setting_does_not_fit(monkeypatch):
    """Full fine-tuning with a copy may not fit a GPU: that setting is recorded as out of memory (and as not
    fitting 80 GiB), the comparisons that need it are skipped, and every other one stands."""
    fits = {"peak_bytes": 2**30, "step_s": 2.0, "tokens_per_s": 10.0, "model_flops_per_s": 1e9, "n_parameters": 7,
            "trainable_parameters": 1, "param_bytes": 28}

    def case(cfg, case, device):
        if case[0] == "full.npo.copy":
            return {"out_of_memory": True, "error": "CUDA out of memory"}
        return {"peak_bytes": 8, "seconds": 1.0, "param_bytes": 4} if case[0] == "mask.wagle" else dict(fits)

    monkeypatch.setattr(bench, "_case_in_subprocess", case)
    monkeypatch.setattr(bench, "matmul_rate", lambda *args, **kwargs: 1e10)
    lines = []
    results = bench.bench_llm(bench.QUICK_LLM, torch.device("cuda"), lines.append)  # nothing runs on it
    assert results["full.npo.copy.out_of_memory"] and not results["full.npo.cached.out_of_memory"]
    assert not results["full.npo.copy.fits_80gib"] and results["full.npo.cached.fits_80gib"]
    assert "full.npo.cached_vs_copy.peak_mem_ratio" not in results and "full.npo.saved_bytes" not in results
    assert results["npo.cached_vs_copy.peak_mem_ratio"] == 1.0 and results["npo.cached.mfu"] == 0.1
    assert results["n_parameters"] == 7 and results["lora.trainable_parameters"] == 1
    assert results["mask.wagle.peak_over_model_bytes"] == 2.0
    assert any(line.startswith("full.npo.copy") and "out of memory" in line for line in lines)


@pytest.mark.slow
def test_bench_llm_times_a_compiled_step_beside_the_eager_one(tmp_path):
    """--compile adds npo.compiled (LoRA NPO, cached reference, under torch.compile) and its ratios to the eager
    npo.cached step; the chunked log-prob path compiles its decoder too."""
    out = tmp_path / "llm.json"
    argv = ["bench", "llm", "--quick", "--seq-len", "16", "--compile", "--logprob-chunk", "8", "--set",
            "full_finetuning=false", "--set", "eval_questions=0", "--set", "logprob_seq_len=0", "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["npo.compiled_vs_cached.step_time_ratio"] == pytest.approx(
        doc["cases"]["npo.compiled"]["step_s"] / doc["cases"]["npo.cached"]["step_s"])
    assert doc["config"]["compile"] is True and doc["npo.compiled.tokens_per_s"] > 0
