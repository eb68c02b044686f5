"""Pretraining of the Markov toy's original and retrained models, cached on disk under their configs, and the
settings every Markov experiment shares (``Setup``, ``UnlearningSetup``).

Model and training (SimNPO paper App. H and its released synthetic code): the post-LN causal transformer of
``unlearn.models.transformer``, pretrained by AdamW on the token-mean cross-entropy (lr 5e-4, batch 128,
5 epochs) on all training data ("all"), on retain + forget1 ("without_forget2", experiment b) or on retain only
(the retrained model, "retain"), through ``unlearn.train.train``; models are cached by ``unlearn.cache``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sims.experiment import UnlearningOptimizer
from sims.markov.world import PRETRAIN_DATA, MarkovWorld, MarkovWorldConfig, make_world
from theory.markov import N_STATES
from unlearn import cache
from unlearn.config import config_dict, require_at_least_one, require_positive
from unlearn.losses import token_mean_nll
from unlearn.models.transformer import Transformer, TransformerConfig
from unlearn.rng import generator as make_generator
from unlearn.train import PRECISIONS, TrainConfig, resolve_device, shuffled_batches, train


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining of the original and retrained models (the SimNPO paper's released synthetic code).

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
    if cfg.precision != "bf16-autocast":
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
class UnlearningSetup(UnlearningOptimizer, Setup):
    """``Setup`` plus the unlearning loop every Markov experiment shares (their Configs extend it): ``steps``
    of ``batch_size`` forget sequences at ``lr`` (the SimNPO synthetic code's 50 steps of 4 at 5e-4), on
    ``device``, with or without progress bars. The unlearning optimizer (``sims.experiment.UnlearningOptimizer``:
    ``optimizer``, ``adam_beta2``, ``adam_eps``) defaults to AdamW with betas (0.9, 0.999) and eps 1e-8, where
    the released code's transformers.AdamW had eps 1e-6; the cached original and retrained models keep
    ``PretrainConfig``'s AdamW whatever these say."""

    optimizer: str = "adamw"
    steps: int = 50
    batch_size: int = 4
    lr: float = 5e-4
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self):
        super().__post_init__()
        require_at_least_one(self, "steps", "batch_size")
        require_positive(self, "lr")
        self.check_optimizer()


# The fast presets' setup: a smaller world and model, pretrained in seconds, whose retrain-only model still
# scores within ~0.03 of the exact retrained KL (tests/test_markov_tradeoff.py).
FAST_SETUP = dict(n_retain=4000, n_forget1=2000, n_forget2=2000, n_layer=2, d_model=64, pretrain_lr=1e-3,
                  pretrain_epochs=3)


