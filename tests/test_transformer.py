"""unlearn.models.transformer: the Hugging Face contract, causality, padding invariance, size, dtypes, devices."""

import pytest
import torch

from unlearn.logprobs import sequence_logprobs
from unlearn.models.transformer import Transformer, TransformerConfig, n_params
from unlearn.rng import generator

SMALL = TransformerConfig(vocab_size=7, max_len=9, n_layer=2, d_model=16)


def small_model(dtype=torch.float64, seed=0):
    return Transformer(SMALL, generator(seed, "test-transformer")).to(dtype)


def ids(B=4, T=9, seed=1, vocab=7):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def test_parameter_count_at_the_defaults():
    """Embeddings 10*128 + 19*128, 4 blocks of (3*128^2 + 2*(128^2 + 128) + 2*2*128), head 128*10 + 10."""
    expected = 10 * 128 + 19 * 128 + 4 * (3 * 128**2 + 2 * (128**2 + 128) + 4 * 128) + 128 * 10 + 10
    assert n_params(Transformer()) == expected == 335_754  # "about 0.34M" (SimNPO paper App. H)


def test_shapes_and_output_contract():
    model = small_model()
    out = model(ids(3, 5), attention_mask=torch.ones(3, 5))
    assert out.logits.shape == (3, 5, 7) and out.logits.dtype == torch.float64


def test_initialisation_is_a_function_of_the_generator():
    a, b, c = small_model(seed=0), small_model(seed=0), small_model(seed=1)
    for (name, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(p, q), name
        if "ln" not in name:
            assert not torch.equal(p, r), name
    assert a.pos_emb.std().item() == pytest.approx(0.02, rel=0.3)


def test_changing_a_later_token_never_changes_earlier_logits():
    model, x = small_model(), ids()
    base = model(x).logits
    for t in range(x.shape[1]):
        y = x.clone()
        y[:, t] = (y[:, t] + 1) % SMALL.vocab_size
        logits = model(y).logits
        torch.testing.assert_close(logits[:, :t], base[:, :t], rtol=0, atol=1e-12)
        assert not torch.allclose(logits[:, t], base[:, t])


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_never_changes_the_logits_at_real_positions(side):
    """Right padding (causal masking alone would suffice) and left padding (needs the key mask), any pad id.
    Left padding shifts the positions, so that case runs with the positional embedding zeroed."""
    model, x = small_model(), ids(2, 5)
    if side == "left":
        model.pos_emb.data.zero_()
    real = model(x).logits
    mask = torch.cat([torch.ones(2, 5), torch.zeros(2, 4)], 1)
    for pad_id in (0, 6):
        pad = torch.full((2, 4), pad_id)
        if side == "right":
            logits = model(torch.cat([x, pad], 1), attention_mask=mask).logits
            got = logits[:, :5]
        else:
            logits = model(torch.cat([pad, x], 1), attention_mask=mask.flip(1)).logits
            got = logits[:, 4:]
        torch.testing.assert_close(got, real, rtol=0, atol=1e-12)
        assert torch.isfinite(logits).all()


def test_sequence_logprobs_equals_a_hand_computed_gather():
    model, x = small_model(), ids(3, 8)
    labels, mask = ids(3, 8, seed=2), torch.rand(3, 8, generator=torch.Generator().manual_seed(3)) > 0.3
    logits = model(x, attention_mask=torch.ones(3, 8)).logits
    stats = sequence_logprobs(logits, labels, mask)
    by_hand = torch.zeros(3, dtype=torch.float64)
    for b in range(3):
        for t in range(8):
            if mask[b, t]:
                by_hand[b] += logits[b, t].log_softmax(-1)[labels[b, t]]
    torch.testing.assert_close(stats.logp, by_hand)
    torch.testing.assert_close(stats.n_tokens, mask.sum(-1).double())


def test_clear_errors_for_long_sequences_and_bad_ids():
    model = small_model()
    with pytest.raises(ValueError, match="max_len=9"):
        model(ids(1, 10))
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        model(torch.tensor([[1, 7]]))
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids(2, 4), attention_mask=torch.ones(2, 5))


def test_float32_and_bf16_autocast_agree_with_float64():
    x, mask = ids(), torch.ones(4, 9)
    ref = small_model(torch.float64)(x, attention_mask=mask).logits
    model32 = small_model(torch.float32)
    torch.testing.assert_close(model32(x, attention_mask=mask).logits.double(), ref, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model32(x, attention_mask=mask).logits
    assert bf16.dtype == torch.bfloat16
    assert (bf16.double() - ref).abs().max() < 0.15


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x, mask = ids(), torch.ones(4, 9)
    model = small_model(torch.float32)
    cpu = model(x, attention_mask=mask).logits
    gpu = model.cuda()(x.cuda(), attention_mask=mask.cuda()).logits.cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert model(x.cuda(), attention_mask=mask.cuda()).logits.dtype == torch.bfloat16
