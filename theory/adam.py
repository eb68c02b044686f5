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
lr ||x||_1 for a general one): linear, ``sign_descent_rate``.

Limits: orthogonal features (shared features couple the samples, as Theorem 2's M does), beta1 < 1 changes
nothing in regime 2 (m follows g with the same decay), eps -> 0 for regime 2, and lr above the rate it predicts.
tests/test_theory_adam.py checks each rate against simulations with ``unlearn.optim``'s AdamW and sign descent.
"""

from __future__ import annotations

import numpy as np


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
