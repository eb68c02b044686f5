"""Alternative responses to the forget prompts, for the methods whose forget term reads log pi(y_alt|x)
(``unlearn.objectives.Term.alternative``): IDK+RT's uninformed answer, DPO's preferred answer (the NPO paper's
DPO prefers an "I don't know" answer to the forget response) and GA+Mismatch+KL's random normal-data response
(Yao et al. 2024).

Sources, per forget prompt (every forget prompt needs at least one alternative):

    a file     JSONL (or a JSON list) of {"prompt": P, "response": R} or {"prompt": P, "alternatives": [R, ...]};
               several records may share a prompt; records for prompts outside the forget set are ignored
    built-in   "idk" and "preferred": every answer of IDK_ANSWERS; "mismatch": MISMATCH_DRAWS responses of the
               retain set drawn at random (seeded)

Each step draws one alternative per forget sequence of its batch, uniformly among that prompt's, from the
stream (seed, "alternative", step, micro-batch): the draw depends on the step alone, as the batches do, so a
resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from unlearn.data import Example, read_records
from unlearn.rng import generator

IDK_ANSWERS = (
    "I don't know.",
    "I'm not sure.",
    "I have no information about that.",
    "I'm afraid I can't answer that.",
    "That is something I don't know.",
    "I don't have an answer to that question.",
    "I'm not able to say.",
    "I have no idea.",
    "I can't help with that one; I don't know.",
    "Sorry, I don't know the answer.",
    "I'm unaware of that.",
    "That's beyond what I know.",
    "I couldn't tell you.",
    "I don't have that information.",
    "I'm not familiar with that.",
    "I really don't know.",
)
MISMATCH_DRAWS = 8  # retain responses per forget prompt for the built-in mismatch alternatives
KINDS = ("idk", "preferred", "mismatch")


def read_alternatives(path: str, prompts: Sequence[str]) -> list[list[str]]:
    """The alternatives of each of ``prompts`` from a file (module docstring), in file order; errors name the
    file and line of a bad record, and the first forget prompts that have none."""
    found: dict[str, list[str]] = {p: [] for p in prompts}
    for where, item in read_records(path):
        prompt = item.get("prompt")
        if not isinstance(prompt, str):
            raise ValueError(f"{where}: a record needs a string \"prompt\" (and \"response\" or \"alternatives\")")
        responses = item["alternatives"] if "alternatives" in item else [item.get("response")]
        if not isinstance(responses, list) or not responses or \
                not all(isinstance(r, str) and r.strip() for r in responses):
            raise ValueError(f"{where}: \"response\" must be a non-empty string, or \"alternatives\" a non-empty "
                             "list of them")
        if prompt in found:
            found[prompt].extend(responses)
    missing = [p for p, responses in found.items() if not responses]
    if missing:
        shown = "; ".join(repr(p[:60]) for p in missing[:3])
        raise ValueError(f"--alternatives {path}: {len(missing)} of {len(found)} forget prompts have no alternative "
                         f"response (first: {shown})")
    return [found[p] for p in prompts]


def builtin_alternatives(kind: str, prompts: Sequence[str], retain_responses: Sequence[str],
                         seed: int) -> list[list[str]]:
    """The built-in alternatives of each of ``prompts`` for a term whose alternative is ``kind`` (KINDS)."""
    if kind in ("idk", "preferred"):
        return [list(IDK_ANSWERS) for _ in prompts]
    if kind != "mismatch":
        raise ValueError(f"unknown kind of alternative {kind!r}; valid: {', '.join(KINDS)}")
    if not retain_responses:
        raise ValueError("mismatch alternatives are retain responses, and the retain set is empty")
    k = min(MISMATCH_DRAWS, len(retain_responses))
    g = generator(seed, "mismatch-alternatives")
    return [[retain_responses[j] for j in torch.randperm(len(retain_responses), generator=g)[:k].tolist()]
            for _ in prompts]


def examples(prompts: Sequence[str], alternatives: Sequence[Sequence[str]]) -> list[Example]:
    """One Example per (prompt, alternative), grouped by prompt in order (the rows of ``AlternativeSet``)."""
    return [Example(p, r, f"alternative {j} of forget prompt {i}")
            for i, (p, rs) in enumerate(zip(prompts, alternatives, strict=True)) for j, r in enumerate(rs)]


@dataclass(frozen=True)
class AlternativeSet:
    """Tokenised alternatives (``data``: a TokenSet whose rows are grouped by forget prompt) with forget prompt
    i's rows at ``offsets[i] : offsets[i] + counts[i]``."""

    data: object
    offsets: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def build(cls, data, alternatives: Sequence[Sequence[str]]) -> AlternativeSet:
        counts = torch.tensor([len(a) for a in alternatives])
        return cls(data, torch.cumsum(counts, 0) - counts, counts)

    def draw(self, forget_index: torch.Tensor, seed: int, *keys: object) -> torch.Tensor:
        """Rows of ``data``: one alternative per forget sequence of ``forget_index``, uniform among its prompt's,
        from the stream (seed, "alternative", *keys)."""
        index = forget_index.cpu()
        u = torch.rand(len(index), generator=generator(seed, "alternative", *keys), dtype=torch.float64)
        return self.offsets[index] + (u * self.counts[index]).long().clamp_max(self.counts[index] - 1)

    def take(self, rows: torch.Tensor):
        return self.data.take(rows)
