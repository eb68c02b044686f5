"""Collapse: the end state that the theory predicts for unbounded forgetting objectives, named when a run reaches it.

Two end states have a closed-form signature, whatever the data:

    uniform      q(. | ctx) = 1/V everywhere:  H(q) = log V  and  NLL = -log(1/V) = log V  on any data
    degenerate   q(. | ctx) = delta_k (one repeated token k):  H(q) = 0  and  NLL -> inf  off k

so a run is called collapsed at the first evaluation where (``collapse_kind``, tolerances in ``Tolerance``)

    degenerate   H <= 0.05 nats, and the retain NLL per token >= log V - 0.05 (or is not measured)
    uniform      H >= (1 - 0.02) log V,  or  the retain NLL per token >= log V - 0.05

with H the mean next-token entropy over response tokens (``output_entropy``) and the retain NLL the mean
negative log-likelihood per retain response token. "uniform" thus also names a model that predicts its retain
data no better than the uniform distribution does: its retain knowledge is gone whatever its entropy. A low
entropy alone is not collapse: a model that has memorised its data is confident and right (H ~ 0, NLL ~ 0).

Weights that diverge without overflowing (AdamW at lr 1e6: every weight near 1e6 after one step) give a
finite loss, so ``unlearn.train`` sees nothing wrong; their model is uniform and is named so here.

``CollapseMonitor`` wraps a run's ``evaluate(model, step)`` for ``unlearn.train.train``: it adds the entropy
and the collapse code to every evaluation, keeps the trainable weights of the last healthy evaluation, and can
end the run at the first collapsed one (``StopRun``) so that the caller keeps the model from before it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from unlearn.metrics import tokens
from unlearn.train import StopRun

KINDS = ("uniform", "degenerate")
CODES = {None: 0, "uniform": 1, "degenerate": 2}  # History.evals holds numbers: the "collapse" key holds these
KIND_OF_CODE = {code: kind for kind, code in CODES.items()}


@dataclass(frozen=True)
class Tolerance:
    """How near an end state a model must be to be called collapsed (``collapse_kind``).

    entropy_rtol: uniform when H >= (1 - entropy_rtol) log V. A random-weight model is there (logits of std
        sigma give H ~ log V - sigma^2 / 2: 0.1% below log V for the ``tiny`` architecture); a trained one is
        far below (the Markov toy 2.00 of log 10 = 2.30, a real LM 2-3 nats of log 32000 = 10.4).
    nll_atol: the retain NLL per token has reached the uniform level when NLL >= log V - nll_atol (nats):
        within 0.05 nats of a uniform guess, or worse.
    degenerate_entropy: degenerate when H <= this (nats): 0.05 nats is, e.g., 99.5% of the mass on one token.
    """

    entropy_rtol: float = 0.02
    nll_atol: float = 0.05
    degenerate_entropy: float = 0.05

    def __post_init__(self):
        if not (0 < self.entropy_rtol < 1 and self.nll_atol >= 0 and self.degenerate_entropy >= 0):
            raise ValueError(f"need 0 < entropy_rtol < 1, nll_atol >= 0 and degenerate_entropy >= 0, got {self}")


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def collapse_kind(retain_nll_per_token: float | None, entropy: float | None, vocab_size: int,
                  tol: Tolerance = Tolerance()) -> str | None:
    """None (healthy), "uniform" or "degenerate", from a model's retain NLL per token and output entropy (nats).

    With log V the entropy of the uniform distribution over V tokens (module docstring for why):
        reached = NLL >= log V - tol.nll_atol                           (retain predicted no better than uniform)
        "degenerate" if H <= tol.degenerate_entropy and (reached or NLL unknown)        (one repeated token)
        "uniform"    if H >= (1 - tol.entropy_rtol) log V, or reached                   (the uniform level)
    Either value may be None (not measured) or non-finite (treated as not measured); with both missing the
    answer is None. A near-zero entropy with a low retain NLL is a confident, correct model, not a collapse.
    """
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
    log_v = math.log(vocab_size)
    nll, entropy = _finite(retain_nll_per_token), _finite(entropy)
    reached = nll is not None and nll >= log_v - tol.nll_atol
    if entropy is not None and entropy <= tol.degenerate_entropy and (reached or nll is None):
        return "degenerate"
    if (entropy is not None and entropy >= (1 - tol.entropy_rtol) * log_v) or reached:
        return "uniform"
    return None


def collapsed_at_step(steps: Sequence[int], kinds: Sequence[str | None]) -> int | None:
    """The first of ``steps`` whose kind is not None (the state after that many updates), or None if none is.
    0 means the model was collapsed before the first update (a random-weight model is uniform)."""
    if len(steps) != len(kinds):
        raise ValueError(f"{len(steps)} steps but {len(kinds)} kinds")
    return next((int(s) for s, k in zip(steps, kinds, strict=True) if k is not None), None)


# ---------------------------------------------------------------------------------------------- measuring


def nll_and_entropy(model: torch.nn.Module, data, limit: int | None = None,
                    batch_size: int = 16) -> dict[str, float | list[float]]:
    """{"nll": mean NLL per response token, "entropy": mean next-token entropy (nats)} of ``model`` on the first
    ``limit`` sequences of ``data`` (all when None; the same ones at every call), from one forward pass
    (``unlearn.metrics.tokens.nll_and_entropy``: H(q) = log V - KL(q || uniform), clamped at 0):

        nll     = -(1/N) sum_{b,t} mask[b,t] log q(labels[b,t] | ctx)
        entropy =  (1/N) sum_{b,t} mask[b,t] H(q(. | ctx))

    over the N response positions of a ``unlearn.data.TokenSet`` or a ``sims.markov.Split``; one value per
    member for an ``unlearn.ensemble.Ensemble``."""
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1 sequences (or None for the whole set), got {limit}")
        data = data.take(slice(0, limit))
    if len(data) == 0 or not bool(data.mask.any()):
        raise ValueError("no response tokens to measure the NLL and entropy on")
    return tokens.nll_and_entropy(model, data, batch_size)


def output_entropy(model: torch.nn.Module, data, limit: int | None = None,
                   batch_size: int = 16) -> float | list[float]:
    """Mean next-token entropy (nats) of ``model`` over the response tokens of the first ``limit`` sequences of
    ``data``: log V for a uniform model, 0 for one that always puts its mass on one token (``nll_and_entropy``)."""
    return nll_and_entropy(model, data, limit, batch_size)["entropy"]


def vocab_size_of(model: torch.nn.Module) -> int:
    """V, the width of ``model``'s logits (what ``collapse_kind`` takes): the output head's rows for a Hugging
    Face model (LoRA-wrapped too, where the tokenizer may be shorter than the padded head), else
    ``model.cfg.vocab_size`` (``unlearn.models.transformer.Transformer``) or ``model.config.vocab_size``."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    for cfg in (getattr(model, "cfg", None), getattr(model, "config", None)):
        if getattr(cfg, "vocab_size", None):
            return int(cfg.vocab_size)
    raise ValueError(f"cannot tell the vocabulary size of {type(model).__name__}; pass vocab_size")


# ---------------------------------------------------------------------------------------------- monitoring


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of every parameter that training can move (requires_grad): for LoRA only the adapter."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


class CollapseMonitor:
    """``evaluate(model, step) -> dict`` for ``unlearn.train.train`` that names collapse .

    Each evaluation is the wrapped one's values plus, where missing, ``nll_key`` and ``entropy_key`` measured
    on ``data`` (``nll_and_entropy``: one pass for both), and "collapse": the code of its kind (``CODES``:
    0 healthy, 1 uniform, 2 degenerate; History keeps numbers). ``steps`` and ``kinds`` list what was seen;
    an evaluation at a step already seen (a "before" evaluation repeated by train at step 0) replaces it.

    Healthy evaluations keep ``last_healthy_step``, ``last_healthy_values`` and, when ``keep_state``, a CPU
    copy of the trainable weights, ``last_healthy_state`` (``state_fn(model)``, default ``trainable_state``).
    With ``stop``, the first collapsed evaluation that follows a healthy one raises ``StopRun``: ``train``
    records it and returns, leaving the collapsed model, and ``restore(model)`` puts back the weights of the last
    healthy evaluation. A model collapsed from its first evaluation (a random-weight one: uniform) is reported,
    ``started_collapsed``, but not stopped: there is no healthy model to keep.

    An ensemble's per-member values give per-member kinds (lists); ``stop`` is refused for them, since the
    members collapse at different steps and a run stops as a whole.
    """

    def __init__(self, evaluate: Callable[[torch.nn.Module, int], Mapping[str, Any]] | None, vocab_size: int,
                 stop: bool = False, *, data=None, limit: int | None = 256, batch_size: int = 16,
                 keep_state: bool | None = None, nll_key: str = "retain_nll", entropy_key: str = "entropy",
                 tol: Tolerance = Tolerance(),
                 state_fn: Callable[[torch.nn.Module], dict[str, torch.Tensor]] = trainable_state):
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
        if evaluate is None and data is None:
            raise ValueError("the collapse monitor needs an evaluate that measures the retain NLL or entropy, "
                             "or data to measure them on")
        self.evaluate, self.vocab_size, self.stop = evaluate, vocab_size, stop
        self.data, self.limit, self.batch_size = data, limit, batch_size
        self.keep_state = stop if keep_state is None else keep_state
        self.nll_key, self.entropy_key, self.tol, self.state_fn = nll_key, entropy_key, tol, state_fn
        self.steps: list[int] = []
        self.kinds: list[str | None | list[str | None]] = []
        self.last_healthy_step: int | None = None
        self.last_healthy_values: dict[str, Any] | None = None
        self.last_healthy_state: dict[str, torch.Tensor] | None = None
        self.stopped_at: int | None = None
        self.collapsed_values: dict[str, Any] | None = None  # the first collapsed evaluation of one model

    # -- the evaluation
    def _measure(self, model, values: Mapping[str, Any]) -> dict[str, Any]:
        values = dict(values)
        missing = [key for key in (self.nll_key, self.entropy_key) if key not in values]
        if missing and self.data is not None:
            found = nll_and_entropy(model, self.data, self.limit, self.batch_size)
            values.setdefault(self.nll_key, found["nll"])
            values.setdefault(self.entropy_key, found["entropy"])
        if self.nll_key not in values and self.entropy_key not in values:
            raise ValueError(f"the evaluation gives neither {self.nll_key!r} nor {self.entropy_key!r}, and the "
                             "collapse monitor has no data to measure them on")
        return values

    def _kind(self, values: Mapping[str, Any]):
        nll, entropy = (values.get(key) for key in (self.nll_key, self.entropy_key))
        per_member = [v for v in (nll, entropy) if isinstance(v, list | tuple)]
        if not per_member:
            return collapse_kind(nll, entropy, self.vocab_size, self.tol)
        if self.stop:
            raise ValueError("stopping on collapse needs one model; an ensemble's members collapse at different "
                             "steps")
        M = len(per_member[0])
        column = lambda v, m: v[m] if isinstance(v, list | tuple) else v
        return [collapse_kind(column(nll, m), column(entropy, m), self.vocab_size, self.tol) for m in range(M)]

    def __call__(self, model: torch.nn.Module, step: int) -> dict[str, Any]:
        inner_stop = None
        try:
            values = self.evaluate(model, step) if self.evaluate is not None else {}
        except StopRun as stop:  # the wrapped evaluation ends the run: annotate its values and pass it on
            inner_stop, values = stop, stop.values
        values = self._measure(model, values)
        kind = self._kind(values)
        values["collapse"] = [CODES[k] for k in kind] if isinstance(kind, list) else CODES[kind]
        if self.steps and self.steps[-1] == step:
            self.steps.pop()
            self.kinds.pop()
        self.steps.append(int(step))
        self.kinds.append(kind)
        if kind is not None and not isinstance(kind, list) and self.collapsed_values is None:
            self.collapsed_values = dict(values)
        if kind is None:
            self.last_healthy_step, self.last_healthy_values = int(step), dict(values)
            if self.keep_state:
                self.last_healthy_state = self.state_fn(model)
        elif self.stop and self.last_healthy_step is not None and inner_stop is None:
            self.stopped_at = int(step)
            raise StopRun(values)
        if inner_stop is not None:
            raise StopRun(values) from inner_stop
        return values

    # -- what the run reports
    @property
    def started_collapsed(self) -> bool:
        return bool(self.kinds) and self.kinds[0] is not None and not isinstance(self.kinds[0], list)

    @property
    def collapsed_at_step(self) -> int | None | list[int | None]:
        """``collapsed_at_step`` of what was seen; one per member for an ensemble."""
        if self.kinds and isinstance(self.kinds[0], list):
            return [collapsed_at_step(self.steps, [k[m] for k in self.kinds]) for m in range(len(self.kinds[0]))]
        return collapsed_at_step(self.steps, self.kinds)

    @property
    def kind(self) -> str | None | list[str | None]:
        """The kind at ``collapsed_at_step`` (None if never); one per member for an ensemble."""
        at = self.collapsed_at_step
        if isinstance(at, list):
            return [None if a is None else self.kinds[self.steps.index(a)][m] for m, a in enumerate(at)]
        return None if at is None else self.kinds[self.steps.index(at)]

    RESUMED = ("steps", "kinds", "last_healthy_step", "last_healthy_values", "last_healthy_state", "stopped_at",
               "collapsed_values")  # what a resumed run needs of what was seen (its state_dict)

    def state_dict(self) -> dict[str, Any]:
        """What was seen so far, for a checkpoint; ``load_state_dict`` puts it back."""
        return {key: getattr(self, key) for key in self.RESUMED}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key in self.RESUMED:
            setattr(self, key, state[key])

    def restore(self, model: torch.nn.Module) -> bool:
        """Copy ``last_healthy_state`` back into ``model``'s parameters (and buffers, if a ``state_fn`` kept
        them) in place, on their devices and in their dtypes; False when there is none."""
        if self.last_healthy_state is None:
            return False
        tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        unknown = sorted(set(self.last_healthy_state) - set(tensors))
        if unknown:
            raise KeyError(f"the kept state names tensors this model does not have: {', '.join(unknown[:5])}")
        with torch.no_grad():
            for name, saved in self.last_healthy_state.items():
                tensors[name].copy_(saved)
        return True

    def summary(self) -> dict[str, Any]:
        """What a run's JSON records (``describe_collapse`` reads it back into the output line):
        collapsed_at_step (step or None; 0: collapsed before the first update), collapse (the kind there),
        collapse_kinds (the kind of every evaluation, in order), started_collapsed, stopped_on_collapse (the
        step a --stop-on collapse run ended at, or None), kept_step (the evaluation whose weights ``restore``
        puts back after a stop, or None), collapse_values (the retain NLL and entropy at collapsed_at_step) and
        collapse_rule (log V and the tolerances). An ensemble gives per-member lists."""
        values = self.collapsed_values or {}
        return {"collapsed_at_step": self.collapsed_at_step, "collapse": self.kind, "collapse_kinds": self.kinds,
                "started_collapsed": self.started_collapsed, "stopped_on_collapse": self.stopped_at,
                "kept_step": self.last_healthy_step if self.stopped_at is not None else None,
                "collapse_values": {"retain_nll": values.get(self.nll_key), "entropy": values.get(self.entropy_key)}
                if self.collapsed_values is not None else None,
                "collapse_rule": {"log_vocab": math.log(self.vocab_size), **asdict(self.tol)}}

    def describe(self) -> str:
        """One line for the command's output: ``describe_collapse(self.summary())``."""
        return describe_collapse(self.summary())


def describe_collapse(summary: Mapping[str, Any]) -> str:
    """The output line of a run from its ``CollapseMonitor.summary()`` (as written to, and read from, JSON)."""
    at, kind, rule = summary["collapsed_at_step"], summary["collapse"], summary["collapse_rule"]
    log_v = rule["log_vocab"]
    if isinstance(at, list):
        return "collapse by member: " + ", ".join(
            "never" if a is None else f"{k} at step {a}" for a, k in zip(at, kind, strict=True))
    if at is None:
        return (f"collapse: none (at every evaluation the retain NLL per token stayed below log V - "
                f"{rule['nll_atol']:g} and the output entropy between {rule['degenerate_entropy']:g} and "
                f"{1 - rule['entropy_rtol']:g} log V; log V = {log_v:.3g})")
    what = {"uniform": "the uniform level", "degenerate": "one repeated token"}[kind]
    values = summary.get("collapse_values") or {}
    seen = ", ".join(f"{name} {float(values[key]):.3g}" for key, name in
                     (("retain_nll", "retain NLL per token"), ("entropy", "output entropy"))
                     if values.get(key) is not None)
    line = f"collapse: {kind} at step {at}, {what} ({seen + '; ' if seen else ''}log V = {log_v:.3g})"
    if summary.get("started_collapsed"):
        line += "; the model was already there before the first update"
    if summary.get("stopped_on_collapse") is not None:
        line += f"; the run stopped there and kept the model of step {summary['kept_step']}"
    return line
