"""unlearn.logprobs: the one logits -> per-sequence statistics path."""

import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unlearn import logprobs
from unlearn.logprobs import (
    fused_head_token_logprobs,
    head_token_logprobs,
    sequence_kl,
    sequence_logprobs,
    token_logprobs,
)


def naive_logp(logits, labels, mask):
    """Loop over every (sequence, position): the definition, with nothing vectorised."""
    out = torch.zeros(logits.shape[0], dtype=torch.float64)
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            if mask[b, t]:
                out[b] += torch.log_softmax(logits[b, t].double(), -1)[labels[b, t]]
    return out


@given(seed=st.integers(0, 10_000), B=st.integers(1, 4), T=st.integers(1, 7), V=st.integers(2, 9))
def test_equals_naive_log_softmax_gather(seed, B, T, V):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(B, T, V, generator=g, dtype=torch.float64)
    labels = torch.randint(0, V, (B, T), generator=g)
    mask = torch.rand(B, T, generator=g) < 0.6
    out = sequence_logprobs(logits, labels, mask)
    torch.testing.assert_close(out.logp, naive_logp(logits, labels, mask), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.n_tokens, mask.sum(-1).double())


def test_prompt_and_padding_do_not_count():
    """Changing logits or labels at masked positions (including label -100) leaves every statistic unchanged."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 8, 11, generator=g)
    labels = torch.randint(0, 11, (3, 8), generator=g)
    mask = torch.zeros(3, 8, dtype=torch.bool)
    mask[:, 2:6] = True
    ref = torch.randn(3, 8, 11, generator=g)
    before = sequence_logprobs(logits, labels, mask), sequence_kl(logits, ref, mask)
    logits2, labels2, ref2 = logits.clone(), labels.clone(), ref.clone()
    logits2[~mask] = 100 * torch.randn(int((~mask).sum()), 11, generator=g)
    ref2[~mask] = -50.0
    labels2[~mask] = -100
    after = sequence_logprobs(logits2, labels2, mask), sequence_kl(logits2, ref2, mask)
    assert torch.equal(before[0].logp, after[0].logp) and torch.equal(before[1], after[1])


def test_shift_matches_pre_aligned_labels():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 7, (2, 6), generator=g)
    logits = torch.randn(2, 6, 7, generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    shifted = sequence_logprobs(logits, ids, mask, shift=True)
    aligned = sequence_logprobs(logits[:, :-1], ids[:, 1:], mask[:, 1:])
    assert torch.equal(shifted.logp, aligned.logp)


def test_bf16_logits_give_float32_statistics():
    """A bf16 model's logits are upcast before log-softmax: float32 outputs, close to the float64 value
    of the same (bf16-rounded) logits."""
    g = torch.Generator().manual_seed(2)
    logits = (4 * torch.randn(4, 50, 128, generator=g)).to(torch.bfloat16)
    labels = torch.randint(0, 128, (4, 50), generator=g)
    mask = torch.ones(4, 50, dtype=torch.bool)
    out = sequence_logprobs(logits, labels, mask)
    assert out.logp.dtype == torch.float32
    exact = sequence_logprobs(logits.double(), labels, mask).logp
    torch.testing.assert_close(out.logp.double(), exact, rtol=1e-5, atol=1e-3)
    assert sequence_kl(logits, logits, mask).dtype == torch.float32


def naive_kl(logits, ref_logits, mask):
    """The definition, looped: mean over masked positions of sum_v p_ref(v) (log p_ref(v) - log p(v))."""
    out = torch.zeros(logits.shape[0], dtype=torch.float64)
    for b in range(logits.shape[0]):
        terms = [torch.nn.functional.kl_div(torch.log_softmax(logits[b, t].double(), -1),
                                            torch.log_softmax(ref_logits[b, t].double(), -1),
                                            log_target=True, reduction="sum")
                 for t in range(logits.shape[1]) if mask[b, t]]
        out[b] = sum(terms) / len(terms) if terms else 0.0
    return out


@given(seed=st.integers(0, 10_000), B=st.integers(1, 4), T=st.integers(1, 7), V=st.integers(2, 9))
def test_kl_equals_the_looped_definition(seed, B, T, V):
    """Forward KL(pi_ref || pi_theta) per response token, as torch's kl_div computes it position by position;
    prompt and padding positions (mask False) never enter, and a sequence without any gets 0."""
    g = torch.Generator().manual_seed(seed)
    logits, ref = (3 * torch.randn(B, T, V, generator=g, dtype=torch.float64) for _ in range(2))
    mask = torch.rand(B, T, generator=g) < 0.6
    torch.testing.assert_close(sequence_kl(logits, ref, mask), naive_kl(logits, ref, mask), rtol=1e-10, atol=1e-12)


def test_kl_is_zero_against_itself_and_positive_otherwise():
    g = torch.Generator().manual_seed(3)
    logits, ref = torch.randn(2, 5, 6, generator=g), torch.randn(2, 5, 6, generator=g)
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert torch.allclose(sequence_kl(logits, logits, mask), torch.zeros(2), atol=1e-6)
    assert (sequence_kl(logits, ref, mask) > 0).all()


def test_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match="must match"):
        sequence_logprobs(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4))


# ------------------------------------------------------------- head_token_logprobs: chunked, from hidden states


def _hidden_problem(seed, B, T, d, V, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, d, generator=g, dtype=dtype).requires_grad_()
    head = (torch.randn(V, d, generator=g, dtype=dtype) / d**0.5).requires_grad_()
    labels = torch.randint(0, V, (B, T), generator=g)
    mask = torch.rand(B, T, generator=g) < 0.7
    return hidden, head, labels, mask


def _values_and_grads(fn, hidden, head, labels, mask):
    token_logp, _ = fn(hidden, head, labels, mask)
    weights = torch.linspace(-1.0, 2.0, token_logp.numel()).reshape(token_logp.shape)  # any linear functional
    grads = torch.autograd.grad((token_logp * weights).sum(), (hidden, head))
    return token_logp.detach(), grads


def _through_logits(hidden, head, labels, mask):
    return token_logprobs(hidden @ head.T, labels, mask)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 3), T=st.integers(1, 9), d=st.integers(1, 6),
       V=st.integers(2, 12), chunk=st.integers(1, 30))
def test_chunked_head_logprobs_equal_the_logits_path_values_and_gradients(seed, B, T, d, V, chunk):
    """Any chunk (dividing the number of response positions or not, larger than it or 1), any mask: the values
    and the gradients with respect to the hidden states and the head equal those of log-softmax over the full
    logits hidden @ head^T, float32, to 1e-6."""
    problem = _hidden_problem(seed, B, T, d, V)
    chunked = _values_and_grads(lambda *a: head_token_logprobs(*a, chunk=chunk), *problem)
    plain = _values_and_grads(_through_logits, *problem)
    torch.testing.assert_close(chunked[0], plain[0], rtol=1e-6, atol=1e-6)
    for ours, theirs in zip(chunked[1], plain[1], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_chunked_head_logprobs_of_bf16_inputs_are_float32_and_match_the_logits_path():
    hidden, head, labels, mask = _hidden_problem(1, 2, 16, 8, 50, dtype=torch.bfloat16)
    ours, _ = head_token_logprobs(hidden, head, labels, mask, chunk=5)
    theirs, _ = _through_logits(hidden, head, labels, mask)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)  # the same bf16 products, row by row


def test_chunked_head_logprobs_never_keep_more_than_a_chunk_of_logits():
    """The memory claim: of the tensors autograd saves for the backward, none has more than chunk x V elements
    (the logits path saves B x T x V of them). Prompt positions are never computed at all."""
    B, T, d, V, chunk = 4, 64, 8, 300, 16
    hidden, head, labels, _ = _hidden_problem(2, B, T, d, V)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, T // 4:] = True

    def largest_saved(fn):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            token_logp, _ = fn(hidden, head, labels, mask)
        token_logp.sum().backward()
        return max(sizes)

    assert largest_saved(lambda *a: head_token_logprobs(*a, chunk=chunk)) <= chunk * V
    assert largest_saved(_through_logits) >= B * T * V // 2  # the test can see a full logits tensor


def test_chunked_head_logprobs_refuse_a_bad_chunk_or_shapes():
    hidden, head, labels, mask = _hidden_problem(0, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="chunk must be a positive"):
        head_token_logprobs(hidden, head, labels, mask, chunk=0)
    with pytest.raises(ValueError, match="do not match"):
        head_token_logprobs(hidden, head[:, :3], labels, mask)


# ------------------------------------------------------- fused_head_token_logprobs: cut-cross-entropy's kernel


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), B=st.integers(1, 3), T=st.integers(1, 9), V=st.integers(2, 12))
def test_fused_head_logprobs_place_the_kernels_values_and_gradients_where_the_logits_path_does(
        seed, B, T, V, fused_kernel_on_cpu):
    """The wrapper around the kernel, on the CPU: with cut-cross-entropy's CUDA kernel replaced by the cross
    entropy it computes, values and gradients (bf16 hidden states and head, any mask) equal the logits path's on
    the same values in float32. The kernel itself is checked against the logits path on a GPU
    (tests/test_gpu.py)."""
    hidden, head, labels, mask = _hidden_problem(seed, B, T, 8, V, dtype=torch.bfloat16)
    fused = _values_and_grads(fused_head_token_logprobs, hidden, head, labels, mask)
    upcast = [t.detach().float().requires_grad_() for t in (hidden, head)]
    plain = _values_and_grads(_through_logits, *upcast, labels, mask)
    assert fused[0].dtype == torch.float32 and fused[1][0].dtype == torch.bfloat16
    torch.testing.assert_close(fused[0], plain[0], rtol=1e-6, atol=1e-6)
    for ours, theirs in zip(fused[1], plain[1], strict=True):
        torch.testing.assert_close(ours.float(), theirs.to(torch.bfloat16).float(), rtol=1e-2, atol=1e-3)


def test_fused_head_logprobs_without_a_response_token_keep_both_inputs_in_the_graph(fused_kernel_on_cpu):
    """No kernel call without a response position; the values are 0 and both inputs get (zero) gradients, as on
    the chunked path, so that a backward through such a batch does not fail."""
    hidden, head, labels, _ = _hidden_problem(0, 2, 3, 4, 5, dtype=torch.bfloat16)
    token_logp, grads = _values_and_grads(fused_head_token_logprobs, hidden, head, labels, torch.zeros(2, 3))
    assert fused_kernel_on_cpu == [] and torch.equal(token_logp, torch.zeros(2, 3))
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)


def test_fused_head_logprobs_refuse_what_the_kernel_cannot_take(monkeypatch):
    hidden, head, labels, mask = _hidden_problem(0, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="need bf16 or fp16 hidden states"):  # float32 outside CUDA autocast
        fused_head_token_logprobs(hidden, head, labels, mask)
    with pytest.raises(ValueError, match="do not match"):
        fused_head_token_logprobs(hidden.bfloat16(), head[:, :3], labels, mask)
    with pytest.raises(ValueError, match="on CUDA only; the device is cpu"):
        logprobs.check_fused_logprobs("cpu")
    monkeypatch.setitem(sys.modules, "cut_cross_entropy", None)  # as if not installed
    with pytest.raises(ValueError, match=r"cut-cross-entropy package and Triton: pip install 'unlearn-mechanics\[gpu"):
        logprobs.check_fused_logprobs("cuda")
