"""theory.ceiling: the final-norm ceiling on a token's NLL, by hand, under hypothesis, and on a Llama's own RMSNorm
and head."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from theory.ceiling import ceiling_direction, margin_ceiling, nll_ceiling, rms_head_logits, token_nll


def test_hand_values():
    """W = I (V = d = 2), g = 1: C_0 = sqrt(2) ||w_1 - w_0|| = sqrt(2) sqrt(2) = 2; u* = sqrt(2) (w_1 - w_0) /
    sqrt(2) = (-1, 1), z = (-1, 1), NLL_0 = log(e^-1 + e^1) + 1 = 2 + log(1 + e^-2) = 2.1269, inside
    [C_0, C_0 + log 2] = [2, 2.6931]. With g = (2, 0) only the first coordinate counts: C_0 = sqrt(2) * 2."""
    W, g = np.eye(2), np.ones(2)
    assert margin_ceiling(W, g) == pytest.approx([2.0, 2.0], abs=1e-12)
    u = ceiling_direction(W, g, 0)
    assert u == pytest.approx([-1.0, 1.0], abs=1e-12)
    nll = token_nll(rms_head_logits(W, g, u), 0)
    assert nll == pytest.approx(2 + math.log1p(math.exp(-2)), abs=1e-12)
    assert 2.0 <= nll <= nll_ceiling(W, g, [0])[0] == pytest.approx(2 + math.log(2), abs=1e-12)
    assert margin_ceiling(W, [2.0, 0.0], [0])[0] == pytest.approx(2 * math.sqrt(2), abs=1e-12)


heads = st.tuples(st.integers(2, 12), st.integers(1, 9), st.integers(0, 2**32 - 1), st.floats(0.01, 3.0))


@given(heads, st.floats(0.0, 1e-3))
def test_no_hidden_state_exceeds_the_ceiling(spec, eps):
    """For random heads, gains (signs included) and hidden states of any scale, every token's NLL <= C_y + log V;
    refuted by any hidden state above it (200 drawn per head, plus the maximising directions)."""
    V, d, seed, scale = spec
    rng = np.random.default_rng(seed)
    W, g = scale * rng.standard_normal((V, d)), rng.standard_normal(d)
    hidden = rng.standard_normal((200, d)) * rng.lognormal(0, 3, (200, 1))
    hidden = np.concatenate([hidden, [ceiling_direction(W, g, y) for y in range(V)]])
    z = rms_head_logits(W, g, hidden, eps)
    bound = nll_ceiling(W, g)
    for y in range(V):
        assert np.all(token_nll(z, np.full(len(z), y)) <= bound[y] + 1e-9)


@given(heads)
def test_the_margin_bound_is_attained_by_the_maximising_direction(spec):
    """At u* the largest margin max_v (z_v - z_y) equals C_y to 1e-9, so C_y <= NLL_y(u*) <= C_y + log V; no drawn
    hidden state has a larger margin."""
    V, d, seed, scale = spec
    rng = np.random.default_rng(seed)
    W, g = scale * rng.standard_normal((V, d)), rng.standard_normal(d)
    C = margin_ceiling(W, g)
    for y in range(V):
        z = rms_head_logits(W, g, ceiling_direction(W, g, y))
        margin = np.delete(z - z[y], y).max()
        assert margin == pytest.approx(C[y], rel=1e-9, abs=1e-12)
        assert C[y] - 1e-9 <= token_nll(z, y) <= C[y] + math.log(V) + 1e-9
        others = rms_head_logits(W, g, rng.standard_normal((100, d)))
        assert np.all(np.delete(others - others[:, [y]], y, axis=1).max(axis=1) <= C[y] + 1e-9)


def test_chunked_ceiling_equals_the_pairwise_definition():
    rng = np.random.default_rng(0)
    W, g = rng.standard_normal((37, 6)), rng.standard_normal(6)
    direct = [math.sqrt(6) * max(np.linalg.norm(g * (W[v] - W[y])) for v in range(37) if v != y) for y in range(37)]
    assert margin_ceiling(W, g, chunk=5) == pytest.approx(direct, rel=1e-12)
    assert margin_ceiling(W, g, [3, 30]) == pytest.approx([direct[3], direct[30]], rel=1e-12)


def test_a_llamas_own_norm_and_head_stay_under_the_ceiling():
    """transformers' LlamaRMSNorm and lm_head (no biases) on hidden states of any scale, and along u*: the NLL
    of every target stays under nll_ceiling computed from the model's weights, and reaches at least C_y."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2, rms_norm_eps=1e-6)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).double().eval()
    with torch.no_grad():
        model.model.norm.weight.copy_(torch.randn(16, dtype=torch.float64))
        W, g = model.lm_head.weight.numpy(), model.model.norm.weight.numpy()
        bound, C = nll_ceiling(W, g), margin_ceiling(W, g)
        h = torch.randn(300, 16, dtype=torch.float64) * torch.logspace(-3, 3, 300, dtype=torch.float64)[:, None]
        z = model.lm_head(model.model.norm(h)).numpy()
        for y in range(50):
            assert np.all(token_nll(z, np.full(300, y)) <= bound[y] + 1e-9)
            top = model.lm_head(model.model.norm(torch.from_numpy(ceiling_direction(W, g, y)))).numpy()
            assert token_nll(top, y) >= C[y] * (1 - 1e-5)  # eps 1e-6 shrinks ||h_hat|| by ~5e-7
