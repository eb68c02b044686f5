"""The unlearning optimizer as a config option of every toy experiment (``sims.experiment.UnlearningOptimizer``).

Claims, and the outcome that would refute each:
- each experiment records optimizer, adam_beta2 and adam_eps in its config, defaulting to its family's optimizer
  (gradient descent for the logistic toys, AdamW (0.9, 0.999), eps 1e-8 for the Markov and TOFU-like toys):
  refuted by a missing key or another default;
- the options reach the TrainConfig of each experiment's unlearning runs: refuted by the loop receiving the
  default while the config says otherwise;
- the loop then takes the configured step: after one step from the same model, sign descent moves every
  coordinate by lr sign(g) and AdamW by lr g / (|g| + eps) for the configured eps (m_hat = g, sqrt(v_hat) = |g|
  after one step), g read off a gradient-descent step; beta2 first acts at step 2: refuted by an option that
  leaves the step unchanged;
- bad values and Adam options under another optimizer are refused with one line naming the key: refuted by a
  config that builds.
"""

import copy

import numpy as np
import pytest
import torch

from sims import logistic
from sims import markov as mk
from sims.experiment import UnlearningOptimizer
from sims.experiments import EXPERIMENTS, tofu_toy
from unlearn.config import config_dict
from unlearn.models.logistic import random_feature_matrix
from unlearn.models.transformer import Transformer
from unlearn.objectives import MethodParams
from unlearn.rng import generator

# The experiments whose unlearning optimizer is an option (an experiment that sweeps optimizers itself is not).
TOYS = tuple(name for name, e in EXPERIMENTS.items() if isinstance(e.presets["fast"], UnlearningOptimizer))
LOGISTIC = ("npo-synthetic", "logistic-rates")
ADAMW_TOYS = tuple(name for name in TOYS if name not in LOGISTIC)
TINY_MARKOV = ("n_retain=200", "n_forget1=100", "n_forget2=100", "n_layer=1", "d_model=16", "pretrain_epochs=1")
# Settings small enough that everything before the first unlearning run takes seconds.
TINY = {
    "npo-synthetic": ("seeds=1", "alphas=1", "methods=GA,NPO", "d=4", "n_features=8", "n_forget=10", "n_retain=20",
                      "n_eval=10", "pretrain_steps=5", "steps=2", "eval_every=1", "sweep_betas=none"),
    "logistic-rates": ("n_forget=4", "d=64", "steps=20", "n_record=10", "betas=1", "rf_steps=20",
                       "rf_pretrain_steps=5"),
    "tofu-toy": ("hidden=8", "layers=1", "finetune_epochs=1", "max_new_tokens=2", "epochs=1"),
    **{name: TINY_MARKOV for name in TOYS if isinstance(EXPERIMENTS[name].presets["fast"], mk.UnlearningSetup)},
}
TRAIN_MODULES = (logistic, mk.unlearning, tofu_toy)  # the modules whose ``train`` runs the unlearning


def test_every_toy_experiment_takes_the_option_and_has_tiny_settings_here():
    assert sorted(TOYS) == sorted(TINY) == ["attribution", "collapse", "logistic-rates", "markov-length",
                                            "markov-memorization", "npo-synthetic", "relearn", "tofu-toy",
                                            "weight-allocation", "yao"]


@pytest.mark.parametrize("name", TOYS)
def test_the_config_records_the_family_s_optimizer_by_default(name):
    for preset, cfg in EXPERIMENTS[name].presets.items():
        expected = "sgd" if name in LOGISTIC else "adamw"
        recorded = config_dict(cfg)  # what NAME.json's "config" holds
        assert [recorded[k] for k in ("optimizer", "adam_beta2", "adam_eps")] == [expected, 0.999, 1e-8], preset
        assert cfg.train_options() == {"optimizer": expected, "adam_betas": (0.9, 0.999), "adam_eps": 1e-8}


class _Stopped(Exception):
    pass


def unlearning_train_config(name: str, overrides: tuple[str, ...], monkeypatch):
    """The TrainConfig that experiment ``name``'s first unlearning run hands to the loop (pretraining, named
    "pretrain ..." or "fine-tune ...", runs as usual; the unlearning run is stopped before its first step)."""
    seen = []

    def spy(real):
        def train(model, losses_fn, micro_batches, cfg, **kwargs):
            if cfg.name.startswith(("pretrain", "fine-tune")):
                return real(model, losses_fn, micro_batches, cfg, **kwargs)
            seen.append(cfg)
            raise _Stopped
        return train

    for module in TRAIN_MODULES:
        monkeypatch.setattr(module, "train", spy(module.train))
    experiment = EXPERIMENTS[name]
    with pytest.raises(_Stopped):
        experiment.run(experiment.config("fast", [*TINY[name], "progress=false", *overrides]))
    return seen[0]


@pytest.mark.parametrize("name", TOYS)
@pytest.mark.parametrize("overrides, expected", [
    ((), None),  # the family's optimizer, as before the option existed: the fast-preset golden metrics stand
    (("optimizer=signsgd",), ("signsgd", (0.9, 0.999), 1e-8)),
    (("optimizer=adamw", "adam_beta2=0.99", "adam_eps=1e-6"), ("adamw", (0.9, 0.99), 1e-6)),
], ids=["default", "signsgd", "adamw-0.99-1e-6"])
def test_the_options_reach_the_unlearning_loop(name, overrides, expected, monkeypatch):
    cfg = unlearning_train_config(name, overrides, monkeypatch)
    expected = expected or ("sgd" if name in LOGISTIC else "adamw", (0.9, 0.999), 1e-8)
    assert (cfg.optimizer, cfg.adam_betas, cfg.adam_eps) == expected


@pytest.mark.parametrize("name", TOYS)
@pytest.mark.parametrize("overrides, message", [
    (["optimizer=adam"], "invalid config: unknown optimizer 'adam'; valid: sgd, adamw, signsgd"),
    (["optimizer=adamw", "adam_beta2=1"], "invalid config: adam_beta2 must lie in (0, 1), got 1.0"),
    (["optimizer=adamw", "adam_beta2=0"], "invalid config: adam_beta2 must lie in (0, 1), got 0.0"),
    (["optimizer=adamw", "adam_beta2=nan"], "invalid config: adam_beta2 must lie in (0, 1), got nan"),
    (["optimizer=adamw", "adam_eps=-1e-9"], "invalid config: adam_eps must be a finite number >= 0, got -1e-09"),
    (["optimizer=adamw", "adam_eps=inf"], "invalid config: adam_eps must be a finite number >= 0, got inf"),
    (["optimizer=sgd", "adam_eps=1e-6"], "invalid config: adam_eps applies only to optimizer=adamw, got "
                                         "optimizer=sgd"),
    (["optimizer=signsgd", "adam_beta2=0.99"], "invalid config: adam_beta2 applies only to optimizer=adamw, got "
                                               "optimizer=signsgd"),
])
def test_bad_optimizer_options_are_refused_naming_the_key(name, overrides, message):
    with pytest.raises(ValueError) as err:
        EXPERIMENTS[name].config("fast", overrides)
    assert str(err.value) == message


def test_adam_options_stand_alone_only_where_adamw_is_the_default():
    """adam_eps=1e-6 by itself is the markov-length rerun; on a gradient-descent toy it would be ignored."""
    for name in ADAMW_TOYS:
        assert EXPERIMENTS[name].config("fast", ["adam_eps=1e-6"]).train_options()["adam_eps"] == 1e-6
    for name in LOGISTIC:
        with pytest.raises(ValueError, match="adam_eps applies only to optimizer=adamw, got optimizer=sgd"):
            EXPERIMENTS[name].config("fast", ["adam_eps=1e-6"])
        assert EXPERIMENTS[name].config("fast", ["optimizer=adamw", "adam_eps=1e-6"]).adam_eps == 1e-6


# ------------------------------------------------------------------ the step the loop takes ----------------------


def assert_steps_follow_the_optimizers(step: dict) -> None:
    """``step[(optimizer, eps)]``: each parameter's move (float64, flattened) after one step from the same model
    at learning rate 1 (gradient descent: -g) or LR (the others)."""
    g = -step["sgd", None]
    assert (g.abs() > 1e-6).float().mean() > 0.5  # most coordinates have a gradient to read
    clear = g.abs() > 1e-9  # sign(g) is read reliably (the float64 rounding of the gd step is ~1e-17)
    torch.testing.assert_close(step["signsgd", None][clear], -LR * g.sign()[clear], rtol=0, atol=1e-15)
    for eps in EPS:
        torch.testing.assert_close(step["adamw", eps], -LR * g / (g.abs() + eps), rtol=1e-7, atol=LR * 1e-9)
    # eps = 1e-2 sits among the gradients here, so the two Adam steps differ: an ignored eps would fail above
    assert (step["adamw", EPS[0]] - step["adamw", EPS[1]]).abs().max() > 0.1 * LR


LR = 1e-3
EPS = (1e-8, 1e-2)
ONE_STEP = [("sgd", None, 1.0), ("signsgd", None, LR), *[("adamw", eps, LR) for eps in EPS]]


def options(optimizer: str, eps: float | None, beta2: float = 0.999) -> dict:
    return UnlearningOptimizer(optimizer, *(() if eps is None else (beta2, eps))).train_options()


def logistic_world():
    g = generator(11, "optimizer-options")
    data = logistic.sample_data(1.0, 6, 30, 60, 20, g).featurize(random_feature_matrix(6, 24, g))
    theta = 0.1 * torch.randn(1, 24, generator=g, dtype=torch.float64)
    return data, theta


def logistic_after(steps: int, lr: float, train_options: dict) -> torch.Tensor:
    """NPO's theta (flattened) after ``steps`` steps of ``logistic.unlearn`` from a fixed theta."""
    data, theta = logistic_world()
    run = logistic.Run("NPO", "NPO", MethodParams(beta=1.0), lr)
    history = logistic.unlearn([run], [data], theta, theta, steps, 0, False, evaluate=lambda model, step: {
        "theta": model.theta.detach().flatten()}, **train_options)
    return torch.tensor(history.evals["theta"][-1], dtype=torch.float64)


def test_logistic_unlearning_takes_the_configured_optimizer_s_step():
    _, theta = logistic_world()
    assert_steps_follow_the_optimizers({(opt, eps): logistic_after(1, lr, options(opt, eps)) - theta.flatten()
                                        for opt, eps, lr in ONE_STEP})


def test_logistic_adam_beta2_acts_from_the_second_step():
    one = [logistic_after(1, LR, options("adamw", 1e-8, beta2)) for beta2 in (0.999, 0.5)]
    two = [logistic_after(2, LR, options("adamw", 1e-8, beta2)) for beta2 in (0.999, 0.5)]
    torch.testing.assert_close(one[0], one[1], rtol=1e-12, atol=LR * 1e-12)  # sqrt(v_hat) = |g| up to rounding
    assert (two[0] - two[1]).abs().max() > 1e-3 * LR


MARKOV_WORLD = mk.MarkovWorldConfig(seed=4, n_retain=60, n_forget1=30, n_forget2=30)


@pytest.fixture(scope="module")
def markov_start():
    """A small world and an untrained transformer: every unlearning run below starts from it."""
    world = mk.make_world(MARKOV_WORLD)
    cfg = mk.model_config(MARKOV_WORLD, mk.PretrainConfig(n_layer=1, d_model=16))
    return world, Transformer(cfg, generator(4, "optimizer-options-init"))


def markov_after(markov_start, steps: int, lr: float, train_options: dict) -> torch.Tensor:
    """Every parameter (float64, flattened) of an NPO run of ``sims.markov.unlearn_runs`` after ``steps`` steps."""
    world, model = markov_start
    _, ensemble = mk.unlearn_runs(model, ["NPO"], [MethodParams(beta=0.2)], world, [generator(0, "order")],
                                  steps=steps, lr=lr, precision="float64", evaluate=lambda m, step: {},
                                  evaluate_every=steps, progress=False, **train_options)
    return torch.cat([p.detach().flatten() for p in ensemble.member(0).parameters()])


def test_markov_unlearning_takes_the_configured_optimizer_s_step(markov_start):
    start = torch.cat([p.detach().double().flatten() for p in copy.deepcopy(markov_start[1]).parameters()])
    assert_steps_follow_the_optimizers({(opt, eps): markov_after(markov_start, 1, lr, options(opt, eps)) - start
                                        for opt, eps, lr in ONE_STEP})


def test_markov_adam_beta2_acts_from_the_second_step(markov_start):
    one = [markov_after(markov_start, 1, LR, options("adamw", 1e-8, beta2)) for beta2 in (0.999, 0.5)]
    two = [markov_after(markov_start, 2, LR, options("adamw", 1e-8, beta2)) for beta2 in (0.999, 0.5)]
    torch.testing.assert_close(one[0], one[1], rtol=1e-12, atol=LR * 1e-12)  # sqrt(v_hat) = |g| up to rounding
    assert (two[0] - two[1]).abs().max() > 1e-3 * LR
    assert np.isfinite(two[1].numpy()).all()
