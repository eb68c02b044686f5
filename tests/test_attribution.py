"""unlearn.attribution: WAGLE, magnitude and random scores, exact top-fraction masks, mask files, and masked
training that leaves every masked-out weight bitwise unchanged."""

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearn import attribution as at
from unlearn.logprobs import sequence_logprobs
from unlearn.models.transformer import Transformer, TransformerConfig
from unlearn.train import TrainConfig, train

CFG = TransformerConfig(vocab_size=6, max_len=5, n_layer=1, d_model=8)


def tiny(seed=0):
    return Transformer(CFG, torch.Generator().manual_seed(seed)).double()


def batches(seed, n=3, b=4):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 6, (b, 6), generator=g)
        out.append((ids[:, :-1], ids[:, 1:]))
    return out


def nll(model, batch):
    x, y = batch
    return -sequence_logprobs(model(x).logits, y, torch.ones_like(y, dtype=torch.bool)).logp.sum()


def test_summed_gradients_and_wagle_scores_equal_a_direct_computation():
    model = tiny()
    forget, retain = batches(1), batches(2)
    g_f, g_r = at.summed_gradients(model, nll, forget), at.summed_gradients(model, nll, retain)
    params = dict(model.named_parameters())
    direct_f = torch.autograd.grad(sum(nll(model, b) for b in forget), list(params.values()))
    direct_r = torch.autograd.grad(sum(nll(model, b) for b in retain), list(params.values()))
    mu = 1e-2
    expected = {name: ((p.detach() - gr / mu) * gf).abs() for (name, p), gf, gr in
                zip(params.items(), direct_f, direct_r, strict=True)}
    for (name, _), gf in zip(params.items(), direct_f, strict=True):
        torch.testing.assert_close(g_f[name], gf.float())
        assert g_f[name].dtype == torch.float32
    assert all(p.grad is None for p in model.parameters())  # the model's own gradients are left alone
    scores = at.wagle_scores(model, g_f, g_r, mu)
    for name, value in expected.items():
        torch.testing.assert_close(scores[name], value.float(), rtol=1e-5, atol=1e-6)
    assert set(at.magnitude_scores(model)) == set(params)
    torch.testing.assert_close(at.magnitude_scores(model)["head.weight"], model.head.weight.detach().abs().float())


@settings(max_examples=40)
@given(values=st.lists(st.integers(0, 5), min_size=1, max_size=60), split=st.integers(0, 60),
       ratio=st.floats(0.01, 1.0), sample_size=st.sampled_from([3, 17, 1 << 20]))
def test_masks_keep_exactly_the_requested_fraction_ties_by_position(values, split, ratio, sample_size):
    """Integer scores tie a lot; small samples make the bracket miss and widen. Exactly round(ratio * N) weights
    are kept, every kept score is >= every dropped one, and among ties the earlier positions win."""
    flat = torch.tensor(values, dtype=torch.float32)
    cut = min(split, len(values))
    scores = {"a": flat[:cut].clone(), "b": flat[cut:].clone()}
    masks = at.top_fraction_masks(scores, ratio, torch.Generator().manual_seed(1), sample_size=sample_size)
    kept = torch.cat([masks["a"], masks["b"]])
    assert int(kept.sum()) == round(ratio * len(values))
    if kept.any() and (~kept).any():
        assert flat[kept].min() >= flat[~kept].max()
        t = flat[kept].min()
        at_t = (flat == t).nonzero().squeeze(1)
        assert kept[at_t].tolist() == sorted(kept[at_t].tolist(), reverse=True)  # first ties kept


def test_masks_without_a_global_sort_match_a_sort_on_large_inputs():
    g = torch.Generator().manual_seed(3)
    scores = {f"p{i}": torch.rand(300, 70, generator=g) for i in range(5)}
    masks = at.top_fraction_masks(scores, 0.37, g, sample_size=2000)
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    k = round(0.37 * flat.numel())
    expected = flat >= torch.topk(flat, k).values[-1]
    assert torch.equal(torch.cat([m.reshape(-1) for m in masks.values()]), expected)


def test_ties_in_non_contiguous_scores_are_kept_in_parameter_order():
    """Scores that are a transposed view (a layout that .view(-1) cannot flatten): 3 of the 4 twos are kept, the
    first ones in the row-major order of the parameter's shape."""
    scores = {"w": torch.tensor([[2.0, 2.0], [1.0, 2.0], [2.0, 0.0]]).t()}  # [[2, 1, 2], [2, 2, 0]]
    mask = at.top_fraction_masks(scores, 0.5)["w"]
    assert mask.tolist() == [[True, False, True], [True, False, False]]


def test_masked_weights_do_not_move_at_all():
    """AdamW with weight decay and clipping: masked-out entries are bitwise equal to their start."""
    model = tiny()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    masks = at.top_fraction_masks(at.random_scores(model, torch.Generator().manual_seed(0)), 0.3)
    data = batches(4, n=1)[0]
    cfg = TrainConfig(steps=5, lr=1e-2, optimizer="adamw", weight_decay=0.1, clip_norm=1.0, precision="float64",
                      progress=False)
    train(model, lambda m, b: {"nll": -sequence_logprobs(m(b[0]).logits, b[1], torch.ones_like(b[1]).bool()).logp},
          lambda step: [data], cfg, masks=masks)
    moved = 0
    for name, p in model.named_parameters():
        assert torch.equal(p.detach()[~masks[name]], start[name][~masks[name]]), name
        moved += int((p.detach() != start[name])[masks[name]].sum())
    assert moved > 0


def test_mask_files_round_trip_and_refuse_another_model(tmp_path):
    model = tiny()
    masks = at.masks_for("magnitude:0.5", model, lambda kind: at.scores(kind, model))
    path = at.save_masks(masks, tmp_path / "m.safetensors", {"spec": "magnitude:0.5"})
    loaded = at.masks_for(str(path), model, lambda kind: at.scores(kind, model))
    assert all(torch.equal(loaded[k], masks[k]) for k in masks)
    other = Transformer(TransformerConfig(vocab_size=6, max_len=5, n_layer=1, d_model=4))
    wrong_shape = r"m.safetensors: '.*' is torch.bool \(8, 8\), the parameter needs torch.bool \(4, 4\)"
    with pytest.raises(ValueError, match=wrong_shape):
        at.load_masks(path, other)
    bigger = Transformer(TransformerConfig(vocab_size=6, max_len=5, n_layer=2, d_model=8))
    at.save_masks(at.top_fraction_masks(at.scores("random", bigger), 0.5), tmp_path / "big.safetensors")
    with pytest.raises(ValueError, match="not a trainable parameter of this model"):
        at.load_masks(tmp_path / "big.safetensors", model)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors: cannot read it"):
        at.load_masks(tmp_path / "bad.safetensors", model)


def test_a_mask_file_names_every_parameter_or_says_what_the_missing_ones_do(tmp_path):
    """No tensors, or some parameters left out: refused naming the file and the first missing parameters, unless
    the metadata says missing=frozen (all-False masks for them) or missing=free (all-True)."""
    model = tiny()
    names = list(at.trainable(model))
    head = {"head.weight": torch.zeros_like(model.head.weight, dtype=torch.bool)}
    for tensors, message in (({}, f"no mask for {len(names)} of the model's {len(names)} trainable parameters "
                                  f"('{names[0]}', '{names[1]}', '{names[2]}' and {len(names) - 3} more)"),
                             (head, f"no mask for {len(names) - 1} of the model's {len(names)} trainable")):
        path = at.save_masks(tensors, tmp_path / "m.safetensors")
        with pytest.raises(ValueError, match=f"mask file .*m.safetensors: {re.escape(message)}.*missing=frozen or "
                                             "missing=free"):
            at.load_masks(path, model)
    for rule in at.MISSING:
        path = at.save_masks(head, tmp_path / f"{rule}.safetensors", {"missing": rule})
        masks = at.load_masks(path, model)
        assert list(masks) == names and not masks["head.weight"].any()
        assert all(bool(m.all()) == (rule == "free") and not bool(m.any()) == (rule == "frozen")
                   for name, m in masks.items() if name != "head.weight")
    path = at.save_masks({}, tmp_path / "none.safetensors", {"missing": "frozen"})
    assert not any(m.any() for m in at.load_masks(path, model).values())
    path = at.save_masks(head, tmp_path / "bad.safetensors", {"missing": "maybe"})
    with pytest.raises(ValueError, match="bad.safetensors: metadata missing='maybe'; valid: frozen, free"):
        at.load_masks(path, model)


@pytest.mark.parametrize("spec, message", [
    ("wagle:1.5", "ratio must lie in \\(0, 1\\]"),
    ("wagle:0", "ratio must lie in \\(0, 1\\]"),
    ("wagle:lots", "is not a number"),
    ("snip:0.5", "expected KIND:RATIO with KIND one of wagle, magnitude, random"),
    ("missing.safetensors", "mask file missing.safetensors: no such file"),
    (".", "expected KIND:RATIO"),
])
def test_bad_mask_specs_fail_naming_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        at.parse_mask_spec(spec)


def test_non_finite_scores_are_refused():
    with pytest.raises(ValueError, match="scores of 'w' are not all finite"):
        at.top_fraction_masks({"w": torch.tensor([1.0, float("nan")])}, 0.5)
