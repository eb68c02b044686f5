"""adam-rates end to end on the fast preset: the CLI writes the figure and the metric contract, each claim of
``theory.adam`` holds on the simulated runs, and each check fails where its prediction does not apply. The
committed full figure (figures/adam-rates.json) measures the late regime of every beta2."""

import json
from pathlib import Path

import numpy as np
import pytest

from sims.experiment import load
from sims.experiments import adam_rates
from theory import adam
from unlearn.metrics.curves import acceleration

FAST = adam_rates.PRESETS["fast"]
FULL = adam_rates.PRESETS["full"]
COMMITTED = Path(__file__).resolve().parents[1] / "figures" / "adam-rates.json"


@pytest.fixture(scope="module")
def fast(fast_figure):
    return fast_figure.out, fast_figure("adam-rates")


def curve(doc, run: str, label: str) -> tuple[np.ndarray, np.ndarray]:
    c = doc["series"]["theorem"]["curves"][run]
    return np.asarray(c["t"], float), np.asarray(c["distance"][label], float)


def test_cli_writes_figure_and_json(fast):
    out, doc = fast
    png = (out / "adam-rates.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    assert doc["name"] == "adam-rates" and doc["preset"] == "fast" and doc["config"]["d"] == 2048


def test_metric_keys_are_exactly_the_contract(fast):
    expected = {"adam.ga.linear_r2", "adam.ga.slope_ratio", "simnpo.adam.per_token_rate_ratio_short_over_long",
                "npo.adam.per_token_rate_ratio_short_over_long"}
    for beta in FAST.betas:
        expected |= {f"gd.npo.beta={beta:g}.log_slope_ratio", f"signsgd.npo.beta={beta:g}.late_slope_ratio"}
        expected |= {f"adam.npo.beta={beta:g}.beta2={beta2:g}.{m}" for beta2 in FAST.beta2s
                     for m in ("late_slope_ratio", "crossover_ratio")}
    expected |= {f"adam.eps={eps:g}.npo.beta=1.third_regime_log_slope_ratio" for eps in FAST.eps_values}
    metrics = fast[1]["metrics"]
    assert set(metrics) == expected
    assert all(isinstance(value, float) for value in metrics.values())
    assert "adam.eps=1e-06.npo.beta=1.third_regime_log_slope_ratio" in metrics  # eps written as %g


def test_every_prediction_sits_beside_its_measurement(fast):
    """series' claims hold {measured, predicted} for every metric but the information-only R^2; a ratio metric
    is their quotient, the per-token ratios are the measured ratio itself."""
    doc = fast[1]
    claims = {**doc["series"]["theorem"]["claims"], **doc["series"]["sequences"]["claims"]}
    assert set(claims) == set(doc["metrics"]) - {"adam.ga.linear_r2"}
    for key, claim in claims.items():
        expected = claim["measured"] if "per_token" in key else claim["measured"] / claim["predicted"]
        assert doc["metrics"][key] == pytest.approx(expected, rel=1e-12), key


def test_adam_late_rate_and_its_refutation_by_gradient_descent(fast):
    """Adam's late slope is sqrt(n_f)(-ln beta2)/(2 beta): within 3% at beta 1 (the C = 0 curve puts the
    window [T/2, T] at x = 6..12 2.5% above the line), within 10% at beta 4 (its first steps carried the margin
    further). The same check on the gradient-descent run fails: its late slope is below half of Adam's rate and
    its curve slows down (acceleration below 0.9), as Theorem 2's logarithm does."""
    m, doc = fast[1]["metrics"], fast[1]
    assert m["adam.npo.beta=1.beta2=0.99.late_slope_ratio"] == pytest.approx(1, abs=0.03)
    assert m["adam.npo.beta=4.beta2=0.99.late_slope_ratio"] == pytest.approx(1, abs=0.1)
    t, gd = curve(doc, "gd", "NPO beta=1")
    gd_ratio = adam_rates.late_slope(t, gd) / adam.npo_adam_distance_rate(1.0, 0.99, FAST.n_forget)
    assert gd_ratio < 0.5
    assert acceleration(t, gd, t[-1] / 10) < 0.9


def test_adam_crossover_and_its_refutation_by_a_wrong_beta2(fast):
    """The crossover (local slope within 10% of the late rate to the end) comes at 5.62 / -ln(beta2) = 560 steps:
    within 10% at beta 1. At beta 4 the first steps carried the margin far (C > 0) and it comes later, over 20%.
    Measured against beta2 = 0.999's prediction the run has no crossover at all (it never slows to that rate)."""
    m, doc = fast[1]["metrics"], fast[1]
    assert m["adam.npo.beta=1.beta2=0.99.crossover_ratio"] == pytest.approx(1, abs=0.1)
    assert m["adam.npo.beta=4.beta2=0.99.crossover_ratio"] > 1.2
    t, dist = curve(doc, "adam beta2=0.99", "NPO beta=1")
    wrong = adam.npo_adam_distance_rate(1.0, 0.999, FAST.n_forget)
    assert adam_rates.measured_crossover(t, dist, wrong, FAST.within) is None


def test_ga_and_sign_descent_are_linear_at_the_sign_rate(fast):
    """Adam's GA and sign descent's NPO move at lr ||X sign(X^T w)||: GA within 1%, NPO within 5% (its weights
    differ from GA's a little); both curves are lines (acceleration 1 within 2%), unlike GD's NPO (below 0.9)."""
    m, doc = fast[1]["metrics"], fast[1]
    assert m["adam.ga.slope_ratio"] == pytest.approx(1, abs=0.01) and m["adam.ga.linear_r2"] > 0.999
    t, ga = curve(doc, "adam beta2=0.99", "GA")
    assert acceleration(t, ga, t[-1] / 10) == pytest.approx(1, abs=0.02)
    for beta in FAST.betas:
        assert m[f"signsgd.npo.beta={beta:g}.late_slope_ratio"] == pytest.approx(1, abs=0.05)
        t, sign = curve(doc, "signsgd", f"NPO beta={beta:g}")
        assert acceleration(t, sign, t[-1] / 10) == pytest.approx(1, abs=0.02)


def test_gradient_descent_log_slope(fast):
    """GD's NPO grows like (sqrt(n_f)/beta) ln t: over the last decade of 1000 steps the slope in ln t is within a
    factor 2 of it (it approaches the asymptote slowly at d = 2048, as in logistic-rates)."""
    m = fast[1]["metrics"]
    for beta in FAST.betas:
        assert 0.5 < m[f"gd.npo.beta={beta:g}.log_slope_ratio"] < 2


def test_eps_brings_the_logarithm_back(fast):
    """With eps = 1e-6 the late log slope is gradient descent's sqrt(n_f)/beta within 15% (approached from above);
    with eps = 0 there is no third regime: the same measurement reads the linear regime 2, tens of times larger."""
    m = fast[1]["metrics"]
    assert m["adam.eps=1e-06.npo.beta=1.third_regime_log_slope_ratio"] == pytest.approx(1, abs=0.15)
    assert m["adam.eps=0.npo.beta=1.third_regime_log_slope_ratio"] > 10


def test_per_token_rates_against_length(fast):
    """Per token, Adam's late rate is flat in |y| for SimNPO (short/long 1 within 2%) and goes like 1/|y| for NPO
    (short/long 20 / 5 = 4 within 5%); NPO's ratio is far from SimNPO's, so either check fails the other's data."""
    m, claims = fast[1]["metrics"], fast[1]["series"]["sequences"]["claims"]
    long, short = FAST.sequence_lengths
    assert claims["npo.adam.per_token_rate_ratio_short_over_long"]["predicted"] == pytest.approx(long / short)
    assert m["simnpo.adam.per_token_rate_ratio_short_over_long"] == pytest.approx(1, abs=0.02)
    assert m["npo.adam.per_token_rate_ratio_short_over_long"] == pytest.approx(long / short, rel=0.05)


def test_figure_redraws_from_the_saved_json(fast):
    out, _ = fast
    assert adam_rates.plot(load(out / "adam-rates.json")).axes


def test_the_committed_full_figure_measures_every_late_regime():
    """Each full-preset Adam run lasts T >= 2 t_c = 2 x 5.62 / -ln(beta2) (1.2e5 steps at beta2 = 0.9999), so its
    late slope ([T/2, T]) and crossover are measured: none is None in figures/adam-rates.json. Every late slope is
    within [0.8, 1.25] of sqrt(n_f)(-ln beta2)/(2 beta), and so is every crossover at beta2 = 0.9999 (at 0.99,
    beta 4's comes 37% late: the first steps' C > 0, ``theory.adam``)."""
    for beta2, steps in zip(FULL.beta2s, FULL.adam_steps, strict=True):
        assert steps >= 2 * adam.npo_adam_crossover_step(beta2, FULL.within), beta2
    doc = json.loads(COMMITTED.read_text())
    assert doc["preset"] == "full" and doc["config"]["adam_steps"] == list(FULL.adam_steps)
    m = doc["metrics"]
    for beta in FULL.betas:
        for beta2 in FULL.beta2s:
            key = f"adam.npo.beta={beta:g}.beta2={beta2:g}"
            assert m[f"{key}.crossover_ratio"] is not None, key
            assert 0.8 <= m[f"{key}.late_slope_ratio"] <= 1.25, key
        assert 0.8 <= m[f"adam.npo.beta={beta:g}.beta2=0.9999.crossover_ratio"] <= 1.25, beta


def test_measured_crossover_by_hand():
    """Slope 3 up to t = 10, then 1: the last record outside 10% of rate 1 ends at t = 10, so the crossover is the
    next mid-point, sqrt(10 * 11); a curve whose last slope is off has none; one within from the start, its
    first mid-point."""
    t = np.arange(1.0, 101.0)
    y = np.where(t <= 10, 3 * t, 30 + (t - 10))
    assert adam_rates.measured_crossover(t, y, 1.0, 0.1) == pytest.approx(np.sqrt(110))
    assert adam_rates.measured_crossover(t, 3 * t, 1.0, 0.1) is None
    assert adam_rates.measured_crossover(t, t, 1.0, 0.1) == pytest.approx(np.sqrt(2))


@pytest.mark.parametrize("override, key", [
    ("betas=()", "betas"), ("betas=(1.0, 1.0)", "betas"), ("beta2s=(1.0,)", "beta2s"),
    ("adam_steps=(100, 200)", "adam_steps"), ("eps_values=(-1e-8,)", "eps_values"), ("within=0", "within"),
    ("sequence_lengths=(5, 20)", "sequence_lengths"), ("n_forget=4096", "n_forget"), ("adam_lr=0", "adam_lr"),
    ("n_record=3", "n_record"), ("eps_beta2=1.5", "eps_beta2"),
])
def test_bad_config_names_the_key(override, key):
    with pytest.raises(ValueError, match=key):
        adam_rates.EXPERIMENT.config("fast", [override])
