"""Exact quantities of the SimNPO paper's mixture of Markov chains (float64 NumPy/SciPy, no sampling, no training).

Setting (Fan et al. 2024, Sec. 5 "Further analyses" and App. H).
N = 10 states 0..9 and three chains, each with a designated subset of k = N // 3 = 3 states:
retain S_r = {0,1,2}, forget1 S_f1 = {3,4,5}, forget2 S_f2 = {6,7,8}; state 9 belongs to none. Leakage eps = 0.2.
Chain c has

    T_c[s, s'] = (1 - eps)/k  if s, s' in S_c,      eps/(N - k)  if s in S_c, s' not in S_c,      1/N  if s not in S_c
    p_0(s)     = (1 - eps)/k  if s in S_c,          eps/(N - k)  otherwise            (the in-subset row).

(The paper's code fills the off-subset rows with eps/7 and renormalises them, which gives 1/N.) Subsets are the
consecutive blocks [0, k), [k, 2k), [2k, 3k) for any (n_states, subset_size) with 3 k <= N.

Sequences and the metric (notes 2.1, 2.5): a sequence s_0..s_{L-1} is fed as input = seq[:-1], labels = seq[1:],
so the first state is never predicted and the L-1 predicted positions are t = 0..L-2, each predicting s_{t+1}
from the prefix s_0..s_t. The E3 metric is the per-token KL(T_c[s_t] || model(. | s_<=t)) averaged over the
non-pad positions of a test split; for fixed-length sequences its expectation is ``expected_token_kl``.

Closed forms used in the docstrings and tests (derived here; the paper states none). Let m_t = P(s_t in S_c) under
chain c. From S_c the chain stays in S_c with probability 1 - eps; from outside it enters S_c with probability k/N:

    m_{t+1} = k/N + (1 - eps - k/N) m_t,    m_0 = 1 - eps,    m_t = m* + (m_0 - m*) lam^t,
    m* = k/(k + N eps) (0.6 here),  lam = 1 - eps - k/N (0.5 here)                        (``designated_mass``)

and the N - k outside states are exchangeable at every t (equal initial mass, equal inflow), each holding
(1 - m_t)/(N - k).

Contents: ``chain`` / ``Chain`` / ``subsets``, ``state_distributions``, ``stationary_distribution``,
``designated_mass``, ``sequence_logprob``, ``row_kl``, ``position_kl``, ``expected_token_kl``, ``retrained_kl``,
and two Bayes-optimal predictors for a mixture of chains: ``bayes_transition`` (the best FIRST-ORDER model, what
a model that sees only s_t learns) and ``bayes_predictive`` (the best model given the whole prefix and the position,
what an ideal causal transformer learns).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import logsumexp

from theory.objectives import categorical_kl

N_STATES = 10
LEAKAGE = 0.2
SUBSETS: dict[str, tuple[int, ...]] = {"retain": (0, 1, 2), "forget1": (3, 4, 5), "forget2": (6, 7, 8)}
CHAIN_NAMES = tuple(SUBSETS)

_ROW_TOL = 1e-12  # our own matrices are built exactly; sums are off by a few ulps at most
_MODEL_ROW_TOL = 1e-6  # model outputs (float32 softmax cast to float64) only sum to 1 to ~1e-7


# ------------------------------------------------------------------ the chains -----------------------------


def subsets(n_states: int = N_STATES, subset_size: int | None = None) -> dict[str, tuple[int, ...]]:
    """Designated subsets {retain, forget1, forget2} = consecutive blocks of k = subset_size (default N // 3)."""
    if int(n_states) != n_states or n_states < 3:
        raise ValueError(f"n_states must be an integer >= 3, got {n_states!r}")
    k = n_states // 3 if subset_size is None else subset_size
    if int(k) != k or k < 1 or 3 * k > n_states:
        raise ValueError(f"subset_size must be an integer in [1, n_states // 3 = {n_states // 3}], got {k!r}")
    return {name: tuple(range(i * k, (i + 1) * k)) for i, name in enumerate(CHAIN_NAMES)}


def _check_stochastic(matrix: np.ndarray, what: str, tol: float = _ROW_TOL, square: bool = True) -> None:
    if matrix.ndim != 2 or (square and matrix.shape[0] != matrix.shape[1]):
        raise ValueError(f"{what} must be a square (N, N) matrix, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
        raise ValueError(f"{what} must have finite nonnegative entries")
    if not np.allclose(matrix.sum(axis=1), 1.0, rtol=0.0, atol=tol):
        raise ValueError(f"{what} rows must sum to 1 (max error {np.abs(matrix.sum(axis=1) - 1).max():.3g})")


@dataclass(frozen=True)
class Chain:
    """One component of the mixture: a name, its transition matrix T (N, N) (rows = from-state), its initial
    distribution p_0 (N,), and its designated subset S_c (empty for a chain built by hand).

    The arrays are stored as read-only float64 copies; rows and p_0 must be nonnegative and sum to 1.
    """

    name: str
    transition: np.ndarray
    initial: np.ndarray
    subset: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        transition = np.array(self.transition, dtype=np.float64)
        initial = np.array(self.initial, dtype=np.float64)
        _check_stochastic(transition, "transition")
        if initial.shape != (transition.shape[0],):
            raise ValueError(f"initial must have shape ({transition.shape[0]},), got {initial.shape}")
        _check_stochastic(initial[None, :], "initial", square=False)
        transition.flags.writeable = False
        initial.flags.writeable = False
        object.__setattr__(self, "transition", transition)
        object.__setattr__(self, "initial", initial)
        object.__setattr__(self, "subset", tuple(int(s) for s in self.subset))

    @property
    def n_states(self) -> int:
        return self.transition.shape[0]


def chain(name: str, n_states: int = N_STATES, leakage: float = LEAKAGE, subset_size: int | None = None) -> Chain:
    """The chain ``name`` in {retain, forget1, forget2} (App. H): T_c and p_0 as above.

    Rows from S_c put (1 - eps)/k on each subset state and eps/(N - k) on each other state; rows from outside S_c
    are uniform 1/N; p_0 is the in-subset row. leakage = eps in [0, 1). eps = 0 makes S_c absorbing.
    """
    valid = subsets(n_states, subset_size)
    if name not in valid:
        raise ValueError(f"unknown chain {name!r}; valid names: {', '.join(valid)}")
    if not 0.0 <= leakage < 1.0:
        raise ValueError(f"leakage must be in [0, 1), got {leakage!r}")
    subset = valid[name]
    k = len(subset)
    inside = np.zeros(n_states, dtype=bool)
    inside[list(subset)] = True
    in_row = np.where(inside, (1.0 - leakage) / k, leakage / (n_states - k))
    transition = np.where(inside[:, None], in_row[None, :], 1.0 / n_states)
    return Chain(name, transition, in_row, subset)


# ------------------------------------------------------------------ distributions --------------------------


def state_distributions(c: Chain, length: int) -> np.ndarray:
    """(length, N) array whose row t is p_t = p_0 T^t, the distribution of s_t (the k-step distributions)."""
    if int(length) != length or length < 1:
        raise ValueError(f"length must be an integer >= 1, got {length!r}")
    out = np.empty((int(length), c.n_states))
    out[0] = c.initial
    for t in range(1, int(length)):
        out[t] = out[t - 1] @ c.transition
    return out


def stationary_distribution(transition: ArrayLike) -> np.ndarray:
    """pi with pi T = pi, sum(pi) = 1: least-squares solution of [T^T - I; 1^T] pi = [0; 1].

    Unique when T has one closed communicating class (every chain here: for eps > 0 it is irreducible; for
    eps = 0, S_c is the only closed class). Closed form here: mass k/(k + N eps) on S_c, the rest spread evenly.
    """
    transition = np.asarray(transition, dtype=np.float64)
    _check_stochastic(transition, "transition", _MODEL_ROW_TOL)
    n = transition.shape[0]
    a = np.vstack([transition.T - np.eye(n), np.ones((1, n))])
    b = np.zeros(n + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(a, b, rcond=None)[0]
    pi = np.clip(pi, 0.0, None)  # removes -1e-17 round-off only
    return pi / pi.sum()


def designated_mass(length: int, n_states: int = N_STATES, leakage: float = LEAKAGE,
                    subset_size: int | None = None) -> np.ndarray:
    """m_t = P(s_t in S_c), t = 0..length-1, in closed form: m_t = m* + (1 - eps - m*) lam^t,
    m* = k/(k + N eps), lam = 1 - eps - k/N (module docstring). The same for every chain c.

    Defaults: m_t = 0.6 + 0.2 * 0.5^t.
    """
    k = len(subsets(n_states, subset_size)["retain"])
    if not 0.0 <= leakage < 1.0:
        raise ValueError(f"leakage must be in [0, 1), got {leakage!r}")
    if int(length) != length or length < 1:
        raise ValueError(f"length must be an integer >= 1, got {length!r}")
    m_star = k / (k + n_states * leakage)
    lam = 1.0 - leakage - k / n_states
    return m_star + (1.0 - leakage - m_star) * lam ** np.arange(int(length), dtype=np.float64)


# ------------------------------------------------------------------ log-probabilities ----------------------


def _as_sequences(seqs: ArrayLike, n_states: int) -> np.ndarray:
    seqs = np.asarray(seqs)
    if seqs.ndim < 1 or seqs.shape[-1] < 1 or not np.issubdtype(seqs.dtype, np.integer):
        raise ValueError(f"seqs must be an integer array (..., L) with L >= 1, got {seqs.dtype} {seqs.shape}")
    if seqs.size and (seqs.min() < 0 or seqs.max() >= n_states):
        raise ValueError(f"seqs must hold states in [0, {n_states}), got [{seqs.min()}, {seqs.max()}]")
    return seqs


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(x)


def sequence_logprob(c: Chain, seqs: ArrayLike) -> np.ndarray:
    """log P_c(s_0..s_{L-1}) = log p_0(s_0) + sum_{t=0}^{L-2} log T_c[s_t, s_{t+1}], for seqs of shape (..., L).

    Exact, including the (never predicted) initial state; -inf for an impossible sequence (eps = 0 only).
    Over all N^L sequences of a length these sum to 1 (tested).
    """
    seqs = _as_sequences(seqs, c.n_states)
    log_t = _log(c.transition)
    return _log(c.initial)[seqs[..., 0]] + log_t[seqs[..., :-1], seqs[..., 1:]].sum(axis=-1)


# ------------------------------------------------------------------ KL of a transition model ---------------


def row_kl(transition: ArrayLike, model_transition: ArrayLike) -> np.ndarray:
    """(N,) vector KL(T[s] || Q[s]) = sum_s' T[s,s'] log(T[s,s'] / Q[s,s']) for each state s.

    Terms with T[s,s'] = 0 contribute 0 (masked before ``theory.objectives.categorical_kl``); a zero of Q where
    T > 0 gives +inf.
    """
    p = np.asarray(transition, dtype=np.float64)
    q = np.asarray(model_transition, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError(f"transition and model_transition must have the same (N, N) shape, got {p.shape}, {q.shape}")
    _check_stochastic(q, "model_transition", _MODEL_ROW_TOL)
    support = p > 0
    return categorical_kl(np.where(support, _log(p), 0.0), np.where(support, _log(q), 0.0), axis=-1)


def position_kl(c: Chain, length: int, model_transition: ArrayLike) -> np.ndarray:
    """(length - 1,) array: E_c[KL(T_c[s_t] || Q[s_t])] at each predicted position t = 0..length-2,
    = sum_s p_t(s) KL(T_c[s] || Q[s]) with p_t from ``state_distributions``."""
    if int(length) != length or length < 2:
        raise ValueError(f"length must be an integer >= 2 (one predicted position at least), got {length!r}")
    return state_distributions(c, int(length) - 1) @ row_kl(c.transition, model_transition)


def expected_token_kl(c: Chain, length: int, model_transition: ArrayLike) -> float:
    """Expected per-token KL of a first-order model Q against chain c, for sequences of ``length`` states:

        (1/(L-1)) sum_{t=0}^{L-2} sum_s p_t(s) KL(T_c[s] || Q[s]).

    This is exactly the expectation of the E3 simulation metric (mean over non-pad positions of
    KL(true row || model row), App. H) for a test split of fixed-length sequences from chain c,
    when the model's prediction at position t depends on s_t only. It is 0 iff Q = T_c on every state the chain
    visits at t <= L-2, and positive otherwise.
    """
    return float(position_kl(c, length, model_transition).mean())


def retrained_kl(forget: str, length: int, n_states: int = N_STATES, leakage: float = LEAKAGE,
                 subset_size: int | None = None) -> float:
    """E3's "retrained" level: the per-token KL that the retain-only Bayes-optimal model scores on a forget chain.

    Trained on retain sequences only, the Bayes-optimal predictor of s_{t+1} given the prefix is T_retain[s_t]
    (the retain chain is first-order and the prefix carries no other information), so this is
    ``expected_token_kl(chain(forget), length, T_retain)``. In closed form (module docstring), with
    KL_in = KL(in-row || uniform) = (1-eps) log((1-eps) N/k) + eps log(eps N/(N-k))         (= 0.534111 here)
    KL_r  = KL(uniform || in-row) = (k/N) log(k/(N (1-eps))) + ((N-k)/N) log((N-k)/(N eps))  (= 0.582686 here):
    from S_c the truth is the in-row and the model uniform; from S_r the truth is uniform and the model the retain
    in-row; elsewhere both are uniform. With P(s_t in S_r) = (1 - m_t) k/(N-k),

        KL = mean_{t=0}^{L-2} [ m_t KL_in + (1 - m_t) (k/(N-k)) KL_r ],   m_t = 0.6 + 0.2 * 0.5^t here,

    = 0.249723 + 0.284388 * mean(m_t): 0.426343 for length 20 (mean m_t = 0.621053) and 0.447017 for length 5
    (mean m_t = 0.69375), the same for forget1 and forget2 (paper Fig. 5 markers: ~0.42 and ~0.44).
    """
    c = chain(forget, n_states, leakage, subset_size)
    return expected_token_kl(c, length, chain("retain", n_states, leakage, subset_size).transition)


# ------------------------------------------------------------------ Bayes-optimal models of a mixture -------


def _mixture(weights: dict[str, float], n_states: int, leakage: float, subset_size: int | None,
             lengths: dict[str, int] | None) -> tuple[list[Chain], np.ndarray, list[int] | None]:
    if not weights:
        raise ValueError("weights must name at least one chain")
    chains = [chain(name, n_states, leakage, subset_size) for name in weights]
    w = np.array([weights[name] for name in weights], dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be finite, nonnegative and not all 0, got {weights!r}")
    if lengths is None:
        return chains, w / w.sum(), None
    missing = [name for name in weights if name not in lengths]
    if missing:
        raise ValueError(f"lengths must give a length for every weighted chain; missing {missing}")
    ls = [lengths[name] for name in weights]
    if any(int(x) != x or x < 2 for x in ls):
        raise ValueError(f"lengths must be integers >= 2, got {lengths!r}")
    return chains, w / w.sum(), [int(x) for x in ls]


def bayes_transition(weights: dict[str, float], n_states: int = N_STATES, leakage: float = LEAKAGE,
                     lengths: dict[str, int] | None = None, subset_size: int | None = None) -> np.ndarray:
    """The Bayes-optimal FIRST-ORDER predictor Q (N, N) for a mixture of chains (token-level cross-entropy).

    ``weights``: the share of SEQUENCES from each chain (normalised here; e.g. {"retain": 10000, "forget1": 5000,
    "forget2": 5000}); ``lengths``: each chain's sequence length. Minimising the expected token-mean cross-entropy
    sum_c w_c sum_t E_c[-log Q[s_t, s_{t+1}]] over row-stochastic Q, row by row (Gibbs' inequality), gives

        Q[s] = sum_c w_c n_c(s) T_c[s] / sum_c w_c n_c(s),    n_c(s) = sum_{t=0}^{L_c-2} p_t^c(s)

    (n_c(s): expected number of predicted positions at state s in one sequence of chain c). lengths=None takes the
    long-sequence limit, n_c = pi_c (the stationary distribution), with the weights read as shares of TOKENS.
    A state no chain visits gets sum_c w_c T_c[s] (any row is optimal there).

    This is not the Bayes-optimal predictor of a model that sees the whole prefix: the posterior over chains given
    the history is not first-order (see ``bayes_predictive``). With one chain (e.g. retain only) both equal T_c.
    """
    chains, w, ls = _mixture(weights, n_states, leakage, subset_size, lengths)
    if ls is None:
        occupancy = np.stack([stationary_distribution(c.transition) for c in chains])
    else:
        occupancy = np.stack([state_distributions(c, x - 1).sum(axis=0) for c, x in zip(chains, ls, strict=True)])
    mass = w[:, None] * occupancy  # (C, N)
    rows = np.stack([c.transition for c in chains])  # (C, N, N)
    num = np.einsum("cs,csj->sj", mass, rows)
    den = mass.sum(axis=0)
    prior = np.einsum("c,csj->sj", w, rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den[:, None] > 0, num / den[:, None], prior)


def bayes_predictive(weights: dict[str, float], seqs: ArrayLike, n_states: int = N_STATES, leakage: float = LEAKAGE,
                     lengths: dict[str, int] | None = None, subset_size: int | None = None) -> np.ndarray:
    """(..., L-1, N): the Bayes-optimal next-state distribution at each predicted position of each sequence, given
    the whole prefix s_0..s_t and the position t (what an ideal causal model trained on the mixture predicts):

        P(s_{t+1} | s_<=t, t) = sum_c post_c(t) T_c[s_t],
        post_c(t) ∝ w_c 1[t <= L_c - 2] P_c(s_0..s_t)

    with ``weights`` the share of sequences of each chain and ``lengths`` their lengths (a position t exists only
    in chains with L_c >= t + 2; None: no such restriction). Its per-token KL to the generating chain's row, averaged
    over sampled sequences, is the "original model" floor of E3 (Monte Carlo: the history makes it non-first-order).
    """
    chains, w, ls = _mixture(weights, n_states, leakage, subset_size, lengths)
    seqs = _as_sequences(seqs, n_states)
    n_pos = seqs.shape[-1] - 1
    if n_pos < 1:
        raise ValueError("seqs need at least 2 states (one predicted position)")
    if ls is not None and n_pos > max(ls) - 1:
        raise ValueError(f"seqs of length {n_pos + 1} are longer than every chain's length {max(ls)}")
    prefix = []
    for c in chains:
        log_t = _log(c.transition)
        steps = log_t[seqs[..., :-2], seqs[..., 1:-1]]  # transitions inside the prefix s_0..s_t, t >= 1
        head = _log(c.initial)[seqs[..., :1]]
        prefix.append(np.concatenate([head, head + np.cumsum(steps, axis=-1)], axis=-1))  # (..., L-1)
    log_post = np.stack(prefix, axis=-1) + _log(w)  # (..., L-1, C)
    if ls is not None:
        exists = np.arange(n_pos)[:, None] <= np.array(ls)[None, :] - 2  # (L-1, C)
        log_post = np.where(exists, log_post, -np.inf)
    post = np.exp(log_post - logsumexp(log_post, axis=-1, keepdims=True))
    rows = np.stack([c.transition for c in chains])[:, seqs[..., :-1]]  # (C, ..., L-1, N)
    return np.einsum("...c,c...n->...n", post, rows)
