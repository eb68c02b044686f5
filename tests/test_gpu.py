"""GPU checks (``-m gpu``; skipped without a CUDA device): bf16 numerics of the log-prob path and the
references on a GPU, chunked and fused log-probs against full logits (values, gradients, peak memory), the toy ensemble
on a GPU against the CPU, ``unlearn validate`` on a GPU (the path of the 7B check, at a small size), and
``unlearn run`` under torchrun with nccl."""

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


def test_chunked_logprobs_on_the_gpu_match_full_logits_in_a_fraction_of_the_memory():
    """4 x 2048 response tokens, a 32k vocabulary: the same values and gradients as log-softmax over the full
    logits (float32), while the step's peak allocation stays below a third of the logits path's (its logits
    alone are 1 GiB)."""
    from unlearn.logprobs import head_token_logprobs, token_logprobs

    g = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(4, 2048, 256, device="cuda", generator=g).requires_grad_()
    head = (torch.randn(32000, 256, device="cuda", generator=g) / 16).requires_grad_()
    labels = torch.randint(0, 32000, (4, 2048), device="cuda", generator=g)
    mask = torch.ones(4, 2048, dtype=torch.bool, device="cuda")
    found = {}
    for name, fn in (("logits", lambda: token_logprobs(hidden @ head.T, labels, mask)[0]),
                     ("chunked", lambda: head_token_logprobs(hidden, head, labels, mask, chunk=1024)[0])):
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        token_logp = fn()
        grads = torch.autograd.grad(token_logp.sum(), (hidden, head))
        found[name] = (token_logp.detach(), grads, torch.cuda.max_memory_allocated() - start)
        del token_logp, grads
    torch.testing.assert_close(found["chunked"][0], found["logits"][0], rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(found["chunked"][1], found["logits"][1], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert found["chunked"][2] < found["logits"][2] / 3


@pytest.mark.parametrize("autocast", [False, True])
def test_fused_logprobs_on_the_gpu_match_full_logits_without_holding_them(autocast):
    """cut-cross-entropy's kernel (the ``gpu`` extra; skipped without it) on 4 x 2048 response tokens and a 32k
    vocabulary: the values of log-softmax over the float32 logits of the same bf16 values, to float32 summation
    order, and gradients to bf16's rounding (the kernel keeps them in bf16); the step's peak allocation below a
    tenth of the logits path's. With ``autocast``, float32 hidden states and head (bf16-mixed weights) go in."""
    pytest.importorskip("cut_cross_entropy")
    from unlearn.logprobs import fused_head_token_logprobs, token_logprobs

    g = torch.Generator(device="cuda").manual_seed(0)
    dtype = torch.float32 if autocast else torch.bfloat16
    hidden = torch.randn(4, 2048, 256, device="cuda", generator=g).to(dtype).requires_grad_()
    head = (torch.randn(32000, 256, device="cuda", generator=g) / 16).to(dtype).requires_grad_()
    labels = torch.randint(0, 32000, (4, 2048), device="cuda", generator=g)
    mask = torch.rand(4, 2048, device="cuda", generator=g) < 0.8
    exact = [t.detach().bfloat16().float().requires_grad_() for t in (hidden, head)]  # the values the kernel sees
    found = {}
    for name, fn, inputs in (("logits", lambda: token_logprobs(exact[0] @ exact[1].T, labels, mask)[0], exact),
                             ("fused", lambda: fused_head_token_logprobs(hidden, head, labels, mask)[0],
                              (hidden, head))):
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", torch.bfloat16, enabled=autocast and name == "fused"):
            token_logp = fn()
        grads = torch.autograd.grad(token_logp.sum(), inputs)
        found[name] = (token_logp.detach(), [g.float() for g in grads], torch.cuda.max_memory_allocated() - start)
        del token_logp, grads
    torch.testing.assert_close(found["fused"][0], found["logits"][0], rtol=1e-5, atol=1e-4)
    (d_hidden, d_head), (d_hidden_plain, d_head_plain) = found["fused"][1], found["logits"][1]
    torch.testing.assert_close(d_hidden, d_hidden_plain, rtol=2e-2, atol=1e-3)
    assert (d_head - d_head_plain).norm() < 3e-2 * d_head_plain.norm()  # sums over 6.5k positions, kept in bf16
    assert found["fused"][2] < found["logits"][2] / 10


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


def test_validate_on_the_gpu_plans_its_memory_and_keeps_the_predictions(tmp_path):
    """llama-20m-shape in bf16-mixed (auto on a GPU with room): the measured peak holds at least the weights,
    gradients and moments, which coexist at every step (autocast's copy, the plan's last 2 N bytes, need not be
    whole at the peak), and at most the plan plus activations; NPO's step-0 weights are still exactly 1."""
    from recipes.validate import ValidateConfig, run_validate

    cfg = ValidateConfig(model="llama-20m-shape", device="cuda", steps=20, memorise_epochs=20, eval_every=5)
    doc = run_validate(cfg, tmp_path, progress=False, report=lambda line: None)
    plan = doc["memory_plan"]
    assert doc["config"]["precision"] == "bf16-mixed"
    assert plan["peak_bytes"] == 18 * doc["n_parameters"]
    assert 16 * doc["n_parameters"] <= plan["measured_peak_bytes"] <= plan["peak_bytes"] + 2**30
    assert doc["metrics"]["validate.npo.weight_step0_max_abs_dev_from_1"] == 0.0
    assert doc["memorised"]["forget_nll_per_token"][-1] < doc["memorised"]["forget_nll_per_token"][0]


def test_unlearn_run_under_torchrun_on_the_gpu_follows_the_plain_run(tmp_path):
    """`torchrun --nproc_per_node 1 -m recipes.cli run --device cuda`: the nccl process group, the rank's GPU and
    the gathered state dict give the plain run's losses (more GPUs than one would shard it; one GPU cannot
    host two nccl ranks)."""
    import json
    import os
    import subprocess
    import sys

    argv = ["-m", "recipes.cli", "run", "--model", "tiny", "--method", "NPO+RT", "--steps", "4", "--batch-size", "4",
            "--lr", "1e-2", "--device", "cuda", "--precision", "float32"]
    launch = ["-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", "29533"]
    docs = []
    for prefix, name in (([], "plain"), (launch, "torchrun")):
        out = subprocess.run([sys.executable, *prefix, *argv, "--out", str(tmp_path / name)], capture_output=True,
                             text=True, env=os.environ, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        docs.append(json.loads((tmp_path / name / "run.json").read_text()))
    assert docs[1]["world_size"] == 1
    assert docs[1]["history"]["loss"] == pytest.approx(docs[0]["history"]["loss"], rel=1e-5)


def test_unlearn_run_on_the_gpu_with_fused_log_probs_follows_the_chunked_run(tmp_path):
    """`unlearn run --fused-logprobs` (the gpu extra; skipped without it) in bf16-mixed: NPO+RT starts at NPO's
    (2/beta) log 2 (the cached reference on the fused path too, computed in batches of another shape, whose bf16
    matmuls may round otherwise: 1e-3; exact on the CPU, tests/test_hf.py) and follows the --logprob-chunk run's
    losses to the bf16 rounding of the logits that the chunked path takes and the kernel does not."""
    pytest.importorskip("cut_cross_entropy")
    import json
    import math

    from recipes.cli import main

    argv = ["run", "--model", "tiny", "--method", "NPO+RT", "--steps", "4", "--batch-size", "4", "--lr", "1e-2",
            "--device", "cuda", "--precision", "bf16-mixed"]
    docs = []
    for name, path in (("chunked", ["--logprob-chunk", "16"]), ("fused", ["--fused-logprobs"])):
        assert main([*argv, *path, "--out", str(tmp_path / name)]) == 0
        docs.append(json.loads((tmp_path / name / "run.json").read_text()))
    for doc in docs:
        assert doc["history"]["terms"]["forget"][0] == pytest.approx(2 / 0.1 * math.log(2), rel=1e-3)
    assert docs[1]["history"]["loss"] == pytest.approx(docs[0]["history"]["loss"], rel=2e-2)


def test_loading_a_model_on_the_gpu_leaves_the_global_cuda_generator_alone():
    from unlearn.models import hf

    state = torch.cuda.get_rng_state()
    first = hf.load_model(hf.ModelSpec("tiny", device="cuda")).state_dict()
    assert torch.equal(torch.cuda.get_rng_state(), state)
    again = hf.load_model(hf.ModelSpec("tiny", device="cuda")).state_dict()  # the same seed, the same weights
    assert all(torch.equal(first[k], again[k]) for k in first)
