"""Theorem 2 of the NPO paper made explicit: GA diverges linearly, NPO logarithmically (float64 NumPy/SciPy).

Setting (Zhang et al. 2024, Theorem 2 and App. A.2-A.4). Binary logistic model
pi_theta(y=1|x) = sigma(<x, theta>), forget set X = (x_1, ..., x_{n_f})^T in R^{n_f x d}, labels y_i in {0, 1},
pi_ref = pi_{theta_init}, and full-batch gradient descent with step eta on the MEAN forget loss
(1/n_f) sum_i L_i, with L_i = logp_i (GA) or L_i = (2/beta) softplus(beta r_i) (NPO with the 2/beta of the NPO
code, ``unlearn.objectives.npo``), r_i = logp_i - logp_ref,i.

Exact reduction (App. A.2). grad_theta logp_i = Delta_i x_i with Delta_i = (2y_i - 1)(1 - pred_i) and
pred_i = pi_theta(y_i|x_i), so theta_t - theta_init stays in span{x_i}. With Gamma = X X^T, c_init = X theta_init
and b_t = X (theta_t - theta_init) (the paper's Gamma alpha_t):

    b_{t+1} = b_t - (eta/n_f) Gamma diag(Delta_t) W_t,     W = 1 (GA),  W_i = 2 sigma(beta r_i) (our NPO)
    pred_i = sigma((2y_i - 1)(c_init,i + b_i)),          ||theta_t - theta_init||_{X^T X} = ||b_t||_2.

The paper's proof writes W without the factor 2 (its constants absorb it); here it is explicit everywhere.

Forgetting coordinates, used by every result below. With s_i = 2y_i - 1, u_i = -s_i b_i (how far sample i has
been pushed away from its label; ||u|| = ||b||), a_i = s_i c_init,i (its initial margin), M = S Gamma S
(S = diag(s), same spectrum and |entries| as Gamma) and eta0 = eta/n_f:

    pred_i = sigma(a_i - u_i),    u_{t+1} = u_t + eta0 M g(u_t),   g_i = W_i (1 - pred_i) = g_{a_i}(u_i) in (0, 1)
    GA:  g_a(u) = sigma(u - a)                                  (-> 1: a constant push, linear divergence)
    NPO: g_a(u) = 2 sigma(beta r_a(u)) sigma(u - a),  r_a(u) = log sigma(a - u) - log sigma(a)
                                                                (~ 2 (1 + e^a)^beta e^{-beta u}: logarithmic)

Contents: ``forget_geometry`` (the data's constants), ``reduced_recursion`` (exact), ``ode_forgetting`` /
``ode_distance`` (continuous-time predictions), ``rate_constants`` / ``envelope`` (Theorem 2 with explicit
constants), ``check_assumptions``, and the K-class softmax remark (``softmax_ga_gradient``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike
from scipy.integrate import cumulative_trapezoid, solve_ivp
from scipy.optimize import brentq
from scipy.special import expit, log_expit, wrightomega

from theory.objectives import npo_weight

CLOSED_FORM_METHODS = ("GA", "NPO")  # the methods whose dynamics this module solves in closed form


def _check_method(method: str, beta: float | None) -> None:
    if method not in CLOSED_FORM_METHODS:
        raise ValueError(f"method must be one of {CLOSED_FORM_METHODS}, got {method!r}")
    if method == "NPO" and not (beta is not None and np.isfinite(beta) and beta > 0):
        raise ValueError(f"NPO needs a finite beta > 0, got {beta!r}")


# ------------------------------------------------------------------ the data's constants -------------------


@dataclass(frozen=True)
class ForgetGeometry:
    """Everything Theorem 2 reads from (X, theta_init[, y]).

    gram = X X^T (Gamma), c_init = X theta_init, gamma_i = ||x_i||^2 in [b_x^2, B_x^2], B_theta = ||theta_init||,
    A = max_i |c_init,i| (<= B_x B_theta, the a-priori bound the paper uses; every constant below only needs
    |a_i| <= A, so the data's own value is used), offdiag_max = max_{i != j} |<x_i, x_j>| (the theorem's
    near-orthogonality reads offdiag_max <= C0/n_f), row_sum R = max_i sum_{j != i} |<x_i, x_j>|
    (<= (n_f - 1) offdiag_max), and the signed row sums of M = S Gamma S that hurt (N: sum of the negative
    entries' sizes) and help (P: positive entries) the forgetting of a sample; without labels N = P = R.
    lambda_min, lambda_max: extreme eigenvalues of Gamma. margins a_i = (2y_i - 1) c_init,i (None without y).
    """

    n_f: int
    d: int
    gram: np.ndarray
    c_init: np.ndarray
    gamma: np.ndarray
    b_x: float
    B_x: float
    B_theta: float
    A: float
    offdiag_max: float
    row_sum: float
    neg_row_sum: float
    pos_row_sum: float
    lambda_min: float
    lambda_max: float
    margins: np.ndarray | None = None

    @property
    def signed(self) -> bool:
        """Whether N and P come from the labels (True) or are the label-free worst case N = P = R."""
        return self.margins is not None


def forget_geometry(X: ArrayLike, theta_init: ArrayLike, y: ArrayLike | None = None) -> ForgetGeometry:
    """The constants of Theorem 2 computed from the data (see ``ForgetGeometry``); y in {0, 1} is optional."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1:
        raise ValueError(f"X must be a non-empty (n_f, d) matrix, got shape {X.shape}")
    theta_init = np.asarray(theta_init, dtype=np.float64)
    if theta_init.shape != (X.shape[1],):
        raise ValueError(f"theta_init must have shape ({X.shape[1]},), got {theta_init.shape}")
    gram = X @ X.T
    gamma = np.diag(gram).copy()
    off = gram - np.diag(gamma)
    c_init = X @ theta_init
    eig = np.linalg.eigvalsh(gram)
    R = float(np.abs(off).sum(1).max()) if len(gamma) > 1 else 0.0
    margins, N, P = None, R, R
    if y is not None:
        s = _signs(y, len(gamma))
        signed = s[:, None] * off * s[None, :]
        N, P = float(np.maximum(-signed, 0).sum(1).max()), float(np.maximum(signed, 0).sum(1).max())
        margins = s * c_init
    return ForgetGeometry(
        n_f=X.shape[0], d=X.shape[1], gram=gram, c_init=c_init, gamma=gamma,
        b_x=float(np.sqrt(gamma.min())), B_x=float(np.sqrt(gamma.max())), B_theta=float(np.linalg.norm(theta_init)),
        A=float(np.abs(c_init).max()), offdiag_max=float(np.abs(off).max()), row_sum=R, neg_row_sum=N,
        pos_row_sum=P, lambda_min=float(eig[0]), lambda_max=float(eig[-1]), margins=margins)


def _signs(y: ArrayLike, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,) or not np.isin(y, (0, 1)).all():
        raise ValueError(f"y must hold {n} labels in {{0, 1}}")
    return 2.0 * y - 1.0


# ------------------------------------------------------------------ the push g_a(u) --------------------------


def drift(u: ArrayLike, a: ArrayLike, method: str, beta: float | None = None) -> np.ndarray:
    """g_a(u) = W (1 - pred), the push a sample at forgetting coordinate u with initial margin a receives.

    GA: sigma(u - a), increasing from sigma(-a) to 1. NPO: 2 sigma(beta r) sigma(u - a) with
    r = log sigma(a - u) - log sigma(a) (``theory.objectives.npo_weight`` is the 2 sigma(beta r)); it starts at
    sigma(-a) like GA (W = 1 at the reference) and decays like 2 (1 + e^a)^beta e^{-beta u}. Both lie in (0, 1).
    """
    _check_method(method, beta)
    u, a = np.asarray(u, dtype=np.float64), np.asarray(a, dtype=np.float64)
    push = expit(u - a)
    if method == "GA":
        return push
    r = log_expit(a - u) - log_expit(a)
    return npo_weight(r, beta) * push


# ------------------------------------------------------------------ exact reduced recursion ------------------


def reduced_recursion(X: ArrayLike, y: ArrayLike, theta_init: ArrayLike, eta: float, steps: int, method: str,
                      beta: float | None = None, record: ArrayLike | None = None) -> np.ndarray:
    """b_t = X (theta_t - theta_init) of gradient descent on the mean GA / NPO loss, in n_f dimensions.

        b_{t+1} = b_t - (eta/n_f) Gamma diag(Delta_t) W_t     (NPO paper App. A.2, W with our factor 2)

    Exact (not an approximation): it equals full-dimensional gradient descent, whose iterates stay in
    span{x_i}, to rounding (tests/test_theory_logistic.py checks 1e-9 against the shared torch loop).

    Returns b at the steps in ``record`` (default: every step 0..steps), shape (len(record), n_f).
    """
    _check_method(method, beta)
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    s = _signs(y, n)
    gram, c_init = X @ X.T, X @ np.asarray(theta_init, dtype=np.float64)
    record = np.arange(steps + 1) if record is None else np.asarray(record, dtype=int)
    if record.size and (record.min() < 0 or record.max() > steps):
        raise ValueError(f"record steps must lie in [0, {steps}]")
    logp_ref = log_expit(s * c_init)
    b = np.zeros(n)
    out = np.empty((len(record), n))
    wanted = {int(t): [k for k, r in enumerate(record) if r == t] for t in set(record.tolist())}
    for t in range(steps + 1):
        for k in wanted.get(t, ()):
            out[k] = b
        if t == steps:
            break
        margin = s * (c_init + b)  # logit of the true label
        delta = s * expit(-margin)  # (2y - 1)(1 - pred)
        weight = 1.0 if method == "GA" else npo_weight(log_expit(margin) - logp_ref, beta)
        b = b - (eta / n) * gram @ (delta * weight)
    return out


# ------------------------------------------------------------------ continuous time -------------------------


def ga_ode_closed_form(t: ArrayLike, k: ArrayLike, a: ArrayLike) -> np.ndarray:
    """Solution of the per-coordinate GA ODE u' = k sigma(u - a), u(0) = 0 (k = eta gamma_i / n_f).

    Separating variables, int_0^u (1 + e^{a - v}) dv = u + e^a (1 - e^{-u}) = k t; with v = u - a this is
    v - e^{-v} = C := k t - a - e^a, solved by v = C + W0(e^{-C}) = C + omega(-C) (Lambert W, principal branch;
    the Wright omega function omega(z) = W0(e^z) never forms e^{-C}, which overflows once a > ~6.5). Absolute
    error ~ eps e^a (a + C and omega(-C) cancel to u when e^a >> k t): fine for the margins |a| <~ 10 of a
    logistic model; at larger a, u ~ k t e^{-a} is below it.
    Limits: t -> 0, u ~ k sigma(-a) t (GA's first step); t -> inf, u = k t - a - e^a + a + O(e^{-kt}): the
    constant drift k (GA: b' = -c), shifted by the slow start while pred_i is still large.
    """
    t, k, a = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (t, k, a)))
    C = k * t - a - np.exp(a)
    return a + C + wrightomega(-C).real


def npo_ode_asymptote(t: ArrayLike, k: ArrayLike, a: ArrayLike, beta: float) -> np.ndarray:
    """u(t) = (1/beta) log(beta K k t + 1), K = 2 (1 + e^a)^beta: the closed-form solution of the asymptotic NPO
    ODE u' = k K e^{-beta u} (NPO: b' = -c e^{beta b}; NPO paper Lemma 4's comparison ODEs).

    K e^{-beta u} is the u -> inf limit of the NPO push (``drift``) with our factor 2; it over-estimates the push
    at small u (K = 2^{beta+1} at a = 0 against the true push 1/2), so this curve runs ahead early and its
    distance to the exact ODE stays bounded: same (1/beta) log t slope, O(1) offset.
    """
    _check_method("NPO", beta)
    t, k, a = (np.asarray(v, dtype=np.float64) for v in (t, k, a))
    K = 2.0 * (1.0 + np.exp(a)) ** beta
    return np.log1p(beta * K * k * t) / beta


def ode_forgetting(t: ArrayLike, k: ArrayLike, a: ArrayLike, method: str, beta: float | None = None) -> np.ndarray:
    """Per-coordinate (decoupled) continuous-time prediction u_i(t), shape (len(t), n).

        u_i' = k_i g_{a_i}(u_i),  u_i(0) = 0,   k_i = eta ||x_i||^2 / n_f

    i.e. the reduced recursion with the off-diagonal of Gamma dropped (near-orthogonality) and steps made
    continuous. GA: closed form (``ga_ode_closed_form``). NPO: scipy's solve_ivp (DOP853, rtol 1e-10); its
    t -> inf behaviour is ``npo_ode_asymptote``. Both start as u ~ k sigma(-a) t (W = 1 at the reference).
    """
    _check_method(method, beta)
    t = np.asarray(t, dtype=np.float64)
    k, a = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(a, dtype=np.float64))
    if method == "GA":
        return ga_ode_closed_form(t[:, None], k[None, :], a[None, :])
    order = np.argsort(t)
    sol = solve_ivp(lambda _, u: k * drift(u, a, "NPO", beta), (0.0, float(t.max())), np.zeros(k.shape),
                    method="DOP853", t_eval=t[order], rtol=1e-10, atol=1e-12)
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    out = np.empty((len(t), k.size))
    out[order] = sol.y.T
    return out


def ode_distance(t: ArrayLike, geometry: ForgetGeometry, eta: float, method: str,
                 beta: float | None = None) -> np.ndarray:
    """Predicted ||theta_t - theta_init||_{X^T X} = ||u(t)||_2 from ``ode_forgetting`` (needs labels)."""
    if geometry.margins is None:
        raise ValueError("ode_distance needs the labels: build the geometry with forget_geometry(X, theta, y)")
    k = eta * geometry.gamma / geometry.n_f
    return np.linalg.norm(ode_forgetting(t, k, geometry.margins, method, beta), axis=1)


# ------------------------------------------------------------------ Theorem 2 with explicit constants -------


class _Clock:
    """The clock T(u) = int_0^u dv / g_0(v) of one method at margin a = 0, its inverse, and the push g_0.

    T is the time the decoupled ODE u' = g_0(u) needs to reach u. GA: T(u) = u + 1 - e^{-u}, inverse by
    Lambert W. NPO: cumulative trapezoid on a grid of step 1e-3/max(beta, 1) (relative error < 1e-6), extended
    until T covers ``tau_max``. g_0 is log-concave for NPO (D below is increasing) and increasing for GA, so
    its maximum over an interval is at the interval's point nearest the mode.
    """

    def __init__(self, method: str, beta: float | None, tau_max: float):
        self.method, self.beta = method, beta
        if method == "GA":
            self.mode = np.inf
            return
        D0 = beta * 0.5 / 2.0 - 0.5  # D(0) = beta sigma(0)/(1 + 1) - sigma(0)
        self.mode = 0.0 if D0 >= 0 else brentq(self._log_slope_down, 0.0, 50.0 + 10.0 / beta)
        h = 1e-3 / max(beta, 1.0)
        u_max = 10.0 / beta + 5.0
        while True:
            self.u = np.arange(0.0, u_max + h, h)
            self.T = cumulative_trapezoid(1.0 / self.g(self.u), self.u, initial=0.0)
            if self.T[-1] >= tau_max:
                break
            u_max *= 1.5

    def _log_slope_down(self, u):
        """D(u) = -(d/du) log g_0(u) = beta sigma(u)/(1 + q^beta) - sigma(-u), q = 2 sigma(-u); increasing."""
        q = 2.0 * expit(-u)
        return self.beta * expit(u) / (1.0 + q**self.beta) - expit(-u)

    def g(self, u):
        return drift(u, 0.0, self.method, self.beta)

    def inverse(self, tau):
        tau = np.asarray(tau, dtype=np.float64)
        if self.method == "GA":
            return ga_ode_closed_form(tau, 1.0, 0.0)
        return np.interp(tau, self.T, self.u)

    def interval_max(self, lo, hi):
        return self.g(np.clip(self.mode, lo, hi))

    def interval_min(self, lo, hi):
        return np.minimum(self.g(lo), self.g(hi))


@dataclass(frozen=True)
class RateConstants:
    """Explicit constants of Theorem 2 for one method on one forget set (``rate_constants`` derives them).

    L, H: clock rates, every coordinate's clock T_{a_i}(u_i(t)) lies in [L eta0 t, H eta0 t] (eta0 = eta/n_f).
    nu, kappa: the largest drift ratios met at the band's lower and upper edge (sup over time).
    GA: C_lo, C_hi are the theorem's C1, C2:  C1 eta t / sqrt(n_f) <= ||b_t|| <= C2 eta t / sqrt(n_f).
    NPO: C_lo, C_hi are the theorem's C2, C3 (its C1 = 1/beta):
        (sqrt(n_f)/beta) log(C_lo eta t / n_f + 1) <= ||b_t|| <= (sqrt(n_f)/beta) log(C_hi eta t / n_f + 1).
    holds: False (constants NaN) when no such band exists for these data; ``reason`` says why.
    """

    method: str
    beta: float | None
    L: float
    H: float
    nu: float
    kappa: float
    C_lo: float
    C_hi: float
    holds: bool
    reason: str = ""
    details: dict = field(default_factory=dict, compare=False, repr=False)


S_GRID = np.concatenate([[0.0], np.logspace(-6, 8, 1401)])  # eta0 * t at which sup_t is taken
WIDEN = 1e-2  # relative slack added to the converged band before it is verified (covers the s-grid)
H_CAP = 1e4  # a clock rate above this counts as "no band"


@lru_cache(maxsize=32)
def _cached_clock(method: str, beta: float | None, log10_tau_max: int) -> _Clock:
    return _Clock(method, beta, 10.0**log10_tau_max)


def rate_constants(geometry: ForgetGeometry, eta: float, method: str, beta: float | None = None) -> RateConstants:
    """Explicit, data-computed constants for Theorem 2 (NPO paper; Lemmas 3-4 leave them implicit).

    Inputs from the data: b = b_x^2, B = B_x^2, A (initial margins |a_i| <= A <= B_x B_theta), the off-diagonal
    row sums N (entries of M = S Gamma S that slow sample i down) and P (that speed it up), N = P = R
    without labels (R <= (n_f - 1) max_{i!=j} |<x_i,x_j>|, so the theorem's C0/n_f condition gives R < C0),
    beta, and eta0 = eta/n_f.

    Derivation. Write u_{t+1,i} = u_i + eta0 g_i c_i with g_i = g_{a_i}(u_i) and the coupling factor
    c_i = gamma_i + sum_{j!=i} M_ij g_j/g_i. Give every sample its own clock tau_i = T_{a_i}(u_i),
    T_a(u) = int_0^u dv/g_a(v) (the time the decoupled ODE needs to reach u), and write Phi_a(tau) = g_a(T_a^-1(tau)).
    (1) One step moves the clock by psi(c_i) = int_{u_i}^{u_i + eta0 g_i c_i} dv/g_{a_i}(v). Since
        -beta <= (log g)' <= 1 for NPO (0 <= (log g)' <= 1 for GA) and g <= 1:
            psi(c) >= phi_lo(c) = eta0 c e^{-eta0 c}           (any sign of c)
            psi(c) <= eta0 c exp(beta_+ eta0 c max g)          (c >= 0; beta_+ = beta for NPO, 0 for GA).
    (2) Band invariant: tau_j(t) in [L s, H s] for all j, s = eta0 t (true at t = 0). Inside the band
        g_j/g_i = Phi(tau_j)/Phi(tau_i) <= maxPhi(s)/Phi(tau_i), so c_i >= b - N maxPhi/Phi(tau_i) and
        c_i <= B + P maxPhi/Phi(tau_i). As a function of tau_i the lower step bound tau + phi_lo(c(tau)) is
        nondecreasing when phi_lo' N maxPhi beta_+ <= 1 (d(1/Phi)/dtau = -(log g)' in [-1, beta]), and the upper
        one when eta0 E P maxPhi <= 1, so the worst cases sit at the band's edges tau_i = L s and H s:
            L <= inf_s phi_lo(b - N nu(s)) / eta0,          nu(s)    = maxPhi(s) / Phi(L s),
            H >= sup_s E(s) (B + P kappa(s)),               kappa(s) = maxPhi(s) / Phi(H s),
        E(s) = exp(beta_+ eta0 (B + P maxPhi/minPhi) maxPhi). Then tau_i(t+1) in [L(s + eta0), H(s + eta0)]
        and, by induction, for all t. The ratios are evaluated at a = 0 and widened by e^{2 alpha A}, alpha =
        max(beta, 1) (|d log g_a/da| <= alpha, so T_a/T_0 and g_a/g_0 lie in [e^{-alpha A}, e^{alpha A}]).
        (L, H) is the least fixed point of this map, found by iteration from (b, B); the ratios grow with the
        band, so if it does not converge to L > 0 the near-orthogonality is too weak: holds = False.
    (3) From clocks to the theorem's form. GA: 1 <= 1/g_a <= 1/sigma(-A) on u >= 0, so
        sigma(-A) tau <= T_a^-1(tau) <= tau. NPO: g_a(u) e^{beta u} increases from sigma(-a) to 2 (1 + e^a)^beta,
        so (1/beta) log(beta m tau + 1) <= T_a^-1(tau) <= (1/beta) log(beta K tau + 1), m = sigma(-A),
        K = 2 (1 + e^A)^beta (the factor 2 of our NPO weight lives in K). Every coordinate obeys these, and
        sqrt(n_f) min_i u_i <= ||b|| <= sqrt(n_f) max_i u_i. GA also has u_t = eta0 M G_t with G_t = sum of
        pushes in [sigma(-A) t, t] (u >= 0 keeps every push above sigma(-A)), so
        lambda_min sigma(-A) eta0 sqrt(n_f) t <= ||u_t|| <= lambda_max eta0 sqrt(n_f) t.
        Result: GA C_lo = sigma(-A) max(L, lambda_min), C_hi = min(H, lambda_max); NPO C_lo = beta m L,
        C_hi = beta K H.

    Limits and caveats: valid for all t with eta0 t <= 1e8 (the sup over s is taken on a log grid up to there,
    where every ratio has reached its t -> inf limit; the band is then widened by 1% and re-verified). The
    NPO envelopes are loose by the factor K/m ~ 2^{beta+2} between GA-like early steps and the e^{-beta u}
    tail; the slope 1/beta in log t is exact. No step-size condition beyond the two monotonicity checks
    (the theorem assumes eta <= 1; ``check_assumptions`` reports it).
    """
    _check_method(method, beta)
    b, B, N, P, A = geometry.b_x**2, geometry.B_x**2, geometry.neg_row_sum, geometry.pos_row_sum, geometry.A
    eta0 = eta / geometry.n_f
    beta_plus = beta if method == "NPO" else 0.0
    alpha = max(beta, 1.0) if method == "NPO" else 1.0
    spread = np.exp(alpha * A)
    clock = _cached_clock(method, beta, int(np.ceil(np.log10(H_CAP * S_GRID[-1] * spread))))

    def band_map(L, H):
        """One application of (2): the rates (L', H') a band [L s, H s] guarantees, and its ratios."""
        u_lo_lo, u_lo_hi = clock.inverse(L * S_GRID / spread), clock.inverse(L * S_GRID * spread)
        u_hi_lo, u_hi_hi = clock.inverse(H * S_GRID / spread), clock.inverse(H * S_GRID * spread)
        max_phi = spread * clock.interval_max(u_lo_lo, u_hi_hi)
        min_phi = clock.interval_min(u_lo_lo, u_hi_hi) / spread
        nu = max_phi / (clock.interval_min(u_lo_lo, u_lo_hi) / spread)
        kappa = max_phi / (clock.interval_min(u_hi_lo, u_hi_hi) / spread)
        c_lo, c_min = b - N * nu, b - N * max_phi / min_phi
        E = np.exp(np.minimum(beta_plus * eta0 * (B + P * max_phi / min_phi) * max_phi, 700.0))
        back = min(max(0.0, -eta0 * float(c_min.min())), 700.0)  # how far a step may push a clock backwards
        slope_lo = eta0 * np.exp(back) * (1.0 + back)
        monotone = bool((slope_lo * N * max_phi * beta_plus <= 1).all() and (eta0 * E * P * max_phi <= 1).all())
        with np.errstate(over="ignore"):  # a band too wide overflows to L' = -inf or H' = inf: refused below
            L_new = float(np.min(c_lo * np.exp(np.minimum(-eta0 * c_lo, 700.0))))
            H_new = float(np.max(E * (B + P * kappa)))
        return L_new, H_new, float(nu.max()), float(kappa.max()), monotone

    def failed(reason):
        nan = float("nan")
        return RateConstants(method, beta, nan, nan, nan, nan, nan, nan, False, reason)

    L, H = b, B
    for _ in range(1000):
        L_new, H_new, nu, kappa, monotone = band_map(L, H)
        if not (L_new > 0 and H_new <= H_CAP and monotone):
            return failed(f"near-orthogonality too weak: off-diagonal row sums N={N:.3g}, P={P:.3g} against "
                          f"b_x^2={b:.3g} leave no self-consistent band (L'={L_new:.3g}, H'={H_new:.3g})")
        converged = abs(L_new - L) <= 1e-10 * L and abs(H_new - H) <= 1e-10 * H
        L, H = L_new, H_new
        if converged:
            break
    L, H = L * (1 - WIDEN), H * (1 + WIDEN)
    L_chk, H_chk, nu, kappa, monotone = band_map(L, H)
    if not (L_chk >= L and H_chk <= H and monotone):
        return failed("the band did not verify after widening (near the near-orthogonality threshold)")
    m = expit(-A)
    if method == "GA":
        C_lo, C_hi = m * max(L, geometry.lambda_min), min(H, geometry.lambda_max)
    else:
        C_lo, C_hi = beta * m * L, beta * 2.0 * (1.0 + np.exp(A)) ** beta * H
    return RateConstants(method, beta, L, H, nu, kappa, float(C_lo), float(C_hi), True,
                         details={"b": b, "B": B, "N": N, "P": P, "A": A, "eta0": eta0, "signed": geometry.signed})


def envelope(t: ArrayLike, constants: RateConstants, n_f: int, eta: float) -> tuple[np.ndarray, np.ndarray]:
    """Theorem 2's bounds on ||theta_t - theta_init||_{X^T X} at steps t, with ``rate_constants``' values.

    GA:  [C1 eta t / sqrt(n_f), C2 eta t / sqrt(n_f)];
    NPO: [(sqrt(n_f)/beta) log(C2 eta t / n_f + 1), (sqrt(n_f)/beta) log(C3 eta t / n_f + 1)].
    NaN where the constants do not hold.
    """
    t = np.asarray(t, dtype=np.float64)
    c = constants
    if c.method == "GA":
        scale = eta * t / np.sqrt(n_f)
        return c.C_lo * scale, c.C_hi * scale
    scale = np.sqrt(n_f) / c.beta
    return scale * np.log1p(c.C_lo * eta * t / n_f), scale * np.log1p(c.C_hi * eta * t / n_f)


def near_orthogonality_threshold(geometry: ForgetGeometry, eta: float, method: str,
                                 beta: float | None = None) -> float:
    """C0: the largest scale of the off-diagonal row sums for which ``rate_constants`` holds, in units of the
    data's max(N, P) (label-free: the largest row sum R). The data meet the condition iff max(N, P) <= C0.
    Found by bisection over (N, P) -> lam (N, P), everything else fixed."""
    base = max(geometry.neg_row_sum, geometry.pos_row_sum)
    if base == 0:
        return float("inf")

    def holds(c0):
        lam = c0 / base
        scaled = ForgetGeometry(**{**vars(geometry), "neg_row_sum": lam * geometry.neg_row_sum,
                                   "pos_row_sum": lam * geometry.pos_row_sum})
        return rate_constants(scaled, eta, method, beta).holds

    lo, hi = 0.0, geometry.b_x**2
    if holds(hi):
        return hi
    for _ in range(10):  # C0 to 1e-3 b_x^2
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if holds(mid) else (lo, mid)
    return lo


# ------------------------------------------------------------------ assumptions -----------------------------


@dataclass(frozen=True)
class Assumption:
    """One assumption of Theorem 2: ``value`` must not exceed ``bound`` (or be positive, as stated)."""

    name: str
    statement: str
    value: float
    bound: float
    holds: bool


@dataclass(frozen=True)
class AssumptionReport:
    """Every check ``check_assumptions`` ran; ``failed`` names those that fail."""

    checks: tuple[Assumption, ...]
    geometry: ForgetGeometry

    @property
    def hold(self) -> bool:
        return all(c.holds for c in self.checks)

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.holds]

    def __str__(self) -> str:
        lines = [f"{'ok  ' if c.holds else 'FAIL'} {c.name}: {c.statement} (value {c.value:.4g}, bound {c.bound:.4g})"
                 for c in self.checks]
        return "\n".join(lines)


def check_assumptions(X: ArrayLike, theta_init: ArrayLike, eta: float, betas: tuple[float, ...] = (),
                      y: ArrayLike | None = None, ga: bool = True) -> AssumptionReport:
    """Check Theorem 2's assumptions on (X, theta_init, eta) for GA and for NPO at each beta; report each.

    Checks (names as they appear in ``failed``):
      high_dimensional      n_f <= d
      gram_invertible       lambda_min(X X^T) > 1e-10 lambda_max
      feature_norms         b_x = min ||x_i|| > 0 (the norms then lie in [b_x, B_x])
      step_size             eta <= 1 (the theorem's assumption for NPO; our constants do not need it)
      near_orthogonality[GA], near_orthogonality[NPO beta=B]
                            off-diagonal row sums small enough for ``rate_constants``: max(N, P) <= C0
                            (``near_orthogonality_threshold``). With labels y the signed row sums are used,
                            without them the worst case N = P = R over all labellings.
    The theorem's own form, n_f max_{i!=j} |<x_i, x_j>| <= C0, implies R <= C0 and is stricter.
    """
    geometry = forget_geometry(X, theta_init, y)
    checks = [
        Assumption("high_dimensional", "n_f <= d", geometry.n_f, geometry.d, geometry.n_f <= geometry.d),
        Assumption("gram_invertible", "lambda_min(X X^T) > 1e-10 lambda_max", geometry.lambda_min,
                   1e-10 * geometry.lambda_max, geometry.lambda_min > 1e-10 * geometry.lambda_max),
        Assumption("feature_norms", "min_i ||x_i|| > 0", geometry.b_x, 0.0, geometry.b_x > 0),
    ]
    if betas:
        checks.append(Assumption("step_size", "eta <= 1 (NPO)", eta, 1.0, eta <= 1.0))
    value = max(geometry.neg_row_sum, geometry.pos_row_sum)
    kind = "signed" if geometry.signed else "label-free"
    runs = ([("GA", None)] if ga else []) + [("NPO", float(beta)) for beta in betas]
    for method, beta in runs:
        name = "GA" if method == "GA" else f"NPO beta={beta:g}"
        c0 = near_orthogonality_threshold(geometry, eta, method, beta) if geometry.b_x > 0 else 0.0
        checks.append(Assumption(f"near_orthogonality[{name}]", f"{kind} off-diagonal row sum <= C0", value, c0,
                                 value <= c0))
    return AssumptionReport(tuple(checks), geometry)


# ------------------------------------------------------------------ K-class softmax remark ------------------


def softmax_ga_gradient(theta: ArrayLike, x: ArrayLike, y: int) -> np.ndarray:
    """grad_theta log softmax(theta x)_y = (e_y - p) x^T for a K-class linear softmax, theta (K, d).

    NPO paper Sec. 2.1: the true class's row is (1 - p_y) x, so once a sample is forgotten (p_y -> 0) GA's
    gradient tends to x in norm and never shrinks ((1 - p_y) only grows as GA lowers p_y): every further step
    moves theta by eta x / n_f, the linear divergence of GA. NPO multiplies this by 2 sigma(beta r) -> 0.
    """
    theta, x = np.asarray(theta, dtype=np.float64), np.asarray(x, dtype=np.float64)
    logits = theta @ x
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return (np.eye(len(p))[y] - p)[:, None] * x[None, :]
