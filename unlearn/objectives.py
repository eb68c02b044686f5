"""Unlearning objectives as pure functions of per-sequence statistics, and the METHODS registry.

A method is a forget term plus an optional retain term. Each term maps a ``SequenceStats`` record (made by
``unlearn.logprobs``) to one loss per sequence; the training loop takes the batch mean of each term once.
Formulas, papers and other codebases' parameter names: docs/methods.md. Closed-form values, weights, bounds
and limits of the same formulas: ``theory.objectives`` (tests check that autograd through these terms equals
those weights).

softplus(z) is written -log sigma(-z): torch's F.softplus switches to the identity above z = 20, which would
make NPO's weight exactly 2 there instead of 2 sigma(z).

Normalisation: every log-prob is a per-sequence SUM over response tokens. NPO's code uses sums
too; TOFU-style GA uses a token mean, which differs from ours by a factor |y| per sequence. The RT term can
instead take the batch's NLL per token (``MethodParams.retain_norm``), as TOFU's retain loss does.

Adding a method takes one pure function (a term below, if no existing term fits), one METHODS row (its terms,
the hyperparameters they read, its colour in every figure, a line of help and its source) and one row of
docs/methods.md; tests/test_objectives.py checks that the three agree. The rest (the training loop, ensembles
of mixed methods, the CLI's list of methods, the figures' colours) reads the registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SequenceStats:
    """Per-sequence statistics of one batch; every tensor has shape (B,).

    logp:         log pi_theta(y|x), summed over response tokens
    n_tokens:     |y|, the number of response tokens
    logp_ref:     log pi_ref(y|x) (cached before training, or from a frozen reference)
    alt_logp:     log pi_theta(y_alt|x) of an alternative response to the same prompt (IDK, DPO's winner)
    alt_logp_ref: log pi_ref(y_alt|x)
    kl:           KL(pi_ref || pi_theta) per response token, averaged over the sequence's response tokens
    """

    logp: torch.Tensor
    n_tokens: torch.Tensor
    logp_ref: torch.Tensor | None = None
    alt_logp: torch.Tensor | None = None
    alt_logp_ref: torch.Tensor | None = None
    kl: torch.Tensor | None = None


RETAIN_NORMS = ("sequence", "token")  # MethodParams.retain_norm


@dataclass(frozen=True)
class MethodParams:
    """Hyperparameters shared by the objectives, with the papers' names.

    beta:  inverse temperature of NPO, SimNPO and DPO (> 0)
    gamma: SimNPO margin in the paper's convention (>= 0; the released code's delta/gamma is gamma/beta)
    lam:   weight of the retain term (>= 0); eps3 / eps1 of Yao et al.
    mismatch: weight of the random-mismatch NLL in GA+Mismatch+KL (>= 0); eps2 / eps1 of Yao et al.
    retain_norm: the RT term's NLL per sequence ("sequence": summed over its response tokens, as every other
        log-prob here) or per token of the batch ("token": TOFU's retain loss, Hugging Face's token-mean
        cross-entropy); ``nll``
    """

    beta: float = 0.1
    gamma: float = 0.0
    lam: float = 1.0
    mismatch: float = 1.0
    retain_norm: str = "sequence"

    def __post_init__(self):
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta must be a finite number > 0, got {self.beta!r}")
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise ValueError(f"gamma must be a finite number >= 0, got {self.gamma!r}")
        for key in ("lam", "mismatch"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
        if self.retain_norm not in RETAIN_NORMS:
            raise ValueError(f"unknown retain_norm {self.retain_norm!r}; valid: {', '.join(RETAIN_NORMS)}")


# ------------------------------------------------------------------ terms: (SequenceStats, params) -> (B,)


def ga(s: SequenceStats, p: MethodParams) -> torch.Tensor:
    """GA: L = logp (NPO paper Sec. 2). Weight dL/dlogp = 1; unbounded below."""
    return s.logp


def npo(s: SequenceStats, p: MethodParams) -> torch.Tensor:
    """NPO: L = (2/beta) softplus(beta r), r = logp - logp_ref (NPO paper Eq. 3). Weight 2 sigma(beta r)."""
    return -(2.0 / p.beta) * F.logsigmoid(-p.beta * (s.logp - s.logp_ref))


def simnpo(s: SequenceStats, p: MethodParams) -> torch.Tensor:
    """SimNPO: L = (2/beta) softplus(beta logp/|y| + gamma) (SimNPO paper Eq. 4). Weight (2/|y|) sigma(.)."""
    return -(2.0 / p.beta) * F.logsigmoid(-(p.beta * s.logp / s.n_tokens + p.gamma))


def dpo(s: SequenceStats, p: MethodParams) -> torch.Tensor:
    """DPO with the forget response as loser: L = -(2/beta) log sigma(beta (r_alt - r)) (DPO; NPO Eq. 2)."""
    margin = (s.alt_logp - s.alt_logp_ref) - (s.logp - s.logp_ref)
    return -(2.0 / p.beta) * F.logsigmoid(p.beta * margin)


def idk(s: SequenceStats, p: MethodParams) -> torch.Tensor:
    """IDK: L = -log pi_theta(y_alt|x), NLL toward an uninformed response (NPO paper Eq. 17, c_FG)."""
    return -s.alt_logp


def ga_mismatch(s: SequenceStats, p: MethodParams) -> torch.Tensor:
    """GA+Mismatch: L = logp - mismatch * log pi_theta(y_rdn|x) (Yao et al. 2024, Eqs. 2-5, with eps1 = 1 and
    eps2 = mismatch): ascent on the forget response plus the NLL of a random normal-data response y_rdn given
    the forget prompt (``alt_logp``). The second term is bounded below by 0, the first is not."""
    return s.logp - p.mismatch * s.alt_logp


def nll(s: SequenceStats, p: MethodParams) -> torch.Tensor:
    """RT: L = -lam logp on retain data (NPO paper Eq. 17, c_RT). retain_norm "token": L_b = -lam logp_b / mean|y|
    over the batch, so that the batch mean is lam sum_b(-logp_b) / sum_b |y_b|, the NLL per response token of the
    batch (TOFU's retain loss, Hugging Face's token-mean cross-entropy)."""
    if p.retain_norm == "token":
        return -p.lam * s.logp / s.n_tokens.to(s.logp.dtype).mean(-1, keepdim=True)
    return -p.lam * s.logp


def kl(s: SequenceStats, p: MethodParams) -> torch.Tensor:
    """KL: L = lam KL(pi_ref || pi_theta) per response token on retain data."""
    return p.lam * s.kl


@dataclass(frozen=True)
class Term:
    """A per-sequence loss, the optional ``SequenceStats`` fields it reads, and, for a term that reads alt_logp,
    what the alternative response y_alt must be: "idk" (an uninformed answer), "preferred" (DPO's winner, e.g.
    an IDK answer) or "mismatch" (a random normal-data response to the forget prompt, Yao et al.); data sources
    refuse the terms whose alternative they cannot give."""

    fn: Callable[[SequenceStats, MethodParams], torch.Tensor]
    needs: tuple[str, ...] = ()
    alternative: str | None = None

    def __call__(self, stats: SequenceStats, params: MethodParams) -> torch.Tensor:
        missing = [name for name in self.needs if getattr(stats, name) is None]
        if missing:
            raise ValueError(f"term {self.fn.__name__!r} needs statistics {missing} that were not computed")
        return self.fn(stats, params)


GA, NPO, SIMNPO = Term(ga), Term(npo, ("logp_ref",)), Term(simnpo)
DPO = Term(dpo, ("logp_ref", "alt_logp", "alt_logp_ref"), alternative="preferred")
IDK = Term(idk, ("alt_logp",), alternative="idk")
RT, KL = Term(nll), Term(kl, ("kl",))
GA_MISMATCH = Term(ga_mismatch, ("alt_logp",), alternative="mismatch")


@dataclass(frozen=True)
class Method:
    """One METHODS row: a forget term, an optional retain term, the ``MethodParams`` fields the two read
    (``hyperparameters``), the method's colour in every figure (hex), one line of help for the CLI's list of
    methods, and where the combination comes from."""

    forget: Term
    retain: Term | None
    hyperparameters: tuple[str, ...]
    color: str
    help: str
    paper: str

    @property
    def needs(self) -> dict[str, tuple[str, ...]]:
        """Optional statistics to compute per split, e.g. {"forget": ("logp_ref",), "retain": ("kl",)}."""
        return {"forget": self.forget.needs, "retain": self.retain.needs if self.retain else ()}


NPO_PAPER = "Zhang et al. 2024, Negative Preference Optimization, Eq. 3 and Table 2"
SIMNPO_PAPER = "Fan et al. 2024, Simplicity Prevails (SimNPO), Eq. 4"
METHODS: dict[str, Method] = {  # name: Method(forget, retain, hyperparameters, colour, help, paper)
    "GA": Method(GA, None, (), "#d62728",
                 "gradient ascent on the forget responses", "Jang et al. 2023; NPO paper Table 2"),
    "GA+RT": Method(GA, RT, ("lam", "retain_norm"), "#ff7f0e",
                    "GA + NLL on retain data", "Maini et al. 2024 (TOFU grad_diff); NPO paper Table 2"),
    "GA+KL": Method(GA, KL, ("lam",), "#8c564b",
                    "GA + KL to the reference on retain data", "Maini et al. 2024 (TOFU KL); NPO paper Table 2"),
    "IDK+RT": Method(IDK, RT, ("lam", "retain_norm"), "#7f7f7f",
                     "NLL of an 'I don't know' answer to the forget prompts + NLL on retain data",
                     "Maini et al. 2024 (TOFU idk); NPO paper Table 2"),
    "DPO": Method(DPO, None, ("beta",), "#9467bd",
                  "DPO with the forget response as loser, an alternative response as winner",
                  "Rafailov et al. 2023; NPO paper Eq. 2"),
    "DPO+RT": Method(DPO, RT, ("beta", "lam", "retain_norm"), "#9467bd",
                     "DPO + NLL on retain data", "NPO paper Sec. 4"),
    "DPO+KL": Method(DPO, KL, ("beta", "lam"), "#c5b0d5",
                     "DPO + KL to the reference on retain data", "NPO paper Sec. 5"),
    "NPO": Method(NPO, None, ("beta",), "#1f77b4",
                  "negative preference optimisation: GA weighted by 2 sigma(beta (logp - logp_ref))", NPO_PAPER),
    "NPO+RT": Method(NPO, RT, ("beta", "lam", "retain_norm"), "#2ca02c",
                     "NPO + NLL on retain data", NPO_PAPER),
    "NPO+KL": Method(NPO, KL, ("beta", "lam"), "#17becf",
                     "NPO + KL to the reference on retain data", NPO_PAPER),
    "SimNPO": Method(SIMNPO, None, ("beta", "gamma"), "#e377c2",
                     "NPO without a reference, length-normalised, with margin gamma", SIMNPO_PAPER),
    "SimNPO+RT": Method(SIMNPO, RT, ("beta", "gamma", "lam", "retain_norm"), "#bcbd22",
                        "SimNPO + NLL on retain data", SIMNPO_PAPER + " and Eq. 6"),
    "SimNPO+KL": Method(SIMNPO, KL, ("beta", "gamma", "lam"), "#f7b6d2",
                        "SimNPO + KL to the reference on retain data", SIMNPO_PAPER),
    "GA+Mismatch+KL": Method(GA_MISMATCH, KL, ("mismatch", "lam"), "#393b79",
                             "GA + NLL of random retain responses to the forget prompts + KL to the reference on "
                             "retain data", "Yao et al. 2024, Large Language Model Unlearning, Eqs. 2-6"),
}


def get_method(name: str) -> Method:
    """METHODS[name], or an error that lists the valid names."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}") from None


def methods_help() -> str:
    """The list of methods for the CLI's help, one line per METHODS row: name, help, [hyperparameters it reads]."""
    width = max(map(len, METHODS))
    return "\n".join(f"{name:<{width}}  {m.help}" + (f" [{', '.join(m.hyperparameters)}]" if m.hyperparameters else "")
                     for name, m in METHODS.items())


def forget_weights(method: str, params: MethodParams, stats: SequenceStats) -> torch.Tensor:
    """W_b = dL_b/dlogp_b of ``method``'s forget term (float64, (B,)), by autograd through the term itself, so
    these are exactly the weights that drive training: GA 1, NPO 2 sigma(beta (logp - logp_ref)), SimNPO
    (2/|y|) sigma(beta logp/|y| + gamma) (``theory.objectives.npo_weight`` / ``simnpo_weight`` in closed form).
    Reads logp, n_tokens and logp_ref (methods with alternative responses have no single forget weight)."""
    logp = stats.logp.detach().double().requires_grad_(True)
    cast = {k: v.detach().double() for k in ("n_tokens", "logp_ref") if (v := getattr(stats, k)) is not None}
    with torch.enable_grad():
        loss = get_method(method).forget(replace(stats, logp=logp, **cast), params)
        (weights,) = torch.autograd.grad(loss.sum(), logp)
    return weights


def per_sequence_losses(
    method: Method, params: MethodParams, forget: SequenceStats, retain: SequenceStats | None
) -> dict[str, torch.Tensor]:
    """{"forget": (B_f,), "retain": (B_r,)} losses; the loop reduces each by its mean over the batch."""
    losses = {"forget": method.forget(forget, params)}
    if method.retain is not None:
        if retain is None:
            raise ValueError("this method has a retain term but no retain statistics were given")
        losses["retain"] = method.retain(retain, params)
    return losses


STAT_FIELDS = tuple(f.name for f in fields(SequenceStats))
