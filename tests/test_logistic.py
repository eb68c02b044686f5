"""sims.logistic: the NPO synthetic world, side-by-side runs equal to runs alone, and the model cache."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sims import logistic
from unlearn import cache
from unlearn.ensemble import member_kl, member_logprobs
from unlearn.models.logistic import LogisticHead, random_feature_matrix
from unlearn.models.transformer import CausalLMOutput
from unlearn.objectives import METHODS, MethodParams
from unlearn.rng import generator


def worlds(n, alpha=1.0, sizes=(40, 120, 60), d=6, p=16):
    out = []
    for i in range(n):
        g = generator(123, "test-world", i)
        W = random_feature_matrix(d, p, g)
        out.append(logistic.sample_data(alpha, d, *sizes, g).featurize(W))
    return out


def test_labels_follow_the_generative_model():
    """With alpha = 1, P(y=1) averages sigma(N(1, 1)) ~ 0.70 on forget and sigma(N(-1, 1)) ~ 0.30 on retain;
    y_alt is Bern(0.5). Standard errors at n = 20000 are ~0.003."""
    data = logistic.sample_data(1.0, 16, 20000, 20000, 10, generator(0, "labels"))
    assert float(data.y_forget.double().mean()) == pytest.approx(0.70, abs=0.015)
    assert float(data.y_retain.double().mean()) == pytest.approx(0.30, abs=0.015)
    assert float(data.y_alt.double().mean()) == pytest.approx(0.5, abs=0.015)
    assert float(data.x_forget.mean()) == pytest.approx(1.0, abs=0.01)
    assert float(data.x_retain.mean()) == pytest.approx(-1.0, abs=0.01)


def test_same_generator_same_data():
    a = logistic.sample_data(0.0, 4, 10, 10, 10, generator(5, "x"))
    b = logistic.sample_data(0.0, 4, 10, 10, 10, generator(5, "x"))
    c = logistic.sample_data(0.0, 4, 10, 10, 10, generator(6, "x"))
    assert all(torch.equal(u, v) for u, v in zip(vars(a).values(), vars(b).values(), strict=True))
    assert not torch.equal(a.x_forget, c.x_forget)


def test_pretrained_models_fit_their_data():
    """pi_ref is trained on forget + retain, pi_retr on retain only; both near a stationary point."""
    ws = worlds(2)
    theta_ref, theta_retr, g_ref, g_retr = logistic.pretrain(ws, lr=0.05, steps=3000, progress=False)
    assert (g_ref < 2e-2).all() and (g_retr < 2e-2).all()
    w = ws[0]
    pred = torch.sigmoid(w.x_forget @ theta_ref[0])
    assert float(pred.mean()) == pytest.approx(float(w.y_forget.double().mean()), abs=0.05)
    pred_r = torch.sigmoid(w.x_forget @ theta_retr[0])
    assert pred_r.mean() < pred.mean()  # the retain-only model predicts the forget labels (mostly 1) worse


def test_head_is_a_one_token_model_for_the_core_logprob_path():
    """LogisticHead returns .logits (W*K, B, 1, 2) like every model; through the core's member_logprobs and
    member_kl (labels as one-token responses) they are the closed-form Bernoulli log-likelihood and KL."""
    g = torch.Generator().manual_seed(3)
    worlds_, k, b, p = 2, 3, 5, 4
    phi = torch.rand(worlds_, b, p, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (worlds_, b), generator=g)
    head, ref = LogisticHead(p, worlds_, k), LogisticHead(p, worlds_, k)
    head.theta.data.normal_(generator=g)
    ref.theta.data.normal_(generator=g)
    out = head(phi, attention_mask=None)
    assert isinstance(out, CausalLMOutput) and out.logits.shape == (worlds_ * k, b, 1, 2)
    z = torch.einsum("wkp,wbp->wkb", head.theta, phi).flatten(0, 1)  # logit of y=1 per member and sample
    z_ref = torch.einsum("wkp,wbp->wkb", ref.theta, phi).flatten(0, 1)
    labels, mask = logistic.member_labels(y, worlds_ * k), logistic.one_token_mask(y)
    assert labels.shape == (worlds_ * k, b, 1) and mask.shape == (b, 1)
    stats = member_logprobs(out.logits, labels, mask)
    y_m = y.repeat_interleave(k, 0).double()
    torch.testing.assert_close(stats.logp, y_m * F.logsigmoid(z) + (1 - y_m) * F.logsigmoid(-z))
    assert torch.equal(stats.n_tokens, torch.ones(worlds_ * k, b, dtype=torch.float64))
    q, q_ref = torch.sigmoid(z), torch.sigmoid(z_ref)
    bernoulli_kl = q_ref * (q_ref / q).log() + (1 - q_ref) * ((1 - q_ref) / (1 - q)).log()
    torch.testing.assert_close(member_kl(out.logits, ref(phi).logits, mask), bernoulli_kl)


@settings(max_examples=4)
@given(n_worlds=st.integers(1, 2), choice=st.lists(st.sampled_from(list(METHODS)), min_size=1, max_size=3),
       lr=st.floats(1e-3, 2e-2), beta=st.floats(0.1, 5.0))
def test_side_by_side_runs_equal_runs_alone(n_worlds, choice, lr, beta):
    """Every member of an ensemble (methods, betas, learning rates and worlds mixed) follows the same
    trajectory as that run trained alone, to 1e-9 relative in float64."""
    ws = worlds(n_worlds)
    theta_ref, theta_retr, _, _ = logistic.pretrain(ws, lr=0.05, steps=300, progress=False)
    runs = [logistic.Run(f"{m}#{i}", m, MethodParams(beta=beta * (i + 1)), lr * (i + 1)) for i, m in enumerate(choice)]
    together = logistic.unlearn(runs, ws, theta_ref, theta_retr, steps=60, eval_every=20, progress=False)
    for w in range(n_worlds):
        for j, run in enumerate(runs):
            alone = logistic.unlearn([run], ws[w:w + 1], theta_ref[w:w + 1], theta_retr[w:w + 1], steps=60,
                                     eval_every=20, progress=False)
            for metric in logistic.EVAL_METRICS:
                member = torch.tensor([row[w * len(runs) + j] for row in together.evals[metric]])
                single = torch.tensor([row[0] for row in alone.evals[metric]])
                torch.testing.assert_close(member, single, rtol=1e-9, atol=1e-12)


def test_pretraining_is_cached_by_config(monkeypatch, tmp_path):
    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path))
    ws = worlds(2)
    keys = [{"world": "test", "i": i} for i in range(2)]
    first = logistic.pretrain_cached(ws, keys, 0.05, 200)
    assert len(list(tmp_path.rglob("*.pt"))) == 2
    # the device type is part of the key: CPU and CUDA kernels round differently
    assert cache.load("logistic-pretrain", {**keys[0], "lr": 0.05, "steps": 200, "device": "cpu"}) is not None
    assert cache.load("logistic-pretrain", {**keys[0], "lr": 0.05, "steps": 200, "device": "cuda"}) is None

    def fail(*args, **kwargs):
        raise AssertionError("pretrain should not run on a cache hit")

    monkeypatch.setattr(logistic, "pretrain", fail)
    second = logistic.pretrain_cached(ws, keys, 0.05, 200)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    with pytest.raises(AssertionError, match="should not run"):
        logistic.pretrain_cached(ws, keys, 0.05, 201)  # another step count is another entry


def test_cache_ignores_entries_stored_under_another_key(monkeypatch, tmp_path):
    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path))
    cache.store("k", {"a": 1}, {"t": torch.ones(2)})
    path = cache.entry_path("k", {"a": 1})
    path.rename(cache.entry_path("k", {"a": 2}))  # a collision or a hand-copied file
    assert cache.load("k", {"a": 2}) is None
    built = cache.cached("k", {"a": 2}, lambda: {"t": torch.zeros(3)})
    assert torch.equal(built["t"], torch.zeros(3)) and torch.equal(cache.load("k", {"a": 2})["t"], torch.zeros(3))
