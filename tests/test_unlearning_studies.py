"""yao, relearn and attribution on the fast preset through the CLI: the metric contracts and the claims that
hold on one small draw."""

import pytest

from sims.experiments import attribution

NAMES = ("yao", "relearn", "attribution")


@pytest.fixture(scope="module")
def docs(fast_figure):
    return {name: fast_figure(name) for name in NAMES} | {"out": fast_figure.out}


@pytest.mark.parametrize("name", NAMES)
def test_figures_are_written(docs, name):
    png = (docs["out"] / f"{name}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 30_000
    assert all(v is None or isinstance(v, float) for v in docs[name]["metrics"].values())


def test_yao_contract_and_claim(docs):
    m = docs["yao"]["metrics"]
    for x in ("ga", "ga+kl", "ga+mismatch+kl"):
        assert {f"{x}.forget_kl.final", f"{x}.retain_kl.final", f"{x}.entropy.final"} <= set(m)
        assert m[f"{x}.forget_kl.final"] > m["retrained.forget_kl"]  # every method forgets past the target
    assert m["ga.entropy.final"] < 0.1  # GA alone collapses to (nearly) one next state
    assert m["ga+mismatch+kl.entropy.final"] > 0.8 * m["original.entropy"]
    assert m["ga+mismatch+kl.retain_kl.final"] < 0.1 * m["ga.retain_kl.final"]


def test_relearn_contract_and_claim(docs):
    m = docs["relearn"]["metrics"]
    for x in ("npo", "simnpo"):
        keys = {f"{x}.forget_kl.before", f"{x}.forget_kl.after_relearn.shortest",
                f"{x}.forget_kl.after_relearn.random_mean", f"{x}.forget_kl.after_relearn.random_std"}
        assert keys <= set(m)
        assert m[f"{x}.forget_kl.before"] > m["original.forget_kl"]
        for subset in ("shortest", "random_mean"):  # relearning takes some of the forgetting back
            assert m[f"{x}.forget_kl.after_relearn.{subset}"] < m[f"{x}.forget_kl.before"]
        assert m[f"{x}.forget_kl.after_relearn.random_std"] >= 0
    assert docs["relearn"]["series"]["shortest_share_forget2"] == 1.0  # the shortest 20% are all Forget2


def test_attribution_contract_and_claim(docs):
    m, cfg = docs["attribution"]["metrics"], attribution.PRESETS["fast"]
    for x in ("graddiff", "npo"):
        assert {f"{x}.dense.ratio=1.forget_kl", f"{x}.dense.ratio=1.retain_kl"} <= set(m)
        for kind in ("random", "magnitude", "wagle"):
            for r in cfg.ratios:
                assert {f"{x}.{kind}.ratio={r:g}.forget_kl", f"{x}.{kind}.ratio={r:g}.retain_kl"} <= set(m)
        low = min(cfg.ratios)  # with a fifth of the weights, WAGLE's keep far more of the forgetting
        assert m[f"{x}.wagle.ratio={low:g}.forget_kl"] > 2 * m[f"{x}.random.ratio={low:g}.forget_kl"]
        assert m[f"{x}.random.ratio={low:g}.forget_kl"] < m[f"{x}.dense.ratio=1.forget_kl"]
