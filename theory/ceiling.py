"""The final-norm ceiling on a token's negative log-likelihood (float64 NumPy).

Llama-type models end in an RMSNorm and a bias-free head: the logits of a hidden state h in R^d are

    z = W h_hat,    h_hat = g * h / rms(h),    rms(h) = sqrt(mean_i h_i^2 + eps)

with W (V, d) the head's rows w_v and g (d,) the norm's gain. Since ||h / rms(h)|| <= sqrt(d) (equality at
eps = 0), h_hat = g * u with ||u|| <= sqrt(d), and for every token y the margin of any other token is bounded by
Cauchy-Schwarz:

    z_v - z_y = (g * (w_v - w_y)) . u  <=  sqrt(d) ||g * (w_v - w_y)||,

so the token's NLL, log sum_v exp(z_v - z_y), can never exceed

    NLL_y  <=  C_y + log V,    C_y = sqrt(d) max_{v != y} ||g * (w_v - w_y)||         (``nll_ceiling``).

The margin bound is attained: at u* = sqrt(d) a / ||a||, a = g * (w_v* - w_y) for the maximising v*
(``ceiling_direction``), max_v (z_v - z_y) = C_y, so C_y <= max_h NLL_y <= C_y + log V. Gradient ascent on a
token's NLL therefore saturates once the hidden state points along u*, and can then grow only as fast as the
optimizer grows the head and the gain. The bound holds for any hidden state, whatever the layers below compute.
It assumes an RMSNorm and a head without biases (Llama, Mistral, Qwen); a LayerNorm's bias (GPT-2) or a head's
bias adds a term it does not cover.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import logsumexp


def _head_and_gain(head: ArrayLike, gain: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    W, g = np.asarray(head, dtype=np.float64), np.asarray(gain, dtype=np.float64)
    if W.ndim != 2 or g.shape != (W.shape[1],):
        raise ValueError(f"need a head (V, d) and a gain (d,), got shapes {W.shape} and {g.shape}")
    if W.shape[0] < 2:
        raise ValueError(f"need at least 2 tokens, got V = {W.shape[0]}")
    return W, g


def margin_ceiling(head: ArrayLike, gain: ArrayLike, targets: ArrayLike | None = None,
                   chunk: int = 256) -> np.ndarray:
    """C_y = sqrt(d) max_{v != y} ||g * (w_v - w_y)|| for each target y (all tokens when ``targets`` is None).

    ||g*(w_v - w_y)||^2 = ||g*w_v||^2 + ||g*w_y||^2 - 2 (g*w_v).(g*w_y), taken in chunks of ``chunk`` targets,
    so memory is chunk x V, not V x V (a 32k vocabulary would need 8 GB)."""
    W, g = _head_and_gain(head, gain)
    scaled = W * g  # (V, d)
    norms = np.einsum("vd,vd->v", scaled, scaled)
    ys = np.arange(W.shape[0]) if targets is None else np.asarray(targets, dtype=np.int64).reshape(-1)
    out = np.empty(len(ys))
    for start in range(0, len(ys), chunk):
        y = ys[start:start + chunk]
        sq = norms[None, :] + norms[y, None] - 2.0 * scaled[y] @ scaled.T  # (chunk, V)
        sq[np.arange(len(y)), y] = -np.inf  # v != y
        out[start:start + chunk] = np.sqrt(np.maximum(sq.max(axis=1), 0.0))
    return np.sqrt(W.shape[1]) * out


def nll_ceiling(head: ArrayLike, gain: ArrayLike, targets: ArrayLike | None = None) -> np.ndarray:
    """C_y + log V: no hidden state gives token y a larger NLL under this head and RMSNorm gain."""
    W, _ = _head_and_gain(head, gain)
    return margin_ceiling(head, gain, targets) + np.log(W.shape[0])


def ceiling_direction(head: ArrayLike, gain: ArrayLike, target: int) -> np.ndarray:
    """u* = sqrt(d) a / ||a||, a = g * (w_v* - w_target) for the token v* of largest ||g * (w_v - w_target)||:
    a normalised hidden state (h / rms(h) at eps = 0 for h = u*) at which the margin of v* equals C_target."""
    W, g = _head_and_gain(head, gain)
    diff = (W - W[target]) * g
    norms = np.linalg.norm(diff, axis=1)
    norms[target] = -np.inf
    a = diff[int(np.argmax(norms))]
    return np.sqrt(W.shape[1]) * a / np.linalg.norm(a)


def rms_head_logits(head: ArrayLike, gain: ArrayLike, hidden: ArrayLike, eps: float = 0.0) -> np.ndarray:
    """z = W (g * h / sqrt(mean(h^2) + eps)) for hidden states h (..., d): the last two layers of a Llama."""
    W, g = _head_and_gain(head, gain)
    h = np.asarray(hidden, dtype=np.float64)
    return (g * h / np.sqrt(np.mean(h * h, axis=-1, keepdims=True) + eps)) @ W.T


def token_nll(logits: ArrayLike, target: ArrayLike) -> np.ndarray:
    """-log softmax(z)_y = logsumexp(z) - z_y, along the last axis."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(target, dtype=np.int64)
    return logsumexp(z, axis=-1) - np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
