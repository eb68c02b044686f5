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
