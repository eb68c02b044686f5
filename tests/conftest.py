"""Shared test set-up: hypothesis profiles, a private model cache, the fast figures of the session.

Profiles: ``ci`` (selected when CI=true: derandomized, no example database, so CI never flakes) and ``dev``
(more examples, random). Override with HYPOTHESIS_PROFILE=name.
"""

import json
import os
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, database=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

# Tests never read or fill the user's model cache; one private cache is shared by the whole session
# (including notebook kernels, which inherit the environment).
os.environ["UNLEARN_CACHE"] = tempfile.mkdtemp(prefix="unlearn-test-cache-")


@pytest.fixture(scope="session")
def fast_figure(tmp_path_factory):
    """``fast_figure(name)``: the NAME.json document of ``unlearn figures NAME --preset fast``, run at most once
    per test session into one folder, ``fast_figure.out`` (NAME.png beside it)."""
    from recipes.cli import main

    out = tmp_path_factory.mktemp("figures")
    docs = {}

    def run(name: str) -> dict:
        if name not in docs:
            assert main(["figures", name, "--preset", "fast", "--out", str(out), "--set", "progress=false"]) == 0
            docs[name] = json.loads((out / f"{name}.json").read_text())
        return docs[name]

    run.out = out
    return run


class TinyLM(torch.nn.Module):
    """Embedding + linear map: enough parameters to exercise AdamW state, masks and decay."""

    def __init__(self, vocab=7, dim=5, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Parameter(torch.randn(vocab, dim, generator=g))
        self.out = torch.nn.Parameter(torch.randn(dim, vocab, generator=g))

    def forward(self, ids):
        return self.emb[ids] @ self.out


def make_data(n=8, T=6, vocab=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, T + 1), generator=g)
    return ids[:, :-1], ids[:, 1:]


def nll(model, batch):
    from unlearn.logprobs import sequence_logprobs

    inputs, labels = batch
    return {"nll": -sequence_logprobs(model(inputs), labels, torch.ones_like(labels)).logp}


@pytest.fixture
def tiny_problem():
    """(TinyLM, make_data, nll): a small next-token problem for the training loop and the optimizers (a model
    class, a seeded (inputs, labels) batch, and its per-sequence NLL as a losses_fn)."""
    return TinyLM, make_data, nll


@pytest.fixture
def fused_kernel_on_cpu(monkeypatch) -> list[int]:
    """``unlearn.logprobs._fused_nll`` (cut-cross-entropy's CUDA kernel) replaced by what it computes, each
    position's NLL of its label from float32 logits, in plain torch, so that everything around the kernel runs on
    the CPU. Returns the list of each call's number of positions."""
    from unlearn import logprobs

    calls = []

    def kernel(h, head, y):
        calls.append(len(y))
        return torch.nn.functional.cross_entropy(h.float() @ head.float().T, y, reduction="none")

    monkeypatch.setattr(logprobs, "_fused_nll", kernel)
    return calls
