"""The one place where logits become log-probabilities.

Every model in the project (random-features logistic, toy transformer, Hugging Face causal LM) is reduced to
per-sequence statistics here, and only here:

    logp[b]     = sum_t mask[b,t] * log softmax(logits[b,t])[labels[b,t]]      (a per-sequence SUM)
    n_tokens[b] = sum_t mask[b,t]                                               (|y|, response tokens only)
    kl[b]       = (1/n_tokens[b]) sum_t mask[b,t] * KL(pi_ref(.|ctx_t) || pi_theta(.|ctx_t))

Labels are aligned with logits: logits[b, t] is the distribution of labels[b, t]. Causal LMs build
``labels = ids[:, 1:]`` from ``input_ids = ids[:, :-1]`` when batching (or pass ``shift=True``); a classifier
is a sequence of length 1. The mask selects response tokens: prompt and padding positions never count, and
their label values are never read (they may hold any id, including -100).

Numerics: log-softmax runs in at least float32 (float64 stays float64), so a bf16 model gives float32
statistics; this is where bf16's 8-bit mantissa would otherwise round a sum of hundreds of token log-probs.

Memory: the logits path holds B x T x V logits, and their float32 log-softmax, for the backward (at 16 x 2048
tokens and a 32k vocabulary, 4 GiB each). ``head_token_logprobs`` starts one layer earlier, from the final
hidden states and a bias-free output head, and takes the response positions ``chunk`` at a time, recomputing
each chunk's logits in the backward: its extra memory is chunk x V floats, whatever B and T are, and prompt and
padding positions never get logits at all. ``fused_head_token_logprobs`` computes the same on CUDA with
cut-cross-entropy's kernel (the optional ``gpu`` extra), which keeps each block of logits in on-chip memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class SequenceLogprobs:
    """Per-sequence log-probability sums and response lengths, each of shape (B,)."""

    logp: torch.Tensor
    n_tokens: torch.Tensor


def _token_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return torch.log_softmax(logits.to(dtype), dim=-1)


def _align(logits, labels, mask, shift):
    if shift:
        logits, labels, mask = logits[:, :-1], labels[:, 1:], mask[:, 1:]
    if logits.shape[:2] != labels.shape or labels.shape != mask.shape:
        raise ValueError(
            f"logits (B, T, V) must match labels and mask (B, T): got {tuple(logits.shape)}, "
            f"{tuple(labels.shape)}, {tuple(mask.shape)}"
        )
    return logits, labels, mask.bool()


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, *, shift: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the labels, and the mask they are counted on.

    Returns (token_logp, mask): token_logp[b, t] = log softmax(logits[b, t])[labels[b, t]] where mask[b, t],
    0 elsewhere, float32 or float64, shape (B, T) (after ``shift``, (B, T - 1)); mask as bool.
    """
    logits, labels, mask = _align(logits, labels, mask, shift)
    return _label_logprobs(_token_log_softmax(logits), labels, mask), mask


def _label_logprobs(logq: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """logq[b, t, labels[b, t]] where mask, 0 elsewhere: (B, T)."""
    token_logp = logq.gather(-1, labels.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1)
    return token_logp.masked_fill(~mask, 0.0)


def _chunk_logprobs(hidden: torch.Tensor, head: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(hidden @ head^T)[labels] for hidden (N, d), head (V, d), labels (N,): (N,), float32 or more."""
    logits = hidden @ head.T
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _check_head_shapes(hidden, head, labels, mask) -> None:
    if hidden.shape[:2] != labels.shape or labels.shape != mask.shape or head.shape[-1] != hidden.shape[-1]:
        raise ValueError(f"hidden (B, T, d), head (V, d), labels and mask (B, T) do not match: got "
                         f"{tuple(hidden.shape)}, {tuple(head.shape)}, {tuple(labels.shape)}, {tuple(mask.shape)}")


def head_token_logprobs(hidden: torch.Tensor, head: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, *,
                        chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """``token_logprobs`` of the logits hidden @ head^T, without ever holding them for more than ``chunk`` positions.

        token_logp[b, t] = h_bt . w_y - logsumexp_v (h_bt . w_v),    y = labels[b, t],   where mask[b, t]

    hidden (B, T, d) are the model's final hidden states (after its last norm), head (V, d) a bias-free output
    layer (``nn.Linear.weight``), labels and mask (B, T) aligned with hidden as with logits. Only the masked
    positions are computed, ``chunk`` of them at a time; with gradients enabled each chunk runs under activation
    checkpointing, so the backward recomputes its logits instead of keeping them. Returns (token_logp, mask) as
    ``token_logprobs`` does: equal to it on the logits hidden @ head^T (same dtype rules: products in the inputs'
    dtype, or autocast's, log-softmax in at least float32), with extra memory O(chunk x V) instead of O(B T V).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of positions, got {chunk}")
    _check_head_shapes(hidden, head, labels, mask)
    mask = mask.bool()
    h, y = hidden[mask], labels[mask]  # (N, d), (N,): response positions only
    recompute = torch.is_grad_enabled() and (h.requires_grad or head.requires_grad)
    pieces = [checkpoint(_chunk_logprobs, h[i:i + chunk], head, y[i:i + chunk], use_reentrant=False) if recompute
              else _chunk_logprobs(h[i:i + chunk], head, y[i:i + chunk])
              for i in range(0, max(len(y), 1), chunk)]  # one empty piece without response positions: in the graph
    values = torch.cat(pieces)
    token_logp = torch.zeros(mask.shape, dtype=values.dtype, device=values.device)
    return token_logp.masked_scatter(mask, values), mask


FUSED_PACKAGE = "cut-cross-entropy"  # pip install 'unlearn-mechanics[gpu]'


def check_fused_logprobs(device: torch.device | str) -> None:
    """Refuse, with what is missing, a fused log-prob path that cannot run: it needs a CUDA device with bf16
    (Ampere or newer) and the cut_cross_entropy package (the ``gpu`` extra) with Triton."""
    if torch.device(device).type != "cuda":
        raise ValueError(f"fused log-probs run {FUSED_PACKAGE}'s Triton kernel, on CUDA only; the device is "
                         f"{device} (--logprob-chunk N bounds memory on any device)")
    try:
        import cut_cross_entropy  # noqa: F401
    except ImportError as error:
        raise ValueError(f"fused log-probs need the {FUSED_PACKAGE} package and Triton: pip install "
                         f"'unlearn-mechanics[gpu]' ({error})") from None
    if not torch.cuda.is_bf16_supported():
        raise ValueError(f"fused log-probs run a bf16 kernel, which {torch.cuda.get_device_name(device)} does not "
                         "support (Ampere or newer); use --logprob-chunk N")


def fused_head_token_logprobs(hidden: torch.Tensor, head: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``head_token_logprobs`` by cut-cross-entropy's fused linear cross-entropy (Wijmans et al., "Cut Your
    Losses in Large-Vocabulary Language Models", ICLR 2025): the matmul h_bt . w_v, the log-sum-exp over v and
    their backward run blockwise in on-chip memory, so no logits reach GPU memory at all:

        token_logp[b, t] = -CE(h_bt @ head^T, y) = h_bt . w_y - logsumexp_v (h_bt . w_v),   where mask[b, t]

    CUDA only (callers check first with ``check_fused_logprobs``). The kernel's backward takes bf16 or fp16
    hidden states: float32 ones (bf16-mixed weights) are cast to autocast's dtype, and plain float32 is refused;
    the head is cast with them, since the kernel's log-sum-exp reads it in the hidden states' dtype and its label
    term reads it as it is (a bf16 copy of V x d per call, which autocast would make too). The forward
    accumulates in float32 without rounding the logits to bf16, so its values differ from the other paths' by
    that rounding (the reference computes log pi_ref on the same path: ``model_sequence_logprobs``); the backward
    adds block products in bf16, so gradients carry more bf16 rounding than the other paths' (tests/test_gpu.py
    bounds both). Gradient filtering is off (filter_eps None): every vocabulary entry enters the gradient. Labels
    inside ``mask`` must be ids below V, which the kernel does not check (-100 would read as "ignore").
    Returns (token_logp float32, mask) as ``token_logprobs`` does."""
    _check_head_shapes(hidden, head, labels, mask)
    dtype = hidden.dtype
    if dtype not in (torch.bfloat16, torch.float16):
        if not torch.is_autocast_enabled("cuda"):
            raise ValueError(f"fused log-probs need bf16 or fp16 hidden states (the kernel's backward), got {dtype}; "
                             "run in bf16 or bf16-mixed")
        dtype = torch.get_autocast_dtype("cuda")
    mask = mask.bool()
    h, y = hidden[mask].to(dtype), labels[mask]  # (N, d), (N,): response positions only
    w = head.to(dtype)
    nll = _fused_nll(h, w, y) if len(y) else (h @ w.T).sum(-1).float()  # none: an empty piece, in the graph
    token_logp = torch.zeros(mask.shape, dtype=nll.dtype, device=nll.device)
    return token_logp.masked_scatter(mask, -nll), mask


def _fused_nll(h: torch.Tensor, head: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log softmax(h @ head^T)[y] for h (N, d), head (V, d), y (N,), by cut-cross-entropy's CUDA kernel: (N,)
    float32."""
    from cut_cross_entropy import linear_cross_entropy

    return linear_cross_entropy(h, head, y, reduction="none", filter_eps=None, impl="cce")


def token_logprob_moments(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log p(x_t), mu_t, sigma_t), each (B, T), 0 outside ``mask``: the label's log-prob, and the mean and standard
    deviation of log p under the model's own next-token distribution p = softmax(logits[b, t]):

        mu_t = sum_v p_v log p_v,      sigma_t^2 = sum_v p_v (log p_v)^2 - mu_t^2   (clamped at 0)

    (Min-K%++, Zhang et al. 2024, eq. 3). Terms with p_v = 0 contribute 0. Labels aligned as in the module
    docstring."""
    logits, labels, mask = _align(logits, labels, mask, False)
    logq = _token_log_softmax(logits)
    token_logp = _label_logprobs(logq, labels, mask)
    q = logq.exp()
    plogq = torch.where(q > 0, q * logq, torch.zeros_like(q))
    mu = plogq.sum(-1)
    var = (torch.where(q > 0, plogq * logq, torch.zeros_like(q)).sum(-1) - mu.square()).clamp(min=0)
    return token_logp, mu.masked_fill(~mask, 0.0), var.sqrt().masked_fill(~mask, 0.0)


def sequence_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, *, shift: bool = False
) -> SequenceLogprobs:
    """Sum of response-token log-probs per sequence, and the response lengths.

    Args:
        logits: (B, T, V) model outputs, any float dtype.
        labels: (B, T) target ids aligned with ``logits`` (see module docstring); ignored where mask is 0.
        mask: (B, T) 1 on response tokens, 0 on prompt and padding.
        shift: drop the last logit and the first label/mask column first (for unshifted ``input_ids``).

    Returns:
        SequenceLogprobs(logp, n_tokens), float32 or float64, shape (B,).
    """
    return _per_sequence(*token_logprobs(logits, labels, mask, shift=shift))


def check_logprob_path(chunk: int | None, fused: bool) -> None:
    """Refuse a log-prob path that is not one: a chunk below 1 position, or both a chunk and the fused kernel."""
    if chunk is not None and chunk < 1:
        raise ValueError(f"logprob_chunk must be a positive number of positions, got {chunk}")
    if chunk is not None and fused:
        raise ValueError("a log-prob chunk and the fused kernel are two ways to the same log-probs; give one")


def model_sequence_logprobs(model: torch.nn.Module, batch, *, chunk: int | None = None, fused: bool = False
                            ) -> SequenceLogprobs:
    """``sequence_logprobs`` of a model on ``batch`` (input_ids, attention_mask, labels, mask): from its logits, or
    from its decoder's last hidden states and bias-free output head (``unlearn.models.hf.decoder_and_head``),
    ``chunk`` positions at a time (``head_token_logprobs``) or by the fused kernel (``fused_head_token_logprobs``).
    The losses and the reference both compute log pi here, so that log pi and log pi_ref of the same weights are
    the same numbers on every path."""
    check_logprob_path(chunk, fused)
    if chunk is None and not fused:
        logits = model(batch.input_ids, attention_mask=batch.attention_mask).logits
        return sequence_logprobs(logits, batch.labels, batch.mask)
    from unlearn.models.hf import decoder_and_head

    split = decoder_and_head(model)
    if split is None:
        raise ValueError(f"log-probs from the hidden states need a causal LM whose logits are a bias-free head over "
                         f"its decoder's last hidden states (Llama, Mistral, Qwen; not sharded with FSDP2); got "
                         f"{type(model).__name__}")
    decoder, head = split
    hidden = decoder(batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).last_hidden_state
    if fused:
        return _per_sequence(*fused_head_token_logprobs(hidden, head, batch.labels, batch.mask))
    return _per_sequence(*head_token_logprobs(hidden, head, batch.labels, batch.mask, chunk=chunk))


def _per_sequence(token_logp: torch.Tensor, mask: torch.Tensor) -> SequenceLogprobs:
    return SequenceLogprobs(logp=token_logp.sum(-1), n_tokens=mask.sum(-1).to(token_logp.dtype))


def sequence_kl(
    logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor, *, shift: bool = False
) -> torch.Tensor:
    """Forward KL(pi_ref || pi_theta), summed over the vocabulary, averaged over response tokens: (B,).

    This is the retain-side KL of the *+KL methods (NPO paper's code direction, ``F.kl_div(logq, logp_ref,
    log_target=True)``), restricted to response tokens: prompt and padding positions never enter the mean.
    A sequence with no response token gets KL 0.
    """
    if logits.shape != ref_logits.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and ref_logits {tuple(ref_logits.shape)} differ")
    labels = torch.zeros(mask.shape, dtype=torch.long, device=mask.device)
    logits, _, mask = _align(logits, labels, mask, shift)
    ref_logits = ref_logits[:, :-1] if shift else ref_logits
    logq = _token_log_softmax(logits)
    logp = _token_log_softmax(ref_logits).to(logq.dtype)
    token_kl = (logp.exp() * (logp - logq)).sum(-1).masked_fill(~mask, 0.0)  # (B, T)
    return token_kl.sum(-1) / mask.sum(-1).clamp(min=1).to(token_kl.dtype)
