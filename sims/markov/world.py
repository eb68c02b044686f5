"""The world of the Markov toy: three chains, their sampled sequences, and their tokenisation.

Data (SimNPO paper App. H; exact chains and closed forms in ``theory.markov``): 10 states, three chains with
designated subsets retain {0,1,2}, forget1 {3,4,5}, forget2 {6,7,8} and leakage 0.2. Each chain emits iid
sequences of its own length; each component is split train/test (80/20 by default).

Tokenisation: a sequence s_0 .. s_{L-1} gives input_ids = s[:-1] and labels = s[1:] (the first state is never
predicted, so |y| = L - 1), right-padded to the world's common width (longest length - 1: 19 for length 20)
with input 0, label -100 and mask 0. The mask is ``unlearn.logprobs``' response mask, so padding never counts
in a log-prob, a KL or an entropy. Every split keeps the true next-state row at each position,
target_probs[b, t] = T_c[input_ids[b, t]], and the generating chain c of each sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from theory.markov import N_STATES, SUBSETS, Chain, chain
from unlearn.data import Rows, TokenSet
from unlearn.metrics.tokens import (
    model_device,
)
from unlearn.rng import generator as make_generator

CHAINS = tuple(SUBSETS)  # ("retain", "forget1", "forget2"); Split.chain indexes this tuple
PRETRAIN_DATA = {"all": ("retain", "forget1", "forget2"), "without_forget2": ("retain", "forget1"),
                 "retain": ("retain",)}
EVAL_SPLITS = {"retain_kl": "retain_test", "forget1_kl": "forget1_test", "forget2_kl": "forget2_test"}
LABEL_PAD = -100  # never read (the mask is 0 there); -100 makes an accidental use fail loudly in F.cross_entropy


def sample_sequences(c: Chain, n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """n iid state sequences of ``length`` from chain ``c``: s_0 ~ initial, s_t ~ transition[s_{t-1}].
    Returns a LongTensor (n, length), drawn on the CPU from ``generator``."""
    if n < 0 or length < 1:
        raise ValueError(f"need n >= 0 and length >= 1, got n={n}, length={length}")
    transition = torch.tensor(c.transition, dtype=torch.float64)
    initial = torch.tensor(c.initial, dtype=torch.float64)
    seqs = torch.empty(n, length, dtype=torch.long)
    if n == 0:
        return seqs
    seqs[:, 0] = torch.multinomial(initial, n, replacement=True, generator=generator)
    for t in range(1, length):
        seqs[:, t] = torch.multinomial(transition[seqs[:, t - 1]], 1, generator=generator).squeeze(1)
    return seqs


@dataclass(frozen=True)
class Split(Rows):
    """Tokenised sequences of one or more chains, all padded to the same width T.

    input_ids (n, T) long, 0 on padding;  labels (n, T) long, -100 on padding;  mask (n, T) bool, 0 on padding;
    target_probs (n, T, V) float32, the true next-state row T_c[input_ids] (0 on padding);
    chain (n,) long, index of the generating chain in ``CHAINS``.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    target_probs: torch.Tensor
    chain: torch.Tensor

    @property
    def n_tokens(self) -> torch.Tensor:
        """|y| of every sequence: its length - 1."""
        return self.mask.sum(-1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """The real input positions: here the same as the label mask (the only prompt is the first state)."""
        return self.mask

    @property
    def chain_names(self) -> tuple[str, ...]:
        return tuple(CHAINS[i] for i in self.chain.tolist())

    def trim(self) -> Split:
        """The same sequences without the trailing columns that are padding in every row: the forward pass gets
        cheaper (a batch of length-5 sequences runs on 4 columns, not 19) and, with causal attention, the logits
        at real positions do not change."""
        columns = self.mask.flatten(0, -2).any(0).nonzero()  # a batch (n, T) or per-member batches (M, n, T)
        width = int(columns.max()) + 1 if len(columns) else 1
        if width == self.mask.shape[-1]:
            return self
        return Split(self.input_ids[..., :width], self.labels[..., :width], self.mask[..., :width],
                     self.target_probs[..., :width, :], self.chain)

    @staticmethod
    def concat(splits: Sequence[Split]) -> Split:
        """The sequences of every split, in order (they must share the width)."""
        return Split(**{f.name: torch.cat([getattr(s, f.name) for s in splits]) for f in fields(Split)})


def tokenize(seqs: torch.Tensor, c: Chain, width: int) -> Split:
    """input_ids = seqs[:, :-1], labels = seqs[:, 1:], right-padded to ``width`` (module docstring)."""
    n, length = seqs.shape
    if not 1 <= length - 1 <= width:
        raise ValueError(f"sequences of length {length} do not fit a width of {width} (need 2 <= length <= width+1)")
    pad = width - (length - 1)
    input_ids = F.pad(seqs[:, :-1], (0, pad), value=0)
    labels = F.pad(seqs[:, 1:], (0, pad), value=LABEL_PAD)
    mask = torch.zeros(n, width, dtype=torch.bool)
    mask[:, : length - 1] = True
    transition = torch.tensor(c.transition, dtype=torch.float32)
    target_probs = transition[input_ids] * mask.unsqueeze(-1)
    return Split(input_ids, labels, mask, target_probs, torch.full((n,), CHAINS.index(c.name), dtype=torch.long))


@dataclass(frozen=True)
class MarkovWorldConfig:
    """One draw of the SimNPO Markov data set; defaults are experiment (a) of the paper's Fig. 5."""

    seed: int = 0
    n_retain: int = 10000
    n_forget1: int = 5000
    n_forget2: int = 5000
    len_retain: int = 20
    len_forget1: int = 20
    len_forget2: int = 5
    leakage: float = 0.2
    test_frac: float = 0.2

    def __post_init__(self):
        for name in CHAINS:
            if getattr(self, f"n_{name}") < 2:
                raise ValueError(f"n_{name} must be >= 2 (one train and one test sequence at least)")
            if getattr(self, f"len_{name}") < 2:
                raise ValueError(f"len_{name} must be >= 2 (the first state is never predicted)")
        if not 0.0 < self.leakage < 1.0:
            raise ValueError(f"leakage must lie in (0, 1), got {self.leakage}")
        if not 0.0 < self.test_frac < 1.0:
            raise ValueError(f"test_frac must lie in (0, 1), got {self.test_frac}")

    @property
    def width(self) -> int:
        """Padded input width: the longest sequence minus its first state."""
        return max(getattr(self, f"len_{name}") for name in CHAINS) - 1


@dataclass(frozen=True)
class MarkovWorld:
    """The chains and the tokenised splits "<chain>_train" / "<chain>_test" for chain in ``CHAINS``."""

    cfg: MarkovWorldConfig
    chains: dict[str, Chain]
    splits: dict[str, Split]

    def __getitem__(self, name: str) -> Split:
        try:
            return self.splits[name]
        except KeyError:
            raise KeyError(f"no split {name!r}; valid: {', '.join(self.splits)}") from None

    @property
    def width(self) -> int:
        return self.cfg.width

    def train_set(self, data: str) -> Split:
        """The training sequences of the chains named by ``PRETRAIN_DATA[data]``, concatenated."""
        if data not in PRETRAIN_DATA:
            raise ValueError(f"unknown pretraining data {data!r}; valid: {', '.join(PRETRAIN_DATA)}")
        return Split.concat([self[f"{name}_train"] for name in PRETRAIN_DATA[data]])

    def forget_set(self) -> Split:
        """forget1_train + forget2_train: the set every unlearning run forgets (both experiments)."""
        return Split.concat([self["forget1_train"], self["forget2_train"]])


def make_world(cfg: MarkovWorldConfig) -> MarkovWorld:
    """Sample and tokenise every chain's sequences; the last round(n * test_frac) of each are its test split.
    (The sequences are iid, so a fixed cut is as random as a shuffled one.) Each chain has its own stream."""
    chains, splits = {}, {}
    for name in CHAINS:
        c = chains[name] = chain(name, N_STATES, cfg.leakage)
        n, length = getattr(cfg, f"n_{name}"), getattr(cfg, f"len_{name}")
        split = tokenize(sample_sequences(c, n, length, make_generator(cfg.seed, "markov-data", name)), c, cfg.width)
        n_test = min(n - 1, max(1, round(n * cfg.test_frac)))
        splits[f"{name}_train"] = split.take(slice(0, n - n_test))
        splits[f"{name}_test"] = split.take(slice(n - n_test, n))
    return MarkovWorld(cfg, chains, splits)


def token_set(split: Split, eos_id: int = N_STATES, pad_id: int = N_STATES + 1):
    """The sequences of ``split`` for a causal LM (``unlearn.data.TokenSet``): state s is token s, the prompt is
    the first state and the response the rest followed by ``eos_id`` (the ``markov`` built-in task)."""
    sequences = []
    for ids, labels, mask in zip(split.input_ids.tolist(), split.labels.tolist(), split.mask.tolist(), strict=True):
        response = [y for y, m in zip(labels, mask, strict=True) if m]
        sequences.append(([ids[0]], [*response, eos_id]))
    return TokenSet.from_ids(sequences, pad_id)



@torch.no_grad()
def sample_from_model(model: torch.nn.Module, first_states: torch.Tensor, length: int,
                      generator: torch.Generator) -> torch.Tensor:
    """Autoregressive samples s_t ~ p_model(. | s_<t) from the given first states: LongTensor (n, length).

    Draws happen on the CPU from ``generator`` whatever the model's device, so samples are reproducible
    across devices up to the model's own numerics. ``length`` - 1 must not exceed the model's max_len.
    """
    device = model_device(model)
    seqs = first_states.reshape(-1, 1).long().cpu()
    for _ in range(length - 1):
        logits = model(seqs.to(device)).logits[:, -1]
        probs = torch.softmax(logits.double(), dim=-1).cpu()
        seqs = torch.cat([seqs, torch.multinomial(probs, 1, generator=generator)], dim=1)
    return seqs


