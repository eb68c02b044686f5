"""unlearn.metrics.collapse and unlearn.io.failed_record: the collapse rule on hand values, the output entropy of
models whose answer is known (zero logits: log V; all mass on one token: 0), the monitor ending a real run at its
first collapsed evaluation with the weights of the one before kept, GA at lr 1e6 on the tiny Hugging Face model
named uniform after one step (finite loss, so the loop itself sees nothing), and the failed-run record. Then the
collapse experiment's rate claims on its fast preset, decided by intervals over seeds, and their refutation."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from sims.experiments import collapse as experiment
from unlearn import data as D
from unlearn.ensemble import Ensemble
from unlearn.io import failed_record, to_jsonable, write_failed
from unlearn.logprobs import sequence_logprobs
from unlearn.metrics.collapse import (
    CODES,
    CollapseMonitor,
    Tolerance,
    collapse_kind,
    collapsed_at_step,
    describe_collapse,
    nll_and_entropy,
    output_entropy,
    vocab_size_of,
)
from unlearn.models.transformer import CausalLMOutput, Transformer, TransformerConfig
from unlearn.train import History, NonFiniteLossError, StopRun, TrainConfig, shuffled_batches, train

V = 10


class TableLM(nn.Module):
    """logits[b, t] = table[input_ids[b, t]]: a bigram model with the project's .logits contract."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table.clone())

    def forward(self, input_ids, attention_mask=None):
        return CausalLMOutput(self.table[input_ids])


def rule_data(n: int, seed: int, vocab: int = V) -> D.TokenSet:
    """Sequences following next = (id + 1) mod (vocab - 1) (token vocab - 1 never appears): a 2-token prompt
    and a response of 2 to 5 tokens, so rows have different widths and padding."""
    g = torch.Generator().manual_seed(seed)
    sequences = []
    for _ in range(n):
        start, length = int(torch.randint(vocab - 1, (1,), generator=g)), int(torch.randint(2, 6, (1,), generator=g))
        ids = [(start + k) % (vocab - 1) for k in range(2 + length)]
        sequences.append((ids[:2], ids[2:]))
    return D.TokenSet.from_ids(sequences, pad_id=vocab - 1)


def rule_table(vocab: int = V, confidence: float = 4.0) -> torch.Tensor:
    table = torch.zeros(vocab, vocab)
    for i in range(vocab):
        table[i, (i + 1) % (vocab - 1)] = confidence
    return table


# ------------------------------------------------------------------------------------------- the rule


def test_collapse_kind_on_hand_values():
    log_v = math.log(100)  # 4.605: uniform entropy from 0.98 log V = 4.513, retain NLL from log V - 0.05 = 4.555
    assert collapse_kind(1.0, 2.0, 100) is None
    assert collapse_kind(None, 4.60, 100) == "uniform"
    assert collapse_kind(None, 4.50, 100) is None
    assert collapse_kind(4.56, 2.0, 100) == "uniform"  # retain data predicted no better than uniform
    assert collapse_kind(4.55, 2.0, 100) is None
    assert collapse_kind(log_v, log_v, 100) == "uniform"
    assert collapse_kind(30.0, 0.06, 100) == "uniform"  # confidently wrong, but not one token
    assert collapse_kind(30.0, 0.01, 100) == "degenerate"
    assert collapse_kind(None, 0.05, 100) == "degenerate"
    assert collapse_kind(0.01, 0.01, 100) is None  # memorised: confident and right
    assert collapse_kind(float("nan"), None, 100) is None and collapse_kind(None, None, 100) is None
    assert collapse_kind(float("inf"), 2.0, 100) is None  # non-finite counts as not measured
    loose = Tolerance(entropy_rtol=0.5, nll_atol=1.0, degenerate_entropy=0.5)
    assert collapse_kind(3.7, 2.4, 100, loose) == "uniform" and collapse_kind(None, 0.4, 100, loose) == "degenerate"
    with pytest.raises(ValueError, match="vocab_size"):
        collapse_kind(1.0, 1.0, 1)
    with pytest.raises(ValueError, match="entropy_rtol"):
        Tolerance(entropy_rtol=0.0)


def test_collapsed_at_step():
    assert collapsed_at_step([0, 5, 10], [None, None, None]) is None
    assert collapsed_at_step([], []) is None
    assert collapsed_at_step([0, 5, 10], [None, "uniform", "degenerate"]) == 5
    assert collapsed_at_step([0, 5, 10], [None, None, "degenerate"]) == 10
    assert collapsed_at_step([0, 5], ["uniform", None]) == 0
    with pytest.raises(ValueError, match="2 steps but 1 kinds"):
        collapsed_at_step([0, 5], [None])


# ---------------------------------------------------------------------------------------- measuring


def test_output_entropy_of_a_uniform_and_of_a_one_token_model():
    data = rule_data(7, seed=0)
    uniform = nll_and_entropy(TableLM(torch.zeros(V, V)), data, batch_size=3)
    assert uniform["entropy"] == pytest.approx(math.log(V), abs=1e-6)
    assert uniform["nll"] == pytest.approx(math.log(V), abs=1e-6)  # NLL = log V on any data
    table = torch.zeros(V, V)
    table[:, V - 1] = 50.0  # all mass on a token the data never holds
    one = nll_and_entropy(TableLM(table), data)
    assert one["entropy"] < 1e-6 and one["nll"] > 45
    assert output_entropy(TableLM(table), data) == one["entropy"]
    assert collapse_kind(one["nll"], one["entropy"], V) == "degenerate"
    assert collapse_kind(uniform["nll"], uniform["entropy"], V) == "uniform"


def test_output_entropy_is_the_mean_over_response_tokens_and_limit_takes_the_first_sequences():
    model = TableLM(torch.randn(V, V, generator=torch.Generator().manual_seed(1)) * 2)
    data = rule_data(9, seed=2)
    with torch.no_grad():
        logq = model(data.input_ids).logits.log_softmax(-1)
    h = -(logq.exp() * logq).sum(-1)  # (n, T)
    for limit in (None, 4):
        rows = slice(0, limit)
        mask = data.mask[rows]
        got = nll_and_entropy(model, data, limit=limit, batch_size=2)
        assert got["entropy"] == pytest.approx(float(h[rows][mask].mean()), rel=1e-5)
        nll = -sequence_logprobs(logq[rows], data.labels[rows], mask).logp.sum() / mask.sum()
        assert got["nll"] == pytest.approx(float(nll), rel=1e-5)
    with pytest.raises(ValueError, match="limit"):
        output_entropy(model, data, limit=0)


def test_an_ensemble_gives_one_entropy_per_member():
    tables = [torch.zeros(V, V), rule_table()]
    ensemble = Ensemble([TableLM(t) for t in tables])
    data = rule_data(5, seed=3)
    got = nll_and_entropy(ensemble, data, batch_size=4)
    alone = [nll_and_entropy(TableLM(t), data) for t in tables]
    assert got["entropy"] == pytest.approx([a["entropy"] for a in alone], abs=1e-6)
    assert got["nll"] == pytest.approx([a["nll"] for a in alone], abs=1e-6)


# --------------------------------------------------------------------------------------- monitoring


def ga_losses(data):
    """Gradient ascent on the NLL per token: minimise the mean log-likelihood of the forget batch."""
    def losses_fn(model, index):
        batch = data.take(index)
        stats = sequence_logprobs(model(batch.input_ids).logits, batch.labels, batch.mask)
        return {"ga": stats.logp / stats.n_tokens}
    return losses_fn


def weights_recorder(weights):
    def evaluate(model, step):
        weights[step] = model.table.detach().clone()
        return {"forget_logp": 0.0}
    return evaluate


def test_the_stopper_ends_a_run_at_its_first_collapse_and_keeps_the_weights_before_it():
    """GA pushes the known rule's logits down until the bigram model puts its mass elsewhere: a few healthy
    evaluations, then a collapsed one, where the run ends with the previous evaluation's weights kept."""
    forget, retain = rule_data(8, seed=4), rule_data(16, seed=5)
    model = TableLM(rule_table())
    weights = {}
    monitor = CollapseMonitor(weights_recorder(weights), V, stop=True, data=retain)
    cfg = TrainConfig(steps=20, lr=10.0, eval_every=1, progress=False)
    history = train(model, ga_losses(forget), lambda step: [torch.arange(len(forget))], cfg, evaluate=monitor)
    at = monitor.collapsed_at_step
    assert at is not None and at >= 2  # healthy first, collapsed before the steps run out
    assert history.eval_steps == list(range(at + 1)) and len(history.loss) == at  # ended at that evaluation
    assert monitor.kinds[:-1] == [None] * at and monitor.kind in ("uniform", "degenerate")
    assert history.evals["collapse"] == [0] * at + [CODES[monitor.kind]]
    assert {"forget_logp", "retain_nll", "entropy"} <= set(history.evals)
    assert collapse_kind(history.evals["retain_nll"][-1], history.evals["entropy"][-1], V) == monitor.kind
    assert monitor.stopped_at == at and monitor.last_healthy_step == at - 1
    assert torch.equal(monitor.last_healthy_state["table"], weights[at - 1])
    assert torch.equal(model.table.detach(), weights[at])  # train leaves the model as it was evaluated
    assert monitor.restore(model) and torch.equal(model.table.detach(), weights[at - 1])
    summary = monitor.summary()
    assert summary["collapsed_at_step"] == at and summary["kept_step"] == at - 1
    assert summary["collapse_kinds"][-1] == monitor.kind and summary["stopped_on_collapse"] == at
    line = monitor.describe()
    assert f"{monitor.kind} at step {at}" in line and f"kept the model of step {at - 1}" in line
    assert describe_collapse(json.loads(json.dumps(to_jsonable(summary)))) == line  # from the run's JSON too
    assert summary["collapse_values"] == pytest.approx({"retain_nll": history.evals["retain_nll"][-1],
                                                        "entropy": history.evals["entropy"][-1]}, rel=1e-6)


def test_without_stop_the_run_goes_on_and_records_when_it_collapsed():
    forget, retain = rule_data(8, seed=4), rule_data(16, seed=5)
    model = TableLM(rule_table())
    monitor = CollapseMonitor(None, V, stop=False, data=retain)
    cfg = TrainConfig(steps=20, lr=10.0, eval_every=5, progress=False)
    history = train(model, ga_losses(forget), lambda step: [torch.arange(len(forget))], cfg, evaluate=monitor)
    assert len(history.loss) == 20 and history.eval_steps[-1] == 20
    at = monitor.collapsed_at_step
    assert at is not None and at in history.eval_steps and monitor.stopped_at is None
    assert monitor.last_healthy_state is None  # kept only when stopping (or asked)
    codes = history.evals["collapse"]
    assert codes.index(next(c for c in codes if c)) == history.eval_steps.index(at)
    assert monitor.summary()["kept_step"] is None


def test_a_model_collapsed_from_the_start_is_reported_not_stopped():
    data = rule_data(4, seed=6)
    monitor = CollapseMonitor(None, V, stop=True, data=data)
    model = TableLM(torch.zeros(V, V))
    for step in (0, 0, 1):  # a "before" evaluation repeated at step 0 by train replaces the first
        values = monitor(model, step)
    assert values["collapse"] == CODES["uniform"] and monitor.steps == [0, 1]
    assert monitor.started_collapsed and monitor.collapsed_at_step == 0 and monitor.last_healthy_state is None
    assert "already there before the first update" in monitor.describe()
    never = CollapseMonitor(None, V, data=data)
    never(TableLM(rule_table()), 0)
    assert never.collapsed_at_step is None and never.describe().startswith("collapse: none")


def test_a_stop_of_the_wrapped_evaluation_passes_through_annotated():
    data = rule_data(4, seed=6)

    def evaluate(model, step):
        raise StopRun({"target": 1.0})

    monitor = CollapseMonitor(evaluate, V, data=data)
    with pytest.raises(StopRun) as stop:
        monitor(TableLM(rule_table()), 3)
    assert stop.value.values["target"] == 1.0 and stop.value.values["collapse"] == 0
    assert "entropy" in stop.value.values and monitor.steps == [3]


def test_the_monitor_needs_something_to_measure():
    with pytest.raises(ValueError, match="needs an evaluate"):
        CollapseMonitor(None, V)
    monitor = CollapseMonitor(lambda m, s: {"loss": 1.0}, V)
    with pytest.raises(ValueError, match="neither 'retain_nll' nor 'entropy'"):
        monitor(TableLM(rule_table()), 0)


# ------------------------------------------------------------------------------ Hugging Face, lr 1e6


def test_ga_at_lr_1e6_on_the_tiny_hugging_face_model_is_named_uniform():
    """Memorise a little (so the model is healthy), then GA with AdamW at lr 1e6: the weights jump to ~1e6,
    the loss stays finite (the loop sees nothing), and the model is uniform: named at step 1, the run ended there,
    and the memorised weights are what ``restore`` puts back."""
    from unlearn.losses import token_mean_nll, unlearning_losses
    from unlearn.models import hf
    from unlearn.objectives import MethodParams
    from unlearn.reference import make_reference

    forget_ex, retain_ex = D.facts_task(10, "forget10", 0)
    retain_ex = retain_ex[:40]
    tokenizer = D.word_tokenizer([f"{e.prompt} {e.response}" for e in forget_ex + retain_ex] + [D.PLAIN_TEMPLATE])
    forget, retain = (D.tokenize_examples(ex, tokenizer, 64, "plain") for ex in (forget_ex, retain_ex))
    vocab = len(tokenizer)
    model = hf.load_model(hf.ModelSpec("tiny", vocab_size=vocab))
    both = D.TokenSet.concat([forget, retain])
    batches, _ = shuffled_batches(len(both), 16, 0, "memorise")
    train(model, token_mean_nll(both), batches, TrainConfig(steps=100, lr=1e-2, optimizer="adamw", progress=False))
    memorised = {k: v.detach().clone() for k, v in model.named_parameters()}

    reference = make_reference("cached", model, forget, retain)
    losses = unlearning_losses("GA", MethodParams(), forget, retain, reference)
    f_batches, _ = shuffled_batches(len(forget), 4, 0, "f")
    r_batches, _ = shuffled_batches(len(retain), 4, 0, "r")

    def evaluate(m, step):
        return {"forget_nll": nll_and_entropy(m, forget)["nll"]}

    monitor = CollapseMonitor(evaluate, vocab, stop=True, data=retain)
    cfg = TrainConfig(steps=5, lr=1e6, optimizer="adamw", eval_every=1, progress=False)
    history = train(model, losses, lambda s: [(f_batches(s)[0], r_batches(s)[0], None)], cfg, evaluate=monitor)
    assert monitor.kinds == [None, "uniform"] and monitor.collapsed_at_step == 1 and monitor.stopped_at == 1
    assert history.eval_steps == [0, 1] and all(math.isfinite(x) for x in history.loss)
    assert history.evals["entropy"][0] < 0.5 * math.log(vocab)  # healthy: memorised
    assert history.evals["entropy"][1] == pytest.approx(math.log(vocab), abs=1e-3)
    assert history.evals["retain_nll"][1] == pytest.approx(math.log(vocab), abs=1e-3)
    assert max(float(p.detach().abs().max()) for p in model.parameters()) > 1e5  # diverged, yet finite
    assert monitor.restore(model)
    assert all(torch.equal(p.detach(), memorised[k]) for k, p in model.named_parameters())
    assert "uniform at step 1" in monitor.describe()
    assert vocab_size_of(model) == vocab and vocab_size_of(Transformer(TransformerConfig(vocab_size=12))) == 12


# ------------------------------------------------------------------------------------------ records


def test_the_failed_record_keeps_the_history_config_and_error(tmp_path):
    history = History(loss=[1.0, float("inf")], terms={"GA/forget": [1.0, float("nan")]}, eval_steps=[0],
                      evals={"retain_nll": [2.0]})
    error = NonFiniteLossError(2, "unlearn GA", ["GA/forget"], history)
    record = failed_record({"lr": 1e6, "method": "GA"}, error, name="run", preset="fast")
    path = write_failed(tmp_path / "new" / "folder", "run", record)
    assert path == tmp_path / "new" / "folder" / "run.failed.json"
    kept = json.loads(path.read_text())
    assert kept["name"] == "run" and kept["preset"] == "fast" and kept["config"] == {"lr": 1e6, "method": "GA"}
    assert kept["step"] == 2 and kept["run"] == "unlearn GA" and kept["terms"] == ["GA/forget"]
    assert kept["error_type"] == "NonFiniteLossError" and "non-finite loss at step 2" in kept["error"]
    assert kept["history"]["loss"] == [1.0, None] and kept["history"]["evals"] == {"retain_nll": [2.0]}
    other = failed_record({}, ValueError("bad"), history={"loss": [1.0]})
    assert other["step"] is None and other["terms"] is None and other["history"] == {"loss": [1.0]}
    assert failed_record({}, ValueError("bad"))["history"] is None


# ------------------------------------------------------------------ the collapse experiment: rate claims over seeds


@pytest.fixture(scope="module")
def collapse_doc(fast_figure):
    return fast_figure("collapse")


def _intervals_on(doc, curves_of: dict[str, str]) -> dict:
    """The metrics with each method's rate intervals measured on another method's seed curves
    (curves_of[method] = the method whose forget-NLL curves it gets)."""
    cfg, methods, metrics = doc["config"], doc["series"]["methods"], dict(doc["metrics"])
    for method, source in curves_of.items():
        m = methods[source]
        found = experiment.seed_intervals(m["steps"], np.asarray(m["seeds"]["forget_nll"], float), cfg["fit_from"],
                                          cfg["steps"], seed=0)
        metrics.update({f"{method.lower()}.forget_nll_{k}": v for k, v in found.items()})
    return metrics


def test_the_collapse_rate_claims_hold_by_their_intervals_over_seeds(collapse_doc):
    """Over >= 5 batch orders per method: GA's forget-NLL late/early slope ratio has a 95% interval above 1
    (accelerating), NPO's and SimNPO's below 1 (slowing down); every rate statistic lies inside its own interval,
    and the local growth exponents come with intervals in every window."""
    m = collapse_doc["metrics"]
    assert collapse_doc["config"]["seeds"] >= 5
    checks = experiment.claim_checks(m)
    assert all(checks.values()), checks
    windows = experiment.growth_windows(collapse_doc["config"]["fit_from"], collapse_doc["config"]["steps"])
    for x in ("ga", "npo", "simnpo"):
        names = ["acceleration", "growth_exponent", "late_slope"] + [f"growth_exponent.t{a}-{b}" for a, b in windows]
        for key in (f"{x}.forget_nll_{name}" for name in names):
            assert m[f"{key}.ci_low"] <= m[key] <= m[f"{key}.ci_high"], key
    assert len(collapse_doc["series"]["methods"]["GA"]["seeds"]["forget_nll"]) == collapse_doc["config"]["seeds"]


def test_the_collapse_claims_fail_on_curves_that_contradict_them(collapse_doc):
    """The same checks on swapped curves: GA's claim measured on NPO's seeds fails, NPO's and SimNPO's measured on
    GA's fail; swapping a method with itself changes nothing."""
    swapped = experiment.claim_checks(_intervals_on(collapse_doc, {"GA": "NPO", "NPO": "GA", "SimNPO": "GA"}))
    assert not any(swapped.values()), swapped
    same = _intervals_on(collapse_doc, {"GA": "GA"})
    assert same["ga.forget_nll_acceleration.ci_low"] == collapse_doc["metrics"]["ga.forget_nll_acceleration.ci_low"]
