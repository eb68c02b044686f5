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

Head growth (``ceiling_rate``, ``head_growth_rate``). On the ceiling the NLL can grow only as C_y does. With
a = g * (w_v* - w_y) and u* = sqrt(d) a / ||a||, C_y = sqrt(d) ||a|| moves under an update (dW, dg), to first
order and while v* stays the maximiser, by

    dC_y = sqrt(d) (a / ||a||) . da = u* . ( g * (dw_v* - dw_y) + dg * (w_v* - w_y) ).

GA ascends NLL_y = logsumexp(z) - z_y at h_hat = g * u*: dNLL/dw_v = (p_v - [v = y]) g * u* and
dNLL/dg = (W^T (p - e_y)) * u*, p = softmax(z) (``ga_gradient_at_ceiling``). So the row of v* moves along
+g * u*, the row of y along -g * u*, the gain along (sum_v p_v w_v - w_y) * u*, which is (w_v* - w_y) * u* once
p_v* ~ 1 (for a Gaussian head the top token leads a typical other one by ~C_y / 2: it dominates once C_y / 2
exceeds log V).

(a) Adam/AdamW in its full-step regime (a gradient whose sign holds for many steps and whose size changes little
over 1 / (1 - beta2) steps: m_hat / sqrt(v_hat) -> sign(grad); lr well above eps-limited steps) moves every
coordinate by lr in the sign of its gradient. A gradient growing by a factor e^k per step lengthens the steps:
m_hat / sqrt(v_hat) -> sqrt(1 + 2 k beta2 / (1 - beta2)) (1 - k beta1 / (1 - beta1)) for small k, so the regime
needs k << (1 - beta2) / 2; the head's rows change relatively by ~lr / sigma per step, the gain by ~lr. For one
forget token

    dC_y / dt = lr ( 2 ||g * u*||_1 + ||(w_v* - w_y) * u*||_1 )                         (per step).

u* has norm sqrt(d), so its entries are O(1) and the rate grows like d, not sqrt(d): for a Gaussian head
(rows N(0, sigma^2 I)) and g = 1, u* is a uniformly random direction, ||u*||_1 ~ sqrt(2/pi) d, and the gain's
term is sqrt(d) ||w_v* - w_y||_2 = C_y ~ sqrt(2) sigma d, so dC/dt ~ lr d (2 sqrt(2/pi) + sqrt(2) sigma)
(``gaussian_head_rate``; the gain adds 1.8% at sigma = 0.02). Many forget tokens share the head and the gain:
Adam then takes the sign of their summed gradient, which agrees with one token's only where the tokens agree
(a row that is v* for one target and the target of another, or gain coordinates along directions of opposite
sign). Each token's rate is u*_y . (g * (s[v*] - s[y]) + s_g * (w_v* - w_y)) lr with s = sign of the summed
gradient; by Hoelder it never exceeds the one-token rate, and reaches it when the tokens agree.

(b) Plain SGD moves by lr times the gradient, so the rate depends on the softmax weights and on how much each
token weighs in the loss (c_y: its occurrences over the batch's sequences for a per-sequence sum, batch mean):

    dC_y / dt = lr c_y ( (p_v* + 1 - p_y) ||g * u*||_2^2 + sum_i u*_i^2 (w_v* - w_y)_i (sum_v p_v w_v - w_y)_i )
              + (the other tokens' gradients on the same rows and gain),

-> lr c_y (2 ||g * u*||^2 + ||(w_v* - w_y) * u*||^2) = lr c_y (2 d + O(C_y^2 / d)) at p_v* = 1 and g = 1. Unlike
Adam's, this rate is fixed by the loss's scale (c_y), not by the learning rate alone, and it grows with g^2.

Both rates assume the hidden state follows u* (the NLL pinned at the ceiling), updates small against the weights
(first order), and the same maximiser v* throughout; ``head_growth_rate`` computes either from the weights.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import logsumexp, softmax

OPTIMIZERS = ("adam", "sgd")  # head_growth_rate's update rules


def _head_and_gain(head: ArrayLike, gain: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    W, g = np.asarray(head, dtype=np.float64), np.asarray(gain, dtype=np.float64)
    if W.ndim != 2 or g.shape != (W.shape[1],):
        raise ValueError(f"need a head (V, d) and a gain (d,), got shapes {W.shape} and {g.shape}")
    if W.shape[0] < 2:
        raise ValueError(f"need at least 2 tokens, got V = {W.shape[0]}")
    return W, g


def _farthest(head: ArrayLike, gain: ArrayLike, targets: ArrayLike | None, chunk: int):
    """(targets, max_{v != y} ||g * (w_v - w_y)||^2, its argmax v*) for each target y (all when None).

    ||g*(w_v - w_y)||^2 = ||g*w_v||^2 + ||g*w_y||^2 - 2 (g*w_v).(g*w_y), taken in chunks of ``chunk`` targets,
    so memory is chunk x V, not V x V (a 32k vocabulary would need 8 GB)."""
    W, g = _head_and_gain(head, gain)
    scaled = W * g  # (V, d)
    norms = np.einsum("vd,vd->v", scaled, scaled)
    ys = np.arange(W.shape[0]) if targets is None else np.asarray(targets, dtype=np.int64).reshape(-1)
    top, arg = np.empty(len(ys)), np.empty(len(ys), dtype=np.int64)
    for start in range(0, len(ys), chunk):
        y = ys[start:start + chunk]
        sq = norms[None, :] + norms[y, None] - 2.0 * scaled[y] @ scaled.T  # (chunk, V)
        sq[np.arange(len(y)), y] = -np.inf  # v != y
        arg[start:start + chunk] = sq.argmax(axis=1)
        top[start:start + chunk] = np.maximum(sq.max(axis=1), 0.0)
    return ys, top, arg


def margin_ceiling(head: ArrayLike, gain: ArrayLike, targets: ArrayLike | None = None,
                   chunk: int = 256) -> np.ndarray:
    """C_y = sqrt(d) max_{v != y} ||g * (w_v - w_y)|| for each target y (all tokens when ``targets`` is None),
    in chunks of ``chunk`` targets (memory chunk x V)."""
    _, top, _ = _farthest(head, gain, targets, chunk)
    return np.sqrt(np.shape(head)[1]) * np.sqrt(top)


def farthest_token(head: ArrayLike, gain: ArrayLike, targets: ArrayLike | None = None,
                   chunk: int = 256) -> np.ndarray:
    """v*(y) = argmax_{v != y} ||g * (w_v - w_y)||: the token whose margin over y reaches the ceiling C_y."""
    return _farthest(head, gain, targets, chunk)[2]


def nll_ceiling(head: ArrayLike, gain: ArrayLike, targets: ArrayLike | None = None) -> np.ndarray:
    """C_y + log V: no hidden state gives token y a larger NLL under this head and RMSNorm gain."""
    W, _ = _head_and_gain(head, gain)
    return margin_ceiling(head, gain, targets) + np.log(W.shape[0])


def ceiling_direction(head: ArrayLike, gain: ArrayLike, target: int) -> np.ndarray:
    """u* = sqrt(d) a / ||a||, a = g * (w_v* - w_target) for the token v* of largest ||g * (w_v - w_target)||:
    a normalised hidden state (h / rms(h) at eps = 0 for h = u*) at which the margin of v* equals C_target."""
    return ceiling_directions(head, gain, [target])[0]


def ceiling_directions(head: ArrayLike, gain: ArrayLike, targets: ArrayLike) -> np.ndarray:
    """u*_y (``ceiling_direction``) of each target y, as rows (n, d)."""
    W, g = _head_and_gain(head, gain)
    ys, _, far = _farthest(W, g, targets, 256)
    a = (W[far] - W[ys]) * g
    return np.sqrt(W.shape[1]) * a / np.linalg.norm(a, axis=1, keepdims=True)


def ceiling_rate(head: ArrayLike, gain: ArrayLike, targets: ArrayLike, d_head: ArrayLike,
                 d_gain: ArrayLike) -> np.ndarray:
    """dC_y = u*_y . (g * (dW[v*] - dW[y]) + dg * (w_v* - w_y)) for each target y: C_y's first-order change
    under the update (``d_head`` (V, d), ``d_gain`` (d,)), valid while v* = v*(y) stays the maximiser (module
    docstring). An update per step gives C_y's growth per step."""
    W, g = _head_and_gain(head, gain)
    dW, dg = np.asarray(d_head, dtype=np.float64), np.asarray(d_gain, dtype=np.float64)
    if dW.shape != W.shape or dg.shape != g.shape:
        raise ValueError(f"the update must match the head {W.shape} and gain {g.shape}, got {dW.shape}, {dg.shape}")
    ys = np.asarray(targets, dtype=np.int64).reshape(-1)
    far, u = farthest_token(W, g, ys), ceiling_directions(W, g, ys)
    return np.einsum("nd,nd->n", u, g * (dW[far] - dW[ys]) + dg * (W[far] - W[ys]))


def ga_gradient_at_ceiling(head: ArrayLike, gain: ArrayLike, targets: ArrayLike,
                           weights: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(dL/dW (V, d), dL/dg (d,)) of L = sum_y c_y NLL_y with each target's normalised hidden state at its ceiling
    direction u*_y (h_hat = g * u*_y, eps = 0): the ascent direction of GA once the NLL is pinned at the ceiling.
    dNLL_y/dW = (p - e_y) (g * u*_y)^T and dNLL_y/dg = (W^T (p - e_y)) * u*_y, p = softmax(W (g * u*_y));
    ``weights`` c_y (None: 1 each) are the tokens' weights in the loss."""
    W, g = _head_and_gain(head, gain)
    ys = np.asarray(targets, dtype=np.int64).reshape(-1)
    c = np.ones(len(ys)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if c.shape != ys.shape:
        raise ValueError(f"need one weight per target, got {c.shape[0]} weights for {ys.shape[0]} targets")
    u = ceiling_directions(W, g, ys)  # (n, d)
    dz = softmax((u * g) @ W.T, axis=1)  # (n, V)
    dz[np.arange(len(ys)), ys] -= 1.0
    dz *= c[:, None]
    return dz.T @ (u * g), np.einsum("nv,vd,nd->d", dz, W, u)


def head_growth_rate(head: ArrayLike, gain: ArrayLike, targets: ArrayLike, weights: ArrayLike | None = None,
                     lr: float = 1.0, optimizer: str = "adam") -> np.ndarray:
    """dC_y/dt per step of each target y under GA on the ceiling (module docstring): ``ceiling_rate`` of the
    update lr * sign(G) ("adam": Adam's full-step regime) or lr * G ("sgd"), G = ``ga_gradient_at_ceiling``
    summed over every target with its loss weight (``weights``; their scale matters to "sgd" only)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    G_W, G_g = ga_gradient_at_ceiling(head, gain, targets, weights)
    step = np.sign if optimizer == "adam" else (lambda G: G)
    return ceiling_rate(head, gain, targets, lr * step(G_W), lr * step(G_g))


def one_token_adam_rate(head: ArrayLike, gain: ArrayLike, target: int, lr: float = 1.0) -> float:
    """lr (2 ||g * u*||_1 + ||(w_v* - w_y) * u*||_1): Adam's full-step growth of C_y when y is the only forget
    token and its top token dominates (p_v* ~ 1); an upper bound of ``head_growth_rate`` for any set of tokens."""
    W, g = _head_and_gain(head, gain)
    u, far = ceiling_direction(W, g, target), farthest_token(W, g, [target])[0]
    return float(lr * (2 * np.abs(g * u).sum() + np.abs((W[far] - W[target]) * u).sum()))


def gaussian_head_rate(lr: float, d: int, sigma: float) -> float:
    """lr d (2 sqrt(2/pi) + sqrt(2) sigma): ``one_token_adam_rate`` for a head of N(0, sigma^2) entries and g = 1
    at a typical pair (||u*||_1 ~ sqrt(2/pi) d for a random direction of norm sqrt(d); the gain's term is
    C_y ~ sqrt(2) sigma d, the maximum over v adding a little)."""
    return float(lr * d * (2 * np.sqrt(2 / np.pi) + np.sqrt(2) * sigma))


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
