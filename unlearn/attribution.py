"""Which weights may move: attribution scores, global top-fraction masks, and their files (WAGLE; Jia et al. 2024).

    WAGLE      S = |(theta_o - g_r / mu) * g_f|         (WAGLE's released ``snip_advanced``)
    magnitude  S = |theta_o|
    random     S ~ U(0, 1), from a seeded generator

g_f and g_r are the gradients of the forget and retain NLL at theta_o, SUMMED over one pass of each set
(WAGLE sums, so mu trades theta_o against N times the mean retain gradient), accumulated in float32 whatever
the model's dtype. The score is the bi-level estimate of how much the forget loss changes when weight i is
switched off after the retain problem is re-fitted with Hessian ~ mu I: theta_o * g_f is a SNIP pruning
sensitivity, -(g_r * g_f) / mu the forget-retain gradient alignment; the released configs use mu = 1e-6, where the
second term dominates. A mask keeps the global top ``ratio`` fraction of every trainable weight (embeddings,
norms and head included; no per-layer quota): True = may move. ``unlearn.train`` multiplies gradients and
weight decay by it, so a masked-out weight is bitwise unchanged (WAGLE's own loop still decays them). A mask
file (``save_masks``, ``load_masks``) names every trainable parameter, or says in its metadata whether the ones
it leaves out are frozen or free (``missing=frozen`` / ``missing=free``).

Threshold without a global sort (``top_fraction_masks``): the k-th largest of N scores is bracketed by quantiles
of a random sample, the scores inside the bracket (a small fraction of N) are gathered and the exact k-th value
taken among them, and ties at the threshold are broken by position (parameter order, then flat index), so
exactly k = round(ratio * N) weights are kept. Memory beyond the scores themselves: the sample and the bracket.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unlearn.io import atomic_write

KINDS = ("wagle", "magnitude", "random")
Scores = dict[str, torch.Tensor]


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def summed_gradients(model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor],
                     batches: Iterable[Any]) -> Scores:
    """sum_b grad loss_fn(model, b) for every trainable parameter, accumulated in float32 (the model's own
    .grad is left as it was). ``loss_fn`` returns a scalar (a batch's summed or mean NLL)."""
    params = trainable(model)
    saved = {name: p.grad for name, p in params.items()}
    total = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    try:
        for batch in batches:
            grads = torch.autograd.grad(loss_fn(model, batch), list(params.values()), allow_unused=True)
            for (name, _), g in zip(params.items(), grads, strict=True):
                if g is not None:
                    total[name] += g.float()
    finally:
        for name, p in params.items():
            p.grad = saved[name]
    return total


def nll_gradients(model: nn.Module, data, batch_size: int = 256) -> Scores:
    """``summed_gradients`` of the NLL -log p(y|x) summed over every sequence of ``data`` (anything with
    take/trim whose batches hold input_ids, attention_mask, labels and mask, on the model's device), in
    batches of ``batch_size``: WAGLE's g_f and g_r."""
    from unlearn.logprobs import sequence_logprobs

    def loss(m, start):
        batch = data.take(slice(start, start + batch_size)).trim()
        logits = m(batch.input_ids, attention_mask=batch.attention_mask).logits
        return -sequence_logprobs(logits, batch.labels, batch.mask).logp.sum()

    return summed_gradients(model, loss, range(0, len(data), batch_size))


def wagle_scores(model: nn.Module, forget_grad: Scores, retain_grad: Scores, mu: float) -> Scores:
    """|(theta_o - g_r / mu) * g_f| per trainable parameter (module docstring), in float32. The gradient dicts
    are overwritten with the scores (so a 7B model holds two float32 copies, not three)."""
    if not (math.isfinite(mu) and mu > 0):
        raise ValueError(f"mu must be a finite number > 0, got {mu!r}")
    scores = {}
    for name, p in trainable(model).items():
        if name not in forget_grad or name not in retain_grad:
            raise ValueError(f"no forget or retain gradient for parameter {name!r}")
        g_r = retain_grad[name].div_(-mu).add_(p.detach().float())  # theta_o - g_r / mu, in place
        scores[name] = g_r.mul_(forget_grad[name]).abs_()
        forget_grad[name] = retain_grad[name] = scores[name]
    return scores


def magnitude_scores(model: nn.Module) -> Scores:
    return {name: p.detach().float().abs() for name, p in trainable(model).items()}


def random_scores(model: nn.Module, generator: torch.Generator) -> Scores:
    """Uniform scores drawn on the CPU from ``generator`` in parameter order (reproducible on any device)."""
    return {name: torch.rand(p.shape, generator=generator).to(p.device) for name, p in trainable(model).items()}


def _kth_largest(scores: Scores, k: int, generator: torch.Generator, sample_size: int) -> float:
    """The exact k-th largest value (1-based) of all scores, without concatenating them (module docstring)."""
    tensors = [s.reshape(-1) for s in scores.values()]
    sizes = torch.tensor([t.numel() for t in tensors], dtype=torch.float64)
    n = int(sizes.sum())
    picks = torch.multinomial(sizes / n, min(sample_size, n), replacement=True, generator=generator)
    sample = torch.cat([tensors[i][torch.randint(tensors[i].numel(), (int(c),), generator=generator)
                                   .to(tensors[i].device)].float().cpu()
                        for i, c in enumerate(torch.bincount(picks, minlength=len(tensors))) if c > 0])
    q = 1.0 - k / n  # the threshold sits at this quantile
    width = 4.0 / math.sqrt(len(sample)) + 1.0 / len(sample)
    while True:
        lo = -math.inf if q - width <= 0 else float(torch.quantile(sample, q - width))
        hi = math.inf if q + width >= 1 else float(torch.quantile(sample, q + width))
        above = sum(int((t > hi).sum()) for t in tensors)
        inside = [t[(t >= lo) & (t <= hi)].float().cpu() for t in tensors]
        n_inside = sum(len(x) for x in inside)
        if above < k <= above + n_inside:
            values = torch.cat(inside)
            return float(torch.topk(values, k - above).values[-1])
        width *= 4  # the sample missed (rare): widen the bracket; at width >= 1 it holds every score


def top_fraction_masks(scores: Scores, ratio: float, generator: torch.Generator | None = None,
                       sample_size: int = 1 << 20) -> dict[str, torch.Tensor]:
    """Bool masks keeping exactly k = round(ratio * N) of the N scored weights: those above the k-th largest
    score and, among those equal to it, the first in parameter order (module docstring). ratio in (0, 1]."""
    if not (isinstance(ratio, int | float) and 0 < ratio <= 1):
        raise ValueError(f"mask ratio must lie in (0, 1], got {ratio!r}")
    for name, s in scores.items():
        if not torch.isfinite(s).all():
            raise ValueError(f"scores of {name!r} are not all finite (NaN or inf gradients?); no mask can rank them")
    n = sum(s.numel() for s in scores.values())
    k = round(ratio * n)
    if k >= n:
        return {name: torch.ones_like(s, dtype=torch.bool) for name, s in scores.items()}
    if k == 0:
        return {name: torch.zeros_like(s, dtype=torch.bool) for name, s in scores.items()}
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    threshold = _kth_largest(scores, k, g, sample_size)
    masks = {name: (s > threshold).contiguous() for name, s in scores.items()}
    ties = k - sum(int(m.sum()) for m in masks.values())
    for name, s in scores.items():  # ties at the threshold: first come, first kept
        if ties <= 0:
            break
        at = (s == threshold).reshape(-1)
        take = at.nonzero().squeeze(1)[:ties]
        masks[name].view(-1)[take] = True  # contiguous, so the view writes through
        ties -= len(take)
    return masks


# ---------------------------------------------------------------------------------------------- spec and files


def parse_mask_spec(spec: str) -> tuple[str, float] | Path:
    """"wagle:0.8" / "magnitude:0.5" / "random:0.2" -> (kind, ratio); anything else must be an existing
    .safetensors mask file (``save_masks``): a .safetensors path that is not there is refused as such."""
    kind, sep, raw = spec.partition(":")
    if sep and kind in KINDS:
        try:
            ratio = float(raw)
        except ValueError:
            raise ValueError(f"mask {spec!r}: the ratio {raw!r} is not a number") from None
        if not 0 < ratio <= 1:
            raise ValueError(f"mask {spec!r}: the ratio must lie in (0, 1] (the fraction of weights that may move)")
        return kind, ratio
    path = Path(spec)
    if path.suffix == ".safetensors":
        if path.is_file():
            return path
        raise ValueError(f"mask file {path}: " + ("not a file" if path.exists() else "no such file"))
    raise ValueError(f"mask {spec!r}: expected KIND:RATIO with KIND one of {', '.join(KINDS)} (e.g. wagle:0.8), "
                     "or the path of a .safetensors mask file")


def save_masks(masks: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write {parameter name: bool tensor} as safetensors, atomically (temporary file, then rename). A file that
    leaves trainable parameters out must say what they do in ``metadata``: {"missing": "frozen"} or
    {"missing": "free"} (``load_masks``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().bool().contiguous().cpu() for k, v in masks.items()}
    # metadata None, not {}: safetensors 0.8 writes an unreadable header for no tensors with empty metadata
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=dict(metadata or {}) or None))
    return path


MISSING = ("frozen", "free")  # what a mask file's metadata ``missing`` may say of the parameters it leaves out


def load_masks(path: str | Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """Masks from a safetensors file, checked against ``model``, one mask for every trainable parameter.

    Every tensor must name one of the model's trainable parameters with that parameter's shape, and be boolean.
    The file must name EVERY trainable parameter, unless its safetensors metadata says ``missing=frozen`` (the
    parameters it leaves out do not move: all-False masks) or ``missing=free`` (they all may move: all-True
    masks); a file that leaves parameters out without saying so (an empty file, a mask of another model's
    subset) is refused, naming the first of them, so that no mask is silently read as "train everything".
    Errors name the file and the parameter."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        masks = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
    except (OSError, SafetensorError) as err:
        raise ValueError(f"mask file {path}: cannot read it as safetensors ({err})") from None
    params = trainable(model)
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"mask file {path}: {name!r} is not a trainable parameter of this model (a mask made "
                             "for another model?)")
        if mask.dtype != torch.bool or mask.shape != params[name].shape:
            raise ValueError(f"mask file {path}: {name!r} is {mask.dtype} {tuple(mask.shape)}, the parameter "
                             f"needs torch.bool {tuple(params[name].shape)}")
    missing = [name for name in params if name not in masks]
    rule = metadata.get("missing")
    if rule is not None and rule not in MISSING:
        raise ValueError(f"mask file {path}: metadata missing={rule!r}; valid: {', '.join(MISSING)}")
    if missing and rule is None:
        shown = ", ".join(repr(n) for n in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ValueError(f"mask file {path}: no mask for {len(missing)} of the model's {len(params)} trainable "
                         f"parameters ({shown}); name every one, or say what they do in the file's metadata: "
                         "missing=frozen or missing=free")
    return {name: masks[name].to(p.device) if name in masks else
            torch.full(p.shape, rule == "free", dtype=torch.bool, device=p.device) for name, p in params.items()}


def scores(kind: str, model: nn.Module, *, gradients: Callable[[], tuple[Scores, Scores]] | None = None,
           mu: float = 1e-6, generator: torch.Generator | None = None) -> Scores:
    """Scores of one KIND: WAGLE from ``gradients()`` = (forget gradient, retain gradient), each
    ``summed_gradients`` over its set (called only for WAGLE), magnitude, or random from ``generator``."""
    if kind == "wagle":
        if gradients is None:
            raise ValueError("wagle scores need the summed forget and retain gradients")
        return wagle_scores(model, *gradients(), mu)
    if kind == "magnitude":
        return magnitude_scores(model)
    if kind == "random":
        return random_scores(model, generator if generator is not None else torch.Generator().manual_seed(0))
    raise ValueError(f"unknown mask kind {kind!r}; valid: {', '.join(KINDS)}")


def masks_for(spec: str, model: nn.Module, scores_of: Callable[[str], Scores],
              generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The masks a ``--mask`` spec asks for: loaded from a file (checked against ``model``), or
    ``top_fraction_masks(scores_of(kind), ratio)``."""
    parsed = parse_mask_spec(spec)
    if isinstance(parsed, Path):
        return load_masks(parsed, model)
    kind, ratio = parsed
    return top_fraction_masks(scores_of(kind), ratio, generator)
