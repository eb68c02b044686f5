"""unlearn.metrics.ceiling: the torch ceiling of a causal LM's forget tokens equals theory.ceiling's on its own
weights, and so does its predicted growth under GA; both follow LoRA wrappers to the base model and are None where
the architecture has no RMSNorm ceiling."""

import numpy as np
import pytest
import torch

from theory import ceiling as theory
from unlearn.metrics.ceiling import forget_ceiling, forget_head_growth, head_and_gain, head_growth_rate, margin_ceiling


def test_margin_ceiling_equals_the_closed_form():
    g = torch.Generator().manual_seed(0)
    head, gain = torch.randn(300, 24, generator=g), torch.randn(24, generator=g)
    targets = torch.tensor([0, 5, 299, 5])
    ours = margin_ceiling(head, gain, targets, chunk=3)
    assert ours.numpy() == pytest.approx(theory.margin_ceiling(head.numpy(), gain.numpy(), targets.numpy()),
                                         rel=1e-5)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_head_growth_rate_equals_the_closed_form(optimizer):
    """The torch rate (rows v* and y only, softmax in chunks) equals theory.ceiling.head_growth_rate (the full
    V x d gradient, float64) to float32 precision, for targets in several chunks with unequal loss weights."""
    g = torch.Generator().manual_seed(1)
    head, gain = torch.randn(300, 24, generator=g), torch.randn(24, generator=g)
    targets, weights = torch.tensor([0, 5, 299, 17, 42]), torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25])
    ours = head_growth_rate(head, gain, targets, weights, 1e-3, optimizer, chunk=2)
    expected = theory.head_growth_rate(head.numpy(), gain.numpy(), targets.numpy(), weights.numpy(), 1e-3,
                                       {"adamw": "adam", "sgd": "sgd"}[optimizer])
    assert ours.numpy() == pytest.approx(expected, rel=1e-4, abs=1e-9)


def test_forget_ceiling_of_a_tiny_llama_is_the_mean_over_its_response_tokens():
    """C(t) + log V averaged over the response tokens (a token counted as often as it occurs), computed directly
    from the model's lm_head and final RMSNorm with theory.ceiling; the same through a LoRA wrapper."""
    from unlearn import data
    from unlearn.models import hf

    model = hf.load_model(hf.ModelSpec("tiny"))
    with torch.no_grad():
        model.model.norm.weight.copy_(torch.linspace(-1.0, 2.0, model.model.norm.weight.numel()))
    sequences = [([1, 2], [3, 4, 4, 5]), ([6], [7, 3]), ([2], [9, 9, 9])]
    tokens = data.TokenSet.from_ids(sequences, pad_id=0)
    W, g = model.lm_head.weight.detach().double().numpy(), model.model.norm.weight.detach().double().numpy()
    labels = tokens.labels[tokens.mask.bool()].numpy()
    expected = float(np.mean(theory.nll_ceiling(W, g, labels)))
    assert forget_ceiling(model, tokens) == pytest.approx(expected, rel=1e-5)
    assert forget_ceiling(hf.add_lora(model, hf.LoraSpec(4)), tokens) == pytest.approx(expected, rel=1e-5)


def test_forget_head_growth_of_a_tiny_llama_is_the_count_weighted_mean():
    """The predicted growth of the forget ceiling: theory.ceiling.head_growth_rate on the model's own head and gain
    over the distinct response tokens, each weighing its occurrences over the 3 sequences, averaged with the same
    counts; SGD's rate scales with lr and the weights, Adam's only with lr."""
    from unlearn import data
    from unlearn.models import hf

    model = hf.load_model(hf.ModelSpec("tiny"))
    sequences = [([1, 2], [3, 4, 4, 5]), ([6], [7, 3]), ([2], [9, 9, 9])]
    tokens = data.TokenSet.from_ids(sequences, pad_id=0)
    W, g = model.lm_head.weight.detach().double().numpy(), model.model.norm.weight.detach().double().numpy()
    ys, counts = np.unique(tokens.labels[tokens.mask.bool()].numpy(), return_counts=True)
    for optimizer, name in (("adamw", "adam"), ("sgd", "sgd")):
        rates = theory.head_growth_rate(W, g, ys, counts / 3, 2e-3, name)
        expected = float(np.sum(rates * counts) / counts.sum())
        assert forget_head_growth(model, tokens, 2e-3, optimizer) == pytest.approx(expected, rel=1e-4)
    assert forget_head_growth(hf.add_lora(model, hf.LoraSpec(4)), tokens, 2e-3) == pytest.approx(
        float(np.sum(theory.head_growth_rate(W, g, ys, counts / 3, 2e-3) * counts) / counts.sum()), rel=1e-4)


def test_an_architecture_without_the_ceiling_says_so():
    """GPT-2 ends in a LayerNorm with a bias: no ceiling of this form, so None (not a number that means nothing)."""
    transformers = pytest.importorskip("transformers")
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=40))
    assert head_and_gain(gpt2) is None
    assert forget_ceiling(gpt2, None) is None
    assert forget_head_growth(gpt2, None, 1e-3) is None
