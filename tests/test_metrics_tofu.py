"""unlearn.metrics.tofu: TOFU's formulas by hand, under hypothesis, and against scipy; the retain logs it reads."""

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import hmean, ks_2samp

from unlearn.metrics.tofu import (
    answer_prob,
    forget_quality,
    model_utility,
    normalised_prob,
    retain_truth_ratios,
    rouge_l_recall,
    split_metrics,
    summarise,
    truth_ratio,
    truth_ratio_score,
)

probs = st.floats(1e-6, 1.0)
ratios = st.floats(1e-3, 1e3)


# ------------------------------------------------------------------------------------------- hand values


def test_answer_prob_hand_values():
    """exp(-mean NLL): NLL 0, log 2, log 4 -> 1, 1/2, 1/4."""
    assert answer_prob([0.0, math.log(2), math.log(4)]) == pytest.approx([1.0, 0.5, 0.25], abs=1e-15)


def test_truth_ratio_hand_values():
    """(0.1 * 0.4)^(1/2) / 0.4 = 0.2 / 0.4 = 0.5; (0.2^3)^(1/3) / 0.4 = 0.5; (0.01 * 0.1 * 1)^(1/3) / 0.1 =
    0.1 / 0.1 = 1. A zero perturbed probability gives R = 0, a zero base probability R = inf (no nan)."""
    assert truth_ratio([[0.1, 0.4]], [0.4]) == pytest.approx([0.5], abs=1e-12)
    assert truth_ratio([[0.2, 0.2, 0.2], [0.01, 0.1, 1.0]], [0.4, 0.1]) == pytest.approx([0.5, 1.0], abs=1e-12)
    assert truth_ratio([[0.0, 0.3]], [0.5]).tolist() == [0.0]
    assert truth_ratio([[0.2, 0.3]], [0.0]).tolist() == [math.inf]


def test_truth_ratio_score_hand_values():
    """Forget: min(0.5, 2) = 0.5 and min(2, 0.5) = 0.5 -> 0.5. Elsewhere: max(0, 1 - 0.5) = 0.5 and
    max(0, 1 - 2) = 0 -> 0.25. R = 0 on forget gives min(0, inf) = 0, not nan."""
    assert truth_ratio_score([0.5, 2.0], forget=True) == pytest.approx(0.5, abs=1e-15)
    assert truth_ratio_score([0.5, 2.0], forget=False) == pytest.approx(0.25, abs=1e-15)
    assert truth_ratio_score([0.0, 1.0], forget=True) == pytest.approx(0.5, abs=1e-15)
    assert truth_ratio_score([0.0, 1.0], forget=False) == pytest.approx(0.5, abs=1e-15)


def test_normalised_prob_hand_values():
    """0.6 / (0.6 + 0.1 + 0.3) = 0.6; 0.2 / (0.2 + 0.2 + 0.4) = 0.25."""
    assert normalised_prob(0.6, [[0.1, 0.3]]) == pytest.approx([0.6], abs=1e-15)
    assert normalised_prob([0.6, 0.2], [[0.1, 0.3], [0.2, 0.4]]) == pytest.approx([0.6, 0.25], abs=1e-15)


def test_forget_quality_hand_value():
    """Fully separated samples of three: D = 1, and the exact two-sided p-value is the chance that a random
    split of the six ranks puts one sample entirely below the other: 2 / C(6, 3) = 0.1."""
    assert forget_quality([0.1, 0.2, 0.3], [1.0, 2.0, 3.0]) == pytest.approx(0.1, abs=1e-12)
    assert forget_quality([0.5, 0.7, 2.0, 3.0], [0.5, 0.7, 2.0, 3.0]) == 1.0


def test_model_utility_hand_values():
    """hmean(1, 1/2, 1/4) = 3 / (1 + 2 + 4) = 3/7; any zero gives 0; negative or no values are refused."""
    assert model_utility([1.0, 0.5, 0.25]) == pytest.approx(3 / 7, abs=1e-15)
    assert model_utility([0.9, 0.0, 0.5]) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        model_utility([0.5, -0.1, 0.3])
    with pytest.raises(ValueError, match="non-negative"):
        model_utility([])


def test_rouge_l_recall_hand_values():
    """rouge-score lower-cases and drops punctuation: "The author was born in Lisbon." is (the, author, was,
    born, in, lisbon), and "born in Lisbon" shares an LCS of 3 of its 6 tokens: 0.5. With the Porter stemmer
    "writes" and "writing" both become "write": "She writes novels" against "she is writing novels" has LCS
    (she, write, novel) = 3 of 4 = 0.75 (0.5 without stemming, only she and novels). A verbatim answer gives 1,
    an unrelated one 0."""
    got = rouge_l_recall(["born in Lisbon", "She writes novels", "The author was born in Lisbon", "nothing"],
                         ["The author was born in Lisbon.", "she is writing novels", "The author was born in Lisbon.",
                          "The author was born in Lisbon."])
    assert got == pytest.approx([0.5, 0.75, 1.0, 0.0], abs=1e-15)
    with pytest.raises(ValueError):
        rouge_l_recall(["one"], ["one", "two"])


def test_split_metrics_hand_values():
    """Forget: prob mean(0.2, 0.4) = 0.3, ROUGE mean(1, 0) = 0.5, truth ratio mean min(R, 1/R) of (0.5, 4) =
    mean(0.5, 0.25) = 0.375. Retain: the plain mean of prob (0.3), truth ratio mean max(0, 1 - R) = mean(0.5, 0)
    = 0.25. Real authors: each answer's share among its options, ragged perturbed lists padded with zeros:
    0.6 / (0.6 + 0.1 + 0.3) = 0.6 and 0.2 / (0.2 + 0.2) = 0.5 -> 0.55."""
    forget = {"prob": [0.2, 0.4], "perturbed_probs": [[0.1], [0.9]], "truth_ratio": [0.5, 4.0],
              "rouge_l_recall": [1.0, 0.0]}
    assert split_metrics("forget", forget) == pytest.approx(
        {"prob": 0.3, "rouge_l_recall": 0.5, "truth_ratio": 0.375}, abs=1e-15)
    assert split_metrics("retain", forget) == pytest.approx(
        {"prob": 0.3, "rouge_l_recall": 0.5, "truth_ratio": 0.25}, abs=1e-15)
    real = {"prob": [0.6, 0.2], "perturbed_probs": [[0.1, 0.3], [0.2]], "truth_ratio": [0.5, 2.0],
            "rouge_l_recall": [0.25, 0.75]}
    assert split_metrics("real_authors", real) == pytest.approx(
        {"prob": 0.55, "rouge_l_recall": 0.5, "truth_ratio": 0.25}, abs=1e-15)


# ------------------------------------------------------------------------------------------- properties


@given(st.lists(probs, min_size=1, max_size=5), st.floats(0.5, 1.0), st.floats(0.5, 1.0))
def test_truth_ratio_falls_to_zero_as_the_base_takes_all_the_mass(perturbed, base_lo, t):
    """Perturbed probabilities fixed and small (each <= eps), base -> 1: R <= eps / base and R decreases as the
    base grows; at eps -> 0 and base = 1 R -> 0 (a model that puts all its mass on the paraphrase)."""
    eps = 1e-4
    small = [eps * p for p in perturbed]
    base_hi = base_lo + t * (1.0 - base_lo)
    lo, hi = truth_ratio([small], [base_lo])[0], truth_ratio([small], [base_hi])[0]
    assert hi <= lo * (1 + 1e-12)
    if base_hi > base_lo * (1 + 1e-9):
        assert hi < lo
    assert hi <= eps / base_hi * (1 + 1e-12)
    assert truth_ratio([[1e-300] * len(small)], [1.0])[0] <= 1e-299


@given(probs, probs)
def test_swapping_the_base_with_the_one_perturbed_answer_inverts_the_truth_ratio(p, b):
    """One perturbed answer: R = p / b, and with the roles swapped b / p = 1 / R."""
    r, swapped = truth_ratio([[p]], [b])[0], truth_ratio([[b]], [p])[0]
    assert r == pytest.approx(p / b, rel=1e-12)
    assert swapped * r == pytest.approx(1.0, rel=1e-12)


@given(st.lists(probs, min_size=1, max_size=6), probs, st.floats(1e-3, 1.0))
def test_truth_ratio_is_invariant_to_scaling_a_questions_probabilities(perturbed, base, c):
    """(prod_j c p_j)^(1/n) / (c b) = c (prod_j p_j)^(1/n) / (c b) = R: scaling base and perturbed together
    leaves R alone (scaling one side alone would multiply R by c or 1/c)."""
    r = truth_ratio([perturbed], [base])[0]
    scaled = truth_ratio([[c * p for p in perturbed]], [c * base])[0]
    assert scaled == pytest.approx(r, rel=1e-9)
    gm = math.exp(sum(math.log(p) for p in perturbed) / len(perturbed))
    assert r == pytest.approx(gm / base, rel=1e-9)


@given(st.lists(st.one_of(st.just(1.0), ratios), min_size=1, max_size=20))
def test_forget_truth_ratio_score_lies_in_the_unit_interval_and_is_one_only_at_r_one(rs):
    """mean min(R, 1/R) lies in [0, 1], equals 1 when every R = 1, and falls below 1 as soon as one R is more than
    1e-9 from 1 (far above the mean's rounding; an R within one ulp of 1 may round back to a mean of exactly 1)."""
    score = truth_ratio_score(rs, forget=True)
    assert 0.0 <= score <= 1.0
    expected = sum(min(r, 1 / r) for r in rs) / len(rs)
    assert score == pytest.approx(expected, rel=1e-12)
    if all(r == 1.0 for r in rs):
        assert score == 1.0
    elif any(abs(r - 1.0) > 1e-9 for r in rs):
        assert score < 1.0


integer_ratios = st.lists(st.integers(1, 40).map(lambda i: i / 8), min_size=1, max_size=25)


@pytest.mark.filterwarnings("ignore:ks_2samp.*Exact calculation unsuccessful:RuntimeWarning")
@given(integer_ratios, integer_ratios)
def test_forget_quality_is_the_ks_p_value_and_ignores_the_direction_of_both_samples(a, b):
    """forget_quality is scipy's KS p-value; R -> 1/R in both samples reverses every rank (1/x is strictly
    decreasing, and on these values exact enough to keep every tie and every order), so D and the p-value stay."""
    fq = forget_quality(a, b)
    assert fq == pytest.approx(ks_2samp(a, b).pvalue, rel=1e-12, abs=1e-12)
    assert 0.0 <= fq <= 1.0
    assert forget_quality([1 / r for r in a], [1 / r for r in b]) == pytest.approx(fq, rel=1e-9, abs=1e-12)
    assert forget_quality(a, a) == 1.0


def test_forget_quality_changes_when_only_one_sample_is_inverted():
    """R = 0.5 three times against the retain model's 2.0 three times: fully separated (p = 2 / C(6, 3) = 0.1);
    inverting only the evaluated model's values makes the two samples identical (p = 1)."""
    a, b = [0.5, 0.5, 0.5], [2.0, 2.0, 2.0]
    assert forget_quality(a, b) == pytest.approx(0.1, abs=1e-12)
    assert forget_quality([1 / r for r in a], b) == 1.0


@given(st.lists(st.floats(1e-6, 1e6), min_size=1, max_size=12))
def test_model_utility_is_scipys_harmonic_mean(values):
    """Equal to scipy.stats.hmean and to n / sum(1/x) computed here."""
    assert model_utility(values) == pytest.approx(hmean(values), rel=1e-12)
    assert model_utility(values) == pytest.approx(len(values) / sum(1 / v for v in values), rel=1e-12)


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=9), st.integers(0, 8))
def test_model_utility_with_a_zero_is_zero(values, where):
    values = list(values)
    values[where % len(values)] = 0.0
    assert model_utility(values) == 0.0


# ------------------------------------------------------------------------------------------- summarise


def _per_question():
    """Four splits, two questions each, with the nine utility numbers worked out by hand below."""
    return {
        "forget": {"prob": [0.2, 0.4], "perturbed_probs": [[0.1, 0.2], [0.3, 0.1]], "truth_ratio": [0.5, 4.0],
                   "rouge_l_recall": [1.0, 0.0]},
        "retain": {"prob": [0.8, 0.6], "perturbed_probs": [[0.1, 0.1], [0.1, 0.2]], "truth_ratio": [0.25, 0.75],
                   "rouge_l_recall": [0.5, 1.0]},
        "real_authors": {"prob": [0.6, 0.2], "perturbed_probs": [[0.1, 0.3], [0.2]], "truth_ratio": [0.5, 2.0],
                         "rouge_l_recall": [0.25, 0.75]},
        "world_facts": {"prob": [0.5, 0.9], "perturbed_probs": [[0.5], [0.05, 0.05]], "truth_ratio": [0.2, 0.4],
                        "rouge_l_recall": [1.0, 1.0]},
    }


def test_summarise_four_splits_by_hand():
    """retain: prob (0.8 + 0.6)/2 = 0.7, ROUGE 0.75, truth ratio mean(0.75, 0.25) = 0.5;
    real authors: prob mean(0.6/1.0, 0.2/0.4) = 0.55, ROUGE 0.5, truth ratio mean(0.5, 0) = 0.25;
    world facts: prob mean(0.5/1.0, 0.9/1.0) = 0.7, ROUGE 1.0, truth ratio mean(0.8, 0.6) = 0.7;
    model utility = 9 / sum of the reciprocals; forget: prob 0.3, ROUGE 0.5, truth ratio mean(0.5, 0.25) = 0.375.
    No retain ratios -> no forget_quality key (never None); with them, the KS p-value of the forget ratios."""
    nine = [0.7, 0.75, 0.5, 0.55, 0.5, 0.25, 0.7, 1.0, 0.7]
    expected = {"forget.prob": 0.3, "forget.rouge_l_recall": 0.5, "forget.truth_ratio": 0.375,
                "retain.prob": 0.7, "retain.rouge_l_recall": 0.75, "retain.truth_ratio": 0.5,
                "real_authors.prob": 0.55, "real_authors.rouge_l_recall": 0.5, "real_authors.truth_ratio": 0.25,
                "world_facts.prob": 0.7, "world_facts.rouge_l_recall": 1.0, "world_facts.truth_ratio": 0.7,
                "model_utility": 9 / sum(1 / v for v in nine)}
    got = summarise(_per_question())
    assert set(got) == set(expected)
    assert got == pytest.approx(expected, abs=1e-12)
    assert all(isinstance(v, float) for v in got.values())

    # forget (0.5, 4) against (2, 3, 5): D = 1/2; against the inverted (1/2, 1/3, 1/5) D would be 2/3
    with_fq = summarise(_per_question(), retain_ratios=[2.0, 3.0, 5.0])
    assert set(with_fq) == set(expected) | {"forget_quality"}
    assert with_fq["forget_quality"] == pytest.approx(ks_2samp([0.5, 4.0], [2.0, 3.0, 5.0]).pvalue, abs=1e-12)
    assert ks_2samp([0.5, 4.0], [2.0, 3.0, 5.0]).statistic == pytest.approx(0.5, abs=1e-12)
    assert with_fq["forget_quality"] != pytest.approx(ks_2samp([0.5, 4.0], [0.5, 1 / 3, 0.2]).pvalue, abs=1e-6)
    assert all(v is not None and isinstance(v, float) for v in with_fq.values())


def test_summarise_without_every_utility_split_has_no_model_utility():
    pq = _per_question()
    del pq["world_facts"]
    got = summarise(pq)
    assert set(got) == {f"{s}.{k}" for s in ("forget", "retain", "real_authors")
                        for k in ("prob", "rouge_l_recall", "truth_ratio")}
    assert None not in got.values()


def test_summarise_model_utility_is_zero_when_one_number_is():
    """ROUGE 0 on every world-facts question puts a 0 among the nine numbers: utility 0."""
    pq = _per_question()
    pq["world_facts"]["rouge_l_recall"] = [0.0, 0.0]
    assert summarise(pq)["model_utility"] == 0.0


# ------------------------------------------------------------------------------------------- retain logs


def _write(tmp_path, doc, name="log.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_retain_truth_ratios_reads_an_eval_json(tmp_path):
    qs = ["Who?", "Where?", "When?"]
    path = _write(tmp_path, {"config": {"split": "forget10"},
                             "per_question": {"forget": {"question": qs, "truth_ratio": [0.5, 1.5, 0.25]}}})
    got = retain_truth_ratios(path, "forget10", qs)
    assert got.dtype == np.float64
    assert got.tolist() == [0.5, 1.5, 0.25]


def test_retain_truth_ratios_refuses_another_split_or_other_questions(tmp_path):
    qs = ["Who?", "Where?"]
    path = _write(tmp_path, {"config": {"split": "forget05"},
                             "per_question": {"forget": {"question": qs, "truth_ratio": [0.5, 1.5]}}})
    with pytest.raises(ValueError, match="forget05") as err:
        retain_truth_ratios(path, "forget10", qs)
    assert "forget10" in str(err.value)
    with pytest.raises(ValueError, match="questions differ"):
        retain_truth_ratios(path, "forget05", ["Who?", "Why?"])
    with pytest.raises(ValueError, match="questions differ"):
        retain_truth_ratios(path, "forget05", qs + ["When?"])


def test_retain_truth_ratios_reads_open_unlearning_in_numeric_index_order(tmp_path):
    """Indices 0..11 written in string order ("0", "1", "10", "11", "2", ...): the scores come back in numeric
    order, score i = i / 10 + 0.05, so "10" lands after "9", not after "1"."""
    keys = sorted(str(i) for i in range(12))
    assert keys[:4] == ["0", "1", "10", "11"]
    by_index = {k: {"score": int(k) / 10 + 0.05} for k in keys}
    path = _write(tmp_path, {"forget_truth_ratio": {"agg_value": 0.6, "value_by_index": by_index}})
    got = retain_truth_ratios(path, "forget10", [f"q{i}" for i in range(12)])
    assert got == pytest.approx([i / 10 + 0.05 for i in range(12)], abs=1e-15)
    with pytest.raises(ValueError, match="12 forget truth ratios") as err:
        retain_truth_ratios(path, "forget10", [f"q{i}" for i in range(11)])
    assert "11 questions" in str(err.value)


def test_retain_truth_ratios_refuses_unknown_json_and_missing_files(tmp_path):
    for doc in ({"forget_Q_A_Prob": {"agg_value": 0.1}}, [0.5, 1.0], {"forget_truth_ratio": {"agg_value": 0.5}}):
        with pytest.raises(ValueError, match="neither an eval.json") as err:
            retain_truth_ratios(_write(tmp_path, doc), "forget10", ["q"])
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="no such file") as err:
        retain_truth_ratios(tmp_path / "absent.json", "forget10", ["q"])
    assert "\n" not in str(err.value)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable JSON file") as err:
        retain_truth_ratios(bad, "forget10", ["q"])
    assert "\n" not in str(err.value)
