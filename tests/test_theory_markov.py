"""theory.markov (SimNPO App. H mixture of Markov chains): hand-derived values, exact enumeration of all short
sequences, hypothesis properties over (n_states, subset size, leakage), and agreement with sampled sequences.

Sampled checks use a fixed seed and tolerances of 5 standard errors (a 5-sigma miss has probability ~6e-7 per
check), so they are deterministic in CI and would essentially never fail for a correct implementation."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import logsumexp

from theory import markov as M

EPS = M.LEAKAGE


def sample_sequences(c: M.Chain, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """(n, length) sequences from chain c by inverse-CDF sampling (independent of theory.markov's own code)."""
    cdf_init, cdf = np.cumsum(c.initial), np.cumsum(c.transition, axis=1)
    last = c.n_states - 1
    seqs = np.empty((n, length), dtype=np.int64)
    seqs[:, 0] = np.minimum((rng.random(n)[:, None] > cdf_init).sum(axis=1), last)
    for t in range(1, length):
        seqs[:, t] = np.minimum((rng.random(n)[:, None] > cdf[seqs[:, t - 1]]).sum(axis=1), last)
    return seqs


def all_sequences(n_states: int, length: int) -> np.ndarray:
    return np.array(list(itertools.product(range(n_states), repeat=length)), dtype=np.int64)


def random_model(n_states: int, seed: int) -> np.ndarray:
    """A random row-stochastic Q with full support (Dirichlet(1) rows)."""
    return np.random.default_rng(seed).dirichlet(np.ones(n_states), size=n_states)


configs = st.integers(3, 12).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(1, n // 3), st.floats(0.01, 0.95), st.sampled_from(M.CHAIN_NAMES)))


class TestHandValues:
    """Each value is worked out in the docstring of its test."""

    def test_default_rows(self):
        """forget1, eps = 0.2: from s in {3,4,5} the row is 0.8/3 = 0.2666667 on {3,4,5} and 0.2/7 = 0.0285714
        on the 7 others (3 * 0.8/3 + 7 * 0.2/7 = 1); from any other state it is uniform 1/10. p_0 = that in-row."""
        c = M.chain("forget1")
        in_row = np.array([0.2 / 7] * 3 + [0.8 / 3] * 3 + [0.2 / 7] * 4)
        np.testing.assert_allclose(c.transition[3:6], np.tile(in_row, (3, 1)), rtol=0, atol=1e-15)
        np.testing.assert_allclose(c.transition[[0, 1, 2, 6, 7, 8, 9]], 0.1, rtol=0, atol=1e-15)
        np.testing.assert_allclose(c.initial, in_row, rtol=0, atol=1e-15)
        for name in M.CHAIN_NAMES:
            np.testing.assert_allclose(M.chain(name).transition.sum(axis=1), 1.0, rtol=0, atol=1e-15)
        assert c.subset == (3, 4, 5) and c.n_states == 10

    def test_subsets_constant(self):
        """The literal SUBSETS equals the generated blocks for N = 10 (k = 10 // 3 = 3); state 9 is in none."""
        assert M.subsets() == M.SUBSETS
        assert 9 not in set().union(*M.SUBSETS.values())

    def test_per_state_kls(self):
        """Retain-only model Q = T_retain scored against forget1, state by state:
        from S_f1 the truth is the in-row and Q is uniform: KL_in = 0.8 log((0.8/3)/0.1) + 0.2 log((0.2/7)/0.1)
            = 0.8 log(8/3) + 0.2 log(2/7) = 0.8 * 0.9808293 - 0.2 * 1.2527630 = 0.5341108;
        from S_r the truth is uniform and Q the retain in-row: KL_r = 0.3 log(0.1/(0.8/3)) + 0.7 log(0.1/(0.2/7))
            = 0.3 log(3/8) + 0.7 log(7/2) = -0.2942488 + 0.8769341 = 0.5826853;
        from {6,7,8,9} both are uniform: 0."""
        kl = M.row_kl(M.chain("forget1").transition, M.chain("retain").transition)
        np.testing.assert_allclose(kl, [0.5826853] * 3 + [0.5341108] * 3 + [0] * 4, rtol=0, atol=1e-7)

    def test_retrained_kls(self):
        """m_t = P(s_t in S_c) = 0.6 + 0.2 * 0.5^t (module docstring), and the 7 outside states share 1 - m_t
        evenly, so P(s_t in S_r) = (3/7)(1 - m_t). Per position: m_t KL_in + (3/7)(1 - m_t) KL_r
        = 0.2497223 + 0.2843885 m_t. Predicted positions t = 0..L-2:
        L = 20: mean m_t = 0.6 + 0.4 (1 - 0.5^19)/19 = 0.6210526, KL = 0.2497223 + 0.1766202 = 0.4263425;
        L = 5:  mean m_t = 0.6 + 0.4 (1 - 0.5^4)/4 = 0.69375,    KL = 0.2497223 + 0.1972945 = 0.4470168.
        Exact: 0.4263 and 0.4470; the paper's Fig. 5 markers read ~0.42 and ~0.44."""
        assert round(M.retrained_kl("forget1", 20), 4) == 0.4263
        assert round(M.retrained_kl("forget2", 5), 4) == 0.4470
        assert M.retrained_kl("forget1", 20) == pytest.approx(0.4263425, abs=1e-7)
        assert M.retrained_kl("forget2", 5) == pytest.approx(0.4470168, abs=1e-7)
        # forget1 and forget2 are mirror images for a retain-only model; retain scores 0 on itself.
        assert M.retrained_kl("forget2", 20) == pytest.approx(M.retrained_kl("forget1", 20), abs=1e-15)
        assert M.retrained_kl("retain", 20) == 0.0

    def test_designated_mass_and_stationary(self):
        """m_{t+1} = 0.8 m_t + 0.3 (1 - m_t) from m_0 = 0.8: 0.8, 0.7, 0.65, 0.625, 0.6125 -> m* = 0.3/0.5 = 0.6;
        pi = 0.2 on each of S_c's states and 0.4/7 = 0.0571429 on the others."""
        c = M.chain("forget2")
        np.testing.assert_allclose(M.designated_mass(5), [0.8, 0.7, 0.65, 0.625, 0.6125], rtol=0, atol=1e-15)
        np.testing.assert_allclose(M.state_distributions(c, 5)[:, 6:9].sum(axis=1), M.designated_mass(5), atol=1e-15)
        pi = M.stationary_distribution(c.transition)
        np.testing.assert_allclose(pi, [0.4 / 7] * 6 + [0.2] * 3 + [0.4 / 7], rtol=0, atol=1e-14)

    def test_bayes_predictive_first_step(self):
        """Equal weights on forget1 and forget2, prefix s_0 = 3 (in S_f1): P_f1(3) = 0.8/3, P_f2(3) = 0.2/7, so
        post(f1) = (0.8/3)/(0.8/3 + 0.2/7) = (28/105)/(31/105) = 28/31; next-state law
        = (28/31) T_f1[3] + (3/31) T_f2[3] (uniform, since 3 is not in S_f2)."""
        pred = M.bayes_predictive({"forget1": 1.0, "forget2": 1.0}, [3, 4])
        expected = (28 / 31) * M.chain("forget1").transition[3] + (3 / 31) * 0.1
        np.testing.assert_allclose(pred[0], expected, rtol=0, atol=1e-15)

    def test_bayes_predictive_respects_lengths(self):
        """forget2 sequences have 5 states (predicted positions 0..3): from position 4 on only forget1 remains,
        so the prediction is T_f1[s_t] exactly, whatever the prefix says."""
        seq = [6, 7, 8, 6, 7, 8, 6]
        pred = M.bayes_predictive({"forget1": 1, "forget2": 1}, seq, lengths={"forget1": 20, "forget2": 5})
        np.testing.assert_allclose(pred[4:], M.chain("forget1").transition[[7, 8]], rtol=0, atol=1e-15)
        assert pred[3, 6] > 0.2  # up to position 3 the forget2 posterior dominates this prefix

    def test_validation(self):
        with pytest.raises(ValueError, match="retain, forget1, forget2"):
            M.chain("forget3")
        for bad in (1.0, -0.1, 1.5):
            with pytest.raises(ValueError, match="leakage"):
                M.chain("retain", leakage=bad)
        with pytest.raises(ValueError, match="rows must sum to 1"):
            M.Chain("bad", np.full((3, 3), 0.3), np.full(3, 1 / 3))
        with pytest.raises(ValueError, match="nonnegative"):
            M.Chain("bad", [[1.5, -0.5], [0.5, 0.5]], [0.5, 0.5])
        with pytest.raises(ValueError, match="initial"):
            M.Chain("bad", np.eye(2), [1.0, 0.0, 0.0])
        with pytest.raises(ValueError, match="subset_size"):
            M.chain("retain", n_states=10, subset_size=4)
        with pytest.raises(ValueError, match="states in"):
            M.sequence_logprob(M.chain("retain"), [[0, 10]])
        with pytest.raises(ValueError, match="length"):
            M.expected_token_kl(M.chain("retain"), 1, np.full((10, 10), 0.1))

    def test_chain_arrays_are_read_only(self):
        c = M.chain("retain")
        with pytest.raises(ValueError):
            c.transition[0, 0] = 1.0


class TestExactEnumeration:
    """Every sequence of a short length, weighted by its exact probability."""

    @pytest.mark.parametrize("name", M.CHAIN_NAMES)
    def test_logprobs_of_all_sequences_sum_to_one(self, name):
        """sum over all 10^4 sequences of length 4 of P_c(seq) = 1: logsumexp = 0 to 1e-12."""
        lp = M.sequence_logprob(M.chain(name), all_sequences(10, 4))
        assert abs(logsumexp(lp)) < 1e-12

    def test_logprobs_sum_to_one_generalised(self):
        """Same for N = 7, k = 2, eps = 0.35, length 5 (7^5 = 16807 sequences), and for eps = 0 (S_c absorbing:
        impossible sequences get -inf and drop out)."""
        for eps in (0.35, 0.0):
            lp = M.sequence_logprob(M.chain("forget2", n_states=7, leakage=eps, subset_size=2), all_sequences(7, 5))
            assert abs(logsumexp(lp)) < 1e-12

    def test_state_distributions_are_marginals(self):
        """p_t(s) = sum of P(seq) over sequences with s_t = s (length 4, chain forget1)."""
        c, seqs = M.chain("forget1"), all_sequences(10, 4)
        prob = np.exp(M.sequence_logprob(c, seqs))
        for t, row in enumerate(M.state_distributions(c, 4)):
            np.testing.assert_allclose(np.bincount(seqs[:, t], weights=prob, minlength=10), row, rtol=0, atol=1e-14)

    @given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from(M.CHAIN_NAMES))
    def test_expected_token_kl_by_enumeration(self, seed, name):
        """E[(1/2) (KL(T[s_0]||Q[s_0]) + KL(T[s_1]||Q[s_1]))] over all 1000 sequences of length 3 equals
        expected_token_kl(c, 3, Q) for a random Q."""
        c, q, seqs = M.chain(name), random_model(10, seed), all_sequences(10, 3)
        per_state = M.row_kl(c.transition, q)
        prob = np.exp(M.sequence_logprob(c, seqs))
        brute = float(prob @ per_state[seqs[:, :-1]].mean(axis=1))
        assert M.expected_token_kl(c, 3, q) == pytest.approx(brute, rel=1e-12)


class TestProperties:
    @given(cfg=configs)
    def test_rows_are_distributions(self, cfg):
        n, k, eps, name = cfg
        c = M.chain(name, n, eps, k)
        assert np.all(c.transition >= 0) and np.all(c.initial >= 0)
        np.testing.assert_allclose(c.transition.sum(axis=1), 1.0, rtol=0, atol=1e-14)
        assert c.initial.sum() == pytest.approx(1.0, abs=1e-14)

    @given(cfg=configs)
    def test_stationary_is_fixed_point_and_limit(self, cfg):
        """pi T = pi; p_t -> pi geometrically: |m_t - m*| = |1 - eps - m*| lam^t with |lam| < 1."""
        n, k, eps, name = cfg
        c = M.chain(name, n, eps, k)
        pi = M.stationary_distribution(c.transition)
        np.testing.assert_allclose(pi @ c.transition, pi, rtol=0, atol=1e-13)
        assert pi[list(c.subset)].sum() == pytest.approx(k / (k + n * eps), abs=1e-12)
        lam = abs(1 - eps - k / n)
        horizon = 400 if lam < 0.9 else 4000
        np.testing.assert_allclose(M.state_distributions(c, horizon)[-1], pi, rtol=0, atol=1e-12)
        np.testing.assert_allclose(M.state_distributions(c, 30)[:, list(c.subset)].sum(axis=1),
                                   M.designated_mass(30, n, eps, k), rtol=0, atol=1e-13)

    @given(cfg=configs, length=st.integers(2, 40))
    def test_retrained_kl_closed_form(self, cfg, length):
        """retrained_kl = mean_t [m_t KL_in + (1 - m_t) (k/(N-k)) KL_r] (retrained_kl's docstring)."""
        n, k, eps, name = cfg
        if name == "retain":
            name = "forget1"
        kl_in = (1 - eps) * math.log((1 - eps) * n / k) + eps * math.log(eps * n / (n - k))
        kl_r = (k / n) * math.log(k / (n * (1 - eps))) + ((n - k) / n) * math.log((n - k) / (n * eps))
        m = M.designated_mass(length - 1, n, eps, k)
        closed = float(np.mean(m * kl_in + (1 - m) * (k / (n - k)) * kl_r))
        assert M.retrained_kl(name, length, n, eps, k) == pytest.approx(closed, rel=1e-11)

    @given(cfg=configs, seed=st.integers(0, 2**32 - 1), length=st.integers(2, 30))
    def test_expected_token_kl_zero_iff_truth(self, cfg, seed, length):
        """0 for Q = T_c; > 0 for a random Q with full support (it differs from T_c on every visited state)."""
        n, k, eps, name = cfg
        c = M.chain(name, n, eps, k)
        assert M.expected_token_kl(c, length, c.transition) == 0.0
        assert M.expected_token_kl(c, length, random_model(n, seed)) > 0.0

    @given(cfg=configs)
    def test_bayes_transition_single_chain_is_the_chain(self, cfg):
        """With one chain the Bayes-optimal first-order model is its own transition matrix."""
        n, k, eps, name = cfg
        np.testing.assert_allclose(M.bayes_transition({name: 1.0}, n, eps, subset_size=k),
                                   M.chain(name, n, eps, k).transition, rtol=0, atol=1e-14)
        np.testing.assert_allclose(M.bayes_transition({name: 3.0}, n, eps, {name: 7}, k),
                                   M.chain(name, n, eps, k).transition, rtol=0, atol=1e-14)

    @given(seed=st.integers(0, 2**32 - 1), scale=st.floats(1e-3, 0.2))
    def test_bayes_transition_minimises_cross_entropy(self, seed, scale):
        """E3(a) mixture (10000/5000/5000 sequences, lengths 20/20/5): the expected token cross-entropy
        sum_c w_c sum_s n_c(s) sum_s' T_c[s,s'] (-log Q[s,s']) is smallest at Q = bayes_transition."""
        weights = {"retain": 10000, "forget1": 5000, "forget2": 5000}
        lengths = {"retain": 20, "forget1": 20, "forget2": 5}
        q_star = M.bayes_transition(weights, lengths=lengths)
        np.testing.assert_allclose(q_star.sum(axis=1), 1.0, rtol=0, atol=1e-14)

        def cross_entropy(q):
            total = 0.0
            for name, w in weights.items():
                c = M.chain(name)
                occupancy = M.state_distributions(c, lengths[name] - 1).sum(axis=0)
                total += w * occupancy @ (c.transition * -np.log(q)).sum(axis=1)
            return total

        q = (1 - scale) * q_star + scale * random_model(10, seed)
        assert cross_entropy(q) > cross_entropy(q_star)

    def test_bayes_transition_long_sequence_limit(self):
        """lengths -> inf (equal lengths) approaches lengths=None (stationary occupancies), error O(1/L)."""
        w = {"retain": 2.0, "forget1": 1.0, "forget2": 1.0}
        far = M.bayes_transition(w, lengths=dict.fromkeys(w, 20000))
        np.testing.assert_allclose(far, M.bayes_transition(w), rtol=0, atol=1e-4)


class TestAgainstSampling:
    def test_transition_frequencies(self):
        """200,000 sampled transitions of forget1 (10,000 sequences of 21 states): every cell's empirical
        frequency n(s,s')/n(s) is within 5 binomial standard errors sqrt(T(1-T)/n(s)) of T[s,s']; the initial
        states likewise against p_0."""
        c, rng = M.chain("forget1"), np.random.default_rng(0)
        seqs = sample_sequences(c, 10_000, 21, rng)
        counts = np.zeros((10, 10))
        np.add.at(counts, (seqs[:, :-1].ravel(), seqs[:, 1:].ravel()), 1.0)
        assert counts.sum() == 200_000
        n_s = counts.sum(axis=1, keepdims=True)
        se = np.sqrt(c.transition * (1 - c.transition) / n_s)
        assert np.all(np.abs(counts / n_s - c.transition) <= 5 * se)
        init = np.bincount(seqs[:, 0], minlength=10) / len(seqs)
        assert np.all(np.abs(init - c.initial) <= 5 * np.sqrt(c.initial * (1 - c.initial) / len(seqs)))

    @pytest.mark.parametrize(("name", "length"), [("forget1", 20), ("forget2", 5)])
    def test_expected_token_kl_matches_monte_carlo(self, name, length):
        """The E3 metric of the retain-only model (per-sequence mean over the L-1 predicted positions of
        KL(T_c[s_t] || T_retain[s_t])), averaged over 20,000 sampled sequences, is within 5 standard errors of
        the exact retrained_kl (sequences are independent, so the SE is std(per-sequence means)/sqrt(n))."""
        c, rng = M.chain(name), np.random.default_rng(1)
        per_state = M.row_kl(c.transition, M.chain("retain").transition)
        per_seq = per_state[sample_sequences(c, 20_000, length, rng)[:, :-1]].mean(axis=1)
        se = per_seq.std(ddof=1) / math.sqrt(len(per_seq))
        assert abs(per_seq.mean() - M.retrained_kl(name, length)) <= 5 * se

    def test_bayes_predictive_beats_first_order(self):
        """E3(a) mixture: the full-prefix Bayes model (Monte Carlo over 4,000 sequences per chain) scores a far
        lower per-token KL than the best first-order model on each chain (first-order: 0.046 retain, 0.118 forget1,
        0.296 forget2; full prefix ~0.014, ~0.028, ~0.067 - a floor under the paper's original model, which reads
        0.022, 0.037, 0.100 in Fig. 5a)."""
        weights = {"retain": 10000, "forget1": 5000, "forget2": 5000}
        lengths = {"retain": 20, "forget1": 20, "forget2": 5}
        q = M.bayes_transition(weights, lengths=lengths)
        rng = np.random.default_rng(2)
        for name, length in lengths.items():
            c = M.chain(name)
            seqs = sample_sequences(c, 4000, length, rng)
            pred = M.bayes_predictive(weights, seqs, lengths=lengths)
            np.testing.assert_allclose(pred.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
            truth = c.transition[seqs[:, :-1]]
            mc = float(np.mean(np.sum(truth * (np.log(truth) - np.log(pred)), axis=-1)))
            assert 0 < mc < 0.6 * M.expected_token_kl(c, length, q)


@given(w=st.lists(st.floats(0.1, 10.0), min_size=3, max_size=3), eps=st.floats(0.05, 0.5))
def test_bayes_predictive_is_the_conditional_of_the_enumerated_mixture(w, eps):
    """Every sequence of 4 states over N = 7 (subsets of 2): P(s_{t+1} = j | s_0..s_t) from the mixture's joint
    probabilities, sum_c w_c P_c(s_0..s_t, j) / sum_c w_c P_c(s_0..s_t), each P_c an exact sequence_logprob."""
    weights = dict(zip(("retain", "forget1", "forget2"), w, strict=True))
    kw = dict(n_states=7, leakage=eps, subset_size=2)
    chains = [M.chain(name, **kw) for name in weights]
    seqs = all_sequences(7, 4)
    pred = M.bayes_predictive(weights, seqs, **kw)  # (2401, 3, 7)
    share = np.array(w) / sum(w)
    for t in range(3):
        prefixes = seqs[:, : t + 1]
        extended = np.concatenate([np.repeat(prefixes, 7, axis=0), np.tile(np.arange(7), len(seqs))[:, None]], axis=1)
        joint = sum(s * np.exp(M.sequence_logprob(c, extended)) for s, c in zip(share, chains, strict=True))
        joint = joint.reshape(len(seqs), 7)
        np.testing.assert_allclose(pred[:, t], joint / joint.sum(axis=1, keepdims=True), rtol=1e-10, atol=1e-14)
