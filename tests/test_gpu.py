"""GPU checks (``-m gpu``; skipped without a CUDA device): bf16 numerics of the log-prob path and the
references on a GPU, and the toy ensemble on a GPU against the CPU."""

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_bf16_logprobs_track_float32_on_the_gpu():
    from unlearn.logprobs import sequence_logprobs
    from unlearn.models import hf

    ids = torch.randint(0, 128, (4, 33), generator=torch.Generator().manual_seed(0)).cuda()
    mask = torch.ones(4, 32, dtype=torch.bool, device="cuda")
    out = {}
    for dtype in ("float32", "bf16"):
        model = hf.load_model(hf.ModelSpec("tiny", dtype=dtype, device="cuda"))
        with torch.no_grad():
            logits = model(ids[:, :-1]).logits
        out[dtype] = sequence_logprobs(logits, ids[:, 1:], mask).logp
        assert out[dtype].dtype == torch.float32  # log-probs are float32 even for a bf16 model
    torch.testing.assert_close(out["bf16"], out["float32"], rtol=2e-2, atol=0.5)


def test_markov_ensemble_on_the_gpu_matches_the_cpu():
    from sims import markov
    from unlearn.models.transformer import Transformer
    from unlearn.objectives import MethodParams
    from unlearn.rng import generator

    cfg = markov.MarkovWorldConfig(seed=1, n_retain=40, n_forget1=20, n_forget2=20)
    world = markov.make_world(cfg)
    base = Transformer(markov.model_config(cfg, markov.PretrainConfig(n_layer=1, d_model=16)))
    results = []
    for device in ("cpu", "cuda"):
        history, _ = markov.unlearn_runs(base.to(device), ["NPO", "SimNPO"], [MethodParams(beta=0.5)] * 2, world,
                                         [generator(0, "gpu", m) for m in range(2)], steps=5, lr=1e-3,
                                         evaluate_every=5, progress=False)
        results.append(history.evals["forget1_kl"][-1])
    assert results[1] == pytest.approx(results[0], rel=1e-3)
