"""Membership-inference attacks and privacy leakage (MUSE, Shi et al. 2024, Sec. 3; open-unlearning's MIA suite).

Every attack gives one score per sequence, HIGHER = MORE LIKELY A MEMBER, from the response tokens' log-probs
(``unlearn.logprobs``; x_t the response tokens and EOS, n their count):

    loss       (1/n) sum_t log p(x_t)                                   (Yeom et al. 2018; minus the mean NLL)
    zlib       [(1/n) sum_t log p(x_t)] / zlib(x)                        (Carlini et al. 2021; zlib(x) = bytes of
                                                                         the response text's zlib compression)
    min_k      mean of the lowest m = max(1, floor(k n)) values of log p(x_t)           (Min-K%, Shi et al. 2024)
    min_k++    mean of the lowest m values of z_t = (log p(x_t) - mu_t) / sigma_t, with mu_t and sigma_t the mean
               and standard deviation of log p under the model's own next-token distribution
               (``unlearn.logprobs.token_logprob_moments``; Min-K%++, Zhang et al. 2024, eq. 3-4)
    reference  loss(target model) - loss(reference model)              (Carlini et al. 2021's reference attack)

AUC = P(member score > non-member score) + 0.5 P(tie), members = the forget set: the Mann-Whitney U statistic of
the members over n_members x n_nonmembers. 0.5 is chance; after good unlearning the forget set should look like
data never seen, so its AUC against a holdout falls toward the retain model's.

PrivLeak (MUSE eq. 2) = (AUC - AUC_retain) / AUC_retain x 100, both AUCs in this convention: 0 for a model
whose forget set looks as unseen as to the retain model, positive when it still looks like training data
(under-unlearning), negative when it looks less familiar than unseen data (over-unlearning). Other codebases:
open-unlearning labels the forget set 0 but scores losses, so its MIA AUC equals this one; MUSE's privleak code
labels the forget set 0 and scores -loss, so its AUC is 1 - this one, and its PrivLeak (and open-unlearning's,
which converts to MUSE's AUC) is (AUC_retain - AUC) / (1 - AUC_retain) x 100 in this module's terms
(docs/metrics.md). Every score here reads log-probs, never raw logits.

A sequence with sigma_t = 0 at a position (a one-hot next-token distribution) gets z_t = 0 there rather than a
division by zero.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch

from unlearn.logprobs import token_logprob_moments, token_logprobs

ATTACKS = ("loss", "zlib", "min_k", "min_k++", "reference")


def auc(member_scores, nonmember_scores) -> float:
    """P(member > non-member) + 0.5 P(tie) from midranks: (R_members - n1 (n1 + 1) / 2) / (n1 n2), with R_members
    the sum of the members' ranks among all scores (ties sharing their mean rank). Hand value: members (3, 1),
    non-members (2, 1): pairs 3>2, 3>1, 1<2, 1=1 -> (1 + 1 + 0 + 0.5) / 4 = 0.625."""
    from scipy.stats import rankdata

    members = np.asarray(member_scores, dtype=np.float64).ravel()
    nonmembers = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    if not (len(members) and len(nonmembers)):
        raise ValueError("AUC needs at least one member and one non-member score")
    if not (np.isfinite(members).all() and np.isfinite(nonmembers).all()):
        raise ValueError("AUC needs finite scores")
    ranks = rankdata(np.concatenate([members, nonmembers]))
    n1, n2 = len(members), len(nonmembers)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n2))


def priv_leak(auc_value: float, retain_auc: float) -> float:
    """MUSE's PrivLeak: (AUC - AUC_retain) / AUC_retain x 100, in percent (module docstring for the sign)."""
    if not retain_auc > 0:
        raise ValueError(f"PrivLeak needs a positive retain AUC, got {retain_auc}")
    return (auc_value - retain_auc) / retain_auc * 100.0


def lowest_fraction_mean(values: torch.Tensor, mask: torch.Tensor, k: float) -> torch.Tensor:
    """Per row, the mean of the lowest m = max(1, floor(k n)) of values[b, mask[b]], n = mask[b].sum(): (B,).
    A row with no masked value gives nan."""
    if not 0 < k <= 1:
        raise ValueError(f"k must lie in (0, 1], got {k}")
    mask = mask.bool()
    n = mask.sum(-1)
    m = torch.clamp((n.double() * k).floor().long(), min=1)  # in float64, as floor(k n) of Python floats
    ordered = values.masked_fill(~mask, float("inf")).sort(-1).values
    keep = torch.arange(values.shape[-1], device=values.device) < m.unsqueeze(-1)
    total = ordered.masked_fill(~keep, 0.0).sum(-1)
    return torch.where(n > 0, total / m, torch.full_like(total, float("nan")))


def _mean(token_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return token_logp.sum(-1) / mask.bool().sum(-1).clamp(min=1)


def _z(logp: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """z_t = (log p(x_t) - mu_t) / sigma_t, and 0 where sigma_t = 0 (module docstring)."""
    return torch.where(sigma > 0, (logp - mu) / sigma.clamp(min=torch.finfo(sigma.dtype).tiny), torch.zeros_like(mu))


def loss_score(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(1/n) sum_t log p(x_t) per sequence: (B,)."""
    return _mean(*token_logprobs(logits, labels, mask))


def min_k(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, k: float) -> torch.Tensor:
    """Min-K%: the mean of each sequence's lowest k fraction of token log-probs: (B,)."""
    token_logp, mask = token_logprobs(logits, labels, mask)
    return lowest_fraction_mean(token_logp, mask, k)


def min_k_plus_plus(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, k: float) -> torch.Tensor:
    """Min-K%++: the mean of each sequence's lowest k fraction of z_t = (log p(x_t) - mu_t) / sigma_t (module
    docstring); labels aligned with logits as in ``unlearn.logprobs``; one score per sequence, (B,)."""
    return lowest_fraction_mean(_z(*token_logprob_moments(logits, labels, mask)), mask, k)


def zlib_score(mean_logp, texts: Sequence[str]) -> np.ndarray:
    """The loss score over the zlib-compressed size (bytes) of each response text."""
    sizes = np.array([len(zlib.compress(t.encode("utf-8"))) for t in texts], dtype=np.float64)
    return np.asarray(mean_logp, dtype=np.float64) / sizes


def check_attacks(attacks: Sequence[str], reference: bool) -> tuple[str, ...]:
    """``attacks`` validated: known names, no repeats, "reference" exactly when a reference model is given."""
    attacks = tuple(attacks)
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown or not attacks or len(set(attacks)) != len(attacks):
        raise ValueError(f"attacks must be distinct names among {', '.join(ATTACKS)}; got {', '.join(attacks)}")
    if ("reference" in attacks) != reference:
        raise ValueError("the reference attack needs --reference-model, and --reference-model is read only by the "
                         "reference attack: give both or neither")
    return attacks


@torch.no_grad()
def mia_scores(model, data, texts: Sequence[str], attacks: Sequence[str], k: float, reference_model=None,
               batch_size: int = 32) -> dict[str, np.ndarray]:
    """{attack: one score per sequence of ``data`` (a TokenSet)} for each of ``attacks`` (module docstring);
    ``texts`` are the responses (for zlib)."""
    from unlearn.metrics.tokens import batched_logits

    attacks = check_attacks(attacks, reference_model is not None)
    per_batch: dict[str, list[torch.Tensor]] = {"loss": [], "min_k": [], "min_k++": []}
    for batch, logits in batched_logits(model, data, batch_size):  # one log-softmax per batch for every attack
        if "min_k++" in attacks:
            logp, mu, sigma = token_logprob_moments(logits, batch.labels, batch.mask)
            per_batch["min_k++"].append(lowest_fraction_mean(_z(logp, mu, sigma), batch.mask, k).cpu())
        else:
            logp, _ = token_logprobs(logits, batch.labels, batch.mask)
        per_batch["loss"].append(_mean(logp, batch.mask).cpu())
        if "min_k" in attacks:
            per_batch["min_k"].append(lowest_fraction_mean(logp, batch.mask, k).cpu())
    found = {name: torch.cat(v).double().numpy() for name, v in per_batch.items() if v}
    found["zlib"] = zlib_score(found["loss"], texts)
    if reference_model is not None:
        ref = torch.cat([loss_score(logits, batch.labels, batch.mask).cpu()
                         for batch, logits in batched_logits(reference_model, data, batch_size)])
        found["reference"] = found["loss"] - ref.double().numpy()
    return {a: found[a] for a in attacks}
