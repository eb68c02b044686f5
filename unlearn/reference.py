"""Where the reference model's numbers come from, selectable per run.

NPO and DPO read log pi_ref(y|x) of every forget sequence; *+KL methods read the reference's next-token
distributions on retain batches. Three ways to provide them, all giving the same losses and gradients
(tests/test_hf.py):

    cached   log pi_ref(y|x) of each forget sequence computed once, before training, from the model itself
             (which is the reference at step 0); no reference model in memory at all. Also caches retain
             logits when asked (``with_logits``: (n, T, V) floats, fine for toys, not for a 32k vocabulary).
    adapter  with LoRA the reference is the base model: the same forward with the adapter switched off
             (``peft``'s ``disable_adapter``), under no_grad; costs a forward, no memory.
    copy     a frozen deep copy of the model (what peer frameworks do): one more model in memory; the
             baseline of ``unlearn bench llm``.

A reference answers ``forget_logp(model, index, batch)`` ((b,) or, for ensembles, (M, b)),
``alternative_logp(model, index, batch)`` (the same for alternative responses to the forget prompts: DPO's
winners) and ``retain_logits(model, index, batch)`` (logits of the batch's positions); ``index`` are the
sequences' positions in the forget, alternative or retain set, ``batch`` the same sequences, trimmed, on the
model's device. Log-probs are taken on the path the losses take (``logprob_chunk``, ``fused_logprobs``:
``unlearn.logprobs.model_sequence_logprobs``), so that log pi_ref of the model at step 0 is its log pi exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from unlearn.logprobs import check_logprob_path, model_sequence_logprobs

MODES = ("cached", "adapter", "copy")


def _forward(model: nn.Module, batch) -> torch.Tensor:
    return model(batch.input_ids, attention_mask=batch.attention_mask).logits


LogprobsOf = Callable[[nn.Module, object], torch.Tensor]  # (model, batch) -> log p(y|x) per sequence, (b,)


def _sequence_logp(model: nn.Module, batch, chunk: int | None = None, fused: bool = False) -> torch.Tensor:
    """log p(y|x) per sequence of ``batch`` on a log-prob path (by default from the logits)."""
    return model_sequence_logprobs(model, batch, chunk=chunk, fused=fused).logp


@torch.no_grad()
def batched_logprobs(model: nn.Module, data, batch_size: int = 64, logp_of: LogprobsOf = _sequence_logp
                     ) -> torch.Tensor:
    """log p(y|x) of every sequence of ``data`` (anything with take/trim/to and input_ids, attention_mask,
    labels, mask), in float32 or float64, on the model's device; ``logp_of`` computes a batch's (the logits
    path by default)."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(data), batch_size):
        out.append(logp_of(model, data.take(slice(start, start + batch_size)).trim().to(device)))
    return torch.cat(out)


@torch.no_grad()
def batched_logits(model: nn.Module, data, batch_size: int = 64) -> torch.Tensor:
    """Logits (n, T, V) of every sequence of ``data`` at its full width, float32."""
    device = next(model.parameters()).device
    return torch.cat([_forward(model, data.take(slice(s, s + batch_size)).to(device)).float()
                      for s in range(0, len(data), batch_size)])


class Cached:
    """Reference numbers computed once (module docstring)."""

    mode = "cached"

    def __init__(self, logp: torch.Tensor, logits: torch.Tensor | None = None, alt_logp: torch.Tensor | None = None):
        self.logp, self.logits, self.alt_logp = logp, logits, alt_logp

    @classmethod
    def build(cls, model: nn.Module, forget, retain=None, batch_size: int = 64, alternatives=None,
              logp_of: LogprobsOf = _sequence_logp) -> Cached:
        """From ``model`` as it is now; retain logits only when ``retain`` is given, alternative responses'
        log-probs only when ``alternatives`` (a set of them) is."""
        logits = None if retain is None else batched_logits(model, retain, batch_size)
        alt = None if alternatives is None else batched_logprobs(model, alternatives, batch_size, logp_of)
        return cls(batched_logprobs(model, forget, batch_size, logp_of), logits, alt)

    def forget_logp(self, model, index, batch) -> torch.Tensor:
        return self.logp[index]

    def alternative_logp(self, model, index, batch) -> torch.Tensor:
        if self.alt_logp is None:
            raise ValueError("the cached reference holds no log-probs of alternative responses (DPO needs them): "
                             "build it with alternatives=..., or use the adapter or copy reference")
        return self.alt_logp[index]

    def retain_logits(self, model, index, batch) -> torch.Tensor:
        if self.logits is None:
            raise ValueError("the cached reference holds no retain logits (KL methods need them): build it with "
                             "retain=..., or use the adapter or copy reference")
        return self.logits[index][..., : batch.input_ids.shape[-1], :]


class Frozen:
    """The reference as a model run under no_grad: the base of a LoRA model (``adapter``) or a frozen copy
    (``copy``)."""

    def __init__(self, mode: str, model: nn.Module | None = None, logp_of: LogprobsOf = _sequence_logp):
        self.mode, self.model, self.logp_of = mode, model, logp_of

    @classmethod
    def adapter(cls, logp_of: LogprobsOf = _sequence_logp) -> Frozen:
        return cls("adapter", logp_of=logp_of)

    @classmethod
    def copy_of(cls, model: nn.Module, logp_of: LogprobsOf = _sequence_logp) -> Frozen:
        frozen = copy.deepcopy(model).eval()
        frozen.requires_grad_(False)
        return cls("copy", frozen, logp_of)

    @torch.no_grad()
    def _run(self, model, fn: Callable):
        """``fn(reference model)``, under no_grad: the frozen copy, or the LoRA model with its adapter off."""
        if self.model is not None:
            return fn(self.model)
        if not hasattr(model, "disable_adapter"):
            raise ValueError("the adapter reference needs a LoRA model (peft); use --lora or another reference")
        with model.disable_adapter():
            return fn(model)

    def forget_logp(self, model, index, batch) -> torch.Tensor:
        return self._run(model, lambda m: self.logp_of(m, batch))

    alternative_logp = forget_logp  # computed from the batch itself, whichever set it comes from

    def retain_logits(self, model, index, batch) -> torch.Tensor:
        return self._run(model, lambda m: _forward(m, batch))


def make_reference(mode: str, model: nn.Module, forget, retain=None, with_logits: bool = False,
                   batch_size: int = 64, alternatives=None, logprob_chunk: int | None = None,
                   fused_logprobs: bool = False):
    """The reference of ``mode`` for ``model`` as it is now (call before training); ``alternatives``: the set of
    alternative responses whose reference log-probs a cached reference keeps (DPO); ``logprob_chunk`` and
    ``fused_logprobs``: the log-prob path of the losses (``unlearn.losses.unlearning_losses``)."""
    check_logprob_path(logprob_chunk, fused_logprobs)
    logp_of = partial(_sequence_logp, chunk=logprob_chunk, fused=fused_logprobs)
    if mode == "cached":
        return Cached.build(model, forget, retain if with_logits else None, batch_size, alternatives, logp_of)
    if mode == "adapter":
        if not hasattr(model, "disable_adapter"):
            raise ValueError("the adapter reference needs a LoRA model (peft); use --lora or another reference")
        return Frozen.adapter(logp_of)
    if mode == "copy":
        return Frozen.copy_of(model, logp_of)
    raise ValueError(f"unknown reference {mode!r}; valid: {', '.join(MODES)}")
