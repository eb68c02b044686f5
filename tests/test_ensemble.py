"""unlearn.ensemble: M members trained side by side follow, each, the trajectory of that member trained alone
through the same ``train`` call (float64: 1e-9 relative; float32: 1e-4), for every method, beta, learning rate,
optimizer, schedule and clipping; plus the Ensemble module's own contract (stacking, outputs, extraction)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearn.ensemble import Ensemble, MemberParams, member_kl, member_logprobs, member_losses
from unlearn.logprobs import sequence_kl, sequence_logprobs
from unlearn.models.logistic import LogisticHead
from unlearn.objectives import METHODS, MethodParams, SequenceStats, get_method, per_sequence_losses
from unlearn.train import TrainConfig, train

V, T = 5, 4


@dataclass(frozen=True)
class Out:
    logits: torch.Tensor
    note: str = "kept"


class TinyCausal(torch.nn.Module):
    """Embedding, one causal attention (scaled_dot_product_attention), a ReLU MLP and a head, with a buffer:
    the smallest model that exercises everything the Markov transformer does."""

    def __init__(self, seed: int, d: int = 4):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Parameter(torch.randn(V, d, generator=g))
        self.qkv = torch.nn.Parameter(torch.randn(3, d, d, generator=g) / d**0.5)
        self.mlp = torch.nn.Linear(d, d)
        self.head = torch.nn.Parameter(torch.randn(d, V, generator=g))
        self.register_buffer("pos", torch.randn(T, d, generator=g) * 0.1)
        with torch.no_grad():
            self.mlp.weight.copy_(torch.randn(d, d, generator=g) / d**0.5)
            self.mlp.bias.copy_(torch.randn(d, generator=g) * 0.1)

    def forward(self, ids, attention_mask=None):
        h = self.emb[ids] + self.pos[: ids.shape[-1]]
        q, k, v = (h @ w for w in self.qkv)
        h = h + F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + torch.relu(self.mlp(h))
        return Out(h @ self.head)


def batch(seed: int, n: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (n, T + 1), generator=g)
    mask = torch.ones(n, T, dtype=torch.bool)
    mask[: n // 2, : T // 2] = False  # a prompt: only the later tokens are the response
    return ids[:, :-1], ids[:, 1:], mask


FORGET, ALT, RETAIN = batch(1, 6), batch(2, 6), batch(3, 5)


def references(models):
    """Each member's starting model is its reference: logp_ref on forget and alt, logits on retain."""
    with torch.no_grad():
        out = []
        for m in models:
            (x, y, k), (xa, ya, ka), (xr, _, _) = FORGET, ALT, RETAIN
            out.append((sequence_logprobs(m(x).logits, y, k).logp, sequence_logprobs(m(xa).logits, ya, ka).logp,
                        m(xr).logits))
    return out


def alone_losses(method: str, params: MethodParams, ref):
    """The reference path: one plain model, ``unlearn.logprobs`` and ``per_sequence_losses`` directly."""
    logp_ref, alt_ref, retain_ref = ref
    m = get_method(method)

    def losses_fn(model, _):
        (x, y, k), (xa, ya, ka), (xr, yr, kr) = FORGET, ALT, RETAIN
        f = sequence_logprobs(model(x).logits, y, k)
        alt = sequence_logprobs(model(xa).logits, ya, ka).logp
        forget = SequenceStats(f.logp, f.n_tokens, logp_ref, alt, alt_ref)
        retain = None
        if m.retain is not None:
            logits = model(xr).logits
            r = sequence_logprobs(logits, yr, kr)
            retain = SequenceStats(r.logp, r.n_tokens, kl=sequence_kl(logits, retain_ref, kr))
        return per_sequence_losses(m, params, forget, retain)

    return losses_fn


def ensemble_losses(methods, params, refs):
    """The same losses for every member at once: one forward per split, ``member_losses`` per method."""
    logp_ref, alt_ref, retain_ref = (torch.stack(r) for r in zip(*refs, strict=True))
    with_retain = any(get_method(name).retain for name in methods)

    def losses_fn(model, _):
        (x, y, k), (xa, ya, ka), (xr, yr, kr) = FORGET, ALT, RETAIN
        f = member_logprobs(model(x).logits, y, k)
        alt = member_logprobs(model(xa).logits, ya, ka).logp
        forget = SequenceStats(f.logp, f.n_tokens, logp_ref, alt, alt_ref)
        retain = None
        if with_retain:
            logits = model(xr).logits
            r = member_logprobs(logits, yr, kr)
            retain = SequenceStats(r.logp, r.n_tokens, kl=member_kl(logits, retain_ref, kr))
        return member_losses(methods, params, forget, retain)

    return losses_fn


def forget_logp(model, step):
    x, y, k = FORGET
    logits = model(x).logits
    stats = member_logprobs(logits, y, k) if logits.ndim == 4 else sequence_logprobs(logits, y, k)
    return {"logp": stats.logp.sum(-1)}


def assert_members_equal_alone(methods, params, lrs, seeds, rtol, precision="float64", **cfg):
    """Train the ensemble and each member alone through ``train``; compare, member by member, the forget
    log-prob evaluated before every step and after the last, and every final parameter."""
    dtype = {"float64": torch.float64, "float32": torch.float32}[precision]
    models = [TinyCausal(seed).to(dtype) for seed in seeds]
    refs = references(models)
    ensemble = Ensemble(models)
    base = dict(steps=6, eval_every=1, precision=precision, progress=False, **cfg)
    together = train(ensemble, ensemble_losses(methods, params, refs), lambda s: [None],
                     TrainConfig(lr=1.0, **base), lr_scale=lrs, evaluate=forget_logp)
    for m, model in enumerate(models):
        alone = train(model, alone_losses(methods[m], params[m], refs[m]), lambda s: [None],
                      TrainConfig(lr=lrs[m], **base), evaluate=forget_logp)
        assert [e[m] for e in together.evals["logp"]] == pytest.approx(alone.evals["logp"], rel=rtol)
        for (name, a), b in zip(ensemble.member(m).named_parameters(), model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * b.abs().max().item(), msg=f"member {m} {name}")


METHOD_NAMES = sorted(METHODS)


def test_member_params_stack_every_method_params_field():
    """One (G, 1) column per numeric MethodParams field, in the dtype and on the device of the statistics; a
    choice (retain_norm) is the members' shared value, and members that differ in it are refused."""
    params = [MethodParams(beta=0.5, gamma=1.0, lam=2.0, mismatch=3.0, retain_norm="token"),
              MethodParams(retain_norm="token")]
    stacked = MemberParams.stack(params, torch.zeros(2, 3, dtype=torch.float64))
    for f in fields(MethodParams):
        column = getattr(stacked, f.name)
        if f.type == "str":
            assert column == "token", f.name
        else:
            assert column.dtype == torch.float64 and column.tolist() == [[getattr(p, f.name)] for p in params], f.name
    assert set(vars(stacked)) == {f.name for f in fields(MethodParams)}
    with pytest.raises(ValueError, match="must share retain_norm"):
        MemberParams.stack([MethodParams(), params[0]], torch.zeros(2, 3))


@settings(max_examples=25)
@given(members=st.integers(1, 4), data=st.data(), optimizer=st.sampled_from(["sgd", "adamw", "signsgd"]),
       clip=st.sampled_from([0.0, 0.05, 5.0]), weight_decay=st.sampled_from([0.0, 0.1]))
def test_members_equal_runs_alone_float64(members, data, optimizer, clip, weight_decay):
    """Members with their own method, beta, gamma, lam, learning rate and init, trained with warm-up + linear
    decay, decoupled weight decay and per-member clipping: each equals its run alone to 1e-9 relative."""
    methods = data.draw(st.lists(st.sampled_from(METHOD_NAMES), min_size=members, max_size=members))
    params = [MethodParams(beta=data.draw(st.floats(0.05, 5.0)), gamma=data.draw(st.floats(0.0, 2.0)),
                           lam=data.draw(st.floats(0.1, 2.0))) for _ in range(members)]
    lr_range = (1e-3, 2e-2) if optimizer in ("adamw", "signsgd") else (1e-3, 5e-2)
    lrs = data.draw(st.lists(st.floats(*lr_range), min_size=members, max_size=members))
    assert_members_equal_alone(methods, params, lrs, seeds=range(members), rtol=1e-9, optimizer=optimizer,
                               clip_norm=clip, weight_decay=weight_decay, schedule="warmup_linear", warmup_steps=2)


def test_a_sweep_mixing_methods_and_betas_float32():
    """One ensemble holding GA, NPO at three betas, SimNPO, NPO+RT, SimNPO+KL and DPO+RT (AdamW, warm-up,
    clipping), all from one pretrained model: float32 members equal their runs alone to 1e-4."""
    sweep = [("GA", 1.0), ("NPO", 0.1), ("NPO", 1.0), ("NPO", 5.0), ("SimNPO", 2.0), ("NPO+RT", 0.5),
             ("SimNPO+KL", 1.0), ("DPO+RT", 0.3)]
    methods = [name for name, _ in sweep]
    params = [MethodParams(beta=beta, gamma=0.5, lam=1.5) for _, beta in sweep]
    assert_members_equal_alone(methods, params, [1e-2] * len(sweep), seeds=[7] * len(sweep), rtol=1e-4,
                               precision="float32", optimizer="adamw", schedule="warmup_linear", warmup_steps=2,
                               clip_norm=0.5)


def test_logistic_head_members_equal_runs_alone():
    """The random-features logistic head as an ensemble member, and as K members of one LogisticHead (the
    (W, K, p) layout): per-member clipping and learning rates, each member equal to its run alone."""
    g = torch.Generator().manual_seed(0)
    p, n = 6, 20
    phi = torch.relu(torch.randn(1, n, p, generator=g, dtype=torch.float64))
    y = torch.randint(0, 2, (n, 1), generator=g)
    thetas = torch.randn(3, p, generator=g, dtype=torch.float64)
    lrs = [0.5, 0.1, 0.02]

    def losses_fn(model, _):
        logits = model(phi).logits
        logits = logits.flatten(0, 1) if logits.ndim == 5 else logits  # Ensemble of heads: (M, W*K=1, B, 1, 2)
        return {"nll": -member_logprobs(logits, y, torch.ones_like(y)).logp}

    def head(theta):
        h = LogisticHead(p, members_per_world=theta.shape[0])
        h.theta.data.copy_(theta.unsqueeze(0))
        return h

    cfg = TrainConfig(steps=8, lr=1.0, clip_norm=0.3, precision="float64", progress=False)
    heads = [head(t[None]) for t in thetas]
    ensemble = Ensemble(heads)
    train(ensemble, losses_fn, lambda s: [None], cfg, lr_scale=lrs)
    wide = head(thetas)
    train(wide, losses_fn, lambda s: [None], cfg, lr_scale=lrs, members=3)
    for m, h in enumerate(heads):
        train(h, losses_fn, lambda s: [None], TrainConfig(**{**vars(cfg), "lr": lrs[m]}))
        torch.testing.assert_close(ensemble.member(m).theta, h.theta, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(wide.theta[0, m], h.theta[0, 0], rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------- the module itself


def test_forward_stacks_member_outputs_shared_and_per_member_inputs():
    models = [TinyCausal(seed) for seed in range(3)]
    ensemble = Ensemble(models)
    x = FORGET[0]
    out = ensemble(x)
    assert isinstance(out, Out) and out.note == "kept" and out.logits.shape == (3, *x.shape, V)
    per = torch.stack([x, x.flip(0), x.roll(1, 0)])
    out_per = ensemble(per, per_member=True).logits
    for m, model in enumerate(models):
        torch.testing.assert_close(out.logits[m], model(x).logits)
        torch.testing.assert_close(out_per[m], model(per[m]).logits)
    with pytest.raises(ValueError, match="leading axis of 3 members"):
        ensemble(x, per_member=True)


def test_buffers_are_stacked_per_member_and_members_round_trip():
    models = [TinyCausal(seed) for seed in range(2)]
    ensemble = Ensemble(models)
    assert ensemble.members == 2 and ensemble.module.pos.shape == (2, T, 4)
    assert {name for name, _ in ensemble.named_parameters()} == {f"module.{n}" for n, _ in models[0].named_parameters()}
    for m, model in enumerate(models):
        plain = ensemble.member(m)
        assert type(plain) is TinyCausal
        for a, b in zip(plain.state_dict().values(), model.state_dict().values(), strict=True):
            assert torch.equal(a, b)
        fresh = TinyCausal(seed=99)
        fresh.load_state_dict(ensemble.member_state_dict(m))
        assert torch.equal(fresh(FORGET[0]).logits, model(FORGET[0]).logits)
    replicated = Ensemble.replicate(models[1], 3)
    torch.testing.assert_close(replicated(FORGET[0]).logits[2], models[1](FORGET[0]).logits)


def test_markov_transformer_is_an_ensemble_member():
    transformer = pytest.importorskip("unlearn.models.transformer")
    cfg = transformer.TransformerConfig(vocab_size=V, max_len=T, n_layer=1, d_model=8)
    models = [transformer.Transformer(cfg, torch.Generator().manual_seed(seed)) for seed in range(2)]
    x, _, mask = FORGET
    logits = Ensemble(models)(x, attention_mask=mask).logits
    for m, model in enumerate(models):
        torch.testing.assert_close(logits[m], model(x, attention_mask=mask).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model, message", [
    (torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1)), "dropout-free models only"),
    (torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)), "running statistics"),
    (torch.nn.ReLU(), "no parameters or buffers"),
])
def test_unsupported_models_are_refused(model, message):
    with pytest.raises(ValueError, match=message):
        Ensemble([model, model])


def test_mismatched_members_and_statistics_are_refused():
    with pytest.raises(ValueError, match="member 1"):
        Ensemble([torch.nn.Linear(2, 2), torch.nn.Linear(2, 3)])
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble([])
    logp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="2 members in the statistics but 1 methods"):
        member_losses(["GA"], [MethodParams()], SequenceStats(logp, logp + 1))
    with pytest.raises(ValueError, match=r"logp_ref has shape \(3,\)"):
        member_losses(["NPO", "GA"], [MethodParams()] * 2, SequenceStats(logp, logp + 1, logp_ref=torch.zeros(3)))


def test_train_reads_members_and_checks_per_member_settings():
    ensemble = Ensemble([TinyCausal(0), TinyCausal(1)])
    cfg = TrainConfig(steps=1, lr=0.1, progress=False)
    losses = ensemble_losses(["GA", "GA"], [MethodParams()] * 2, references([TinyCausal(0), TinyCausal(1)]))
    with pytest.raises(ValueError, match=r"one value per ensemble member \(members=2\), got shape \(3,\)"):
        train(ensemble, losses, lambda s: [None], cfg, lr_scale=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="'module.emb'.*no leading axes holding 3"):
        train(ensemble, losses, lambda s: [None], cfg, members=3)
    with pytest.raises(ValueError, match="must be finite and > 0"):
        train(ensemble, losses, lambda s: [None], cfg, lr_scale=[1.0, -1.0])
