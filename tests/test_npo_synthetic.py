"""npo-synthetic end to end on the fast preset: the CLI writes the figure and the JSON contract, the paper's
qualitative claims hold, and a run is reproducible."""


import pytest

from sims.experiments import npo_synthetic

FAST_METHODS = npo_synthetic.PRESETS["fast"].methods


@pytest.fixture(scope="module")
def fast(fast_figure):
    return fast_figure.out, fast_figure("npo-synthetic")


def test_cli_writes_figure_and_json_contract(fast):
    out, doc = fast
    png = (out / "npo-synthetic.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    assert {"name", "preset", "config", "metrics", "paper", "series", "env", "wall_s"} <= set(doc)
    assert doc["name"] == "npo-synthetic" and doc["preset"] == "fast" and doc["config"]["seed"] == 0
    assert doc["env"]["torch"] and doc["env"]["device"] == "cpu"


def test_metric_keys_are_the_contract(fast):
    metrics = fast[1]["metrics"]
    for alpha in ("alpha1", "alpha0"):
        for m in FAST_METHODS:
            for key in ("forget_dist.step200", "forget_dist.final", "retain_dist.final", "forget_kl.final",
                        "forget_kl.late_increment_ratio"):
                assert isinstance(metrics[f"{alpha}.{key}.{m}"], float), f"{alpha}.{key}.{m}"
    for label in ["GA"] + [f"beta={b:g}" for b in npo_synthetic.PRESETS["fast"].sweep_betas]:
        assert f"beta_sweep.retain_dist_at_forget_0.14.{label}" in metrics
    paper = fast[1]["paper"]
    assert paper["alpha1.forget_kl.step1900.NPO"] == 4.8 and set(paper) <= set(metrics)
    # the paper's "final" readings are at its last marker, step 1900: they never sit beside our step 2000
    assert not any(".final." in key for key in paper)


def test_ga_forget_kl_grows_linearly_npo_logarithmically(fast):
    """Late increment ratio (KL(T) - KL(3T/4)) / (KL(3T/4) - KL(T/2)): 1 for linear growth, 0.71 for log t."""
    m = fast[1]["metrics"]
    assert m["alpha1.forget_kl.late_increment_ratio.GA"] == pytest.approx(1.0, abs=0.1)
    for name in ("NPO", "NPO+RT"):
        assert 0.5 < m[f"alpha1.forget_kl.late_increment_ratio.{name}"] < 0.85
        assert m["alpha1.forget_kl.final.GA"] > 3 * m[f"alpha1.forget_kl.final.{name}"]


def test_npo_rt_keeps_retain_distance_while_ga_explodes(fast):
    m = fast[1]["metrics"]
    start = m["alpha1.retain_dist.start"]
    assert m["alpha1.retain_dist.final.NPO+RT"] < 1.5 * start
    assert m["alpha1.retain_dist.final.GA"] > 10 * start


def test_npo_forgets_before_ga(fast):
    """At step 200 NPO is near the retrained model on the forget distribution; GA has barely moved."""
    m = fast[1]["metrics"]
    assert m["alpha1.forget_dist.step200.NPO"] < 0.1 * m["alpha1.forget_dist.start"]
    assert m["alpha1.forget_dist.step200.GA"] > 0.9 * m["alpha1.forget_dist.start"]


def test_same_seed_same_metrics_and_another_seed_differs():
    """Bitwise-identical metrics for the same config on CPU; --set seed gives a different draw."""
    small = npo_synthetic.EXPERIMENT.config("fast", [
        "progress=false", "pretrain_steps=300", "steps=100", "sweep_steps=100", "methods=GA,NPO+RT", "alphas=1",
        "n_eval=200"])
    a, b = npo_synthetic.run(small), npo_synthetic.run(small)
    assert a.metrics == b.metrics
    c = npo_synthetic.run(npo_synthetic.EXPERIMENT.config("fast", [
        "progress=false", "pretrain_steps=300", "steps=100", "sweep_steps=100", "methods=GA,NPO+RT", "alphas=1",
        "n_eval=200", "seed=7"]))
    assert c.metrics["alpha1.forget_dist.start"] != a.metrics["alpha1.forget_dist.start"]


def test_late_increment_ratio_of_linear_and_log_curves():
    import numpy as np

    steps = list(range(0, 2001, 25))
    linear = {"mean": [2.0 * s for s in steps]}
    log = {"mean": [np.log(s + 1e-9) if s else 0.0 for s in steps]}
    assert npo_synthetic.late_increment_ratio(steps, linear, 2000) == pytest.approx(1.0)
    assert npo_synthetic.late_increment_ratio(steps, log, 2000) == pytest.approx(np.log(4 / 3) / np.log(3 / 2))
