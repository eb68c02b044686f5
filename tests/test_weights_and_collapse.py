"""weight-allocation and collapse on the fast preset through the CLI (metric contracts and claims), and the
weights of sims.markov.sample_weights against hand-derived values."""

import math

import numpy as np
import pytest
import torch

from sims import markov
from sims.experiments import collapse, weight_allocation
from unlearn.metrics import tokens
from unlearn.models.transformer import Transformer, TransformerConfig
from unlearn.objectives import MethodParams
from unlearn.rng import generator

NAMES = ("weight-allocation", "collapse")


@pytest.fixture(scope="module")
def docs(fast_figure):
    return {name: fast_figure(name) for name in NAMES} | {"out": fast_figure.out}


@pytest.mark.parametrize("name", NAMES)
def test_writes_a_figure(docs, name):
    png = (docs["out"] / f"{name}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000


def test_weight_allocation_contract_and_claims(docs):
    m = docs["weight-allocation"]["metrics"]
    contract = {"npo.pearson_weight_length.step0", "npo.pearson_weight_length.final",
                "simnpo.pearson_weight_length.step0", "simnpo.pearson_weight_length.final",
                "npo.weight_step0_max_abs_dev_from_1"}
    assert contract <= set(m)
    assert m["npo.pearson_weight_length.step0"] is None  # every NPO weight is exactly 1: no correlation exists
    assert m["npo.weight_step0_max_abs_dev_from_1"] == 0.0
    assert m["simnpo.pearson_weight_length.step0"] < -0.2  # 1/|y| from the first step
    assert m["npo.pearson_weight_length.final"] < -0.2  # long sequences' likelihood fell most: NPO turns away
    # a consistency check of the code (autograd of the objective = its closed-form derivative), not of a theory
    assert max(m[f"{x}.closed_form_consistency_max_abs_err"] for x in ("npo", "simnpo")) < 1e-9
    lengths = np.asarray(docs["weight-allocation"]["series"]["n_tokens"])
    assert lengths.min() == 2 and lengths.max() == 19 and len(np.unique(lengths)) == 18


def test_collapse_contract_and_claims(docs):
    m = docs["collapse"]["metrics"]
    contract = {"ga.forget_nll_linear_r2", "npo.forget_nll_log_r2", "npo.forget_nll_linear_r2",
                "ga.forget_nll_acceleration", "npo.forget_nll_acceleration",
                "ga.retain_kl.final", "npo.retain_kl.final", "simnpo.retain_kl.final", "ga.entropy.final",
                "npo.entropy.final"}
    assert contract <= set(m)
    assert m["ga.forget_nll_acceleration"] > 1  # GA: no slowing down (here: accelerating)
    assert m["npo.forget_nll_acceleration"] < 1  # NPO: slowing down
    assert m["ga.forget_nll.final"] > 5 * m["npo.forget_nll.final"]
    assert m["npo.forget_nll.final"] > m["original.forget_nll"]
    assert m["ga.entropy.final"] < 0.1 * m["original.entropy"]  # GA's outputs collapse
    samples = docs["collapse"]["series"]["methods"]["GA"]["samples"]
    assert all(len(set(seq[1:])) <= 2 for seq in samples)  # degenerate: one or two states repeated


def _tiny_model():
    return Transformer(TransformerConfig(max_len=19, n_layer=1, d_model=16), generator(0, "weights")).double()


def test_npo_weights_are_exactly_one_at_the_reference():
    world = markov.make_world(markov.MarkovWorldConfig(n_retain=20, n_forget1=20, n_forget2=20))
    split = world.forget_set()
    model = _tiny_model()
    ref = tokens.per_sequence_stats(model, split).logp
    weights = markov.sample_weights(model, split, "NPO", MethodParams(beta=0.7), ref)
    assert torch.equal(weights, torch.ones_like(weights))


def test_simnpo_weights_scale_as_one_over_length_at_equal_mean_likelihood():
    """w' = (2/|y|) sigma(beta lbar): two sequences with the same mean token log-likelihood and |y| = 4, 19 have
    weights in the ratio 19/4. A model that ignores its input (uniform next-state distribution) gives every
    token log(1/10), so every sequence's mean likelihood is equal."""
    world = markov.make_world(markov.MarkovWorldConfig(n_retain=20, n_forget1=20, n_forget2=20))
    split = world.forget_set()
    model = _tiny_model()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    beta = 2.5
    weights = markov.sample_weights(model, split, "SimNPO", MethodParams(beta=beta))
    n = split.n_tokens.double()
    expected = 2 / n / (1 + math.exp(beta * math.log(10)))
    torch.testing.assert_close(weights, expected, rtol=1e-12, atol=0)
    assert set(n.tolist()) == {4.0, 19.0}


def test_random_prefixes_keep_the_first_tokens_and_count_only_them():
    world = markov.make_world(markov.MarkovWorldConfig(n_retain=20, n_forget1=50, n_forget2=20))
    split = world["forget1_train"]
    cut = weight_allocation.random_prefixes(split, 3, generator(0, "t"))
    n = cut.n_tokens
    assert n.min() >= 3 and n.max() <= 19
    for b in range(len(split)):
        k = int(n[b])
        assert torch.equal(cut.labels[b, :k], split.labels[b, :k]) and (cut.labels[b, k:] == -100).all()


def test_growth_fits_tell_linear_from_logarithmic():
    t = np.arange(0, 1001, 20, dtype=float)
    linear = collapse.growth_fits(t, 2 + 0.1 * t, 100)
    log = collapse.growth_fits(t, 2 + np.log1p(t), 100)
    assert linear["linear_r2"] > 0.999 and linear["growth_exponent"] == pytest.approx(1.0, abs=1e-9)
    assert log["log_r2"] > log["linear_r2"] and log["growth_exponent"] < 0.5
    assert linear["acceleration"] == pytest.approx(1.0, abs=1e-9) and log["acceleration"] < 0.7
    convex = collapse.growth_fits(t, 2 + 1e-3 * t**1.5, 100)  # the R^2 race calls it linear; the check does not
    assert convex["linear_r2"] > convex["log_r2"] and convex["acceleration"] > 1.2


@pytest.mark.parametrize("experiment, override, message", [
    (collapse.EXPERIMENT, "fit_from=5000", "fit_from"), (collapse.EXPERIMENT, "npo_beta=0", "npo_beta"),
    (weight_allocation.EXPERIMENT, "stages=5,10", "stages"),
    (weight_allocation.EXPERIMENT, "min_tokens=0", "min_tokens"),
])
def test_bad_configs_name_the_field(experiment, override, message):
    with pytest.raises(ValueError, match=message):
        experiment.config("fast", [override])
