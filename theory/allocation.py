"""How NPO and SimNPO allocate unlearning power across samples: weights and unlearning speed (float64 NumPy/SciPy).

SimNPO paper (Fan et al. 2024), Sec. 4 ("reference model bias", limitations L1 and L2) and App. G (the speed
heuristic). Per-sequence statistics as in NOTATION.md: logp is
the SUM of response-token log-probs, |y| = ``length`` the number of response tokens, lbar = logp/|y| the mean
token log-likelihood, and a weight is W = dL/dlogp, so that grad_theta L = W grad_theta logp.

    NPO    W  = 2 sigma(beta (logp - logp_ref)) = 2 sigma(beta |y| (lbar - lbar_ref))            (paper Eq. 3)
    SimNPO w' = (2/|y|) sigma(beta lbar + gamma)                                               (paper Eq. 5)

(L2) At step 0 logp = logp_ref, so W = 1 for every sample whatever its length, and since grad logp is a sum of
|y| token gradients early NPO pushes long responses |y| times harder (it is GA). (L1) W depends on the sample only
through logp - logp_ref: a strongly memorised sample (high pi_ref) must be pushed further to reach the same
absolute likelihood, with the same weight schedule. SimNPO's w' has no reference; |y| w' = 2 sigma(beta lbar +
gamma) depends on the mean token likelihood only, so per-token progress is length-neutral.

The speed model (App. G). One scalar parameter theta with lbar(theta) = theta ("lbar linear in theta with unit
gradient"), so logp = |y| theta and dlogp/dtheta = |y|; gradient flow dtheta/dt = -eta dL/dtheta with t counted
in optimizer steps (gradient descent with learning rate eta is the Euler scheme with unit step). Then

    NPO:     dtheta/dt = -eta |y| 2 sigma(beta |y| (theta - lbar_ref))          (exact for this model)
    SimNPO:  dtheta/dt = -eta 2 sigma(beta theta + gamma)                        (exact; no |y| at all)
    GA:      dtheta/dt = -eta |y|

App. G's heuristic additionally takes pi_ref ~ 1 (lbar_ref = 0), starts at theta(0) = 0, and replaces
sigma(z) by e^z (valid for z << 0, i.e. once the sample is well below the reference):

    NPO:     dtheta/dt = -2 eta |y| e^{beta |y| theta},  theta(t) = -(1/(beta |y|)) log(1 + 2 beta |y|^2 eta t)
    SimNPO:  dtheta/dt = -2 eta e^{beta theta},          theta(t) = -(1/beta) log(1 + 2 beta eta t).

The exact ODEs are separable too. With u = beta |y| (theta - lbar_ref) (NPO) or u = beta theta + gamma (SimNPO),
du/dt = -c sigma(u) with c = 2 eta beta |y|^2 (NPO) or c = 2 eta beta (SimNPO); since 1/sigma(u) = 1 + e^{-u},

    u(t) - e^{-u(t)} = u_0 - e^{-u_0} - c t =: K(t),    u(t) = K + W_0(e^{-K}) = -log omega(-K)

(W_0 the Lambert function, omega the Wright omega function, omega(z) = W_0(e^z)). The heuristic solves
e^{-u} = e^{-u_0} + c t instead. With the heuristic's start (u_0 = 0) the exact solution lies above it (the
heuristic overstates the weight by the factor 1 + e^u, which is 2 at the start), and

    0 <= u - u_heur = -log(1 + u/(1 + c t)) <= -log(1 - log(1 + c t)/(1 + c t)) ~ log(ct)/(ct) -> 0,

so the heuristic is the long-time limit (deep forgetting, beta |y| |theta| >> 1 for NPO, beta |theta| >> 1 for
SimNPO). Times to a target theta* < theta_0: exact t* = [e^{-u*} - u* - e^{-u_0} + u_0]/c, heuristic
[e^{-u*} - e^{-u_0}]/c; at u_0 = 0 they differ by exactly |theta*|/(2 eta |y|) (NPO) or |theta*|/(2 eta) (SimNPO),
a vanishing fraction as the target deepens. In the opposite limit beta -> 0 the exact NPO time tends to GA's,
|theta*|/(eta |y|), twice the heuristic's |theta*|/(2 eta |y|).

Length dependence of NPO's time (derived here; App. G states only the beta << 1 end). At fixed beta and target,
with x = beta |y| |theta*|, the heuristic time is theta*^2 beta (e^x - 1)/(2 eta x^2) and the exact one
theta*^2 beta (e^x + x - 1)/(2 eta x^2) (theta_0 = lbar_ref = 0). Both decrease in |y| only while x < x_min and then
grow exponentially: x_min = 2 + W_0(-2 e^{-2}) = 1.5936 (heuristic) and x_min = 2 exactly (exact: the derivative
has the sign of (x - 2)(e^x - 1)). So "NPO forgets long responses faster" holds for beta |y| |theta*| < 2; beyond,
NPO's weight 2 sigma(beta |y| (lbar - lbar_ref)) shuts off so fast for a long response that it is forgotten more
slowly. SimNPO's time is independent of |y| in both versions.

Against a trained model. Where lbar = log sigma(z) of a logit z (tokens of one sequence sharing z, ``sims.speed``)
the flow is the linear model's slowed by (1 - e^{lbar})^2, and gradient descent is its Euler scheme:
``logsigmoid_gd_first_passage_bounds`` brackets the step count to a target around ``time_to_forget_exact``
(tests/test_theory_speed.py compares it with runs of ``unlearn.train``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit, lambertw, wrightomega

from theory.objectives import npo_weight, simnpo_weight

CLOSED_FORM_METHODS = ("GA", "NPO", "SimNPO")  # of lbar_trajectory_exact and time_to_forget_exact

# x = beta |y| |theta*| at which NPO's time to forget is shortest, heuristic and exact (module docstring).
NPO_FASTEST_X_HEURISTIC = float(2.0 + lambertw(-2.0 * np.exp(-2.0)).real)  # 1.5936...
NPO_FASTEST_X_EXACT = 2.0


# ------------------------------------------------------------------ validation -----------------------------


def _check_beta(beta: float) -> float:
    if beta is None or not (np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    return float(beta)


def _check_positive(value: float, name: str) -> float:
    if value is None or not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_length(length: ArrayLike) -> np.ndarray:
    length = np.asarray(length, dtype=np.float64)
    if not np.all(np.isfinite(length)) or np.any(length < 1):
        raise ValueError(f"length must be >= 1 (tokens), got {length!r}")
    return length


def _check_time(t: ArrayLike) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError(f"t must be finite and >= 0, got {t!r}")
    return t


def _check_method(method: str) -> None:
    if method not in CLOSED_FORM_METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(CLOSED_FORM_METHODS)}")


# ------------------------------------------------------------------ per-sample weights ---------------------


def npo_sample_weight(logp: ArrayLike, logp_ref: ArrayLike, beta: float) -> np.ndarray:
    """NPO weight W = dL/dlogp = 2 sigma(beta (logp - logp_ref)) = 2 / (1 + (pi_ref/pi)^beta)   (SimNPO Sec. 4).

    In (0, 2); exactly 1 where logp = logp_ref (every sample at step 0: L2). Increasing in logp, decreasing in
    logp_ref (L1: at equal current likelihood a strongly memorised sample gets less weight).
    """
    _check_beta(beta)
    r = np.asarray(logp, dtype=np.float64) - np.asarray(logp_ref, dtype=np.float64)
    return npo_weight(r, beta)


def simnpo_sample_weight(logp: ArrayLike, length: ArrayLike, beta: float, gamma: float = 0.0) -> np.ndarray:
    """SimNPO weight w' = dL/dlogp = (2/|y|) sigma(beta logp/|y| + gamma)   (SimNPO Eq. 5 with its margin).

    gamma is the paper's margin (L = -(2/beta) log sigma(-(beta/|y|) logp - gamma), NOTATION.md); the released
    code's ``gamma`` is gamma/beta. In (0, 2/|y|), increasing in logp; no reference model.
    """
    _check_beta(beta)
    return simnpo_weight(logp, _check_length(length), beta, gamma)


def npo_weight_by_length(length: ArrayLike, lbar: ArrayLike, lbar_ref: ArrayLike, beta: float) -> np.ndarray:
    """NPO weight as a function of |y| and the mean token log-likelihoods: W = 2 sigma(beta |y| (lbar - lbar_ref)).

    Length-independent only at lbar = lbar_ref (step 0: W = 1 for every |y|). Afterwards |y| enters through
    |y| (lbar - lbar_ref): at the same per-token drop lbar - lbar_ref < 0 a longer response has a SMALLER weight
    (its sequence log-ratio is |y| times larger), and W -> 0 exponentially in |y|.
    """
    _check_beta(beta)
    length = _check_length(length)
    lbar = np.asarray(lbar, dtype=np.float64)
    return 2.0 * expit(beta * length * (lbar - np.asarray(lbar_ref, dtype=np.float64)))


def simnpo_weight_by_length(length: ArrayLike, lbar: ArrayLike, beta: float, gamma: float = 0.0) -> np.ndarray:
    """SimNPO weight as a function of |y| and lbar: w' = (2/|y|) sigma(beta lbar + gamma).

    At equal lbar, w' scales exactly as 1/|y|: |y| w' = 2 sigma(beta lbar + gamma) is the same for every length
    (computed here as that common factor divided by |y|, so the product is exact to rounding).
    """
    _check_beta(beta)
    length = _check_length(length)
    return 2.0 * expit(beta * np.asarray(lbar, dtype=np.float64) + gamma) / length


# ------------------------------------------------------------------ App. G heuristic (approximation) -------


def npo_lbar_trajectory(t: ArrayLike, length: ArrayLike, beta: float, eta: float = 1.0) -> np.ndarray:
    """App. G HEURISTIC for NPO: lbar(t) = -(1/(beta |y|)) log(1 + 2 beta |y|^2 eta t).

    Solution of dtheta/dt = -2 eta |y| exp(beta |y| theta), theta(0) = 0: the linear model lbar = theta with
    pi_ref ~ 1 and sigma(z) ~ e^z (module docstring). Exact solution: ``npo_lbar_trajectory_exact``.
    """
    beta, eta = _check_beta(beta), _check_positive(eta, "eta")
    t, length = _check_time(t), _check_length(length)
    return -np.log1p(2.0 * beta * length**2 * eta * t) / (beta * length)


def simnpo_lbar_trajectory(t: ArrayLike, length: ArrayLike, beta: float, eta: float = 1.0) -> np.ndarray:
    """App. G HEURISTIC for SimNPO: lbar(t) = -(1/beta) log(1 + 2 beta eta t), the same for every |y|.

    Solution of dtheta/dt = -2 eta exp(beta theta), theta(0) = 0 (gamma = 0). ``length`` is only validated and
    broadcast. Exact solution: ``simnpo_lbar_trajectory_exact``.
    """
    beta, eta = _check_beta(beta), _check_positive(eta, "eta")
    t, length = _check_time(t), _check_length(length)
    return -np.log1p(2.0 * beta * eta * t) / beta + 0.0 * length


def time_to_forget(method: str, length: ArrayLike, beta: float, target_lbar: ArrayLike,
                   eta: float = 1.0) -> np.ndarray:
    """App. G HEURISTIC time (optimizer steps) for lbar to fall from 0 to ``target_lbar`` (<= 0; 0 if above).

    NPO:    (exp(-beta |y| target) - 1)/(2 beta |y|^2 eta)  ~ |target|/(2 eta |y|) for beta |y| |target| << 1
    SimNPO: (exp(-beta target) - 1)/(2 beta eta), independent of |y|.

    NPO's time decreases with |y| only while beta |y| |target| < 1.5936 (``NPO_FASTEST_X_HEURISTIC``) and grows
    exponentially beyond (inf once it exceeds float64's range). Exact counterpart: ``time_to_forget_exact``.
    """
    if method not in ("NPO", "SimNPO"):
        raise ValueError(f"method must be 'NPO' or 'SimNPO' for the App. G heuristic, got {method!r}")
    beta, eta = _check_beta(beta), _check_positive(eta, "eta")
    length = _check_length(length)
    depth = np.maximum(-np.asarray(target_lbar, dtype=np.float64), 0.0)  # |target| when below the start
    with np.errstate(over="ignore"):  # beyond float64 the time is inf: the target is out of practical reach
        if method == "NPO":
            return np.expm1(beta * length * depth) / (2.0 * beta * length**2 * eta)
        return np.expm1(beta * depth) / (2.0 * beta * eta) + 0.0 * length


def npo_fastest_length(beta: float, target_lbar: float, exact: bool = True) -> float:
    """The |y| at which NPO reaches ``target_lbar`` (< 0) soonest: x_min/(beta |target|), x_min = 2 (exact ODE,
    start at the reference) or 1.5936 (App. G heuristic). Shorter AND longer responses take longer."""
    beta = _check_beta(beta)
    if not target_lbar < 0:
        raise ValueError(f"target_lbar must be < 0, got {target_lbar!r}")
    x = NPO_FASTEST_X_EXACT if exact else NPO_FASTEST_X_HEURISTIC
    return x / (beta * -float(target_lbar))


# ------------------------------------------------------------------ exact linear-model dynamics ------------


def _solve_sigmoid_flow(u0: np.ndarray, ct: np.ndarray) -> np.ndarray:
    """u(t) solving du/dt = -c sigma(u): u - e^{-u} = K := u0 - e^{-u0} - c t, u = -log omega(-K) (K <= 0) or
    K + omega(-K) (K > 0), omega the Wright omega function; both branches are free of cancellation."""
    u0, ct = np.broadcast_arrays(np.asarray(u0, dtype=np.float64), np.asarray(ct, dtype=np.float64))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        k = u0 - np.exp(-u0) - ct
        omega = wrightomega(-k).real
        u = np.where(k <= 0, -np.log(omega), k + omega)
        # Far below the reference e^{-u0} overflows; there sigma(u) = e^u to within e^{-600} relative, so the
        # exponential flow's e^{-u} = e^{-u0} + c t is exact to float64.
        deep = u0 < -600.0
        return np.where(deep, u0 - np.log1p(ct * np.exp(np.where(deep, u0, 0.0))), u)


def _sigmoid_flow_time(u0: np.ndarray, u_target: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Time for du/dt = -c sigma(u) to go from u0 down to u_target: [(u0 - e^{-u0}) - (u* - e^{-u*})]/c, >= 0
    (inf where e^{-u*} overflows float64, i.e. u* < -709)."""
    with np.errstate(over="ignore"):
        gap = (u0 - np.exp(-u0)) - (u_target - np.exp(-u_target))
    return np.maximum(gap, 0.0) / c


def ga_lbar_trajectory(t: ArrayLike, length: ArrayLike, eta: float = 1.0, lbar0: float = 0.0) -> np.ndarray:
    """GA on the linear model: dtheta/dt = -eta |y| (W = 1 always), lbar(t) = lbar0 - eta |y| t: linear, unbounded."""
    eta = _check_positive(eta, "eta")
    return lbar0 - eta * _check_length(length) * _check_time(t)


def npo_lbar_trajectory_exact(t: ArrayLike, length: ArrayLike, beta: float, eta: float = 1.0,
                              lbar_ref: float = 0.0, lbar0: float | None = None) -> np.ndarray:
    """Exact NPO gradient flow of the linear model: dtheta/dt = -eta |y| 2 sigma(beta |y| (theta - lbar_ref)).

    With u = beta |y| (theta - lbar_ref), c = 2 eta beta |y|^2: u - e^{-u} = u0 - e^{-u0} - c t (module docstring),
    theta = lbar_ref + u/(beta |y|). lbar0 = theta(0) defaults to lbar_ref (unlearning starts at the reference).
    With lbar_ref = lbar0 = 0 it tends to the App. G heuristic ``npo_lbar_trajectory`` as t -> inf, from above.
    """
    beta, eta = _check_beta(beta), _check_positive(eta, "eta")
    t, length = _check_time(t), _check_length(length)
    lbar0 = lbar_ref if lbar0 is None else lbar0
    scale = beta * length
    u = _solve_sigmoid_flow(scale * (lbar0 - lbar_ref), 2.0 * eta * beta * length**2 * t)
    return lbar_ref + u / scale


def simnpo_lbar_trajectory_exact(t: ArrayLike, length: ArrayLike, beta: float, eta: float = 1.0,
                                 gamma: float = 0.0, lbar0: float = 0.0) -> np.ndarray:
    """Exact SimNPO gradient flow of the linear model: dtheta/dt = -eta 2 sigma(beta theta + gamma), for all |y|.

    With u = beta theta + gamma, c = 2 eta beta: u - e^{-u} = u0 - e^{-u0} - c t, theta = (u - gamma)/beta.
    ``length`` is only validated and broadcast: the per-token dynamics are length-neutral. With gamma = lbar0 = 0
    it tends to the App. G heuristic ``simnpo_lbar_trajectory`` as t -> inf, from above.
    """
    beta, eta = _check_beta(beta), _check_positive(eta, "eta")
    t, length = _check_time(t), _check_length(length)
    u = _solve_sigmoid_flow(np.asarray(beta * lbar0 + gamma, dtype=np.float64), 2.0 * eta * beta * t)
    return (u - gamma) / beta + 0.0 * length


def lbar_trajectory_exact(method: str, t: ArrayLike, length: ArrayLike, beta: float | None, eta: float = 1.0, *,
                          lbar0: float = 0.0, lbar_ref: float | None = None, gamma: float = 0.0) -> np.ndarray:
    """``ga_lbar_trajectory`` / ``npo_lbar_trajectory_exact`` / ``simnpo_lbar_trajectory_exact`` by name.
    lbar_ref (NPO only) defaults to lbar0: unlearning starts at the reference. beta is ignored for GA."""
    _check_method(method)
    if method == "GA":
        return ga_lbar_trajectory(t, length, eta, lbar0)
    if method == "NPO":
        return npo_lbar_trajectory_exact(t, length, beta, eta, lbar0 if lbar_ref is None else lbar_ref, lbar0)
    return simnpo_lbar_trajectory_exact(t, length, beta, eta, gamma, lbar0)


def time_to_forget_exact(method: str, length: ArrayLike, beta: float | None, target_lbar: ArrayLike,
                         eta: float = 1.0, *, lbar0: float = 0.0, lbar_ref: float | None = None,
                         gamma: float = 0.0) -> np.ndarray:
    """Exact time (optimizer steps of the gradient flow) for the linear model's lbar to fall from lbar0 to
    target_lbar (0 when target_lbar >= lbar0):

        GA:      (lbar0 - target)/(eta |y|)
        NPO:     [e^{-u*} - u* - e^{-u0} + u0]/(2 eta beta |y|^2),  u = beta |y| (lbar - lbar_ref)
        SimNPO:  [e^{-u*} - u* - e^{-u0} + u0]/(2 eta beta),        u = beta lbar + gamma   (no |y|)

    lbar_ref (NPO only) defaults to lbar0. L1 in this model: NPO's time depends on the start only through
    lbar0 - lbar_ref, so a strongly memorised sample (lbar_ref near 0) needs as long to fall a given distance
    below its reference as a weak one, and longer to reach a fixed absolute target; SimNPO gives a sample that
    starts higher a larger weight (sigma(beta lbar + gamma)) and so a head start. beta is ignored for GA.
    """
    _check_method(method)
    eta = _check_positive(eta, "eta")
    length = _check_length(length)
    target = np.asarray(target_lbar, dtype=np.float64)
    if method == "GA":
        return np.maximum(lbar0 - target, 0.0) / (eta * length)
    beta = _check_beta(beta)
    if method == "NPO":
        ref = lbar0 if lbar_ref is None else lbar_ref
        scale = beta * length
        u0, u_target = scale * (lbar0 - ref), scale * (np.minimum(target, lbar0) - ref)
        return _sigmoid_flow_time(u0, u_target, 2.0 * eta * beta * length**2)
    u0, u_target = beta * lbar0 + gamma, beta * np.minimum(target, lbar0) + gamma
    return _sigmoid_flow_time(np.asarray(u0), u_target, 2.0 * eta * beta) + 0.0 * length


def logsigmoid_gd_first_passage_bounds(method: str, length: ArrayLike, beta: float | None, target_lbar: ArrayLike,
                                       eta: float, *, lbar0: ArrayLike, lbar_ref: ArrayLike | None = None,
                                       gamma: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Bounds [lo, hi) on the number of gradient-descent steps K* after which lbar first reaches ``target_lbar``,
    for the model whose |y| tokens share one logit z with log-prob log sigma(z) (``sims.speed``), so that
    lbar = log sigma(z) < 0 instead of App. G's lbar = theta; eta is the step of each sequence's own parameter.

    With T = ``time_to_forget_exact`` (the linear model's flow time, same arguments):

        T e^{-eps}  <=  K*  <  T e^{delta} / (1 - e^{lbar0})^2 + 1,
        eps = c sigma(u0),   delta = e^{lbar0} s0,   s0 = 2 eta |y| sigma(u0) (NPO), 2 eta sigma(u0) (SimNPO),
        c = 2 eta beta |y|^2 (NPO), 2 eta beta (SimNPO); GA: eps = 0, s0 = eta |y|.

    Derivation. The loss reads lbar only, so z' = -s(z) with s = eta |y| W(lbar) (1 - sigma(z)) (W = dL/dlogp;
    SimNPO's |y| W = 2 sigma(beta lbar + gamma)) and, since dlbar/dz = 1 - sigma(z) = 1 - e^{lbar},
    lbar' = -eta |y| W(lbar) (1 - e^{lbar})^2: the linear model's flow slowed by a factor in
    [(1 - e^{lbar0})^2, 1] (lbar only falls), so the flow time to the target lies in [T, T/(1 - e^{lbar0})^2].
    Gradient descent is Euler's scheme with unit step on z' = -s(z). d log s/dz = A - sigma(z) with
    0 <= A <= beta |y| (NPO; beta for SimNPO, 0 for GA) and s <= s0 along the path (u falls), so within a step s
    varies by a factor in [e^{-eps}, e^{delta}] and each step spends a flow time in [e^{-delta}, e^{eps}]; the
    first passage then gives the bounds above. Their relative width, about eps + 2 e^{lbar0}, is the tolerance of a
    comparison with a run: small when c sigma(u0) << 1 and the run starts deep (lbar0 << 0, where log sigma(z) ~ z).
    """
    _check_method(method)
    eta = _check_positive(eta, "eta")
    length = _check_length(length)
    lbar0 = np.asarray(lbar0, dtype=np.float64)
    if not np.all(lbar0 < 0):
        raise ValueError(f"lbar0 must be < 0 (a log-probability), got {lbar0!r}")
    time = time_to_forget_exact(method, length, beta, target_lbar, eta, lbar0=lbar0, lbar_ref=lbar_ref, gamma=gamma)
    if method == "GA":
        eps, step0 = 0.0 * length, eta * length
    elif method == "NPO":
        ref = lbar0 if lbar_ref is None else np.asarray(lbar_ref, dtype=np.float64)
        weight0 = expit(beta * length * (lbar0 - ref))
        eps, step0 = 2.0 * eta * beta * length**2 * weight0, 2.0 * eta * length * weight0
    else:
        weight0 = expit(beta * lbar0 + gamma)
        eps, step0 = 2.0 * eta * beta * weight0 + 0.0 * length, 2.0 * eta * weight0 + 0.0 * length
    delta = np.exp(lbar0) * step0
    return time * np.exp(-eps), time * np.exp(delta) / (-np.expm1(lbar0)) ** 2 + 1.0


def predicted_weight(method: str, t: ArrayLike, length: ArrayLike, beta: float | None, eta: float = 1.0, *,
                     lbar0: float = 0.0, lbar_ref: float | None = None, gamma: float = 0.0) -> np.ndarray:
    """Predicted per-sample weight dL/dlogp after t steps of the exact linear-model flow (E4 overlays):
    GA 1; NPO 2 sigma(beta |y| (lbar(t) - lbar_ref)) (= 1 at t = 0 when lbar0 = lbar_ref);
    SimNPO (2/|y|) sigma(beta lbar(t) + gamma). lbar_ref defaults to lbar0."""
    lbar = lbar_trajectory_exact(method, t, length, beta, eta, lbar0=lbar0, lbar_ref=lbar_ref, gamma=gamma)
    length = np.asarray(length, dtype=np.float64)
    if method == "GA":
        return np.ones_like(lbar)
    if method == "NPO":
        return npo_weight_by_length(length, lbar, lbar0 if lbar_ref is None else lbar_ref, beta)
    return simnpo_weight_by_length(length, lbar, beta, gamma)
