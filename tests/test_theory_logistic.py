"""theory.logistic (NPO paper Theorem 2): hand-derived values, the exact reduced recursion against the shared
torch loop, the explicit envelopes against simulated runs, the ODE against the discrete run, limits, the
assumption checker and the K-class softmax remark."""

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.special import expit

from sims import logistic
from theory import logistic as T
from unlearn.objectives import MethodParams

betas = st.floats(0.25, 8.0)
etas = st.floats(0.05, 1.0)
seeds = st.integers(0, 2**31 - 1)


def gaussian_forget_set(seed, n, d, theta_scale=0.1):
    """Rows ~ N(0, I_d/d) (norms ~1), labels ~ Bern(1/2), theta_init ~ N(0, theta_scale^2 I_d/d)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) / math.sqrt(d)
    return X, rng.integers(0, 2, n), rng.standard_normal(d) * theta_scale / math.sqrt(d)


def log_grid(steps, points=60):
    return np.unique(np.round(np.geomspace(1, steps, points)).astype(int))


def method_of(beta):
    return ("GA", None) if beta is None else ("NPO", beta)


class TestHandValues:
    """Each value is worked out in the docstring of its test."""

    def test_one_sample_ga_steps(self):
        """x = e_1, theta_init = 0, y = 0, eta = 1: u_{t+1} = u_t + sigma(u_t), so u_1 = 1/2 and
        u_2 = 1/2 + sigma(1/2) = 0.5 + 0.6224593 = 1.1224593; b = -(2y - 1) u = u."""
        b = T.reduced_recursion(np.eye(1), [0], np.zeros(1), 1.0, 2, "GA")[:, 0]
        assert b == pytest.approx([0.0, 0.5, 1.1224593], abs=1e-7)

    def test_one_sample_npo_steps(self):
        """Same sample, NPO beta = 1: step 1 has W = 1, so u_1 = 1/2. Then p = sigma(-1/2) = 0.3775407 against
        p_ref = 1/2: W = 2 p/(p + 1/2) = 0.8604517, the push is W sigma(1/2) = 0.5355962 and u_2 = 1.0355962."""
        b = T.reduced_recursion(np.eye(1), [0], np.zeros(1), 1.0, 2, "NPO", 1.0)[:, 0]
        assert b == pytest.approx([0.0, 0.5, 1.0355962], abs=1e-7)

    def test_first_step_norm(self):
        """Orthonormal X (n_f = 4), theta_init = 0: every pred is 1/2, so b_1 = -(eta/4) s/2 and
        ||b_1|| = eta/(2 sqrt(4)) = eta/4 for GA and NPO alike (W = 1 at the reference)."""
        for method, beta in (("GA", None), ("NPO", 3.0)):
            b1 = T.reduced_recursion(np.eye(4), [0, 1, 1, 0], np.zeros(4), 0.8, 1, method, beta)[1]
            assert np.linalg.norm(b1) == pytest.approx(0.2, abs=1e-12)

    def test_ga_ode_closed_form(self):
        """u' = sigma(u), u(0) = 0 integrates to t = u + 1 - e^{-u}: u = 1 at t = 2 - 1/e = 1.6321206."""
        assert T.ga_ode_closed_form(2 - math.exp(-1), 1.0, 0.0) == pytest.approx(1.0, abs=1e-12)

    @given(a=st.floats(-10.0, 10.0), k=st.floats(1e-3, 2.0), t=st.floats(0.0, 1e6))
    @settings(max_examples=50)
    def test_ga_ode_closed_form_solves_its_implicit_equation(self, a, k, t):
        """F(u) = u + e^a (1 - e^{-u}) - k t = 0 within the stated error: the Newton step F / F' that would correct
        u is below ~eps max(1, e^a, k t), margins a up to 10 included (e^{-C} overflowed at a > ~6.5 before the
        Wright omega form)."""
        u = T.ga_ode_closed_form(t, k, a)
        newton_step = (u - math.exp(a) * math.expm1(-u) - k * t) / (1 + math.exp(a - u))
        assert abs(newton_step) <= 1e-14 * max(1.0, math.exp(a), k * t)

    def test_npo_ode_asymptote(self):
        """beta = 1, a = 0: K = 2 (1 + 1) = 4, so u(t) = log(4 k t + 1): at k = t = 1, log 5 = 1.6094379."""
        assert T.npo_ode_asymptote(1.0, 1.0, 0.0, 1.0) == pytest.approx(1.6094379, abs=1e-7)

    def test_ga_envelope_for_orthonormal_features(self):
        """x_i = e_i, theta_init = 0: each u_i moves by eta0 sigma(u_i) in [eta0/2, eta0) and the coordinates never
        couple, so the eigenvalue bounds (lambda = 1) give exactly C1 = sigma(0) = 1/2 and C2 = 1."""
        c = T.rate_constants(T.forget_geometry(np.eye(4), np.zeros(4)), 1.0, "GA")
        assert c.holds and (c.C_lo, c.C_hi) == (pytest.approx(0.5), pytest.approx(1.0))

    def test_npo_envelope_for_orthonormal_features(self):
        """Same data, NPO beta = 2: C_lo = beta sigma(0) L with L = e^{-eta0} (one step's clock lag, eta0 = 1/4)
        less the 1% widening, i.e. 2 (1/2) 0.7788 * 0.99 = 0.7710; C_hi = beta 2 (1 + e^0)^beta H >= 2*2*4 = 16."""
        c = T.rate_constants(T.forget_geometry(np.eye(4), np.zeros(4)), 1.0, "NPO", 2.0)
        assert c.C_lo == pytest.approx(math.exp(-0.25) * 0.99, rel=1e-6) and c.C_hi >= 16


@settings(max_examples=20)
@given(seed=seeds, n=st.integers(2, 6), extra=st.integers(0, 30), beta=betas, eta=st.floats(0.05, 2.0),
       steps=st.integers(1, 40), theta_scale=st.floats(0.0, 2.0))
def test_reduced_recursion_equals_full_gradient_descent(seed, n, extra, beta, eta, steps, theta_scale):
    """The n_f-dimensional recursion reproduces b_t = X (theta_t - theta_init) of full-dimensional gradient
    descent run by the shared loop (sims.logistic.unlearn -> unlearn.train, METHODS' GA and NPO) to 1e-9."""
    d = n + extra
    X, y, theta = gaussian_forget_set(seed, n, d, theta_scale)
    grid = tuple(range(steps + 1))
    Xt, yt, tht = torch.tensor(X), torch.tensor(y), torch.tensor(theta)
    empty = torch.zeros(0, d, dtype=torch.float64)
    world = logistic.LogisticData(Xt, yt, torch.zeros_like(yt), empty, torch.zeros(0, dtype=torch.long), empty, empty)
    runs = [logistic.Run("GA", "GA", MethodParams(), eta), logistic.Run("NPO", "NPO", MethodParams(beta=beta), eta)]

    def b_of(model, step):
        return {"b": torch.einsum("wkp,np->wkn", model.theta - tht, Xt).flatten(0, 1)}

    history = logistic.unlearn(runs, [world], tht[None], tht[None], steps, 0, False, eval_at=grid, evaluate=b_of)
    simulated = np.asarray(history.evals["b"])  # (steps + 1, members, n)
    for j, (method, b) in enumerate((("GA", None), ("NPO", beta))):
        reduced = T.reduced_recursion(X, y, theta, eta, steps, method, b)
        assert np.abs(simulated[:, j] - reduced).max() <= 1e-9 * max(1.0, np.abs(reduced).max())


@settings(max_examples=30)
@given(seed=seeds, n=st.integers(2, 12), beta=st.one_of(st.none(), betas), eta=etas,
       theta_scale=st.floats(0.0, 3.0), labelled=st.booleans())
def test_distances_stay_inside_the_explicit_envelopes(seed, n, beta, eta, theta_scale, labelled):
    """For random forget sets that meet the assumptions (Gaussian features in d = 20 n^2 dimensions, so the
    off-diagonal row sums are ~0.18), the exact dynamics stay inside Theorem 2's envelopes at every step of
    a log grid up to 3000, with constants from the label-free or the signed (label-aware) geometry."""
    X, y, theta = gaussian_forget_set(seed, n, 20 * n * n, theta_scale)
    method, b = method_of(beta)
    constants = T.rate_constants(T.forget_geometry(X, theta, y if labelled else None), eta, method, b)
    assume(constants.holds)
    t = log_grid(3000)
    distance = np.linalg.norm(T.reduced_recursion(X, y, theta, eta, 3000, method, b, t), axis=1)
    lower, upper = T.envelope(t, constants, n, eta)
    assert (distance >= lower * (1 - 1e-12)).all() and (distance <= upper * (1 + 1e-12)).all()


@pytest.mark.parametrize("sign", [-1.0, 1.0])
@pytest.mark.parametrize("beta", [None, 0.5, 4.0])
def test_envelopes_hold_at_the_threshold_with_adversarial_coupling(sign, beta):
    """Worst case for the derivation: every off-diagonal entry of X X^T has the same sign, scaled to 98% of the
    near-orthogonality threshold C0; for all-equal and mixed labels the dynamics stay inside the envelopes."""
    n, method_beta = 6, method_of(beta)
    coupling = sign * (np.ones((n, n)) - np.eye(n)) / (n - 1)
    theta = np.full(n, 0.05)

    def features(scale):
        return np.linalg.cholesky(np.eye(n) + scale * coupling)  # rows x_i with <x_i, x_j> = scale * sign/(n-1)

    c0 = T.near_orthogonality_threshold(T.forget_geometry(features(0.5), theta), 1.0, *method_beta)
    X = features(0.98 * c0)
    geometry = T.forget_geometry(X, theta)
    constants = T.rate_constants(geometry, 1.0, *method_beta)
    assert constants.holds and geometry.row_sum <= c0
    t = log_grid(5000)
    for y in (np.zeros(n, int), np.ones(n, int), np.arange(n) % 2):
        distance = np.linalg.norm(T.reduced_recursion(X, y, theta, 1.0, 5000, *method_beta, t), axis=1)
        lower, upper = T.envelope(t, constants, n, 1.0)
        assert (distance >= lower * (1 - 1e-12)).all() and (distance <= upper * (1 + 1e-12)).all()


class TestODE:
    def test_tracks_the_discrete_run_on_a_near_orthogonal_set(self):
        """n_f = 16, d = 16384 (row sums ~0.1), eta = 1, 5000 steps: after step 100 the decoupled ODE is within
        2% of the exact run (it drops the off-diagonal coupling, whose effect on the norm averages out, and
        the one-step lag of a discrete run, O(eta/n_f) in u)."""
        X, y, theta = gaussian_forget_set(1, 16, 16384)
        geometry, t = T.forget_geometry(X, theta, y), log_grid(5000, 80)
        late = t >= 100
        for method, beta in (("GA", None), ("NPO", 0.5), ("NPO", 1.0), ("NPO", 4.0)):
            run = np.linalg.norm(T.reduced_recursion(X, y, theta, 1.0, 5000, method, beta, t), axis=1)
            ode = T.ode_distance(t, geometry, 1.0, method, beta)
            assert np.max(np.abs(ode[late] - run[late]) / run[late]) < 0.02, (method, beta)

    def test_exact_for_orthogonal_features_up_to_discretisation(self):
        """With Gamma diagonal there is no coupling left: the ODE misses only the discretisation, < 0.5% after
        step 100 at eta0 = eta/n_f = 1/8."""
        rng = np.random.default_rng(0)
        X, y, theta = np.diag(rng.uniform(0.8, 1.2, 8)), rng.integers(0, 2, 8), rng.normal(0, 0.5, 8)
        geometry, t = T.forget_geometry(X, theta, y), log_grid(5000)
        for method, beta in (("GA", None), ("NPO", 0.5), ("NPO", 4.0)):
            run = np.linalg.norm(T.reduced_recursion(X, y, theta, 1.0, 5000, method, beta, t), axis=1)
            ode = T.ode_distance(t, geometry, 1.0, method, beta)
            assert np.max((np.abs(ode - run) / run)[t >= 100]) < 5e-3

    @given(a=st.floats(-2.0, 2.0), k=st.floats(1e-3, 2.0), beta=st.one_of(st.none(), betas))
    @settings(max_examples=25)
    def test_small_t_limit_is_the_first_step(self, a, k, beta):
        """t -> 0: u(t)/t -> k sigma(-a) for GA and NPO alike (W = 1 at the reference), which is exactly the
        first discrete step of a single sample with ||x||^2 = k n_f / eta."""
        method, b = method_of(beta)
        u = T.ode_forgetting(np.array([1e-5]), np.array([k]), np.array([a]), method, b)[0, 0]
        assert u / 1e-5 == pytest.approx(k * expit(-a), rel=1e-4)
        first = T.reduced_recursion(np.array([[math.sqrt(k)]]), [1], [a / math.sqrt(k)], 1.0, 1, method, b)[1, 0]
        assert -first == pytest.approx(k * expit(-a), rel=1e-12)

    def test_large_t_limits(self):
        """GA: u(t) - (k t - e^a) -> 0 (constant drift after a start that costs e^a); NPO: the exact ODE
        approaches its closed-form asymptote (1/beta) log(beta K k t + 1), K = 2 (1 + e^a)^beta."""
        t = np.array([1e3, 1e5, 1e7])
        assert T.ga_ode_closed_form(t, 1.0, 0.3) - (t - math.exp(0.3)) == pytest.approx(0.0, abs=1e-12)
        for beta in (0.5, 1.0, 4.0):
            gap = np.abs(T.ode_forgetting(t, [1.0], [0.2], "NPO", beta)[:, 0] - T.npo_ode_asymptote(t, 1.0, 0.2, beta))
            assert gap[-1] < gap[0] and gap[-1] < 0.01


class TestAssumptions:
    def test_experiment_like_data_meet_them(self):
        X, _, theta = gaussian_forget_set(0, 32, 32768)
        report = T.check_assumptions(X, theta, 1.0, (0.5, 1.0, 2.0, 4.0))
        assert report.hold and report.failed == []

    def test_correlated_features_fail_near_orthogonality(self):
        """x_i = 0.8 e_0 + 0.6 e_i: <x_i, x_j> = 0.64, row sums 0.64 (n_f - 1) = 3.2, far above any C0."""
        n = 6
        X = np.zeros((n, n + 1))
        X[:, 0], X[np.arange(n), np.arange(1, n + 1)] = 0.8, 0.6
        report = T.check_assumptions(X, np.zeros(n + 1), 1.0, (1.0,))
        assert not report.hold
        assert report.failed == ["near_orthogonality[GA]", "near_orthogonality[NPO beta=1]"]
        assert "FAIL near_orthogonality[GA]" in str(report)
        assert not T.rate_constants(report.geometry, 1.0, "GA").holds

    def test_low_dimension_and_degenerate_gram_and_large_step(self):
        X = np.vstack([np.eye(3), np.eye(3)[:1]])  # n_f = 4 > d = 3, and a repeated row
        report = T.check_assumptions(X, np.zeros(3), 2.0, (1.0,))
        assert {"high_dimensional", "gram_invertible", "step_size"} <= set(report.failed)

    def test_bad_method_or_beta_is_refused(self):
        with pytest.raises(ValueError, match="method"):
            T.drift(0.0, 0.0, "SimNPO")
        with pytest.raises(ValueError, match="beta"):
            T.reduced_recursion(np.eye(2), [0, 1], np.zeros(2), 1.0, 3, "NPO", 0.0)
        with pytest.raises(ValueError, match="labels"):
            T.reduced_recursion(np.eye(2), [0, 2], np.zeros(2), 1.0, 3, "GA")


class TestSoftmaxRemark:
    def test_gradient_matches_finite_differences(self):
        rng = np.random.default_rng(3)
        theta, x = rng.normal(size=(4, 5)), rng.normal(size=5)

        def logp(th):
            z = th @ x
            return z[2] - np.log(np.exp(z).sum())

        grad = T.softmax_ga_gradient(theta, x, 2)
        bump = np.zeros_like(theta)
        bump[1, 3] = 1e-6
        assert grad[1, 3] == pytest.approx((logp(theta + bump) - logp(theta - bump)) / 2e-6, rel=1e-6)

    def test_forgotten_sample_keeps_a_gradient_of_norm_x(self):
        """theta_y = -s x/||x||^2 gives logit -s for the true class against 0 for the others: as s grows,
        p_y -> 0 and the true row (1 - p_y) x grows monotonically to x in norm; it never shrinks."""
        x = np.array([3.0, 4.0])  # ||x|| = 5
        norms = []
        for s in (0.0, 2.0, 5.0, 10.0, 30.0):
            theta = np.zeros((3, 2))
            theta[0] = -s * x / 25.0
            norms.append(np.linalg.norm(T.softmax_ga_gradient(theta, x, 0)[0]))
        assert norms == sorted(norms) and norms[0] == pytest.approx(5 * 2 / 3) and norms[-1] == pytest.approx(5.0)


class TestDrift:
    def test_hand_values(self):
        """At u = 0 both pushes are sigma(-a) (NPO's weight is 1 at its reference): a = 0 gives 1/2, a = log 3
        gives 1/4; GA at u = a gives sigma(0) = 1/2."""
        for method, beta in (("GA", None), ("NPO", 0.7)):
            assert T.drift(0.0, 0.0, method, beta) == pytest.approx(0.5, abs=1e-15)
            assert T.drift(0.0, math.log(3), method, beta) == pytest.approx(0.25, abs=1e-15)
        assert T.drift(1.3, 1.3, "GA") == 0.5

    @given(u=st.floats(0.0, 30.0), a=st.floats(-3.0, 3.0), beta=st.floats(0.1, 5.0))
    @settings(max_examples=50)
    def test_pushes_lie_in_the_unit_interval_and_npo_decays_like_its_asymptote(self, u, a, beta):
        """0 < g < 1 for both; GA's push grows with u, NPO's is below GA's once the sample is below its reference
        (u > 0), and g e^{beta u} -> 2 (1 + e^a)^beta (the ``npo_ode_asymptote`` constant K) as u grows."""
        ga, npo = T.drift(u, a, "GA"), T.drift(u, a, "NPO", beta)
        assert 0 < npo <= ga < 1 or (u == 0 and npo == pytest.approx(ga, rel=1e-12))
        assert T.drift(u + 1, a, "GA") >= ga
        K = 2 * (1 + math.exp(a)) ** beta
        far = 40.0 / beta + 10
        assert T.drift(far, a, "NPO", beta) * math.exp(beta * far) == pytest.approx(K, rel=1e-3)


def test_near_orthogonality_threshold_separates_holding_from_failing_data():
    """C0 is where rate_constants stops holding: at 0.98 C0 the constants exist, at 1.05 C0 they do not; with
    no off-diagonal coupling at all (orthonormal features) there is no threshold."""
    n, theta = 6, np.full(6, 0.05)
    coupling = (np.ones((n, n)) - np.eye(n)) / (n - 1)
    geometry = T.forget_geometry(np.linalg.cholesky(np.eye(n) + 0.5 * coupling), theta)
    c0 = T.near_orthogonality_threshold(geometry, 1.0, "NPO", 1.0)
    base = max(geometry.neg_row_sum, geometry.pos_row_sum)

    def holds(c):
        scaled = T.ForgetGeometry(**{**vars(geometry), "neg_row_sum": geometry.neg_row_sum * c / base,
                                     "pos_row_sum": geometry.pos_row_sum * c / base})
        return T.rate_constants(scaled, 1.0, "NPO", 1.0).holds

    assert 0 < c0 < np.inf and holds(0.98 * c0) and not holds(1.05 * c0)
    assert T.near_orthogonality_threshold(T.forget_geometry(np.eye(n), theta), 1.0, "NPO", 1.0) == np.inf
