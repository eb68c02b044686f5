"""theory.allocation (SimNPO Sec. 4 and App. G): hand-derived weights and trajectories, hypothesis properties of
the weights and of the time to forget, the closed forms against scipy's solve_ivp and against gradient descent on
the linear model (with a proved Euler error bound), and the exact sigmoid flows' limit to the App. G heuristic."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp
from scipy.optimize import brentq
from scipy.special import expit

from theory import allocation as A
from theory.objectives import npo_weight, simnpo_weight

betas = st.floats(0.01, 5.0)
lengths = st.integers(1, 512)
lbars = st.floats(-10.0, 0.0)
logps = st.floats(-200.0, 0.0)
depths = st.floats(0.01, 5.0)  # |target lbar|


class TestHandValues:
    """Each value is worked out in the docstring of its test."""

    def test_npo_weight_is_one_at_step_zero(self):
        """logp = logp_ref: W = 2 sigma(0) = 1 exactly, for any logp, beta and length."""
        logp = np.array([-0.5, -3.0, -41.25, -300.0])
        for beta in (0.01, 0.2, 1.0, 7.5):
            assert np.all(A.npo_sample_weight(logp, logp, beta) == 1.0)
            assert np.all(A.npo_weight_by_length([1, 5, 20, 300], -0.3, -0.3, beta) == 1.0)

    def test_npo_weight_value(self):
        """beta = 1, |y| = 2, lbar - lbar_ref = -(log 3)/2: W = 2 sigma(-log 3) = 2 (1/3)/(1 + 1/3) = 0.5."""
        assert A.npo_weight_by_length(2, -math.log(3) / 2, 0.0, 1.0) == pytest.approx(0.5, abs=1e-15)
        assert A.npo_sample_weight(-math.log(3), 0.0, 1.0) == pytest.approx(0.5, abs=1e-15)

    def test_simnpo_weight_value_and_gamma_convention(self):
        """logp = -6, |y| = 3, beta = 1: w' = (2/3) sigma(-2) = 0.0794686. gamma is the paper's margin inside the
        sigmoid: gamma = 2 gives (2/3) sigma(0) = 1/3 (the code's gamma_code = gamma/beta would also be 2 here,
        so check beta = 2 too: lbar = -2, gamma = 4 gives (2/3) sigma(0) = 1/3)."""
        assert A.simnpo_sample_weight(-6.0, 3, 1.0) == pytest.approx(0.0794686, abs=1e-7)
        assert A.simnpo_sample_weight(-6.0, 3, 1.0, gamma=2.0) == pytest.approx(1 / 3, abs=1e-15)
        assert A.simnpo_sample_weight(-6.0, 3, 2.0, gamma=4.0) == pytest.approx(1 / 3, abs=1e-15)
        assert A.simnpo_weight_by_length(3, -2.0, 2.0, gamma=4.0) == pytest.approx(1 / 3, abs=1e-15)

    def test_simnpo_weight_scales_as_inverse_length(self):
        """At equal lbar, |y| w' = 2 sigma(beta lbar + gamma) for every |y|: bit-for-bit at powers of 2 (exact
        division), to 2 ulp elsewhere; the sample-level weight agrees (logp = |y| lbar, lbar dyadic)."""
        pow2 = 2.0 ** np.arange(10)
        for beta, lbar, gamma in ((0.2, -0.75, 0.0), (4.0, -1.25, 0.5), (2.5, -0.03125, 0.0)):
            common = 2.0 * expit(beta * lbar + gamma)
            assert np.all(A.simnpo_weight_by_length(pow2, lbar, beta, gamma) * pow2 == common)
            assert np.all(A.simnpo_sample_weight(pow2 * lbar, pow2, beta, gamma) * pow2 == common)
            ys = np.arange(1, 400, dtype=np.float64)
            np.testing.assert_allclose(A.simnpo_weight_by_length(ys, lbar, beta, gamma) * ys, common, rtol=4.5e-16)

    def test_heuristic_trajectories(self):
        """beta = 1/2, eta = 1, t = 1. NPO, |y| = 2: theta = -(1/1) log(1 + 2 (1/2) 4) = -log 5 = -1.6094379.
        SimNPO (any |y|): theta = -2 log(1 + 1) = -2 log 2 = -1.3862944. time_to_forget inverts both: t = 1."""
        assert A.npo_lbar_trajectory(1.0, 2, 0.5) == pytest.approx(-math.log(5), abs=1e-15)
        assert np.all(A.simnpo_lbar_trajectory(1.0, [1, 2, 50], 0.5) == -2 * math.log(2))
        assert A.time_to_forget("NPO", 2, 0.5, -math.log(5)) == pytest.approx(1.0, abs=1e-14)
        assert A.time_to_forget("SimNPO", 7, 0.5, -2 * math.log(2)) == pytest.approx(1.0, abs=1e-14)

    def test_exact_npo_trajectory(self):
        """|y| = beta = eta = 1, start at the reference 0: u - e^{-u} = -1 - 2t. For u* = -log 2:
        -log 2 - 2 = -1 - 2t gives t = (1 + log 2)/2 = 0.8465736, and theta = u*/(beta |y|) = -log 2."""
        t = (1 + math.log(2)) / 2
        assert A.npo_lbar_trajectory_exact(t, 1, 1.0) == pytest.approx(-math.log(2), abs=1e-14)
        assert A.time_to_forget_exact("NPO", 1, 1.0, -math.log(2)) == pytest.approx(t, abs=1e-14)
        # SimNPO, beta = 1, gamma = 0: the same equation with c = 2 eta beta = 2.
        assert A.simnpo_lbar_trajectory_exact(t, 9, 1.0) == pytest.approx(-math.log(2), abs=1e-14)

    def test_fastest_length_constants(self):
        """d/dx[(e^x - 1)/x^2] has the sign of (x - 2) e^x + 2, zero at 2 + W_0(-2/e^2) = 1.5936243;
        d/dx[(e^x + x - 1)/x^2] has the sign of (x - 2)(e^x - 1), zero at x = 2."""
        assert A.NPO_FASTEST_X_HEURISTIC == pytest.approx(brentq(lambda x: (x - 2) * math.exp(x) + 2, 1, 2), 1e-12)
        assert A.NPO_FASTEST_X_HEURISTIC == pytest.approx(1.5936243, abs=1e-7)
        beta, target = 0.2, -0.5
        ys = np.linspace(1, 60, 59001)
        for exact in (False, True):
            f = A.time_to_forget_exact if exact else A.time_to_forget
            best = ys[np.argmin(f("NPO", ys, beta, target))]
            assert best == pytest.approx(A.npo_fastest_length(beta, target, exact), abs=2e-3)
        assert A.npo_fastest_length(beta, target) == pytest.approx(20.0, abs=1e-12)

    def test_predicted_weights_at_start(self):
        """t = 0: NPO 1 for every length (start at the reference); SimNPO (2/|y|) sigma(beta lbar0 + gamma); GA 1."""
        ys = np.array([1.0, 4.0, 19.0])
        assert np.all(A.predicted_weight("NPO", 0.0, ys, 0.2, lbar0=-1.3) == 1.0)
        np.testing.assert_allclose(A.predicted_weight("SimNPO", 0.0, ys, 4.0, lbar0=-1.3, gamma=0.5),
                                   2 * expit(4.0 * -1.3 + 0.5) / ys, rtol=1e-15)
        assert np.all(A.predicted_weight("GA", 5.0, ys, None) == 1.0)

    def test_validation(self):
        for fn, args in ((A.npo_sample_weight, (-1.0, -1.0)), (A.simnpo_sample_weight, (-1.0, 2)),
                         (A.npo_lbar_trajectory, (1.0, 2)), (A.simnpo_lbar_trajectory_exact, (1.0, 2))):
            for beta in (0.0, -1.0, float("nan"), float("inf")):
                with pytest.raises(ValueError, match="beta"):
                    fn(*args, beta)
        with pytest.raises(ValueError, match="length"):
            A.simnpo_weight_by_length(0, -1.0, 1.0)
        with pytest.raises(ValueError, match="length"):
            A.npo_lbar_trajectory(1.0, [3, 0.5], 1.0)
        with pytest.raises(ValueError, match="eta"):
            A.time_to_forget("NPO", 3, 1.0, -1.0, eta=0.0)
        with pytest.raises(ValueError, match="t must"):
            A.npo_lbar_trajectory_exact(-1.0, 3, 1.0)
        with pytest.raises(ValueError, match="method"):
            A.time_to_forget("GA", 3, 1.0, -1.0)
        with pytest.raises(ValueError, match="GA, NPO, SimNPO"):
            A.time_to_forget_exact("DPO", 3, 1.0, -1.0)


# ------------------------------------------------------------------ properties of the weights ---------------


@given(logp=logps, logp_ref=logps, beta=betas)
def test_npo_weight_range_and_reuse(logp, logp_ref, beta):
    """W in (0, 2) where float64 can resolve it, and equal to theory.objectives.npo_weight(logp - logp_ref)."""
    w = A.npo_sample_weight(logp, logp_ref, beta)
    assert w == npo_weight(logp - logp_ref, beta)
    assert 0.0 <= w <= 2.0
    if abs(beta * (logp - logp_ref)) < 30:
        assert 0.0 < w < 2.0


@given(logp=logps, length=lengths, beta=betas, gamma=st.floats(0.0, 3.0))
def test_simnpo_weight_range_and_reuse(logp, length, beta, gamma):
    """w' in (0, 2/|y|) and equal to theory.objectives.simnpo_weight."""
    w = A.simnpo_sample_weight(logp, length, beta, gamma)
    assert w == simnpo_weight(logp, length, beta, gamma)
    assert 0.0 <= w <= 2.0 / length
    if abs(beta * logp / length + gamma) < 30:
        assert 0.0 < w < 2.0 / length


@given(a=logps, b=logps, ref=logps, length=lengths, beta=betas)
def test_weights_monotone_in_logp(a, b, ref, length, beta):
    """Both weights are nondecreasing in logp (sigma is increasing); NPO's is nonincreasing in logp_ref (L1)."""
    lo, hi = sorted((a, b))
    assert A.npo_sample_weight(lo, ref, beta) <= A.npo_sample_weight(hi, ref, beta)
    assert A.npo_sample_weight(ref, hi, beta) <= A.npo_sample_weight(ref, lo, beta)
    assert A.simnpo_sample_weight(lo, length, beta) <= A.simnpo_sample_weight(hi, length, beta)


@given(y1=lengths, y2=lengths, lbar=lbars, drop=st.floats(0.0, 2.0), beta=betas)
def test_npo_weight_by_length_decreases_with_length_after_step_zero(y1, y2, lbar, drop, beta):
    """At the same per-token drop lbar_ref - lbar = drop >= 0, W = 2 sigma(-beta |y| drop) is nonincreasing in |y|,
    and the by-length form equals the sample form with logp = |y| lbar."""
    short, long = sorted((y1, y2))
    w_short = A.npo_weight_by_length(short, lbar - drop, lbar, beta)
    assert A.npo_weight_by_length(long, lbar - drop, lbar, beta) <= w_short
    assert w_short == pytest.approx(A.npo_sample_weight(short * (lbar - drop), short * lbar, beta), rel=1e-9)


# ------------------------------------------------------------------ time to forget --------------------------


@given(beta=betas, depth=depths, f1=st.floats(0.0, 1.0), f2=st.floats(0.0, 1.0))
def test_npo_time_decreases_with_length_below_the_turning_point(beta, depth, f1, f2):
    """NPO forgets long responses faster (App. G) while x = beta |y| |target| < x_min (1.5936 heuristic, 2 exact),
    and more slowly beyond: t(|y|) is decreasing, then increasing (unimodal in |y|)."""
    for exact, x_min in ((False, A.NPO_FASTEST_X_HEURISTIC), (True, A.NPO_FASTEST_X_EXACT)):
        f = A.time_to_forget_exact if exact else A.time_to_forget
        y_min = x_min / (beta * depth)
        for lo, hi in ((1.0, y_min), (y_min, 3 * y_min)):
            if hi <= 1.0:
                continue
            lo = max(lo, 1.0)
            ya, yb = sorted((lo + f1 * (hi - lo), lo + f2 * (hi - lo)))
            if yb - ya < 1e-6 * hi:
                continue
            ta, tb = f("NPO", ya, beta, -depth), f("NPO", yb, beta, -depth)
            assert (ta >= tb) if hi == y_min else (ta <= tb)


@given(beta=betas, depth=depths, ys=st.lists(lengths, min_size=2, max_size=6))
def test_simnpo_time_independent_of_length(beta, depth, ys):
    """SimNPO's time to forget is the same for every |y|, exactly, in both versions."""
    for f in (A.time_to_forget, A.time_to_forget_exact):
        times = f("SimNPO", ys, beta, -depth)
        assert np.all(times == times[0]) and times[0] > 0


@given(beta=betas, length=lengths, depth=depths)
def test_time_to_forget_inverts_the_trajectories(beta, length, depth):
    """lbar(time_to_forget(target)) = target, for the heuristic and the exact flows, NPO and SimNPO."""
    for method, traj in (("NPO", A.npo_lbar_trajectory), ("SimNPO", A.simnpo_lbar_trajectory)):
        t = A.time_to_forget(method, length, beta, -depth)
        if np.isfinite(t):
            assert traj(t, length, beta) == pytest.approx(-depth, rel=1e-9)
    for method in ("GA", "NPO", "SimNPO"):  # from lbar0 = -0.1: a target above the start takes no time
        t = A.time_to_forget_exact(method, length, beta, -depth, lbar0=-0.1, gamma=0.3)
        if -depth >= -0.1:
            assert t == 0.0
        elif np.isfinite(t):
            lbar = A.lbar_trajectory_exact(method, t, length, beta, lbar0=-0.1, gamma=0.3)
            assert lbar == pytest.approx(-depth, rel=1e-8)


@given(beta=st.floats(0.01, 2.0), length=st.integers(1, 64), depth=depths)
def test_exact_time_is_heuristic_plus_start_correction(beta, length, depth):
    """Starting at the reference 0: exact - heuristic = |target|/(2 eta |y|) (NPO), |target|/(2 eta) (SimNPO)
    (the integral of the extra 1 in 1/sigma(u) = 1 + e^{-u}); their ratio -> 1 as beta |y| |target| grows."""
    eta = 0.3
    for method, extra in (("NPO", depth / (2 * eta * length)), ("SimNPO", depth / (2 * eta))):
        heur = A.time_to_forget(method, length, beta, -depth, eta)
        exact = A.time_to_forget_exact(method, length, beta, -depth, eta)
        if np.isfinite(exact) and exact < 1e12:
            assert exact - heur == pytest.approx(extra, rel=1e-6, abs=1e-14 * exact)


def test_small_beta_limit_is_ga():
    """beta -> 0: NPO's exact weight -> 1, so its time -> GA's |target|/(eta |y|), twice the App. G heuristic's."""
    ys = np.array([1.0, 5.0, 40.0])
    ga = A.time_to_forget_exact("GA", ys, None, -0.7)
    np.testing.assert_allclose(ga, 0.7 / ys, rtol=1e-15)
    np.testing.assert_allclose(A.time_to_forget_exact("NPO", ys, 1e-7, -0.7), ga, rtol=1e-5)
    np.testing.assert_allclose(A.time_to_forget("NPO", ys, 1e-7, -0.7), ga / 2, rtol=1e-5)


# ------------------------------------------------------------------ closed forms against integration --------


def _npo_rhs(length, beta, eta, ref, heuristic):
    if heuristic:
        return lambda t, th: -2 * eta * length * np.exp(beta * length * th)
    return lambda t, th: -eta * length * 2 * expit(beta * length * (th - ref))


def _simnpo_rhs(beta, eta, gamma, heuristic):
    if heuristic:
        return lambda t, th: -2 * eta * np.exp(beta * th)
    return lambda t, th: -eta * 2 * expit(beta * th + gamma)


@pytest.mark.parametrize(("length", "beta", "eta"), [(1, 0.2, 1.0), (5, 0.2, 0.05), (20, 4.0, 1e-3), (100, 0.1, 1.0)])
def test_closed_forms_match_solve_ivp(length, beta, eta):
    """Heuristic and exact closed forms against scipy's LSODA (rtol 1e-11) on t in [0, 1e4] steps, to 1e-7
    absolute (the integrator's own error, far above float64 round-off). NPO exact with a reference below the start
    (lbar0 = -0.2, lbar_ref = -0.5) too; SimNPO exact with gamma = 0.7, lbar0 = -0.4."""
    ts = np.concatenate([[0.0], np.geomspace(1e-3, 1e4, 40)])

    def integrate(rhs, y0):
        sol = solve_ivp(rhs, (0.0, ts[-1]), [y0], t_eval=ts, method="LSODA", rtol=1e-11, atol=1e-12)
        assert sol.success
        return sol.y[0]

    cases = [
        (integrate(_npo_rhs(length, beta, eta, 0.0, True), 0.0), A.npo_lbar_trajectory(ts, length, beta, eta)),
        (integrate(_simnpo_rhs(beta, eta, 0.0, True), 0.0), A.simnpo_lbar_trajectory(ts, length, beta, eta)),
        (integrate(_npo_rhs(length, beta, eta, 0.0, False), 0.0), A.npo_lbar_trajectory_exact(ts, length, beta, eta)),
        (integrate(_npo_rhs(length, beta, eta, -0.5, False), -0.2),
         A.npo_lbar_trajectory_exact(ts, length, beta, eta, lbar_ref=-0.5, lbar0=-0.2)),
        (integrate(_simnpo_rhs(beta, eta, 0.7, False), -0.4),
         A.simnpo_lbar_trajectory_exact(ts, length, beta, eta, gamma=0.7, lbar0=-0.4)),
    ]
    for numeric, closed in cases:
        np.testing.assert_allclose(closed, numeric, rtol=0, atol=1e-7)


@pytest.mark.parametrize("u0", [-30.0, -599.0, -601.0, -700.0, -800.0])
def test_exact_flow_far_below_the_reference(u0):
    """A sample that starts u0 = beta |y| (lbar0 - lbar_ref) far below its reference (e^{-u0} may overflow): with
    beta = |y| = eta = 1 (c = 2) and c t = e^{-u0} (e - 1) - 1, u - e^{-u} = u0 - e^{-u0} - c t is solved by
    u = u0 - 1 exactly; the solver agrees on both sides of its u0 = -600 switch. Where e^{-u0} overflows
    (u0 = -800) the sample does not move in any representable time (and the answer is finite, not nan)."""
    if u0 > -709:
        ct = math.exp(-u0) * math.expm1(1.0) - 1.0
        assert A.npo_lbar_trajectory_exact(ct / 2, 1, 1.0, lbar_ref=0.0, lbar0=u0) == pytest.approx(u0 - 1, abs=1e-12)
    for t in (1.0, 1e300) if u0 < -709 else (1.0,):
        assert A.npo_lbar_trajectory_exact(t, 1, 1.0, lbar_ref=0.0, lbar0=u0) == pytest.approx(u0, abs=1e-12)


@pytest.mark.parametrize("beta", [0.2, 1.0, 4.0])
def test_closed_forms_match_gradient_descent(beta):
    """Plain gradient descent theta <- theta - eta W(theta) |y| on the linear model lbar = theta, with the NPO and
    SimNPO weights of theory.objectives (and the heuristic's 2 e^{beta |y| theta}), 4000 steps, compared with the
    closed forms at t = number of steps.

    Error bound (proved here). Each flow is theta' = f(theta) with f < 0, f' <= 0 and theta'' = f' f > 0 decreasing
    in t (sigma^2 (1 - sigma) increases for sigma < 2/3, and sigma(u) falls from sigma(u_0) <= 1/2). GD is Euler
    with unit step: its local error tau_k lies in [0, theta''(k)/2], and when 1 + f' >= 0 (eta beta |y|^2 <= 2 for
    NPO, <= 1/2 for the heuristic) the Euler map is 1-Lipschitz, so the global error is at most
    sum_k tau_k <= (theta''(0) + |theta'(0)|)/2, computed below per case."""
    steps = 4000
    ys = np.array([1.0, 2.0, 5.0, 10.0])
    eta = 0.25 / (beta * ys.max() ** 2)  # satisfies both step conditions for every length
    cases = {
        "NPO exact": (lambda th: npo_weight(ys * th, beta) * ys, A.npo_lbar_trajectory_exact(steps, ys, beta, eta)),
        "NPO heuristic": (lambda th: 2 * np.exp(beta * ys * th) * ys, A.npo_lbar_trajectory(steps, ys, beta, eta)),
        "SimNPO exact": (lambda th: simnpo_weight(ys * th, ys, beta) * ys,
                         A.simnpo_lbar_trajectory_exact(steps, ys, beta, eta)),
        "SimNPO heuristic": (lambda th: 2 * np.exp(beta * th) + 0 * ys, A.simnpo_lbar_trajectory(steps, ys, beta, eta)),
    }
    for name, (grad, closed) in cases.items():
        theta = np.zeros_like(ys)
        speed0 = eta * grad(theta)  # |theta'(0)|
        h = 1e-7
        accel0 = speed0 * eta * (grad(theta) - grad(theta - h)) / h  # theta''(0) = f'(0) f(0) > 0
        for _ in range(steps):
            theta = theta - eta * grad(theta)
        bound = 0.5 * (accel0 + speed0)
        assert np.all(np.abs(theta - closed) <= bound), name
        assert np.all(closed < -10 * bound), name  # the bound is tight enough to mean something


# ------------------------------------------------------------------ the heuristic as a limit ----------------


@given(beta=st.floats(0.01, 5.0), length=st.integers(1, 200), log_ct=st.floats(-6.0, 30.0))
def test_exact_flow_approaches_heuristic(beta, length, log_ct):
    """With the heuristic's start (theta(0) = lbar_ref = 0) and X = 1 + c t:
    0 <= u_exact - u_heur = -log(1 + u/X) <= -log(1 - log(X)/X) -> 0 (module docstring), for NPO
    (u = beta |y| theta, c = 2 eta beta |y|^2) and SimNPO (u = beta theta, c = 2 eta beta)."""
    eta = 1.0
    for method, c, scale in (("NPO", 2 * eta * beta * length**2, beta * length), ("SimNPO", 2 * eta * beta, beta)):
        t = math.exp(log_ct) / c
        if method == "NPO":
            gap = A.npo_lbar_trajectory_exact(t, length, beta, eta) - A.npo_lbar_trajectory(t, length, beta, eta)
        else:
            gap = A.simnpo_lbar_trajectory_exact(t, length, beta, eta) - A.simnpo_lbar_trajectory(t, length, beta, eta)
        x = 1.0 + c * t
        bound = -math.log1p(-math.log(x) / x) / scale
        roundoff = 1e-14 * (1 + math.log(x) / scale)  # a few ulp of |theta| ~ log(X)/scale
        assert -roundoff <= gap <= bound * (1 + 1e-9) + roundoff


def test_heuristic_limit_numbers():
    """At c t = 1e6 the exact and heuristic NPO trajectories agree to log(1e6)/1e6 / (beta |y|) ~ 1.4e-5/(beta |y|),
    while at t = 0+ they differ at rate: exact speed |y| eta (W = 1), heuristic 2 |y| eta (W = 2)."""
    beta, length, eta = 0.5, 8, 1.0
    c = 2 * eta * beta * length**2
    gap = A.npo_lbar_trajectory_exact(1e6 / c, length, beta) - A.npo_lbar_trajectory(1e6 / c, length, beta)
    assert 0 < gap < 1.4e-5 / (beta * length)
    dt = 1e-9
    assert -A.npo_lbar_trajectory_exact(dt, length, beta) / dt == pytest.approx(length * eta, rel=1e-5)
    assert -A.npo_lbar_trajectory(dt, length, beta) / dt == pytest.approx(2 * length * eta, rel=1e-5)


@settings(max_examples=20)
@given(beta=st.floats(0.05, 2.0), length=st.integers(1, 50), depth=st.floats(0.5, 3.0))
def test_time_ratio_tends_to_one_for_deep_targets(beta, length, depth):
    """exact/heuristic time - 1 = beta |y| |target| / (e^{beta |y| |target|} - 1) for NPO (from the additive
    correction |target|/(2 eta |y|)), which -> 0 as the target deepens."""
    heur = A.time_to_forget("NPO", length, beta, -depth)
    exact = A.time_to_forget_exact("NPO", length, beta, -depth)
    x = beta * length * depth
    assert exact / heur - 1 == pytest.approx(x / math.expm1(x), rel=1e-7)
    deeper = A.time_to_forget_exact("NPO", length, beta, -2 * depth) / A.time_to_forget("NPO", length, beta, -2 * depth)
    assert deeper - 1 <= exact / heur - 1 + 1e-12  # both round to 0 once x is large


def test_ga_lbar_trajectory_by_hand():
    """GA pushes every sample at rate eta |y|: lbar0 = -0.5, |y| = 4, eta = 0.25, t = 3 gives -0.5 - 3 = -3.5."""
    assert A.ga_lbar_trajectory(3.0, 4, eta=0.25, lbar0=-0.5) == pytest.approx(-3.5, abs=1e-15)


@given(beta=betas, length=lengths, gamma=st.floats(0.0, 3.0), t1=st.floats(0.0, 50.0), dt=st.floats(1e-3, 50.0))
@settings(max_examples=50)
def test_predicted_weights_fall_as_unlearning_proceeds(beta, length, gamma, t1, dt):
    """Along the exact flow lbar falls, so NPO's weight (from 1 at t = 0) and SimNPO's (below 2/|y|) fall too,
    while GA's stays 1: the bounded losses stop pushing forgotten samples."""
    t = np.array([t1, t1 + dt])
    npo = A.predicted_weight("NPO", t, length, beta)
    simnpo = A.predicted_weight("SimNPO", t, length, beta, gamma=gamma)
    assert A.predicted_weight("NPO", 0.0, length, beta) == pytest.approx(1.0, abs=1e-12)
    assert npo[1] <= npo[0] * (1 + 1e-12) and 0 <= npo[1] <= 1 + 1e-12
    assert simnpo[1] <= simnpo[0] * (1 + 1e-12) and 0 <= simnpo[0] < 2 / length
    assert (A.predicted_weight("GA", t, length, None) == 1).all()


@given(beta=betas, depth=depths, scale=st.floats(0.1, 10.0))
def test_npo_fastest_length_scales_as_one_over_beta_depth(beta, depth, scale):
    """|y*| = x_min/(beta |target|): doubling beta or the depth halves it, exact (x_min = 2) and heuristic."""
    for exact in (True, False):
        base = A.npo_fastest_length(beta, -depth, exact)
        assert A.npo_fastest_length(scale * beta, -depth, exact) == pytest.approx(base / scale, rel=1e-12)
        assert A.npo_fastest_length(beta, -scale * depth, exact) == pytest.approx(base / scale, rel=1e-12)
    assert A.npo_fastest_length(beta, -depth) * beta * depth == pytest.approx(2.0, rel=1e-12)
