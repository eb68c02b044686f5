"""Closed forms of the unlearning objectives: values, weights, bounds and limits (float64 NumPy).

Every objective here is a per-sequence loss L written as a function of per-sequence statistics
(see NOTATION.md):

    logp      = log pi_theta(y|x)   summed over response tokens
    logp_ref  = log pi_ref(y|x)     the same under the frozen reference
    r         = logp - logp_ref     the log-ratio
    length    = |y|                 number of response tokens

The "weight" of an objective is W = dL/dlogp, so that grad_theta L = W * grad_theta logp. Comparing
methods by their weights is the device of NPO (Zhang et al. 2024, Sec. 3, Eq. 4-5) and SimNPO
(Fan et al. 2024, Sec. 4). The torch losses in ``unlearn.objectives`` are tested against these.

Conventions: NPO and DPO carry the 2/beta scale of the NPO paper's Eq. 3 and of its released code (the
DPO paper writes 1/beta); with it, NPO's weight is exactly 1 at theta = theta_ref, matching GA.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit, log_expit

LOG2 = float(np.log(2.0))


def softplus(z: ArrayLike) -> np.ndarray:
    """softplus(z) = log(1 + e^z), computed without overflow."""
    return np.logaddexp(0.0, np.asarray(z, dtype=np.float64))


def _check_beta(beta: float) -> None:
    if not (np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")


def _lengths(length: ArrayLike) -> np.ndarray:
    """|y| as float64, refusing a response of fewer than 1 token (lbar = logp/|y| would not exist)."""
    length = np.asarray(length, dtype=np.float64)
    if not np.all(length >= 1):
        raise ValueError(f"length must be >= 1 (response tokens), got {length.min()!r}")
    return length


# ---------------------------------------------------------------- GA ---------------------------------------


def ga_loss(logp: ArrayLike) -> np.ndarray:
    """Gradient ascent, L = logp (NPO paper Sec. 2: L_GA = E[log pi_theta(y|x)], minimised).

    Unbounded below: L -> -inf as pi_theta(y|x) -> 0, which is why GA never stops on its own.
    """
    return np.asarray(logp, dtype=np.float64)


def ga_weight(logp: ArrayLike) -> np.ndarray:
    """W = dL_GA/dlogp = 1 for every sample, however forgotten it already is."""
    return np.ones_like(np.asarray(logp, dtype=np.float64))


# ---------------------------------------------------------------- NPO --------------------------------------


def npo_loss(r: ArrayLike, beta: float) -> np.ndarray:
    """NPO, L = -(2/beta) log sigma(-beta r) = (2/beta) softplus(beta r)   (NPO paper Eq. 3).

    Args:
        r: log-ratio logp - logp_ref (per sequence, summed over response tokens).
        beta: inverse temperature, > 0.

    Bounds (``npo_bounds``): 2 max(r, 0) <= L <= 2 max(r, 0) + (2/beta) log 2, so L >= 0.
    Limits: beta -> 0, L - (2/beta) log 2 -> r (GA up to a constant, Proposition 1);
    beta -> inf, L -> 2 max(r, 0) (a hinge that is flat once the sample is below the reference).
    """
    _check_beta(beta)
    return (2.0 / beta) * softplus(beta * np.asarray(r, dtype=np.float64))


def npo_weight(r: ArrayLike, beta: float) -> np.ndarray:
    """W = dL_NPO/dlogp = 2 sigma(beta r) = 2 pi^beta / (pi^beta + pi_ref^beta)   (NPO paper Eq. 5).

    W lies in (0, 2); W = 1 exactly at r = 0 (every sample at step 0, where theta = theta_ref);
    W -> 0 as r -> -inf, so already-forgotten samples stop receiving gradient. beta -> 0 gives W -> 1 (GA).
    """
    _check_beta(beta)
    return 2.0 * expit(beta * np.asarray(r, dtype=np.float64))


def npo_curvature(r: ArrayLike, beta: float) -> np.ndarray:
    """d^2 L_NPO / dr^2 = 2 beta sigma(beta r)(1 - sigma(beta r)) > 0: NPO is strictly convex in r."""
    _check_beta(beta)
    s = expit(beta * np.asarray(r, dtype=np.float64))
    return 2.0 * beta * s * (1.0 - s)


def npo_bounds(r: ArrayLike, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) = (2 max(r,0), 2 max(r,0) + (2/beta) log 2).

    Derivation: softplus(z) = max(z, 0) + log(1 + e^{-|z|}) and 0 < log(1 + e^{-|z|}) <= log 2; multiply by
    2/beta with z = beta r.
    """
    _check_beta(beta)
    hinge = 2.0 * np.maximum(np.asarray(r, dtype=np.float64), 0.0)
    return hinge, hinge + (2.0 / beta) * LOG2


def npo_small_beta_limit(r: ArrayLike) -> np.ndarray:
    """lim_{beta->0} [L_NPO - (2/beta) log 2] = r   (NPO paper Proposition 1): NPO becomes GA."""
    return np.asarray(r, dtype=np.float64)


def npo_large_beta_limit(r: ArrayLike) -> np.ndarray:
    """lim_{beta->inf} L_NPO = 2 max(r, 0)."""
    return 2.0 * np.maximum(np.asarray(r, dtype=np.float64), 0.0)


# ---------------------------------------------------------------- SimNPO -----------------------------------


def simnpo_loss(logp: ArrayLike, length: ArrayLike, beta: float, gamma: float = 0.0) -> np.ndarray:
    """SimNPO, L = -(2/beta) log sigma(-(beta/|y|) logp - gamma) = (2/beta) softplus(beta lbar + gamma).

    SimNPO paper (Fan et al. 2024) Eq. 4, with lbar = logp/|y| the mean token log-likelihood and gamma >= 0
    the paper's margin (the released code writes beta * gamma_code). No reference model.
    Bounds: 2 max(lbar + gamma/beta, 0) <= L <= that + (2/beta) log 2 (as for NPO with r -> lbar + gamma/beta).
    """
    _check_beta(beta)
    lbar = np.asarray(logp, dtype=np.float64) / _lengths(length)
    return (2.0 / beta) * softplus(beta * lbar + gamma)


def simnpo_weight(logp: ArrayLike, length: ArrayLike, beta: float, gamma: float = 0.0) -> np.ndarray:
    """w' = dL_SimNPO/dlogp = (2/|y|) sigma(beta lbar + gamma)   (SimNPO paper Eq. 5).

    0 < w' < 2/|y|: a long response gets a proportionally smaller weight, the opposite of NPO's early
    behaviour, where W = 1 and the gradient of logp itself grows with |y|.
    beta -> 0 (gamma = 0): w' -> 1/|y|, length-weighted GA.
    """
    _check_beta(beta)
    length = _lengths(length)
    lbar = np.asarray(logp, dtype=np.float64) / length
    return (2.0 / length) * expit(beta * lbar + gamma)


def simnpo_small_beta_limit(logp: ArrayLike, length: ArrayLike) -> np.ndarray:
    """lim_{beta->0} [L_SimNPO - (2/beta) log 2] = logp/|y| at gamma = 0: length-normalised GA."""
    return np.asarray(logp, dtype=np.float64) / _lengths(length)


# ---------------------------------------------------------------- DPO --------------------------------------


def dpo_loss(r_w: ArrayLike, r_l: ArrayLike, beta: float) -> np.ndarray:
    """DPO, L = -(2/beta) log sigma(beta (r_w - r_l))   (DPO; NPO paper Eq. 2 with the 2/beta scale).

    For unlearning, r_l is the forget response's log-ratio and r_w an alternative (IDK) response's.
    Dropping the r_w term gives NPO: dpo_loss(0, r, beta) == npo_loss(r, beta).
    """
    _check_beta(beta)
    margin = np.asarray(r_w, dtype=np.float64) - np.asarray(r_l, dtype=np.float64)
    return -(2.0 / beta) * log_expit(beta * margin)


def dpo_weights(r_w: ArrayLike, r_l: ArrayLike, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """(dL/dlogp_w, dL/dlogp_l) = (-2 sigma(-beta m), +2 sigma(-beta m)) with m = r_w - r_l."""
    _check_beta(beta)
    margin = np.asarray(r_w, dtype=np.float64) - np.asarray(r_l, dtype=np.float64)
    w = 2.0 * expit(-beta * margin)
    return -w, w


# ---------------------------------------------------------------- retain terms -----------------------------


def nll_loss(logp: ArrayLike) -> np.ndarray:
    """RT (and IDK toward its target): L = -logp; weight dL/dlogp = -1."""
    return -np.asarray(logp, dtype=np.float64)


def categorical_kl(log_p: ArrayLike, log_q: ArrayLike, axis: int = -1) -> np.ndarray:
    """KL(p || q) = sum_v p_v (log p_v - log q_v) over ``axis``, from log-probabilities."""
    log_p = np.asarray(log_p, dtype=np.float64)
    log_q = np.asarray(log_q, dtype=np.float64)
    return np.sum(np.exp(log_p) * (log_p - log_q), axis=axis)
