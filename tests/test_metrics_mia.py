"""unlearn.metrics.mia and unlearn.logprobs.token_logprob_moments: membership-inference scores by hand, under
hypothesis, and against numpy and scipy."""

import math
import zlib
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu

from unlearn.logprobs import token_logprob_moments
from unlearn.metrics.mia import (
    auc,
    check_attacks,
    loss_score,
    lowest_fraction_mean,
    min_k,
    min_k_plus_plus,
    priv_leak,
    zlib_score,
)

# ------------------------------------------------------------------------------------------- AUC, PrivLeak


def test_auc_hand_values():
    """Members (3, 1), non-members (2, 1): pairs 3>2, 3>1, 1<2, 1=1 -> (1 + 1 + 0 + 0.5) / 4 = 0.625.
    Perfectly separated -> 1 (and 0 the other way round); all tied -> 0.5."""
    assert auc([3, 1], [2, 1]) == pytest.approx(0.625, abs=1e-15)
    assert auc([5.0, 6.0, 7.0], [1.0, 2.0]) == 1.0
    assert auc([1.0, 2.0], [5.0, 6.0, 7.0]) == 0.0
    assert auc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5


scores = st.lists(st.integers(-4, 4), min_size=1, max_size=15)


@given(scores, scores)
def test_auc_is_the_mann_whitney_u_over_the_pairs(members, nonmembers):
    """Integer scores force ties: AUC = U_members / (n1 n2) (scipy.stats.mannwhitneyu) = the pairwise count
    P(m > n) + 0.5 P(m = n) done here; in [0, 1]; swapping the labels gives 1 - AUC."""
    a = auc(members, nonmembers)
    u = mannwhitneyu(members, nonmembers).statistic
    assert a == pytest.approx(u / (len(members) * len(nonmembers)), abs=1e-12)
    pairs = sum((m > n) + 0.5 * (m == n) for m in members for n in nonmembers)
    assert a == pytest.approx(pairs / (len(members) * len(nonmembers)), abs=1e-12)
    assert 0.0 <= a <= 1.0
    assert auc(nonmembers, members) == pytest.approx(1.0 - a, abs=1e-12)


@given(st.lists(st.floats(-100, 0), min_size=1, max_size=10), st.lists(st.floats(1, 100), min_size=1, max_size=10))
def test_perfectly_separated_scores_give_auc_one(low, high):
    assert auc(high, low) == 1.0
    assert auc(low, high) == 0.0


def test_auc_refuses_empty_and_non_finite_scores():
    for m, n in (([], [1.0]), ([1.0], []), ([], [])):
        with pytest.raises(ValueError, match="at least one"):
            auc(m, n)
    for m, n in (([1.0, math.nan], [0.5]), ([1.0], [math.inf]), ([-math.inf], [0.0])):
        with pytest.raises(ValueError, match="finite"):
            auc(m, n)


def test_priv_leak_hand_value_and_sign():
    """(0.6 - 0.5) / 0.5 x 100 = 20. Sign: a model whose forget-set scores sit above its holdout's (AUC 1) against
    a retain model that cannot tell them apart (AUC 0.5) still looks like it trained on the forget set: +100;
    the other way round (forget set less familiar than unseen data, AUC 0) gives -100."""
    assert priv_leak(0.6, 0.5) == pytest.approx(20.0, abs=1e-12)
    holdout = [-2.0, -1.5, -1.0]
    unlearned = auc([-0.5, -0.2, -0.1], holdout)  # forget scores higher: still looks like training data
    retain = auc([-2.0, -1.5, -1.0], holdout)  # the retain model scores the forget set as it scores the holdout
    assert (unlearned, retain) == (1.0, 0.5)
    assert priv_leak(unlearned, retain) == pytest.approx(100.0, abs=1e-12)
    assert priv_leak(auc([-3.0, -2.5, -2.2], holdout), retain) == pytest.approx(-100.0, abs=1e-12)
    for bad in (0.0, -0.5, math.nan):
        with pytest.raises(ValueError, match="positive retain AUC"):
            priv_leak(0.5, bad)


# ------------------------------------------------------------------------------------------- per-sequence scores


def _logits(prob_rows):
    """Logits whose softmax is the given rows exactly (log p; log 0 = -inf), float64, one sequence: (1, T, V)."""
    with np.errstate(divide="ignore"):
        return torch.tensor(np.log(np.asarray(prob_rows, dtype=np.float64)))[None]


PROBS = [[0.7, 0.2, 0.1], [0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]
LABELS = [1, 0, 0]


def _z_by_hand(rows, labels):
    """z_t = (log p_t[x_t] - mu_t) / sigma_t with mu_t = sum_v p log p, sigma_t^2 = sum_v p (log p)^2 - mu_t^2."""
    z = []
    for p, y in zip(rows, labels, strict=True):
        p = np.asarray(p, dtype=np.float64)
        mu = float(np.sum(p * np.log(p)))
        sigma = math.sqrt(float(np.sum(p * np.log(p) ** 2)) - mu**2)
        z.append((math.log(p[y]) - mu) / sigma)
    return z


def test_loss_and_min_k_hand_values():
    """Token log-probs log 0.2, log 0.5, log 0.1: loss = their mean; Min-K% with k = 0.5 keeps floor(1.5) = 1,
    the lowest (log 0.1); k = 0.7 keeps floor(2.1) = 2 (log 0.1, log 0.2); k = 0.2 keeps max(1, 0) = 1; k = 1 is
    the loss. A fourth, masked position with probability 1e-9 is never counted."""
    logits, labels = _logits(PROBS), torch.tensor([LABELS])
    mask = torch.ones(1, 3)
    lp = [math.log(0.2), math.log(0.5), math.log(0.1)]
    assert loss_score(logits, labels, mask).tolist() == pytest.approx([sum(lp) / 3], abs=1e-12)
    assert min_k(logits, labels, mask, 0.5).tolist() == pytest.approx([math.log(0.1)], abs=1e-12)
    assert min_k(logits, labels, mask, 0.7).tolist() == pytest.approx([(math.log(0.1) + math.log(0.2)) / 2], abs=1e-12)
    assert min_k(logits, labels, mask, 0.2).tolist() == pytest.approx([math.log(0.1)], abs=1e-12)
    assert min_k(logits, labels, mask, 1.0).tolist() == pytest.approx([sum(lp) / 3], abs=1e-12)

    padded = _logits(PROBS + [[1e-9, 0.5, 0.5 - 1e-9]])
    labels4, mask4 = torch.tensor([LABELS + [0]]), torch.tensor([[1, 1, 1, 0]])
    assert loss_score(padded, labels4, mask4).tolist() == pytest.approx([sum(lp) / 3], abs=1e-12)
    assert min_k(padded, labels4, mask4, 0.5).tolist() == pytest.approx([math.log(0.1)], abs=1e-12)


def test_min_k_plus_plus_closed_form_by_hand():
    """z_t from the softmax rows by hand (numpy float64); k = 0.5 keeps floor(1.5) = 1 (the lowest z), k = 0.7
    keeps the lowest 2, k = 1 averages all three. Masked positions (here one whose z would be the lowest of all)
    are never counted; the same rows as float32 logits agree to 1e-6."""
    z = _z_by_hand(PROBS, LABELS)
    zs = sorted(z)
    logits, labels, mask = _logits(PROBS), torch.tensor([LABELS]), torch.ones(1, 3)
    assert min_k_plus_plus(logits, labels, mask, 0.5).tolist() == pytest.approx([zs[0]], abs=1e-9)
    assert min_k_plus_plus(logits, labels, mask, 0.7).tolist() == pytest.approx([(zs[0] + zs[1]) / 2], abs=1e-9)
    assert min_k_plus_plus(logits, labels, mask, 1.0).tolist() == pytest.approx([sum(z) / 3], abs=1e-9)
    assert min_k_plus_plus(logits.float(), labels, mask, 0.7).tolist() == pytest.approx([(zs[0] + zs[1]) / 2],
                                                                                         abs=1e-6)
    masked_row = [0.98, 0.01, 0.01]
    assert _z_by_hand([masked_row], [1])[0] < zs[0]
    padded = torch.cat([_logits([masked_row]), logits], dim=1)
    labels4, mask4 = torch.tensor([[1] + LABELS]), torch.tensor([[0, 1, 1, 1]])
    assert min_k_plus_plus(padded, labels4, mask4, 0.5).tolist() == pytest.approx([zs[0]], abs=1e-9)
    assert min_k_plus_plus(padded, labels4, mask4, 1.0).tolist() == pytest.approx([sum(z) / 3], abs=1e-9)


def test_min_k_plus_plus_one_hot_rows_give_z_zero():
    """A one-hot next-token distribution has sigma = 0: z = 0 there (the label being the certain token, 0 / 0
    otherwise), finite, and k = 1 averages it with the other positions. Exactly one-hot (-inf logits, float64) and
    one-hot by underflow (logits 0, -1000 in float32) both."""
    z = _z_by_hand(PROBS[:2], LABELS[:2])
    labels, mask = torch.tensor([LABELS[:2] + [0]]), torch.ones(1, 3)
    exact = _logits(PROBS[:2] + [[1.0, 0.0, 0.0]])
    got = min_k_plus_plus(exact, labels, mask, 1.0)
    assert torch.isfinite(got).all()
    assert got.tolist() == pytest.approx([(z[0] + z[1] + 0.0) / 3], abs=1e-9)
    underflow = exact.clone().float()
    underflow[0, 2] = torch.tensor([0.0, -1000.0, -1000.0])
    got32 = min_k_plus_plus(underflow, labels, mask, 1.0)
    assert torch.isfinite(got32).all()
    assert got32.tolist() == pytest.approx([(z[0] + z[1]) / 3], abs=1e-6)
    only = min_k_plus_plus(_logits([[0.0, 1.0, 0.0]]), torch.tensor([[1]]), torch.ones(1, 1), 0.5)
    assert only.tolist() == [0.0]


def _min_k_pp_numpy(logits, labels, mask, k):
    """Min-K%++ in float64 numpy, m = max(1, floor(k n)) for the dyadic k drawn below (exact in any float)."""
    out = []
    for lg, y, mk in zip(logits, labels, mask, strict=True):
        lg = lg.astype(np.float64)
        logp = lg - lg.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        p = np.exp(logp)
        mu = (p * logp).sum(-1)
        sigma = np.sqrt((p * logp**2).sum(-1) - mu**2)
        z = (logp[np.arange(len(y)), y] - mu) / sigma
        z = np.sort(z[mk.astype(bool)])
        m = max(1, math.floor(k * len(z)))
        out.append(z[:m].mean())
    return np.array(out)


@given(st.integers(0, 2**32 - 1), st.integers(1, 8), st.integers(1, 9), st.integers(2, 13), st.floats(0.1, 4.0))
def test_min_k_plus_plus_agrees_with_numpy(seed, j, T, V, scale):
    """Random logits (B = 3), labels and masks (each row keeps at least one position): the float64 torch score
    equals an independent numpy computation to 1e-9; k = j / 8 is exact, so floor(k n) has no rounding to argue."""
    rng = np.random.default_rng(seed)
    logits = scale * rng.standard_normal((3, T, V))
    labels = rng.integers(0, V, (3, T))
    mask = rng.random((3, T)) < 0.7
    mask[np.arange(3), rng.integers(0, T, 3)] = True
    k = j / 8
    got = min_k_plus_plus(torch.tensor(logits), torch.tensor(labels), torch.tensor(mask), k)
    assert got.numpy() == pytest.approx(_min_k_pp_numpy(logits, labels, mask, k), abs=1e-9)
    logp = torch.log_softmax(torch.tensor(logits), -1).gather(-1, torch.tensor(labels)[..., None])[..., 0]
    tm, lv = torch.tensor(mask), logp.numpy()
    assert loss_score(torch.tensor(logits), torch.tensor(labels), tm).numpy() == pytest.approx(
        [lv[b][mask[b]].mean() for b in range(3)], abs=1e-9)
    mk = min_k(torch.tensor(logits), torch.tensor(labels), tm, k).numpy()
    expected = [np.sort(lv[b][mask[b]])[: max(1, math.floor(k * mask[b].sum()))].mean() for b in range(3)]
    assert mk == pytest.approx(expected, abs=1e-9)
    assert np.all(mk <= loss_score(torch.tensor(logits), torch.tensor(labels), tm).numpy() + 1e-12)


@given(st.lists(st.floats(-50, 50), min_size=1, max_size=12), st.integers(1, 8), st.integers(0, 2**16))
def test_lowest_fraction_mean_is_the_mean_of_the_lowest_m(values, j, seed):
    """Padding past the masked values (filled with -1e9, below every value) never enters; m = max(1, floor(k n))."""
    rng = np.random.default_rng(seed)
    n, pad = len(values), int(rng.integers(0, 4))
    row = torch.tensor([values + [-1e9] * pad], dtype=torch.float64)
    mask = torch.tensor([[True] * n + [False] * pad])
    k = j / 8
    m = max(1, math.floor(k * n))
    assert lowest_fraction_mean(row, mask, k).item() == pytest.approx(float(np.mean(sorted(values)[:m])), abs=1e-9)


def test_lowest_fraction_mean_refusals_and_empty_rows():
    """k outside (0, 1] is refused; a row with no masked value gives nan (the other rows unaffected)."""
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    for k in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="k must lie"):
            lowest_fraction_mean(values, torch.ones(2, 2), k)
    got = lowest_fraction_mean(values, torch.tensor([[1, 1], [0, 0]]), 1.0)
    assert got[0].item() == 1.5 and math.isnan(got[1].item())


def test_lowest_fraction_mean_keeps_floor_k_n_when_k_n_is_an_integer():
    """k = 0.53, n = 100: the documented m = floor(k n) = 53 (Python's float64 floor(0.53 * 100) = 53 too, and
    Min-K%'s reference code int(len * k) = 53), so the mean of 0, 1, ..., 52 is 26. Also k = 0.84, n = 75
    (m = 63) and k = 0.21, n = 300 (m = 63)."""
    for k, n in ((0.53, 100), (0.84, 75), (0.21, 300)):
        m = math.floor(Fraction(str(k)) * n)
        assert m == math.floor(k * n) == int(n * k)
        values = torch.arange(n, dtype=torch.float64)[None]
        assert lowest_fraction_mean(values, torch.ones(1, n), k).item() == pytest.approx((m - 1) / 2, abs=1e-12)


# ------------------------------------------------------------------------------------------- moments


def test_token_logprob_moments_equal_numpy_float64():
    """Random float32 logits (B = 2, T = 4, V = 11): log p(x_t), mu_t = sum p log p and sigma_t = sqrt(sum p
    (log p)^2 - mu^2) equal a float64 numpy computation to 1e-6 on the mask, and are exactly 0 outside it."""
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((2, 4, 11)) * 3
    labels = rng.integers(0, 11, (2, 4))
    mask = np.array([[1, 1, 0, 1], [0, 1, 1, 0]], dtype=bool)
    logp_t, mu_t, sigma_t = token_logprob_moments(torch.tensor(logits, dtype=torch.float32),
                                                  torch.tensor(labels), torch.tensor(mask))
    logq = logits - logits.max(-1, keepdims=True)
    logq = logq - np.log(np.exp(logq).sum(-1, keepdims=True))
    p = np.exp(logq)
    mu = (p * logq).sum(-1)
    sigma = np.sqrt((p * logq**2).sum(-1) - mu**2)
    label_logp = np.take_along_axis(logq, labels[..., None], -1)[..., 0]
    for got, want in ((logp_t, label_logp), (mu_t, mu), (sigma_t, sigma)):
        got = got.double().numpy()
        assert got[mask] == pytest.approx(want[mask], abs=1e-6)
        assert np.all(got[~mask] == 0.0)
    assert np.all(sigma[mask] > 0.1)


def test_token_logprob_moments_of_a_uniform_and_a_two_point_distribution():
    """Uniform over V = 5: mu = -log 5, sigma = 0. p = (1/2, 1/4, 1/4, 0, 0) by hand: log p = (-log 2,
    -2 log 2, -2 log 2), mu = -(1/2) log 2 - (1/2) 2 log 2 = -1.5 log 2, E[(log p)^2] = (1/2 + 2) (log 2)^2 = 2.5
    (log 2)^2, sigma^2 = (2.5 - 2.25) (log 2)^2 -> sigma = 0.5 log 2."""
    logits = torch.tensor([[[0.0] * 5, [math.log(0.5), math.log(0.25), math.log(0.25), -math.inf, -math.inf]]],
                          dtype=torch.float64)
    logp, mu, sigma = token_logprob_moments(logits, torch.tensor([[2, 0]]), torch.ones(1, 2))
    ln2 = math.log(2)
    assert logp[0].tolist() == pytest.approx([-math.log(5), -ln2], abs=1e-12)
    assert mu[0].tolist() == pytest.approx([-math.log(5), -1.5 * ln2], abs=1e-12)
    assert sigma[0].tolist() == pytest.approx([0.0, 0.5 * ln2], abs=1e-6)


# ------------------------------------------------------------------------------------------- zlib, attacks


def test_zlib_score_hand_value():
    """zlib("hello") is 13 bytes: a 2-byte header, one fixed-Huffman block of 3 + 5 x 8 + 7 = 50 bits (7 bytes)
    and a 4-byte Adler-32; -2.6 / 13 = -0.2. "é" is two UTF-8 bytes (zlib length 10, checked against zlib here)."""
    assert len(zlib.compress(b"hello")) == 13
    got = zlib_score([-2.6, -1.0], ["hello", "é"])
    assert got == pytest.approx([-0.2, -1.0 / len(zlib.compress("é".encode()))], abs=1e-15)
    assert len("é".encode()) == 2


def test_check_attacks():
    assert check_attacks(["loss", "min_k++"], reference=False) == ("loss", "min_k++")
    assert check_attacks(("reference", "zlib"), reference=True) == ("reference", "zlib")
    for attacks in (["loss", "min_kk"], ["loss", "loss"], []):
        with pytest.raises(ValueError, match="distinct names"):
            check_attacks(attacks, reference=False)
    with pytest.raises(ValueError, match="needs --reference-model"):
        check_attacks(["loss", "reference"], reference=False)
    with pytest.raises(ValueError, match="give both or neither"):
        check_attacks(["loss"], reference=True)
