"""unlearn.objectives: autograd through every term equals the theory's weight times grad logp, the registry
rejects what it cannot run, and each METHODS row agrees with its terms and with docs/methods.md."""

import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from theory import objectives as T
from unlearn.logprobs import sequence_kl, sequence_logprobs
from unlearn.objectives import (
    METHODS,
    MethodParams,
    SequenceStats,
    forget_weights,
    get_method,
    methods_help,
    per_sequence_losses,
)

B, L, V = 4, 6, 5


def tiny_batch(seed):
    """Random logits (the 'model'), labels, a response mask with a prompt and right padding, and references."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, L, V, generator=g, dtype=torch.float64, requires_grad=True)
    alt_logits = torch.randn(B, L, V, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, V, (B, L), generator=g)
    mask = torch.zeros(B, L, dtype=torch.bool)
    for b, (start, end) in enumerate([(1, 6), (2, 4), (0, 3), (3, 6)]):
        mask[b, start:end] = True
    ref_logits = torch.randn(B, L, V, generator=g, dtype=torch.float64)
    return logits, alt_logits, labels, mask, ref_logits


def stats_of(logits, alt_logits, labels, mask, ref_logits):
    seq = sequence_logprobs(logits, labels, mask)
    alt = sequence_logprobs(alt_logits, labels.flip(0), mask)
    return SequenceStats(
        logp=seq.logp, n_tokens=seq.n_tokens,
        logp_ref=sequence_logprobs(ref_logits, labels, mask).logp.detach(),
        alt_logp=alt.logp, alt_logp_ref=sequence_logprobs(ref_logits, labels.flip(0), mask).logp.detach(),
        kl=sequence_kl(logits, ref_logits, mask),
    )


def theory_weights(name, s, p):
    """(weight on logp, weight on alt_logp) from theory.objectives, as numpy arrays."""
    logp, ref = s.logp.detach().numpy(), s.logp_ref.numpy()
    alt, alt_ref = s.alt_logp.detach().numpy(), s.alt_logp_ref.numpy()
    n, zero = s.n_tokens.numpy(), np.zeros(B)
    if name == "GA":
        return T.ga_weight(logp), zero
    if name == "NPO":
        return T.npo_weight(logp - ref, p.beta), zero
    if name == "SimNPO":
        return T.simnpo_weight(logp, n, p.beta, p.gamma), zero
    if name == "DPO":
        w_alt, w = T.dpo_weights(alt - alt_ref, logp - ref, p.beta)
        return w, w_alt
    if name == "IDK":
        return zero, -np.ones(B)
    if name == "Mismatch":  # Yao et al.: GA on the forget response, NLL on the random response
        return T.ga_weight(logp), -p.mismatch * np.ones(B)
    raise KeyError(name)


@pytest.mark.parametrize("name", ["GA", "NPO", "SimNPO", "DPO", "IDK", "Mismatch"])
@given(seed=st.integers(0, 10_000), beta=st.floats(0.05, 5.0), gamma=st.floats(0.0, 3.0),
       mismatch=st.floats(0.0, 4.0))
def test_forget_term_gradient_equals_theory_weight(name, seed, beta, gamma, mismatch):
    """grad_theta sum_b L_b == sum_b W_b grad_theta logp_b (+ W_alt,b grad_theta alt_logp_b), exactly the
    weights of theory.objectives, through the real logits -> logprobs path."""
    logits, alt_logits, labels, mask, ref_logits = tiny_batch(seed)
    p = MethodParams(beta=beta, gamma=gamma, mismatch=mismatch)
    s = stats_of(logits, alt_logits, labels, mask, ref_logits)
    term = METHODS[{"IDK": "IDK+RT", "Mismatch": "GA+Mismatch+KL"}.get(name, name)].forget
    got = torch.autograd.grad(term(s, p).sum(), (logits, alt_logits), allow_unused=True, materialize_grads=True)
    w, w_alt = theory_weights(name, s, p)
    s = stats_of(logits, alt_logits, labels, mask, ref_logits)
    surrogate = (torch.from_numpy(w) * s.logp).sum() + (torch.from_numpy(w_alt) * s.alt_logp).sum()
    want = torch.autograd.grad(surrogate, (logits, alt_logits), allow_unused=True, materialize_grads=True)
    for g, h in zip(got, want, strict=True):
        torch.testing.assert_close(g, h, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["GA", "NPO", "SimNPO", "DPO"])
def test_forget_term_values_equal_theory(name):
    logits, alt_logits, labels, mask, ref_logits = tiny_batch(3)
    p = MethodParams(beta=0.7, gamma=0.4)
    s = stats_of(logits, alt_logits, labels, mask, ref_logits)
    logp, ref = s.logp.detach().numpy(), s.logp_ref.numpy()
    want = {
        "GA": T.ga_loss(logp),
        "NPO": T.npo_loss(logp - ref, p.beta),
        "SimNPO": T.simnpo_loss(logp, s.n_tokens.numpy(), p.beta, p.gamma),
        "DPO": T.dpo_loss(s.alt_logp.detach().numpy() - s.alt_logp_ref.numpy(), logp - ref, p.beta),
    }[name]
    np.testing.assert_allclose(METHODS[name].forget(s, p).detach().numpy(), want, rtol=1e-12)


def test_retain_terms():
    """RT = -lam logp; KL = lam * (token-mean KL), whose gradient per response token is
    (softmax(logits) - softmax(ref_logits)) / n_tokens (derivative of sum_v p_ref (log p_ref - log q))."""
    logits, alt_logits, labels, mask, ref_logits = tiny_batch(5)
    p = MethodParams(lam=2.5)
    s = stats_of(logits, alt_logits, labels, mask, ref_logits)
    torch.testing.assert_close(METHODS["GA+RT"].retain(s, p), -2.5 * s.logp)
    (grad,) = torch.autograd.grad(METHODS["GA+KL"].retain(s, p).sum(), logits)
    per_token = (mask.double() / mask.sum(-1, keepdim=True)).unsqueeze(-1)
    want = 2.5 * (logits.softmax(-1) - ref_logits.softmax(-1)) * per_token
    torch.testing.assert_close(grad, want.detach(), rtol=1e-9, atol=1e-12)


def test_the_token_normalised_retain_term_is_the_batch_nll_per_token():
    """retain_norm "token": the batch mean of RT is lam sum(-logp) / sum|y|, by hand for logp (-3, -5, -10) over
    (2, 6, 2) tokens: 2 * 18 / 10 = 3.6. The per-sequence sum would give 2 * 6 = 12, and the mean of the
    sequences' own token means 2 * (1.5 + 0.83 + 5) / 3 = 4.89: long sequences count by their tokens."""
    s = SequenceStats(logp=torch.tensor([-3.0, -5.0, -10.0], dtype=torch.float64),
                      n_tokens=torch.tensor([2.0, 6.0, 2.0], dtype=torch.float64))
    token, sequence = (METHODS["NPO+RT"].retain(s, MethodParams(lam=2.0, retain_norm=norm)).mean().item()
                       for norm in ("token", "sequence"))
    assert token == pytest.approx(3.6, rel=1e-12) and sequence == pytest.approx(12.0, rel=1e-12)
    members = SequenceStats(logp=s.logp.repeat(2, 1), n_tokens=s.n_tokens.repeat(2, 1))  # (M, B): per member
    assert METHODS["NPO+RT"].retain(members, MethodParams(lam=2.0, retain_norm="token")).mean(-1).tolist() == \
        pytest.approx([3.6, 3.6], rel=1e-12)


def test_every_method_runs_and_reports_its_terms():
    logits, alt_logits, labels, mask, ref_logits = tiny_batch(7)
    s = stats_of(logits, alt_logits, labels, mask, ref_logits)
    for name, method in METHODS.items():
        losses = per_sequence_losses(method, MethodParams(), s, s)
        assert set(losses) == ({"forget", "retain"} if method.retain else {"forget"}), name
        assert all(v.shape == (B,) and torch.isfinite(v).all() for v in losses.values()), name


def test_required_methods_are_registered():
    required = {"GA", "GA+RT", "GA+KL", "IDK+RT", "DPO", "DPO+RT", "NPO", "NPO+RT", "NPO+KL",
                "SimNPO", "SimNPO+RT", "SimNPO+KL"}
    assert required <= set(METHODS)


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError, match="valid methods: GA, GA\\+RT"):
        get_method("NOPE")


def test_missing_statistics_are_named():
    s = SequenceStats(logp=torch.zeros(2), n_tokens=torch.ones(2))
    with pytest.raises(ValueError, match="logp_ref"):
        METHODS["NPO"].forget(s, MethodParams())


@pytest.mark.parametrize("kwargs, key", [({"beta": 0.0}, "beta"), ({"beta": -1.0}, "beta"),
                                          ({"gamma": -0.1}, "gamma"), ({"lam": float("inf")}, "lam"),
                                          ({"mismatch": -1.0}, "mismatch"), ({"retain_norm": "mean"}, "retain_norm")])
def test_impossible_hyperparameters_are_refused(kwargs, key):
    with pytest.raises(ValueError, match=key):
        MethodParams(**kwargs)


@given(seed=st.integers(0, 2**16), beta=st.floats(0.05, 8.0), gamma=st.floats(0.0, 3.0))
def test_forget_weights_are_the_closed_forms(seed, beta, gamma):
    """forget_weights (autograd through the term) = theory.objectives' weights: GA 1, NPO 2 sigma(beta r),
    SimNPO (2/|y|) sigma(beta lbar + gamma), to float64 rounding."""
    g = torch.Generator().manual_seed(seed)
    logp, logp_ref = -30 * torch.rand(2, 8, generator=g, dtype=torch.float64)
    n = torch.randint(1, 40, (8,), generator=g)
    s, p = SequenceStats(logp.float(), n, logp_ref=logp_ref.float()), MethodParams(beta=beta, gamma=gamma)
    r = (s.logp.double() - s.logp_ref.double()).numpy()
    np.testing.assert_array_equal(forget_weights("GA", p, s).numpy(), np.ones(8))
    np.testing.assert_allclose(forget_weights("NPO", p, s).numpy(), T.npo_weight(r, beta), rtol=1e-12)
    np.testing.assert_allclose(forget_weights("SimNPO", p, s).numpy(),
                               T.simnpo_weight(s.logp.double().numpy(), n.numpy(), beta, gamma), rtol=1e-12)


# ------------------------------------------------------------------ the registry's rows and docs/methods.md

DOCS = Path(__file__).resolve().parents[1] / "docs" / "methods.md"


def docs_rows() -> dict[str, list[str]]:
    """{method name: the cells of its row} of the first table in docs/methods.md, the methods' (cells split on
    unescaped |)."""
    rows = {}
    for line in DOCS.read_text().splitlines():
        if rows and not line.startswith("|"):
            break  # the end of the table
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells[0] != "name":
            rows[cells[0]] = cells
    return rows


def test_every_method_has_a_docs_row_and_every_docs_row_a_method():
    rows = docs_rows()
    assert sorted(set(METHODS) - set(rows)) == [], "METHODS entries without a docs/methods.md row"
    assert sorted(set(rows) - set(METHODS)) == [], "docs/methods.md rows without a METHODS entry"


def test_docs_parameters_column_is_the_rows_hyperparameters():
    for name, cells in docs_rows().items():
        documented = () if cells[3] == "-" else tuple(p.strip() for p in cells[3].split(","))
        assert documented == METHODS[name].hyperparameters, name


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_has_a_colour_help_and_source(name):
    m = METHODS[name]
    assert re.fullmatch(r"#[0-9a-fA-F]{6}", m.color), f"{name}: colour {m.color!r} is not #rrggbb"
    assert m.help.strip() and "\n" not in m.help, f"{name}: help must be one non-empty line"
    assert m.paper.strip(), f"{name}: no source"


class ReadRecorder:
    """Stands in for MethodParams and records which hyperparameters a term reads (default values)."""

    def __init__(self):
        self.read = set()

    def __getattr__(self, key):
        self.read.add(key)
        return getattr(MethodParams(), key)


@pytest.mark.parametrize("name", list(METHODS))
def test_hyperparameters_are_exactly_what_the_terms_read(name):
    s = stats_of(*tiny_batch(11))
    recorder = ReadRecorder()
    per_sequence_losses(METHODS[name], recorder, s, s)
    declared = METHODS[name].hyperparameters
    assert len(set(declared)) == len(declared) and set(declared) <= {f.name for f in fields(MethodParams)}
    assert recorder.read == set(declared), name


@pytest.mark.parametrize("name", list(METHODS))
def test_a_term_reads_alt_logp_exactly_when_it_names_its_alternative(name):
    m = METHODS[name]
    for term in (m.forget, m.retain):
        if term is not None:
            assert ("alt_logp" in term.needs) == (term.alternative is not None), (name, term.fn.__name__)
            assert term.alternative in (None, "idk", "preferred", "mismatch")


def test_methods_help_lists_every_method_with_its_help_and_hyperparameters():
    lines = methods_help().splitlines()
    assert len(lines) == len(METHODS)
    for line, (name, m) in zip(lines, METHODS.items(), strict=True):
        assert line.split()[0] == name and m.help in line
        assert line.endswith(f"[{', '.join(m.hyperparameters)}]" if m.hyperparameters else m.help)
    assert "NPO+RT" in methods_help() and "[beta, gamma]" in methods_help()
