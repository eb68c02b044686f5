"""theory.objectives: hand-derived values, then hypothesis properties (bounds, limits, monotonicity, convexity)."""

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from theory import objectives as T

betas = st.floats(1e-3, 50.0)
ratios = st.floats(-60.0, 60.0)  # r = logp - logp_ref
logps = st.floats(-500.0, -1e-6)  # per-sequence log-likelihood sums
lengths = st.integers(1, 512)


class TestHandValues:
    """Each value below is worked out by hand in the docstring of its test."""

    def test_npo_at_reference(self):
        """r = 0, beta = 1: L = 2 log(1 + 1) = 2 log 2 = 1.3862944; W = 2 sigma(0) = 1."""
        assert T.npo_loss(0.0, 1.0) == pytest.approx(1.3862944, abs=1e-7)
        assert T.npo_weight(0.0, 1.0) == 1.0

    def test_npo_above_reference(self):
        """pi/pi_ref = 3 (r = log 3), beta = 1: L = 2 log(1 + 3) = 2.7725887; W = 2 * 3/4 = 1.5."""
        assert T.npo_loss(math.log(3), 1.0) == pytest.approx(2.7725887, abs=1e-7)
        assert T.npo_weight(math.log(3), 1.0) == pytest.approx(1.5, abs=1e-12)

    def test_npo_below_reference(self):
        """pi/pi_ref = 1/2, beta = 2: L = (2/2) log(1 + (1/2)^2) = log 1.25 = 0.2231436;
        W = 2 (1/4)/(1 + 1/4) = 0.4."""
        assert T.npo_loss(-math.log(2), 2.0) == pytest.approx(0.2231436, abs=1e-7)
        assert T.npo_weight(-math.log(2), 2.0) == pytest.approx(0.4, abs=1e-12)

    def test_simnpo(self):
        """logp = -6, |y| = 3, beta = 1, gamma = 0: lbar = -2, L = 2 log(1 + e^-2) = 0.2538560,
        w' = (2/3) sigma(-2) = 0.0794686. With gamma = 2: L = 2 log 2 = 1.3862944, w' = (2/3)(1/2) = 1/3."""
        assert T.simnpo_loss(-6.0, 3, 1.0) == pytest.approx(0.2538560, abs=1e-7)
        assert T.simnpo_weight(-6.0, 3, 1.0) == pytest.approx(0.0794686, abs=1e-7)
        assert T.simnpo_loss(-6.0, 3, 1.0, gamma=2.0) == pytest.approx(1.3862944, abs=1e-7)
        assert T.simnpo_weight(-6.0, 3, 1.0, gamma=2.0) == pytest.approx(1 / 3, abs=1e-12)

    def test_dpo(self):
        """r_w = log 2, r_l = 0, beta = 1: L = -2 log sigma(log 2) = -2 log(2/3) = 0.8109302;
        sigma(-log 2) = 1/3, so (dL/dlogp_w, dL/dlogp_l) = (-2/3, 2/3)."""
        assert T.dpo_loss(math.log(2), 0.0, 1.0) == pytest.approx(0.8109302, abs=1e-7)
        w_w, w_l = T.dpo_weights(math.log(2), 0.0, 1.0)
        assert (w_w, w_l) == (pytest.approx(-2 / 3), pytest.approx(2 / 3))

    def test_ga_and_nll(self):
        """GA is logp itself with weight 1; NLL is -logp."""
        assert T.ga_loss(-2.5) == -2.5 and T.ga_weight(-2.5) == 1.0 and T.nll_loss(-2.5) == 2.5

    def test_categorical_kl(self):
        """KL((1/2, 1/2) || (1/4, 3/4)) = (1/2) log 2 + (1/2) log(2/3) = 0.1438410."""
        p, q = np.log([0.5, 0.5]), np.log([0.25, 0.75])
        assert T.categorical_kl(p, q) == pytest.approx(0.1438410, abs=1e-7)

    @pytest.mark.parametrize("beta", [0.0, -1.0, float("nan"), float("inf")])
    @pytest.mark.parametrize("fn", [
        lambda b: T.npo_loss(0.0, b), lambda b: T.npo_weight(0.0, b), lambda b: T.npo_curvature(0.0, b),
        lambda b: T.npo_bounds(0.0, b), lambda b: T.simnpo_loss(-1.0, 2, b), lambda b: T.simnpo_weight(-1.0, 2, b),
        lambda b: T.dpo_loss(0.0, 0.0, b), lambda b: T.dpo_weights(0.0, 0.0, b)])
    def test_impossible_beta_is_refused_everywhere(self, fn, beta):
        with pytest.raises(ValueError, match="beta must be a finite number > 0"):
            fn(beta)

    @pytest.mark.parametrize("fn", [T.simnpo_loss, T.simnpo_weight])
    def test_an_empty_response_is_refused(self, fn):
        with pytest.raises(ValueError, match="length must be >= 1"):
            fn([-1.0, -2.0], [3, 0], 1.0)
        with pytest.raises(ValueError, match="length must be >= 1"):
            T.simnpo_small_beta_limit(-1.0, 0)

    def test_npo_curvature(self):
        """r = 0, beta = 1: 2 * 1 * (1/2)(1/2) = 0.5; r = log 3, beta = 1: sigma = 3/4, 2 (3/4)(1/4) = 0.375."""
        assert T.npo_curvature(0.0, 1.0) == 0.5
        assert T.npo_curvature(math.log(3), 1.0) == pytest.approx(0.375, abs=1e-12)

    def test_npo_bounds(self):
        """r = 1, beta = 2: (2, 2 + log 2); r = -1: (0, log 2)."""
        assert T.npo_bounds(1.0, 2.0) == (pytest.approx(2.0), pytest.approx(2 + T.LOG2))
        assert T.npo_bounds(-1.0, 2.0) == (pytest.approx(0.0), pytest.approx(T.LOG2))

    def test_softplus_does_not_overflow(self):
        """softplus(1000) = 1000, softplus(-1000) = e^-1000 (0 in float64), softplus(0) = log 2."""
        assert T.softplus([1000.0, -1000.0, 0.0]).tolist() == [1000.0, 0.0, pytest.approx(T.LOG2)]


@given(r=ratios, beta=betas)
def test_npo_bounds(r, beta):
    """2 max(r,0) <= L <= 2 max(r,0) + (2/beta) log 2."""
    lo, hi = T.npo_bounds(r, beta)
    loss = T.npo_loss(r, beta)
    tol = 1e-12 * max(1.0, abs(hi))
    assert lo - tol <= loss <= hi + tol and loss >= 0


@given(r=ratios, beta=betas)
def test_npo_weight_in_open_interval(r, beta):
    """W = 2 sigma(beta r) lies in (0, 2) (where float64 can tell it apart from the ends)."""
    w = T.npo_weight(r, beta)
    assert 0.0 <= w <= 2.0
    if abs(beta * r) < 30:
        assert 0.0 < w < 2.0


@given(beta=betas)
def test_npo_weight_is_one_at_reference(beta):
    assert T.npo_weight(0.0, beta) == 1.0


@given(r=st.floats(-5.0, 5.0))
def test_npo_small_beta_limit_is_ga(r):
    """Proposition 1: L - (2/beta) log 2 -> r and W -> 1 as beta -> 0 (error O(beta r^2))."""
    beta = 1e-6
    assert T.npo_loss(r, beta) - 2 * T.LOG2 / beta == pytest.approx(T.npo_small_beta_limit(r), abs=1e-4)
    assert T.npo_weight(r, beta) == pytest.approx(1.0, abs=1e-5)


@given(r=ratios)
def test_npo_large_beta_limit_is_hinge(r):
    """beta -> inf: L -> 2 max(r, 0); the gap is at most (2/beta) log 2."""
    beta = 1e6
    assert T.npo_loss(r, beta) == pytest.approx(T.npo_large_beta_limit(r), abs=2 * T.LOG2 / beta + 1e-9)


@given(r1=ratios, r2=ratios, beta=betas)
def test_npo_monotone_and_convex(r1, r2, beta):
    """Increasing in r, and L((r1+r2)/2) <= (L(r1) + L(r2))/2."""
    assume(abs(r1 - r2) > 1e-6)
    lo, hi = sorted((r1, r2))
    assert T.npo_loss(lo, beta) <= T.npo_loss(hi, beta)
    mid = T.npo_loss((r1 + r2) / 2, beta)
    assert mid <= (T.npo_loss(r1, beta) + T.npo_loss(r2, beta)) / 2 + 1e-9 * max(1, abs(mid))
    assert T.npo_curvature(r1, beta) >= 0


@given(r=st.floats(-20.0, 20.0), beta=st.floats(1e-2, 10.0))
def test_npo_weight_is_derivative_of_loss(r, beta):
    """W equals the central finite difference of L (float64, step 1e-6)."""
    h = 1e-6
    fd = (T.npo_loss(r + h, beta) - T.npo_loss(r - h, beta)) / (2 * h)
    assert T.npo_weight(r, beta) == pytest.approx(fd, rel=1e-5, abs=1e-7)


@given(logp=logps, length=lengths, beta=betas, gamma=st.floats(0.0, 10.0))
def test_simnpo_weight_below_two_over_length(logp, length, beta, gamma):
    w = T.simnpo_weight(logp, length, beta, gamma)
    assert 0.0 <= w < 2.0 / length


@given(logp=st.floats(-50.0, -1e-3), length=lengths)
def test_simnpo_small_beta_limit_is_length_normalised_ga(logp, length):
    """beta -> 0 (gamma = 0): L - (2/beta) log 2 -> logp/|y|, and w' -> 1/|y|."""
    beta = 1e-6
    assert T.simnpo_loss(logp, length, beta) - 2 * T.LOG2 / beta == pytest.approx(
        T.simnpo_small_beta_limit(logp, length), abs=1e-3)
    assert T.simnpo_weight(logp, length, beta) * length == pytest.approx(1.0, abs=1e-4)


@given(logp=logps, length=lengths, beta=betas)
def test_simnpo_is_npo_on_mean_likelihood(logp, length, beta):
    """With gamma = 0, SimNPO is NPO with r replaced by lbar = logp/|y| (a zero-reference, length-normalised NPO)."""
    assert T.simnpo_loss(logp, length, beta) == pytest.approx(T.npo_loss(logp / length, beta), rel=1e-12)


@given(r=ratios, beta=betas)
def test_dpo_without_winner_is_npo(r, beta):
    """Dropping the positive term (r_w = 0) turns DPO into NPO."""
    assert T.dpo_loss(0.0, r, beta) == pytest.approx(T.npo_loss(r, beta), rel=1e-12, abs=1e-300)


@given(r=st.floats(-20.0, 20.0), beta=st.floats(1e-2, 10.0))
def test_npo_curvature_is_derivative_of_weight(r, beta):
    """d^2 L/dr^2 equals the central finite difference of W = dL/dr, and is positive."""
    h = 1e-6
    fd = (T.npo_weight(r + h, beta) - T.npo_weight(r - h, beta)) / (2 * h)
    assert T.npo_curvature(r, beta) == pytest.approx(fd, rel=1e-5, abs=1e-8)
    assert T.npo_curvature(r, beta) >= 0


@given(r_w=st.floats(-20.0, 20.0), r_l=st.floats(-20.0, 20.0), beta=st.floats(1e-2, 10.0))
def test_dpo_weights_are_derivatives_of_loss(r_w, r_l, beta):
    """(dL/dlogp_w, dL/dlogp_l) by central differences; w_w = -w_l, and w_l in [0, 2]."""
    h = 1e-6
    w_w, w_l = T.dpo_weights(r_w, r_l, beta)
    fd_w = (T.dpo_loss(r_w + h, r_l, beta) - T.dpo_loss(r_w - h, r_l, beta)) / (2 * h)
    fd_l = (T.dpo_loss(r_w, r_l + h, beta) - T.dpo_loss(r_w, r_l - h, beta)) / (2 * h)
    assert (w_w, w_l) == (pytest.approx(fd_w, rel=1e-5, abs=1e-7), pytest.approx(fd_l, rel=1e-5, abs=1e-7))
    assert w_w == -w_l and 0.0 <= w_l <= 2.0


@given(logp=logps, length=lengths, beta=betas, gamma=st.floats(0.0, 10.0))
def test_simnpo_bounds_with_a_margin(logp, length, beta, gamma):
    """2 max(lbar + gamma/beta, 0) <= L <= that + (2/beta) log 2: NPO's bounds at r = lbar + gamma/beta."""
    lo, hi = T.npo_bounds(logp / length + gamma / beta, beta)
    loss = T.simnpo_loss(logp, length, beta, gamma)
    tol = 1e-12 * max(1.0, abs(hi))
    assert lo - tol <= loss <= hi + tol


@given(logp=st.floats(-50.0, -1e-3), length=lengths, beta=st.floats(1e-2, 10.0), gamma=st.floats(0.0, 5.0))
def test_simnpo_weight_is_derivative_of_loss(logp, length, beta, gamma):
    h = 1e-5
    fd = (T.simnpo_loss(logp + h, length, beta, gamma) - T.simnpo_loss(logp - h, length, beta, gamma)) / (2 * h)
    assert T.simnpo_weight(logp, length, beta, gamma) == pytest.approx(fd, rel=1e-5, abs=1e-9)


@given(seed=st.integers(0, 2**16), size=st.integers(2, 20))
def test_categorical_kl_is_nonnegative_and_zero_only_at_equality(seed, size):
    """Gibbs' inequality: KL(p || q) >= 0, = 0 at q = p, > 0 for q != p (here q a random other distribution)."""
    g = np.random.default_rng(seed)
    log_p, log_q = (np.log(g.dirichlet(np.ones(size))) for _ in range(2))
    assert T.categorical_kl(log_p, log_p) == pytest.approx(0.0, abs=1e-12)
    assert T.categorical_kl(log_p, log_q) > 0
