"""From a model and index batches to per-sequence losses: the ``losses_fn`` that ``unlearn.train`` runs for every
unlearning method, on the Markov toy and on Hugging Face models alike.

    batch = (forget index, retain index, alternative index)    positions in the forget / retain / alternative sets
    forget:  logits -> unlearn.logprobs -> SequenceStats(logp, |y|, logp_ref from the reference, alt_logp)
    retain:  logits -> SequenceStats(logp, |y|, kl to the reference's logits)     (methods with a retain term)
    losses = unlearn.objectives terms (one model) or unlearn.ensemble.member_losses (an ensemble)

Data sets are anything with ``take(index)`` and ``trim()`` whose batches hold input_ids, attention_mask, labels
and mask (``unlearn.data.TokenSet``, ``sims.markov.Split``), already on the model's device. Statistics are
computed only when some method reads them (``Method.needs``). The reference (``unlearn.reference``) gives
logp_ref, alt_logp_ref and the retain logits; ``alternative(forget index, alternative index)`` gives a batch of
alternative responses to the forget prompts (Yao et al.'s random mismatch; IDK answers; DPO's winners), for
methods that read alt_logp, and the reference reads the same alternative index.

With a sequence of methods and of params the model is an ensemble (``unlearn.ensemble.Ensemble``) whose
member m runs ``method[m]`` with ``params[m]`` on its own batches, indices shaped (M, b); the losses go through
``unlearn.ensemble.member_losses``, so member m's gradient is that of its run alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from unlearn.ensemble import member_kl, member_logprobs, member_losses
from unlearn.logprobs import check_logprob_path, model_sequence_logprobs, sequence_kl, sequence_logprobs
from unlearn.objectives import MethodParams, SequenceStats, get_method, per_sequence_losses


def unlearning_losses(method: str | Sequence[str], params: MethodParams | Sequence[MethodParams], forget, retain,
                      reference, alternative: Callable | None = None, logprob_chunk: int | None = None,
                      fused_logprobs: bool = False) -> Callable:
    """losses_fn for ``unlearn.train`` (module docstring).

    ``logprob_chunk``: take log-probs from the final hidden states and the output head, that many response
    positions at a time (``unlearn.logprobs.head_token_logprobs``: memory O(chunk x V) instead of O(B T V)), for
    every batch whose logits are not needed otherwise (the retain batches of KL methods still need them).
    ``fused_logprobs``: the same from the hidden states by cut-cross-entropy's CUDA kernel
    (``unlearn.logprobs.fused_head_token_logprobs``). Either only for a model that
    ``unlearn.models.hf.decoder_and_head`` can split; neither: the logits path. Give the reference the same
    (``unlearn.reference.make_reference``), so that log pi_ref is computed as log pi is."""
    members = not isinstance(method, str)
    from_hidden = fused_logprobs or logprob_chunk is not None
    if from_hidden and members:
        raise ValueError("log-probs from the hidden states apply to one model, not an ensemble")
    check_logprob_path(logprob_chunk, fused_logprobs)
    methods = list(method) if members else [method]
    checked = [get_method(name) for name in methods]
    for name, m in zip(methods, checked, strict=True):
        if "alt_logp" in m.needs["forget"] and alternative is None:
            raise ValueError(f"method {name!r} needs alternative responses to the forget prompts, which this data "
                             "does not provide")
        if m.retain is not None and retain is None:
            raise ValueError(f"method {name!r} has a retain term but there is no retain set")
    needs_ref = any("logp_ref" in m.needs["forget"] for m in checked)
    with_alt = any("alt_logp" in m.needs["forget"] for m in checked)
    with_alt_ref = any("alt_logp_ref" in m.needs["forget"] for m in checked)
    with_retain = any(m.retain is not None for m in checked)
    with_kl = any("kl" in m.needs["retain"] for m in checked)
    logprobs, kl_of = (member_logprobs, member_kl) if members else (sequence_logprobs, sequence_kl)
    kwargs = {"per_member": True} if members else {}
    hidden_logprobs = partial(model_sequence_logprobs, chunk=logprob_chunk, fused=fused_logprobs)

    def stats_of(model, batch, with_logits: bool = False):
        batch = batch.trim()  # every field (b, ...), or (M, b, ...) for an ensemble
        if from_hidden and not with_logits:
            return batch, None, hidden_logprobs(model, batch)
        logits = model(batch.input_ids, attention_mask=batch.attention_mask, **kwargs).logits
        return batch, logits, logprobs(logits, batch.labels, batch.mask)

    def losses_fn(model, batch):
        forget_index, retain_index, alt_index = batch
        f_batch, _, f = stats_of(model, forget.take(forget_index))
        logp_ref = reference.forget_logp(model, forget_index, f_batch) if needs_ref else None
        alt = alt_ref = None
        if with_alt:
            a_batch, _, a = stats_of(model, alternative(forget_index, alt_index))
            alt = a.logp
            alt_ref = reference.alternative_logp(model, alt_index, a_batch) if with_alt_ref else None
        forget_stats = SequenceStats(f.logp, f.n_tokens, logp_ref=logp_ref, alt_logp=alt, alt_logp_ref=alt_ref)
        retain_stats = None
        if with_retain:
            r_batch, r_logits, r = stats_of(model, retain.take(retain_index), with_logits=with_kl)
            kl = None
            if with_kl:
                kl = kl_of(r_logits, reference.retain_logits(model, retain_index, r_batch), r_batch.mask)
            retain_stats = SequenceStats(r.logp, r.n_tokens, kl=kl)
        if members:
            return member_losses(methods, params, forget_stats, retain_stats)
        return per_sequence_losses(checked[0], params, forget_stats, retain_stats)

    return losses_fn


def token_mean_nll(data) -> Callable:
    """losses_fn for ``unlearn.train``: index -> the token-mean cross-entropy of the batch ``data.take(index)``,
    over response tokens (as the released SimNPO code pretrains; memorising in ``unlearn validate``).

    The loop averages per-sequence losses over the batch, so sequence b gets L_b = -logp_b * B / N with
    N = sum_b |y_b| the batch's token count: mean_b L_b = -(1/N) sum_b logp_b, the mean NLL per token
    (nn.CrossEntropyLoss over non-pad positions). N is data, not a function of the parameters. A per-sequence
    mean -logp_b / |y_b| would instead give a length-5 sequence the weight of a length-20 one.
    """

    def losses_fn(model, index):
        batch = data.take(index)
        logits = model(batch.input_ids, attention_mask=batch.attention_mask).logits
        stats = sequence_logprobs(logits, batch.labels, batch.mask)
        return {"nll": -stats.logp * (len(stats.logp) / stats.n_tokens.sum())}

    return losses_fn
