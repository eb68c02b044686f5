"""The mixture-of-Markov-chains toy of the SimNPO paper (Fan et al. 2024, Sec. 5 and App. H), in three parts:

    world.py        the chains, their sampled sequences, tokenisation, the splits of a world
    pretraining.py  the original and retrained transformers (cached), and the settings experiments share
    unlearning.py   unlearning runs (one model, or an ensemble of runs), evaluators, per-sequence weights

``from sims import markov`` gives the public names of all three. Token-level metrics (KL to the true chain,
entropy, per-sequence log-probs) are ``unlearn.metrics.tokens``.

Differences from the released code: AdamW eps is 1e-8 (``unlearn.train``; ``--set adam_eps=1e-6`` for the
unlearning runs) where transformers.AdamW used 1e-6; the train/test split and every shuffle come from explicit
generators (``unlearn.rng``) instead of ``random_state=42``; the reference model's forget log-probs are cached
before unlearning (so NPO never runs a second model) and *+KL methods read cached reference logits on the retain
split.
"""

from sims.markov.pretraining import (
    FAST_SETUP,
    PretrainConfig,
    Setup,
    UnlearningSetup,
    data_key,
    model_config,
    pretrain,
    pretrained_model,
)
from sims.markov.unlearning import (
    attribution_scores,
    evaluator,
    masks,
    mismatched,
    sample_weights,
    summary_evaluator,
    unlearn_run,
    unlearn_runs,
    unlearning_losses,
)
from sims.markov.world import (
    CHAINS,
    EVAL_SPLITS,
    LABEL_PAD,
    PRETRAIN_DATA,
    MarkovWorld,
    MarkovWorldConfig,
    Split,
    make_world,
    sample_from_model,
    sample_sequences,
    token_set,
    tokenize,
)

__all__ = [
    "CHAINS", "EVAL_SPLITS", "FAST_SETUP", "LABEL_PAD", "PRETRAIN_DATA", "MarkovWorld", "MarkovWorldConfig",
    "PretrainConfig", "Setup", "Split", "UnlearningSetup", "attribution_scores", "data_key", "evaluator",
    "make_world", "masks", "mismatched", "model_config", "pretrain", "pretrained_model", "sample_from_model",
    "sample_sequences", "sample_weights", "summary_evaluator", "token_set", "tokenize", "unlearn_run",
    "unlearn_runs", "unlearning_losses",
]
