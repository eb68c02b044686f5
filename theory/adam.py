"""How fast the forget margin grows under the optimizers real models use: Adam and sign descent (float64 NumPy).

Theorem 2 of the NPO paper (``theory.logistic``) is proved for gradient descent: GA's distance from the initial
model grows linearly and NPO's like (sqrt(n_f) / beta) log t, because NPO's weight 2 sigma(beta r) -> 2 e^{beta r}
shrinks the gradient exponentially as the log-ratio r = log pi_theta - log pi_ref falls. Adam rescales each
coordinate's gradient by its running RMS, and sign descent drops the magnitude altogether, so the shrinking weight
no longer slows the step in the same way.

Setting. Every forget token owns a coordinate of its own (orthogonal unit features: Theorem 2's setting with
X X^T = I, per token), logit z_k, log-prob log sigma(z_k) -> z_k once unlearned. A sequence's log-ratio r is the
sum over its |y| tokens; NPO's weight is 2 sigma(beta r), SimNPO's (2/|y|) sigma(beta logp / |y| + gamma).

Adam (beta1, beta2, eps; update lr m_hat / (sqrt(v_hat) + eps)), three regimes:

1. early: v remembers the early, large gradients, the step shrinks with the weight, and the margin grows about
   logarithmically, like gradient descent's. It lasts ~1/(1 - beta2) steps, or longer when large first steps
   carried r to some r_1 far beyond regime 2's line: sqrt(v) then needs ~2 beta |r_1| / -ln(beta2) steps to
   fall to the gradient 2 e^{beta r_1}.
   The crossover to regime 2, in closed form. Write s_t = -dr/dt for the margin's rate, lambda = -ln(beta2) and
   g = 2 e^{beta r} for the gradient. Once the steps are far below lr, v is fed by gradients much smaller than
   those it remembers, so v ~ beta2^t v_0 and v_hat = v / (1 - beta2^t); with beta1's lag neglected the step
   s = lr g / sqrt(v_hat) then obeys d ln s / dt = d ln g / dt - (1/2) d ln v_hat / dt, that is

       ds/dt = beta s (rho_seq / (1 - beta2^t) - s),      rho_seq = lambda / (2 beta),

   a Bernoulli equation: with mu(t) = sqrt(e^{lambda t} - 1), 1/s = (C + beta int_0^t mu) / mu. C carries the
   memory of the first, full steps; its share decays like t^{-3/2}, and C = 0 gives a curve free of lr and beta
   (``npo_adam_rate_profile``; q = mu(t), x = lambda t):

       s / rho_seq = q / (q - arctan q),     r_0 - r_t = (1/beta) ln(F(x) / F(x_0)),   F(x) = q - arctan q,

   3 / (2 beta t) early (r falls like (3 / (2 beta)) ln t: log-like), rho_seq (1 + (pi/2) e^{-x/2}) late: the rate
   comes down onto regime 2's from above. Crossover, defined so that a curve can measure it: the first step after
   which the rate stays within ``within`` of rho_seq. Its prediction (``npo_adam_crossover_step``) solves
   q / (q - arctan q) = 1 + within: x_c = 5.62 for 10%, 3.96 for 25%, i.e. t_c = x_c / -ln(beta2) ~
   x_c / (1 - beta2) steps, the same for every beta and lr. C != 0 moves it: the rate becomes
   q / (rho_seq C + q - arctan q) of rho_seq, so a C > 0 (the first steps carried r far: a large beta lr) delays
   it, by about (2 / lambda) ln(rho_seq C) when large, and makes the rate approach rho_seq from below. C's sign
   and size are set by the first, full steps, which this derivation does not model.
2. late, eps negligible (``npo_adam_margin_rate``): if a token's logit fell at rate rho per step, its gradient
   would decay like e^{-beta rho t} (NPO: the sequence's r falls at |y| rho). v is an average over
   ~1/(1 - beta2) steps and can shrink at most by beta2 per step, so sqrt(v) at most by sqrt(beta2): a gradient
   decaying faster leaves m / sqrt(v) -> 0 (the step stops), a slower one gives full steps of size ~lr (the margin
   speeds up). The margin therefore settles where the two rates meet, beta rho = -ln(beta2) / 2:

       r falls linearly at  rho_seq = -ln(beta2) / (2 beta) ~ (1 - beta2) / (2 beta)  per step, WHATEVER lr is

   (lr only has to be large enough for a full step to outrun it: lr > rho per token). The distance
   ||theta_t - theta_init||_{X^T X} = sqrt(sum_i z_i^2) of n_f one-token samples then grows linearly at
   sqrt(n_f) rho_seq (``npo_adam_distance_rate``). Per token (``per_token_adam_rate``): NPO's r sums |y| tokens,
   so each falls at rho_seq / |y|, short sequences |y|_long / |y|_short times faster; SimNPO's weight reads
   logp / |y|, so every token falls at rho_seq whatever its sequence's length. GA's gradient never shrinks:
   full steps, linear at ~lr per token.
3. third, once sqrt(v_hat) << eps: the step is (lr / eps) g, gradient descent with step lr / eps, and NPO is
   logarithmic again, d ||theta - theta_init|| / d ln t -> sqrt(n_f) / beta (``npo_gd_log_slope``, the slope of
   Theorem 2). It starts when the gradient 2 e^{beta r} meets eps: ``adam_eps_onset_step``.

Sign descent (update lr sign(g)): every token's logit moves by lr per step for GA and NPO alike (a unit feature;
lr ||x||_1 for a general one): linear, ``sign_descent_rate``. With shared features X every coordinate moves by lr
along sign(X^T w), w the samples' gradient weights, and the distance grows at lr ||X sign(X^T w)||
(``sign_descent_distance_rate``; for n_f Gaussian rows x_i ~ N(0, I_d / d) about lr sqrt(2 d / pi + n_f)).
Adam on GA moves the same way, since a gradient that stops changing gives m_hat / sqrt(v_hat) -> sign(g).

Limits: orthogonal features (shared features couple the samples, as Theorem 2's M does), beta1 < 1 changes
nothing in regime 2 (m follows g with the same decay), eps -> 0 for regime 2, and lr above the rate it predicts.
tests/test_theory_adam.py checks each rate against simulations with ``unlearn.optim``'s AdamW and sign descent.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq


def _check(beta: float, beta2: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0 < beta2 < 1:
        raise ValueError(f"beta2 must lie in (0, 1), got {beta2}")


def npo_adam_margin_rate(beta: float, beta2: float) -> float:
    """rho_seq = -ln(beta2) / (2 beta): the late (regime 2) rate at which an unlearned sequence's log-ratio r falls
    per step under Adam, for NPO and for SimNPO's length-normalised log-prob; independent of the learning rate."""
    _check(beta, beta2)
    return -np.log(beta2) / (2 * beta)


def npo_adam_distance_rate(beta: float, beta2: float, n_forget: int) -> float:
    """sqrt(n_f) rho_seq: the late slope of ||theta_t - theta_init||_{X^T X} for n_f one-token forget samples."""
    return float(np.sqrt(n_forget)) * npo_adam_margin_rate(beta, beta2)


def per_token_adam_rate(method: str, beta: float, beta2: float, length) -> np.ndarray:
    """The late rate at which each token's logit falls under Adam: rho_seq / |y| for NPO (its weight reads the
    sequence's summed log-ratio), rho_seq for SimNPO (its weight reads the per-token mean), per sequence length."""
    length = np.asarray(length, dtype=np.float64)
    if np.any(length < 1):
        raise ValueError(f"lengths must be >= 1, got {length.tolist()}")
    rho = npo_adam_margin_rate(beta, beta2)
    if method == "NPO":
        return rho / length
    if method == "SimNPO":
        return np.full_like(length, rho)
    raise ValueError(f"per_token_adam_rate knows NPO and SimNPO, got {method!r}")


def npo_gd_log_slope(beta: float, n_forget: int) -> float:
    """sqrt(n_f) / beta: d ||theta_t - theta_init||_{X^T X} / d ln t of NPO under gradient descent (Theorem 2's
    rate, for orthogonal unit features), and so in Adam's third regime, where Adam is gradient descent with step
    lr / eps."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return float(np.sqrt(n_forget)) / beta


def adam_eps_onset_step(beta: float, beta2: float, eps: float, margin0: float = 0.0) -> float:
    """The step at which regime 2's gradient, 2 e^{beta r} with r = -rho_seq t (from r = -margin0 at t = 0), has
    fallen to eps: t = (ln(2 / eps) - beta margin0) / (beta rho_seq) = 2 (ln(2 / eps) - beta margin0) / -ln(beta2).
    An estimate of where the third regime begins (its onset is gradual)."""
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return (np.log(2 / eps) - beta * margin0) / (beta * npo_adam_margin_rate(beta, beta2))


def sign_descent_rate(lr: float, feature=1.0) -> float:
    """lr ||x||_1: how fast a token's logit moves per step under sign descent, GA and NPO alike (unit feature: lr)."""
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    return lr * float(np.abs(np.asarray(feature, dtype=np.float64)).sum())


def late_time_to_fall(method: str, beta: float, beta2: float, length, drop) -> np.ndarray:
    """drop / ``per_token_adam_rate``: the steps a sequence's token logits (and so its mean token log-likelihood
    lbar, once log sigma(z) ~ z) take to fall a further ``drop`` >= 0 in regime 2 (eps negligible, lr well above
    the rate, past the early regime), per sequence length:

        NPO:    |y| drop / rho_seq   (grows linearly with |y|)        SimNPO:  drop / rho_seq   (the same for all |y|)

    with rho_seq = -ln(beta2) / (2 beta). Under gradient descent NPO's time to a target FALLS with |y| while
    beta |y| |target| < 2 (``theory.allocation.npo_fastest_length``): Adam removes that advantage (its first
    steps have size ~lr whatever the gradient) and, for deep targets, reverses it. The time to a target also
    includes the early regime, which this does not model. The rates hold as well when a sequence's tokens share
    one coordinate (``sims.speed``): Adam's step does not see the factor |y| that the shared coordinate puts in
    the gradient, and the gradient's decay rate is the same."""
    drop = np.asarray(drop, dtype=np.float64)
    if np.any(drop < 0):
        raise ValueError(f"drop must be >= 0, got {drop.tolist()}")
    return drop / per_token_adam_rate(method, beta, beta2, length)


def _memory_integral(x: np.ndarray) -> np.ndarray:
    """F(x) = q - arctan q with q = sqrt(e^x - 1): half of int_0^x sqrt(e^u - 1) du (module docstring, regime 1)."""
    q = np.sqrt(np.expm1(x))
    return q - np.arctan(q)


def npo_adam_rate_profile(t, beta2: float) -> np.ndarray:
    """s_t / rho_seq = q / (q - arctan q), q = sqrt(beta2^{-t} - 1): the margin's rate under Adam relative to
    regime 2's, from the log-like start (3 / (2 beta t), i.e. 3 / (lambda t) of rho_seq) down onto rho_seq, for
    the memory-dominated second moment with C = 0 (module docstring, regime 1); the same for every beta and lr.
    t > 0 (steps, float)."""
    _check(1.0, beta2)
    x = -np.log(beta2) * np.asarray(t, dtype=np.float64)
    if np.any(x <= 0):
        raise ValueError("npo_adam_rate_profile needs t > 0")
    q = np.sqrt(np.expm1(x))
    return q / (q - np.arctan(q))


def npo_adam_window_rate(t0: float, t1: float, beta: float, beta2: float) -> float:
    """(r_{t0} - r_{t1}) / (t1 - t0) = ln(F(lambda t1) / F(lambda t0)) / (beta (t1 - t0)): the margin's mean rate
    over the steps [t0, t1] on the same C = 0 curve (module docstring), which tends to rho_seq once lambda t0 >> 1;
    0 < t0 < t1."""
    _check(beta, beta2)
    if not 0 < t0 < t1:
        raise ValueError(f"the window needs 0 < t0 < t1, got {t0}, {t1}")
    lam = -np.log(beta2)
    return float(np.log(_memory_integral(lam * t1) / _memory_integral(lam * t0)) / (beta * (t1 - t0)))


def npo_adam_crossover_step(beta2: float, within: float = 0.1) -> float:
    """t_c = x_c / -ln(beta2) (~ x_c / (1 - beta2)): the first step after which the margin's rate under Adam stays
    within ``within`` (relative) of regime 2's rate rho_seq, x_c solving q / (q - arctan q) = 1 + within
    (5.62 for 0.1, 3.96 for 0.25). From the C = 0 curve (module docstring): the same for every beta and lr,
    valid when the first, full steps did not carry the margin far (C > 0 delays it); 0 < within < 1."""
    _check(1.0, beta2)
    if not 0 < within < 1:
        raise ValueError(f"within must lie in (0, 1), got {within}")
    # q / (q - arctan q) falls monotonically from infinity (q -> 0) to 1 (q -> infinity): bracket the root
    excess = lambda q: q / (q - np.arctan(q)) - 1 - within
    high = 1.0
    while excess(high) > 0:
        high *= 2
    q = brentq(excess, 1e-3, high, xtol=1e-14)
    return float(np.log1p(q**2) / -np.log(beta2))


def sign_descent_distance_rate(lr: float, X, weights) -> float:
    """lr ||X sign(X^T weights)||_2: how fast ||theta_t - theta_init||_{X^T X} grows per step when every coordinate
    moves by lr along the sign of the gradient -X^T weights (rows of X the forget features, weights the samples'
    signed gradient weights). Sign descent on GA (weights (2y - 1) / n_f, constant once the samples are
    forgotten), and Adam on GA, whose m_hat / sqrt(v_hat) tends to sign(g) when g stops changing; on NPO too while
    the samples' margins stay level (a sample that falls behind keeps the larger weight until it catches up).
    For unit features, one per token, it is sqrt(n_f) ``sign_descent_rate``."""
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    X = np.asarray(X, dtype=np.float64)
    return float(lr * np.linalg.norm(X @ np.sign(X.T @ np.asarray(weights, dtype=np.float64))))
