"""theory.ceiling: the final-norm ceiling on a token's NLL, by hand, under hypothesis, and on a Llama's own RMSNorm
and head; its growth under GA by hand, against finite differences, and against GA runs of an RMSNorm + head."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from theory.ceiling import (
    ceiling_direction,
    ceiling_directions,
    ceiling_rate,
    farthest_token,
    gaussian_head_rate,
    head_growth_rate,
    margin_ceiling,
    nll_ceiling,
    one_token_adam_rate,
    rms_head_logits,
    token_nll,
)


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


def test_head_growth_by_hand():
    """W = I (V = d = 2), g = 1, target 0: v* = 1, w_1 - w_0 = (-1, 1), u* = (-1, 1), z = (-1, 1), p_1 = 1 / (1 +
    e^-2). GA's gradient: row 0 (p_0 - 1) u* = p_1 (1, -1), row 1 p_1 (-1, 1), gain (W^T (p - e_0)) * u* = p_1 (-1, 1)
    * (-1, 1) = p_1 (1, 1). Adam (signs): W' = [[1 + lr, -lr], [-lr, 1 + lr]], g' = (1 + lr) (1, 1), so
    a' = (1 + lr)(1 + 2 lr)(-1, 1) and C' = 2 (1 + lr)(1 + 2 lr) = 2 + 6 lr + 4 lr^2: rate 6 lr = lr (2 ||u*||_1 +
    ||(w_1 - w_0) * u*||_1) = lr (2 * 2 + 2). SGD: dC = lr u* . (g * (dW_1 - dW_0) + dg * (w_1 - w_0)) = lr p_1
    ((-1, 1).(-2, 2) + (-1, 1).(-1, 1)) = 6 p_1 lr."""
    W, g, lr = np.eye(2), np.ones(2), 1e-3
    assert farthest_token(W, g, [0])[0] == 1
    assert head_growth_rate(W, g, [0], lr=lr)[0] == pytest.approx(6 * lr, rel=1e-12)
    assert one_token_adam_rate(W, g, 0, lr) == pytest.approx(6 * lr, rel=1e-12)
    p1 = 1 / (1 + math.exp(-2))
    assert head_growth_rate(W, g, [0], lr=lr, optimizer="sgd")[0] == pytest.approx(6 * p1 * lr, rel=1e-12)
    stepped = W + lr * np.array([[1.0, -1.0], [-1.0, 1.0]])
    assert margin_ceiling(stepped, g + lr, [0])[0] == pytest.approx(2 * (1 + lr) * (1 + 2 * lr), rel=1e-12)


def test_bad_optimizer_and_mismatched_weights_are_named():
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'; valid: adam, sgd"):
        head_growth_rate(np.eye(2), np.ones(2), [0], optimizer="adamw")
    with pytest.raises(ValueError, match="one weight per target"):
        head_growth_rate(np.eye(2), np.ones(2), [0, 1], weights=[1.0])


targets_of = st.tuples(heads, st.integers(1, 6), st.integers(0, 2**32 - 1))


def _draw(spec):
    (V, d, seed, scale), n, tseed = spec
    rng = np.random.default_rng(seed)
    W, g = scale * rng.standard_normal((V, d)), rng.standard_normal(d)
    return W, g, np.random.default_rng(tseed).integers(0, V, n), rng


@given(targets_of)
def test_ceiling_rate_is_the_derivative_of_the_ceiling(spec):
    """(C(W + e dW, g + e dg) - C(W - e dW, g - e dg)) / 2e -> ceiling_rate for random updates (e = 1e-6,
    agreement to 1e-5 of the update's scale); refuted by a wrong sign or a missing gain term."""
    W, g, ys, rng = _draw(spec)
    dW, dg = rng.standard_normal(W.shape), rng.standard_normal(g.shape)
    e = 1e-6
    numeric = (margin_ceiling(W + e * dW, g + e * dg, ys) - margin_ceiling(W - e * dW, g - e * dg, ys)) / (2 * e)
    scale = np.sqrt(W.shape[1]) * (np.abs(g).max() * np.abs(dW).max() + np.abs(dg).max() * np.abs(W).max())
    assert ceiling_rate(W, g, ys, dW, dg) == pytest.approx(numeric, abs=1e-5 * scale)


@given(targets_of, st.floats(1e-6, 1.0), st.floats(0.1, 10.0))
def test_adam_rate_is_scale_free_and_bounded_by_one_token(spec, lr, c):
    """Adam's rate is linear in lr, ignores the loss's scale (signs), and never exceeds the one-token rate
    lr (2 ||g*u*||_1 + ||(w_v* - w_y)*u*||_1) (Hoelder); SGD's scales with the loss weights. Refuted by a rate above
    the bound or one that moves with c."""
    W, g, ys, _ = _draw(spec)
    rate = head_growth_rate(W, g, ys, lr=lr)
    assert head_growth_rate(W, g, ys, np.full(len(ys), c), lr=lr) == pytest.approx(rate, rel=1e-9, abs=1e-15)
    bound = np.array([one_token_adam_rate(W, g, y, lr) for y in ys])
    assert np.all(rate <= bound * (1 + 1e-9) + 1e-15)
    sgd = head_growth_rate(W, g, ys, lr=lr, optimizer="sgd")
    assert head_growth_rate(W, g, ys, np.full(len(ys), c), lr=lr, optimizer="sgd") == pytest.approx(
        c * sgd, rel=1e-9, abs=1e-12)


def test_gaussian_heads_grow_at_two_sqrt_2_over_pi_lr_d():
    """Rows N(0, 0.02^2), g = 1, d = 2048, V = 64: u* is a random direction of norm sqrt(d), so the one-token Adam
    rate is lr d (2 sqrt(2/pi) + sqrt(2) sigma) up to ||u*||_1's fluctuation (relative sd ~ 0.6 / sqrt(d) = 1.3%)
    and the maximum over v (a few %): within 5% for every target drawn; refuted by a sqrt(d) instead of d."""
    rng = np.random.default_rng(0)
    d, sigma, lr = 2048, 0.02, 1e-6
    W = sigma * rng.standard_normal((64, d))
    predicted = gaussian_head_rate(lr, d, sigma)
    rates = head_growth_rate(W, np.ones(d), [0, 7, 31], lr=lr)
    assert rates == pytest.approx(np.full(3, predicted), rel=0.05)


def simulate_ga(targets, optimizer: str, lr: float, steps: int = 500, V: int = 32, d: int = 32,
                sigma: float = 1.0, seed: int = 0) -> np.ndarray:
    """GA (unlearn.train's loop, unlearn.optim's optimizers, float64) on a final RMSNorm + head, rows N(0, sigma^2),
    g = 1, with one free hidden state per forget token started at its ceiling direction and moving 10x faster than
    the head (the layers below an LM's final norm keep it there): rows (step, mean NLL, mean C_y, predicted mean
    dC_y/dt) every steps / 10 steps."""
    torch = pytest.importorskip("torch")
    from unlearn.train import TrainConfig, train

    rng = np.random.default_rng(seed)
    ys = torch.as_tensor(np.asarray(targets))
    W0 = sigma * rng.standard_normal((V, d))
    model = torch.nn.ParameterDict({"W": torch.nn.Parameter(torch.from_numpy(W0)),
                                    "g": torch.nn.Parameter(torch.ones(d, dtype=torch.float64)),
                                    "h": torch.nn.Parameter(torch.from_numpy(ceiling_directions(W0, np.ones(d), ys)))})

    def nll(m):
        z = (m["g"] * m["h"] / m["h"].pow(2).mean(-1, keepdim=True).sqrt()) @ m["W"].T
        return torch.logsumexp(z, -1) - z.gather(1, ys[:, None])[:, 0]

    rows = []

    def evaluate(m, step):
        W, g = m["W"].numpy(), m["g"].numpy()
        rate = head_growth_rate(W, g, ys.numpy(), np.full(len(ys), 1 / len(ys)), lr,
                                "adam" if optimizer == "adamw" else "sgd")
        rows.append((step, nll(m).mean().item(), margin_ceiling(W, g, ys.numpy()).mean(), rate.mean()))
        return {}

    train(model, lambda m, batch: {"ga": -nll(m)}, lambda step: [None],
          TrainConfig(steps=steps, lr=lr, optimizer=optimizer, eval_every=steps // 10, precision="float64"),
          evaluate=evaluate, lr_scale={"h": torch.tensor(10.0)})
    return np.array(rows)


def late_rates(rows: np.ndarray) -> tuple[float, float, float]:
    """(dNLL/dt, dC/dt, predicted dC/dt) over the second half of the records (least-squares slopes)."""
    late = rows[len(rows) // 2:]
    return np.polyfit(late[:, 0], late[:, 1], 1)[0], np.polyfit(late[:, 0], late[:, 2], 1)[0], late[:, 3].mean()


@pytest.mark.parametrize("optimizer, lr", [("adamw", 1e-5), ("sgd", 1e-6)])
@pytest.mark.parametrize("targets", [[0], [0, 1, 2, 3, 3, 9, 17, 30]], ids=["one token", "eight sharing"])
def test_ga_on_the_ceiling_grows_as_predicted(optimizer, lr, targets):
    """Pinned at the ceiling (NLL within 1% of C_y throughout), GA's measured dNLL/dt and dC/dt over the last
    half of 500 steps equal head_growth_rate to 1%, one token alone or eight sharing the head and gain. The regime:
    updates small against the weights (first order) and, for AdamW, gradients whose size drifts by much less
    than (1 - beta2) / 2 per step (here ~lr / sigma = 1e-5), so that each coordinate moves lr per step; a faster
    drift makes Adam's steps longer than lr (m_hat / sqrt(v_hat) > 1). Refuted by a rate off by more than 1%;
    the AdamW run is not within 10x of the SGD rule, so the comparison tells the two apart."""
    rows = simulate_ga(targets, optimizer, lr)
    assert np.all(rows[:, 1] >= 0.99 * rows[:, 2])
    nll_slope, ceiling_slope, predicted = late_rates(rows)
    assert nll_slope == pytest.approx(predicted, rel=0.01)
    assert ceiling_slope == pytest.approx(predicted, rel=0.01)
    rng = np.random.default_rng(0)  # simulate_ga's head at step 0
    W0, g0 = rng.standard_normal((32, 32)), np.ones(32)
    other = "sgd" if optimizer == "adamw" else "adam"
    wrong = head_growth_rate(W0, g0, targets, np.full(len(targets), 1 / len(targets)), lr, other).mean()
    assert abs(wrong / nll_slope - 1) > 0.2
