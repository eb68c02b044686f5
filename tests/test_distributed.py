"""Data-parallel unlearning: 2 processes on the CPU (gloo), FSDP2 and DDP, follow the single-process losses;
`unlearn run` under torchrun too."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from unlearn.distributed import backend, check_batches, rank_slice, warmup_steps


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


GLOO_ABORT = "terminate called without an active exception"  # a rank aborted inside gloo's C++ teardown


def _run(*args: str, ranks: int = 1) -> subprocess.CompletedProcess:
    """``python -m ARGS`` in one process, or under torchrun with ``ranks`` processes. A torchrun launch whose rank
    aborted with GLOO_ABORT (from gloo's threads at teardown, not this code; on a loaded 2-core machine it came
    twice in a row) is launched again, up to three times in all; any other failure, and a third abort, is
    returned as it is."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(3):
        launch = ["-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port", _free_port()]
        out = subprocess.run([sys.executable, *(launch if ranks > 1 else []), "-m", *args], capture_output=True,
                             text=True, env=env, timeout=300)
        if not (ranks > 1 and out.returncode != 0 and GLOO_ABORT in out.stderr):
            return out
    return out


def _losses(*args: str, ranks: int = 1) -> list[float]:
    out = _run("unlearn.distributed", *args, ranks=ranks)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["loss"]


@pytest.mark.parametrize("device, on_device", [("cpu", "gloo"), ("cuda", "nccl")])
def test_the_process_group_reduces_cpu_tensors_on_every_device(device, on_device):
    """``mean_over_ranks`` all-reduces CPU tensors also when the model is on GPUs, and nccl alone has no CPU
    backend (under it, `unlearn run --device cuda` under torchrun failed: "No backend type associated with
    device type cpu"); the group's device types map to gloo for the CPU and nccl for CUDA."""
    from torch.distributed.distributed_c10d import BackendConfig

    backends = BackendConfig(torch.distributed.Backend(backend(torch.device(device)))).get_device_backend_map()
    assert backends["cpu"] == "gloo" and backends[device] == on_device


@pytest.mark.parametrize("shard", ["fsdp", "ddp"])
def test_two_processes_follow_the_single_process_run(shard):
    single = _losses("--steps", "4")
    double = _losses("--shard", shard, "--steps", "4", ranks=2)
    assert len(single) == len(double) == 4
    assert single[-1] < single[0]  # the run does move
    assert double == pytest.approx(single, rel=1e-5)


RUN = ["recipes.cli", "run", "--model", "tiny", "--method", "NPO+RT", "--steps", "4", "--batch-size", "4",
       "--lr", "1e-2"]


@pytest.fixture(scope="module")
def tofu_dir(tmp_path_factory):
    """A generated TOFU directory of 10 authors: answers of unequal lengths."""
    from recipes.cli import main

    out = tmp_path_factory.mktemp("tofu")
    assert main(["data", "tofu-like", "--out", str(out), "--authors", "10", "--set", "n_retain_perturbed=1"]) == 0
    return out


@pytest.mark.parametrize("lora", [False, True])
def test_unlearn_run_under_torchrun_follows_the_one_process_run(lora, tofu_dir, tmp_path):
    """`torchrun --nproc_per_node 2 -m recipes.cli run` (FSDP2, gloo), every weight or a LoRA adapter training,
    on TOFU answers of unequal lengths (the retain NLL per token of the whole batch, not of each rank's half):
    the same losses, evaluations and final weights (OUT/hf) as one process, written once, by rank 0."""
    from safetensors.torch import load_file

    docs, weights = {}, {}
    task = ["--task", "tofu", "--data", str(tofu_dir), "--split", "forget10", "--eval-limit", "8", "--grad-accum", "2"]
    for ranks in (1, 2):
        out = _run(*RUN, *task, *(["--lora", "4"] if lora else []), "--out", str(tmp_path / str(ranks)),
                   ranks=ranks)
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.count("wrote") == 1  # rank 0 reports
        docs[ranks] = json.loads((tmp_path / str(ranks) / "run.json").read_text())
        saved = "adapter_model.safetensors" if lora else "model.safetensors"
        weights[ranks] = load_file(str(tmp_path / str(ranks) / "hf" / saved))
    assert all(("lora_" in name) == lora for name in weights[1])  # the adapter alone, or the whole model
    assert (docs[1]["world_size"], docs[2]["world_size"]) == (1, 2)
    assert docs[1]["history"]["loss"][-1] != docs[1]["history"]["loss"][0]  # the run does move
    assert docs[2]["history"]["loss"] == pytest.approx(docs[1]["history"]["loss"], rel=1e-5)
    assert docs[2]["after"] == pytest.approx(docs[1]["after"], rel=1e-5)
    assert weights[2].keys() == weights[1].keys()
    for name, value in weights[1].items():
        assert torch.allclose(weights[2][name], value, atol=1e-5), name


def test_unlearn_run_under_torchrun_refuses_masks_and_uneven_batches(tmp_path):
    out = _run(*RUN, "--mask", "wagle:0.5", "--out", str(tmp_path / "m"), ranks=2)
    assert out.returncode != 0 and "--mask selects weights of the whole model, which FSDP2 shards over the 2 ranks; " \
        "run it in one process" in out.stderr
    for dry_run in ([], ["--dry-run"]):  # a dry run refuses what the run would
        out = _run(*RUN[:-4], "--batch-size", "3", *dry_run, "--out", str(tmp_path / "b"), ranks=2)
        assert out.returncode != 0 and "does not split evenly over 2 ranks" in out.stderr
    assert not (tmp_path / "m").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("option, setting", [
    ("--mask", {"mask": "wagle:0.5"}), ("--logprob-chunk", {"logprob_chunk": 8}),
    ("--fused-logprobs", {"fused_logprobs": True}), ("--compile", {"compile": True})])
def test_options_that_apply_to_one_process_are_refused_under_torchrun(option, setting):
    """Each option whose work FSDP2's sharding would break is refused before any work, naming it; in one process
    the same settings pass."""
    from recipes.run import RunConfig, _refuse_under_torchrun

    cfg = RunConfig(model="tiny", **setting)
    with pytest.raises(ValueError, match=f"^{option} .*, which FSDP2 shards over the 2 ranks; run it in one process"):
        _refuse_under_torchrun(cfg, 2)
    _refuse_under_torchrun(RunConfig(model="tiny"), 2)


def test_validate_refuses_more_than_one_torchrun_process(tmp_path, monkeypatch, capsys):
    from recipes.cli import main

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["validate", "--model", "tiny", "--out", str(tmp_path / "v")]) == 2
    assert "unlearn validate runs in one process, and torchrun started 2" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()


def test_rank_slices_and_warmup():
    import torch

    index = torch.arange(8)
    assert torch.equal(torch.cat([rank_slice(index, r, 2) for r in range(2)]).sort().values, index)
    with pytest.raises(ValueError, match="does not split evenly over 3 ranks"):
        rank_slice(index, 0, 3)
    assert warmup_steps(64, 4, 1) == 16 and warmup_steps(64, 4, 4) == 4
    check_batches(32, 4, 2, "forget")  # 8 batches of 4
    with pytest.raises(ValueError, match=r"forget: batches of \[2, 4\] sequences \(of 30\) do not split evenly"):
        check_batches(30, 4, 4, "forget")  # the last batch holds 2
