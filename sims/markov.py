"""The mixture-of-Markov-chains world of the SimNPO paper (Fan et al. 2024, Sec. 5 and App. H).

Data (notes/simnpo.md 2.1; exact chains and closed forms in ``theory.markov``): 10 states, three chains with
designated subsets retain {0,1,2}, forget1 {3,4,5}, forget2 {6,7,8} and leakage 0.2. Each chain emits iid
sequences of its own length; each component is split train/test (80/20 by default).

Tokenisation: a sequence s_0 .. s_{L-1} gives input_ids = s[:-1] and labels = s[1:] (the first state is never
predicted, so |y| = L - 1), right-padded to the world's common width (longest length - 1: 19 for length 20)
with input 0, label -100 and mask 0. The mask is ``unlearn.logprobs``' response mask, so padding never counts
in a log-prob, a KL or an entropy. Every split keeps the true next-state row at each position,
target_probs[b, t] = T_c[input_ids[b, t]], and the generating chain c of each sequence.

Model and training (notes/simnpo.md 2.2-2.4): the post-LN causal transformer of
``unlearn.models.transformer``, pretrained by AdamW on the token-mean cross-entropy (lr 5e-4, batch 128,
5 epochs) on all training data ("all"), on retain + forget1 ("without_forget2", experiment b) or on retain only
(the retrained model, "retain"); then unlearned for 50 steps of batch 4 (AdamW, lr 5e-4) on forget1 + forget2
train. Everything trains through ``unlearn.train.train``; pretrained models are cached on disk
(``unlearn.cache``) under their configs.

Unlearning: ``unlearn_run`` trains one model in place; ``unlearn_runs`` trains M runs (methods, betas, batch
orders, weight masks of ``unlearn.attribution``) side by side as one ``unlearn.ensemble.Ensemble``, each member
on the trajectory it would follow alone. Both go through ``unlearn.losses`` with a cached reference.

Metric (notes/simnpo.md 2.5): per-token KL(T_c(s_t, .) || p_model(. | s_<=t)) averaged over the non-pad
positions of a split: "forget quality" on a forget test split (higher = more forgotten), "retain distance" on
the retain test split (lower = better). A retain-only Bayes model scores ``theory.markov.retrained_kl``:
0.4263 on forget1 (length 20) and 0.4470 on forget2 (length 5).

Differences from the released code: AdamW eps is 1e-8 (``unlearn.train``) where transformers.AdamW used 1e-6;
the train/test split and every shuffle come from explicit generators (``unlearn.rng``) instead of
``random_state=42``; the reference model's forget log-probs are cached before unlearning (so NPO never runs a
second model) and *+KL methods read cached reference logits on the retain split.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

from theory.markov import N_STATES, SUBSETS, Chain, chain
from unlearn import attribution, cache, losses
from unlearn.config import config_dict, require_at_least_one, require_positive
from unlearn.data import Rows, TokenSet
from unlearn.ensemble import Ensemble, member_kl, member_logprobs
from unlearn.logprobs import SequenceLogprobs, sequence_kl, sequence_logprobs
from unlearn.losses import token_mean_nll
from unlearn.models.transformer import Transformer, TransformerConfig
from unlearn.objectives import GA_MISMATCH, MethodParams, SequenceStats, forget_weights, get_method
from unlearn.reference import Cached
from unlearn.rng import generator as make_generator
from unlearn.train import PRECISIONS, History, TrainConfig, forward_precision, resolve_device, shuffled_batches, train

CHAINS = tuple(SUBSETS)  # ("retain", "forget1", "forget2"); Split.chain indexes this tuple
PRETRAIN_DATA = {"all": ("retain", "forget1", "forget2"), "without_forget2": ("retain", "forget1"),
                 "retain": ("retain",)}
EVAL_SPLITS = {"retain_kl": "retain_test", "forget1_kl": "forget1_test", "forget2_kl": "forget2_test"}
LABEL_PAD = -100  # never read (the mask is 0 there); -100 makes an accidental use fail loudly in F.cross_entropy


# ------------------------------------------------------------------------------------------------ data


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


# --------------------------------------------------------------------------------------------- metrics


def _device(model: torch.nn.Module) -> torch.device:
    """Where the model lives (its first parameter or buffer; the CPU for a model with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _batches(model: torch.nn.Module, split: Split, batch_size: int) -> Iterator[tuple[Split, torch.Tensor]]:
    """(batch on the model's device, its logits) for consecutive batches of ``split``, trailing padding trimmed.
    An ensemble of M members (``unlearn.ensemble``) gives logits (M, B, T, V) and reads batch_size // M
    sequences at a time, so its activations take the memory of one model's."""
    device = _device(model)
    step = max(1, batch_size // max(1, getattr(model, "members", 0)))
    for start in range(0, len(split), step):
        batch = split.take(slice(start, start + step)).to(device).trim()
        yield batch, model(batch.input_ids, attention_mask=batch.mask).logits


def _kl(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence KL(ref || model) of one model (logits (B, T, V) -> (B,)) or of an ensemble's members
    (logits (M, B, T, V) -> (M, B)), through ``unlearn.logprobs.sequence_kl``."""
    return (member_kl if logits.ndim == 4 else sequence_kl)(logits, ref_logits, mask)


@torch.no_grad()
def _token_means(model, split: Split, per_token: dict[str, Callable[[torch.Tensor, Split], torch.Tensor]],
                 batch_size: int = 1024) -> dict[str, float | list[float]]:
    """{name: sum_b n_b * m_b / sum_b n_b} for each per-sequence token mean m_b = per_token[name](logits, batch):
    the mean over all non-pad positions, a float, or one float per member of an ensemble (``per_token`` then
    returns (M, B)). Every statistic reads the same forward pass, so asking for two costs one."""
    totals, count = dict.fromkeys(per_token, 0), 0
    for batch, logits in _batches(model, split, batch_size):
        n = batch.mask.sum(-1)
        for name, fn in per_token.items():
            totals[name] = totals[name] + (fn(logits, batch).double() * n).sum(-1)
        count = count + n.sum()
    return {name: (total / count).tolist() for name, total in totals.items()}


def _true_kl(logits: torch.Tensor, batch: Split) -> torch.Tensor:
    """Per-sequence token mean of KL(T_c(s_t, .) || p_model): the true rows as reference logits (a
    log-probability row is a valid logit row), so the log-softmax stays in ``unlearn.logprobs``."""
    return _kl(logits, batch.target_probs.log(), batch.mask)


def _entropy(logits: torch.Tensor, batch: Split) -> torch.Tensor:
    """Per-sequence token mean of H(q) = log V - KL(q || uniform) (uniform = zero logits)."""
    return math.log(logits.shape[-1]) - _kl(torch.zeros_like(logits), logits, batch.mask)


def _nonnegative(value: float | list[float]) -> float | list[float]:
    """An entropy clamped at 0 (float32 rounding can give -1e-7), a float or one per member."""
    return [max(0.0, v) for v in value] if isinstance(value, list) else max(0.0, value)


def token_kl(model: torch.nn.Module, split: Split, batch_size: int = 1024) -> float | list[float]:
    """Mean over non-pad positions of KL(T_c(s_t, .) || p_model(. | s_<=t)), summed over the next state.

    The SimNPO paper's forget quality / retain distance (``F.kl_div(log_probs, true_probs)`` per position,
    App. H), through ``unlearn.logprobs.sequence_kl``. An ensemble gives one value per member.
    """
    return _token_means(model, split, {"kl": _true_kl}, batch_size)["kl"]


def mean_entropy(model: torch.nn.Module, split: Split, batch_size: int = 1024) -> float | list[float]:
    """Mean over non-pad positions of the entropy (nats) of the model's next-state distribution q.

    H(q) = log V - KL(q || uniform), with the KL from ``unlearn.logprobs.sequence_kl``. log 10 = 2.303 is the
    maximum; a collapsed (degenerate) model scores near 0. An ensemble gives one value per member.
    """
    return _nonnegative(_token_means(model, split, {"entropy": _entropy}, batch_size)["entropy"])


def kl_and_entropy(model: torch.nn.Module, split: Split, batch_size: int = 1024) -> dict[str, float | list[float]]:
    """{"kl": token_kl, "entropy": mean_entropy} of ``split`` from one forward pass."""
    out = _token_means(model, split, {"kl": _true_kl, "entropy": _entropy}, batch_size)
    return {"kl": out["kl"], "entropy": _nonnegative(out["entropy"])}


@torch.no_grad()
def per_sequence_stats(model: torch.nn.Module, split: Split, batch_size: int = 1024) -> SequenceLogprobs:
    """log p(y|x) summed over each sequence's labels, and |y|, for every sequence of ``split`` (on its device):
    shaped (n,), or (M, n) for an ensemble of M members."""
    out = []
    for batch, logits in _batches(model, split, batch_size):
        logprobs = member_logprobs if logits.ndim == 4 else sequence_logprobs
        out.append(logprobs(logits, batch.labels, batch.mask))
    return SequenceLogprobs(torch.cat([o.logp for o in out], -1), torch.cat([o.n_tokens for o in out], -1))


@torch.no_grad()
def sample_from_model(model: torch.nn.Module, first_states: torch.Tensor, length: int,
                      generator: torch.Generator) -> torch.Tensor:
    """Autoregressive samples s_t ~ p_model(. | s_<t) from the given first states: LongTensor (n, length).

    Draws happen on the CPU from ``generator`` whatever the model's device, so samples are reproducible
    across devices up to the model's own numerics. ``length`` - 1 must not exceed the model's max_len.
    """
    device = _device(model)
    seqs = first_states.reshape(-1, 1).long().cpu()
    for _ in range(length - 1):
        logits = model(seqs.to(device)).logits[:, -1]
        probs = torch.softmax(logits.double(), dim=-1).cpu()
        seqs = torch.cat([seqs, torch.multinomial(probs, 1, generator=generator)], dim=1)
    return seqs


# ------------------------------------------------------------------------------------------ pretraining


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining of the original and retrained models (SimNPO synthetic code; notes/simnpo.md 2.3).

    AdamW with betas (0.9, 0.999) and eps 1e-8 (``unlearn.train``; the released code's transformers.AdamW had
    eps 1e-6), no weight decay, constant lr; each epoch is a fresh shuffle, the last batch of an epoch smaller
    when batch_size does not divide the data.
    """

    n_layer: int = 4
    d_model: int = 128
    lr: float = 5e-4
    batch_size: int = 128
    epochs: int = 5
    weight_decay: float = 0.0
    precision: str = "float32"

    def __post_init__(self):
        if self.batch_size < 1 or self.epochs < 0:
            raise ValueError(f"need batch_size >= 1 and epochs >= 0, got {self.batch_size}, {self.epochs}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")


def model_config(world_cfg: MarkovWorldConfig, cfg: PretrainConfig) -> TransformerConfig:
    """One token per state, as many positions as the world's padded width."""
    return TransformerConfig(vocab_size=N_STATES, max_len=world_cfg.width, n_layer=cfg.n_layer, d_model=cfg.d_model)


def pretrain(world: MarkovWorld, cfg: PretrainConfig, data: str, device: str | torch.device = "cpu",
             progress: bool | None = None) -> Transformer:
    """Train a fresh transformer on ``world.train_set(data)`` (no cache). Initialisation and shuffles come from
    the streams (world seed, "markov-pretrain", data, ...), so the result is a function of the configs."""
    device = resolve_device(str(device))
    seed = world.cfg.seed
    model = Transformer(model_config(world.cfg, cfg), make_generator(seed, "markov-pretrain", data, "init"))
    model.to(device)
    train_set = world.train_set(data).to(device)
    micro_batches, per_epoch = shuffled_batches(len(train_set), cfg.batch_size, seed, "markov-pretrain", data,
                                                "shuffle")
    train_cfg = TrainConfig(steps=cfg.epochs * per_epoch, lr=cfg.lr, optimizer="adamw", weight_decay=cfg.weight_decay,
                            precision=cfg.precision, device=str(device), progress=progress,
                            name=f"pretrain markov ({data})")
    train(model, token_mean_nll(train_set), micro_batches, train_cfg)
    return model.eval()


def data_key(world_cfg: MarkovWorldConfig, data: str) -> dict:
    """The fields of ``world_cfg`` that a model pretrained on ``data`` depends on: the seed, leakage, split and
    padded width, and the size and length of only the chains it reads (each chain is sampled from its own
    stream). So the retrained model of experiment (a) (forget2 length 5) and of (b) (length 20) is one model."""
    chains = [f"{k}_{name}" for name in PRETRAIN_DATA[data] for k in ("n", "len")]
    fields_read = ["seed", "leakage", "test_frac", *chains]
    return {**{k: getattr(world_cfg, k) for k in fields_read}, "width": world_cfg.width}


def pretrained_model(world_cfg: MarkovWorldConfig, cfg: PretrainConfig, data: str,
                     device: str | torch.device = "cpu", world: MarkovWorld | None = None,
                     progress: bool | None = None) -> Transformer:
    """The pretrained model for (world_cfg, cfg, data), from the on-disk cache or trained (``pretrain``) and stored.

    ``data``: "all" (original model of experiment a), "without_forget2" (original model of experiment b) or
    "retain" (the retrained model). The cache key holds both configs, the data and the device type (CUDA and
    CPU kernels round differently, and the project promises bitwise-equal reruns on one machine), with only
    the world fields the data depends on (``data_key``); ``world``
    saves regenerating the data when the caller has it. Returned in eval mode on ``device``.
    """
    if data not in PRETRAIN_DATA:
        raise ValueError(f"unknown pretraining data {data!r}; valid: {', '.join(PRETRAIN_DATA)}")
    if world is not None and world.cfg != world_cfg:
        raise ValueError("world was made from another MarkovWorldConfig than world_cfg")
    device = resolve_device(str(device))
    key = {"world": data_key(world_cfg, data), "pretrain": config_dict(cfg), "data": data, "device": device.type}

    def build():
        return pretrain(world or make_world(world_cfg), cfg, data, device, progress).state_dict()

    model = Transformer(model_config(world_cfg, cfg))
    if cfg.precision != "bf16":
        model.to(PRECISIONS[cfg.precision])
    model.load_state_dict(cache.cached("markov-pretrain", key, build))
    return model.to(device).eval()


@dataclass(frozen=True)
class Setup:
    """The world and pretraining settings shared by the Markov experiments (their Configs extend it), so
    that experiments with equal settings read the same cached models. Defaults: the paper's experiment (a)."""

    seed: int = 0
    n_retain: int = 10000
    n_forget1: int = 5000
    n_forget2: int = 5000
    len_forget2: int = 5
    pretrain_data: str = "all"  # the original model's data: "all" (a) or "without_forget2" (b)
    n_layer: int = 4
    d_model: int = 128
    pretrain_lr: float = 5e-4
    pretrain_epochs: int = 5

    def __post_init__(self):
        if self.pretrain_data not in ("all", "without_forget2"):
            raise ValueError(f"pretrain_data must be 'all' or 'without_forget2', got {self.pretrain_data!r}")
        self.world_config()  # validates sizes and lengths, naming the field
        self.pretrain_config()

    def world_config(self) -> MarkovWorldConfig:
        return MarkovWorldConfig(seed=self.seed, n_retain=self.n_retain, n_forget1=self.n_forget1,
                                 n_forget2=self.n_forget2, len_forget2=self.len_forget2)

    def pretrain_config(self) -> PretrainConfig:
        return PretrainConfig(n_layer=self.n_layer, d_model=self.d_model, lr=self.pretrain_lr,
                              epochs=self.pretrain_epochs)

    def models(self, device: str | torch.device, progress: bool | None = None):
        """(world, original model, retrained model), the models from the cache or pretrained once."""
        world_cfg, pre_cfg = self.world_config(), self.pretrain_config()
        world = make_world(world_cfg)
        original = pretrained_model(world_cfg, pre_cfg, self.pretrain_data, device, world, progress)
        return world, original, pretrained_model(world_cfg, pre_cfg, "retain", device, world, progress)



@dataclass(frozen=True)
class UnlearningSetup(Setup):
    """``Setup`` plus the unlearning loop every Markov experiment shares (their Configs extend it): ``steps``
    of ``batch_size`` forget sequences, AdamW at ``lr`` (the SimNPO synthetic code's 50 steps of 4 at 5e-4),
    on ``device``, with or without progress bars."""

    steps: int = 50
    batch_size: int = 4
    lr: float = 5e-4
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self):
        super().__post_init__()
        require_at_least_one(self, "steps", "batch_size")
        require_positive(self, "lr")


# The fast presets' setup: a smaller world and model, pretrained in seconds, whose retrain-only model still
# scores within ~0.03 of the exact retrained KL (tests/test_markov_tradeoff.py).
FAST_SETUP = dict(n_retain=4000, n_forget1=2000, n_forget2=2000, n_layer=2, d_model=64, pretrain_lr=1e-3,
                  pretrain_epochs=3)


# ------------------------------------------------------------------------------------------- unlearning


def sample_weights(model: torch.nn.Module, split: Split, method: str, params: MethodParams,
                   ref_logp: torch.Tensor | None = None, batch_size: int = 1024) -> torch.Tensor:
    """The per-sequence weight of ``method``'s forget term on every sequence of ``split`` at the model's current
    parameters (float64, (n,)), for the weight-allocation experiment (SimNPO paper Figs 3-4;
    ``unlearn.objectives.forget_weights``).
    ``ref_logp``: the reference model's per-sequence log-probs on ``split`` (NPO-type methods only)."""
    stats = per_sequence_stats(model, split, batch_size)
    ref = None if ref_logp is None else ref_logp.to(stats.logp.device)
    return forget_weights(method, params, SequenceStats(stats.logp, stats.n_tokens, logp_ref=ref))


def unlearning_losses(method: str | Sequence[str], params: MethodParams | Sequence[MethodParams], forget: Split,
                      retain: Split, ref_logp: torch.Tensor, ref_retain_logits: torch.Tensor | None = None) -> Callable:
    """losses_fn for ``unlearn.train`` on the Markov world (``unlearn.losses.unlearning_losses``): batch =
    (forget index, retain index, mismatch index), one method on a model or one per member of an ensemble.

    The reference is cached (``unlearn.reference.Cached``): ``ref_logp`` (n_forget,), the reference model's
    log-probs taken before training, so no reference model runs, and, for *+KL methods, its logits on the
    retain split ``ref_retain_logits`` (n_retain, T, V). GA+Mismatch+KL reads the log-probs of random retain
    continuations of the forget prompts (``mismatched``), one retain sequence per forget sequence at the
    batch's third index. Splits and caches must live on the model's device.
    """
    for name in [method] if isinstance(method, str) else method:
        m = get_method(name)
        if m.needs["forget"] not in ((), ("logp_ref",)) and m.forget is not GA_MISMATCH:
            raise ValueError(f"method {name!r} needs alternative responses, which the Markov world does not have")
        if "kl" in m.needs["retain"] and ref_retain_logits is None:
            raise ValueError(f"method {name!r} needs the reference's retain logits (ref_retain_logits)")
    return losses.unlearning_losses(method, params, forget, retain, Cached(ref_logp, ref_retain_logits),
                                    alternative=lambda f, r: mismatched(forget, retain, f, r))


def mismatched(forget: Split, retain: Split, forget_index: torch.Tensor, retain_index: torch.Tensor) -> Split:
    """Yao et al.'s random mismatch responses on the Markov world: forget sequence f's prompt (its first state)
    followed by retain sequence r's continuation, i.e. input ids [f_0, r_1, ..., r_{L-2}] and labels
    [r_1, ..., r_{L-1}] (target_probs are the retain rows: these sequences are not evaluated)."""
    alt = retain.take(retain_index)
    input_ids = alt.input_ids.clone()
    input_ids[..., 0] = forget.input_ids[forget_index.to(input_ids.device), 0]
    return replace(alt, input_ids=input_ids)


def evaluator(world: MarkovWorld, device: str | torch.device, batch_size: int = 1024,
              limit: int | None = None) -> Callable:
    """(model, step) -> {"retain_kl", "forget1_kl", "forget2_kl"}: ``token_kl`` on the three test splits, or on
    the first ``limit`` sequences of each (the same ones at every call, so a curve stays smooth); one value per
    member for an ensemble."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 sequences (or None for whole splits), got {limit}")
    splits = {key: world[name].take(slice(0, limit)).to(device) for key, name in EVAL_SPLITS.items()}
    return lambda model, step: {key: token_kl(model, split, batch_size) for key, split in splits.items()}


def summary_evaluator(world: MarkovWorld, device: str | torch.device, limit: int | None = None,
                      batch_size: int = 1024, entropy: bool = True) -> Callable:
    """(model, step) -> {"forget_kl", "forget1_kl", "forget2_kl", "retain_kl", "entropy"} on the first ``limit``
    sequences of each test split: ``token_kl`` on Forget1 and on Forget2 test, ``forget_kl`` their token-count
    weighted mean (the token KL of the two splits taken together: every non-pad forget position counts once),
    ``token_kl`` and (unless ``entropy=False``) ``mean_entropy`` on retain test, both from one pass
    (``kl_and_entropy``). One value per member for an ensemble."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 sequences (or None for whole splits), got {limit}")
    splits = {key: world[name].take(slice(0, limit)).to(device) for key, name in EVAL_SPLITS.items()}
    tokens = {k: float(splits[f"{k}_kl"].mask.sum()) for k in ("forget1", "forget2")}

    def evaluate(model, step):
        out = {key: token_kl(model, split, batch_size) for key, split in splits.items() if key != "retain_kl"}
        if entropy:  # one pass over retain test for both
            retain = kl_and_entropy(model, splits["retain_kl"], batch_size)
            out.update(retain_kl=retain["kl"], entropy=retain["entropy"])
        else:
            out["retain_kl"] = token_kl(model, splits["retain_kl"], batch_size)
        f1, f2 = (torch.tensor(out[f"{k}_kl"], dtype=torch.float64) for k in tokens)
        out["forget_kl"] = ((tokens["forget1"] * f1 + tokens["forget2"] * f2) / sum(tokens.values())).tolist()
        return out

    return evaluate


def attribution_scores(kind: str, model: torch.nn.Module, world: MarkovWorld, mu: float = 1e-6,
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """``unlearn.attribution.scores`` on the Markov world: WAGLE's gradients are the forget NLL summed over
    forget train and the retain NLL summed over as many retain train sequences (a random pick from the stream
    (seed, "wagle-retain")); random scores come from the stream (seed, "mask-random")."""
    device = _device(model)

    def gradients():
        forget = world.forget_set().to(device)
        pick = torch.randperm(len(world["retain_train"]), generator=make_generator(seed, "wagle-retain"))
        retain = world["retain_train"].take(pick[:len(forget)]).to(device)
        return attribution.nll_gradients(model, forget), attribution.nll_gradients(model, retain)

    return attribution.scores(kind, model, gradients=gradients, mu=mu, generator=make_generator(seed, "mask-random"))


def masks(spec: str, model: torch.nn.Module, world: MarkovWorld, mu: float = 1e-6,
          seed: int = 0) -> dict[str, torch.Tensor]:
    """The masks of a ``--mask`` spec (``unlearn.attribution.parse_mask_spec``) for a Markov model."""
    return attribution.masks_for(spec, model, lambda kind: attribution_scores(kind, model, world, mu, seed),
                                 make_generator(seed, "mask-threshold"))


@torch.no_grad()
def _reference_logits(model: torch.nn.Module, split: Split, batch_size: int = 1024) -> torch.Tensor:
    return torch.cat([logits.float() for _, logits in _batches(model, split, batch_size)])


@dataclass(frozen=True)
class _Unlearning:
    """What every unlearning run on a world shares: the splits on the model's device, the reference's cached
    statistics (taken from the model before it moves, in the run's precision), and the step count."""

    forget: Split
    retain: Split
    ref_logp: torch.Tensor
    ref_retain_logits: torch.Tensor | None
    steps: int

    @staticmethod
    def prepare(model, methods: Sequence[str], world: MarkovWorld, steps: int, batch_size: int,
                precision: str) -> _Unlearning:
        device = _device(model)
        if precision != "bf16":
            model.to(PRECISIONS[precision])  # before the reference pass, so that logp = logp_ref exactly at step 0
        forget, retain = world.forget_set().to(device), world["retain_train"].to(device)
        with_kl = any("kl" in get_method(name).needs["retain"] for name in methods)
        with forward_precision(device, precision):
            ref_logp = per_sequence_stats(model, forget).logp
            ref_retain_logits = _reference_logits(model, retain) if with_kl else None
        return _Unlearning(forget, retain, ref_logp, ref_retain_logits,
                           min(steps, math.ceil(len(forget) / batch_size)))

    def orders(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A run's forget and retain permutations and, for each forget position, the retain sequence that gives
        its mismatch response (GA+Mismatch+KL), drawn in that order from its generator."""
        forget, retain = torch.randperm(len(self.forget), generator=g), torch.randperm(len(self.retain), generator=g)
        return forget, retain, torch.randint(len(self.retain), (len(self.forget),), generator=g)

    def windows(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions in the permutations read at ``step``: forget (the epoch's last batch may be smaller) and
        retain (wrapping around)."""
        window = torch.arange(step * batch_size, (step + 1) * batch_size)
        return window[window < len(self.forget)], window % len(self.retain)


def unlearn_run(model: torch.nn.Module, method: str, params: MethodParams, world: MarkovWorld, *, steps: int = 50,
                batch_size: int = 4, lr: float = 5e-4, generator: torch.Generator | None = None,
                evaluate_every: int = 1, evaluate: Callable | None = None, precision: str = "float32",
                masks: dict[str, torch.Tensor] | None = None, progress: bool | None = None) -> History:
    """Unlearn ``world.forget_set()`` from ``model`` (in place; it is the reference) and return the History.

    One epoch over a random permutation of the forget set in batches of ``batch_size``, capped at ``steps``
    (SimNPO synthetic code: 50 steps of 4, AdamW lr 5e-4, no weight decay); a method with a retain term also
    draws retain batches of the same size from a permutation of retain_train. Both permutations come from
    ``generator`` (default: the stream (world seed, "markov-unlearn", method)). Evaluation (default
    ``evaluator``: token KL on the three test splits) runs before step 0, every ``evaluate_every`` steps and
    after the last; History.evals holds its values. ``masks``: {parameter name: bool tensor} of the weights
    that may move (``unlearn.attribution``; the others stay bitwise unchanged).
    """
    run = _Unlearning.prepare(model, [method], world, steps, batch_size, precision)
    g = generator if generator is not None else make_generator(world.cfg.seed, "markov-unlearn", method)
    forget_order, retain_order, mismatch_order = run.orders(g)

    def micro_batches(step):
        f, r = run.windows(step, batch_size)
        return [(forget_order[f], retain_order[r], mismatch_order[f])]

    device = _device(model)
    cfg = TrainConfig(steps=run.steps, lr=lr, optimizer="adamw", eval_every=evaluate_every, precision=precision,
                      device=str(device), progress=progress, name=f"unlearn markov ({method})")
    losses = unlearning_losses(method, params, run.forget, run.retain, run.ref_logp, run.ref_retain_logits)
    return train(model, losses, micro_batches, cfg, evaluate=evaluate or evaluator(world, device), masks=masks)


def unlearn_runs(model: torch.nn.Module, methods: Sequence[str], params: Sequence[MethodParams], world: MarkovWorld,
                 generators: Sequence[torch.Generator], *, steps: int = 50, batch_size: int = 4, lr: float = 5e-4,
                 evaluate_every: int = 1, evaluate: Callable | None = None, precision: str = "float32",
                 masks: Sequence[dict[str, torch.Tensor] | None] | None = None,
                 progress: bool | None = None) -> tuple[History, Ensemble]:
    """M = len(methods) unlearning runs from ``model`` (left unchanged) trained side by side as one ensemble.

    Run m is ``unlearn_run(copy of model, methods[m], params[m], world, generator=generators[m], ...)``: the
    same reference statistics, batches and AdamW trajectory (tests/test_markov.py checks it to float32
    rounding), but all M runs take one batched forward and backward per step. History.evals hold one value
    per run at each evaluated step (at step 0, where every run is still the model, it is scored once); the
    returned ensemble holds the unlearned models (``.member(m)``).
    ``masks[m]``: {parameter name of the model: bool tensor} of the weights run m may move
    (``unlearn.attribution``), or None for a dense run.
    """
    M = len(methods)
    if not (M == len(params) == len(generators) and M > 0):
        raise ValueError(f"need one method, params and generator per run, got {M}, {len(params)}, {len(generators)}")
    device = _device(model)
    model = copy.deepcopy(model)
    run = _Unlearning.prepare(model, methods, world, steps, batch_size, precision)
    forget_orders, retain_orders, mismatch_orders = (torch.stack(o) for o in zip(*(run.orders(g) for g in generators),
                                                                                  strict=True))
    ensemble = Ensemble.replicate(model, M)

    def micro_batches(step):
        f, r = run.windows(step, batch_size)
        return [(forget_orders[:, f], retain_orders[:, r], mismatch_orders[:, f])]

    cfg = TrainConfig(steps=run.steps, lr=lr, optimizer="adamw", eval_every=evaluate_every, precision=precision,
                      device=str(device), progress=progress, name=f"unlearn markov ({M} runs)")
    losses = unlearning_losses(methods, params, run.forget, run.retain, run.ref_logp, run.ref_retain_logits)
    stacked = None
    if masks is not None and any(m is not None for m in masks):
        if len(masks) != M:
            raise ValueError(f"need one mask (or None) per run, got {len(masks)} for {M} runs")
        stacked = {f"module.{name}": torch.stack([m[name] if m is not None and name in m
                                                  else torch.ones_like(p, dtype=torch.bool) for m in masks])
                   for name, p in model.named_parameters() if any(m is not None and name in m for m in masks)}
    score = evaluate or evaluator(world, device)

    def evaluate_members(members: Ensemble, step: int) -> dict:
        if step == 0:  # every member is still a copy of the model (Ensemble.replicate): score one, M times
            return {key: [value] * M for key, value in score(members.member(0), step).items()}
        return score(members, step)

    history = train(ensemble, losses, micro_batches, cfg, evaluate=evaluate_members, masks=stacked)
    return history, ensemble
