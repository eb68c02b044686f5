"""Data-parallel unlearning: 2 processes on the CPU (gloo), FSDP2 and DDP, follow the single-process losses."""

import json
import os
import socket
import subprocess
import sys

import pytest

from unlearn.distributed import rank_slice, warmup_steps


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _losses(*args: str) -> list[float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["loss"]


@pytest.mark.parametrize("shard", ["fsdp", "ddp"])
def test_two_processes_follow_the_single_process_run(shard):
    single = _losses("-m", "unlearn.distributed", "--steps", "4")
    double = _losses("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", _free_port(),
                     "-m", "unlearn.distributed", "--shard", shard, "--steps", "4")
    assert len(single) == len(double) == 4
    assert single[-1] < single[0]  # the run does move
    assert double == pytest.approx(single, rel=1e-5)


def test_rank_slices_and_warmup():
    import torch

    index = torch.arange(8)
    assert torch.equal(torch.cat([rank_slice(index, r, 2) for r in range(2)]).sort().values, index)
    with pytest.raises(ValueError, match="does not split evenly over 3 ranks"):
        rank_slice(index, 0, 3)
    assert warmup_steps(64, 4, 1) == 16 and warmup_steps(64, 4, 4) == 4
