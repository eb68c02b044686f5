"""Every experiment, by name: the one list that the CLI, the notebooks and the tests read."""

from sims.experiment import Experiment
from sims.experiments import (
    adam_rates,
    attribution,
    collapse,
    logistic_rates,
    markov_tradeoff,
    npo_synthetic,
    relearn,
    tofu_toy,
    weight_allocation,
    yao,
)

EXPERIMENTS: dict[str, Experiment] = {
    "npo-synthetic": npo_synthetic.EXPERIMENT,
    "logistic-rates": logistic_rates.EXPERIMENT,
    "markov-length": markov_tradeoff.EXPERIMENT_LENGTH,
    "markov-memorization": markov_tradeoff.EXPERIMENT_MEMORIZATION,
    "weight-allocation": weight_allocation.EXPERIMENT,
    "collapse": collapse.EXPERIMENT,
    "yao": yao.EXPERIMENT,
    "relearn": relearn.EXPERIMENT,
    "attribution": attribution.EXPERIMENT,
    "tofu-toy": tofu_toy.EXPERIMENT,
    "adam-rates": adam_rates.EXPERIMENT,
}


def get_experiment(name: str) -> Experiment:
    """EXPERIMENTS[name], or an error that lists the valid names."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ValueError(f"unknown experiment {name!r}; valid experiments: {', '.join(EXPERIMENTS)}") from None
