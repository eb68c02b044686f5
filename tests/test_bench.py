"""unlearn bench toy runs end to end and writes the promised keys; its numbers are measurements, not tested."""

import json

from unlearn.cli import main


def test_bench_toy_writes_a_speedup_per_model_and_size(tmp_path, capsys):
    out = tmp_path / "bench" / "toy.json"
    assert main(["bench", "toy", "--quick", "--members", "2,3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "speedup" in printed and "matmul rate" in printed
    doc = json.loads(out.read_text())
    for model in ("logistic", "markov"):
        assert doc[f"{model}.loop.runs_steps_per_s"] > 0
        for m in (2, 3):
            assert doc[f"{model}.members={m}.speedup"] > 0
            assert 0 < doc[f"{model}.members={m}.fraction_of_peak"] < 10
    assert doc["env"]["command"].endswith("--out " + str(out)) and doc["env"]["device"] == "cpu"
    assert doc["config"]["members"] == [2, 3]


def test_bench_toy_refuses_bad_sizes(capsys):
    assert main(["bench", "toy", "--members", "0,8"]) == 2
    assert "--members must be positive" in capsys.readouterr().err


def test_bench_llm_writes_the_ratios_of_every_comparison(tmp_path, capsys):
    out = tmp_path / "llm.json"
    argv = ["bench", "llm", "--model", "llama-20m-shape", "--seq-len", "32", "--lora", "2", "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    for key in ("npo.cached_vs_copy", "npo+kl.adapter_vs_copy", "full.npo.cached_vs_copy"):
        # a CPU peak is the rise of the process's resident-set high-water mark, which can stay 0 for a small
        # setting; the ratio is then 0, never negative or missing
        assert doc[f"{key}.peak_mem_ratio"] >= 0 and doc[f"{key}.step_time_ratio"] > 0
    assert doc["n_parameters"] > doc["lora.trainable_parameters"] > 0
    assert doc["mask.wagle.seconds"] > 0 and "full.npo.saved_over_model_bytes" in doc
    assert doc["env"]["command"].startswith("unlearn bench llm --model llama-20m-shape")
