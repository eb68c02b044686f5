"""Unlearning on the Markov toy: one run in place (``unlearn_run``) or M runs side by side as one
``unlearn.ensemble.Ensemble`` (``unlearn_runs``: methods, betas, batch orders, weight masks of
``unlearn.attribution``), each member on the trajectory it would follow alone; the evaluators and the
per-sequence weights the experiments record.

Unlearning (SimNPO paper App. H): 50 steps of batch 4 (AdamW, lr 5e-4; any optimizer of ``unlearn.optim`` on
request) on forget1 + forget2 train, through ``unlearn.losses`` with a cached reference: the reference model's
forget log-probs are computed once before unlearning (so NPO never runs a second model) and *+KL methods read
cached reference logits on the retain split.

Metric (SimNPO paper App. H): per-token KL(T_c(s_t, .) || p_model(. | s_<=t)) averaged over the non-pad
positions of a split (``unlearn.metrics.tokens.token_kl``): "forget quality" on a forget test split (higher =
more forgotten), "retain distance" on the retain test split (lower = better). A retain-only Bayes model scores
``theory.markov.retrained_kl``: 0.4263 on forget1 (length 20) and 0.4470 on forget2 (length 5).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from sims.markov.world import EVAL_SPLITS, MarkovWorld, Split
from unlearn import attribution, losses
from unlearn.ensemble import Ensemble
from unlearn.metrics.tokens import (
    batched_logits,
    kl_and_entropy,
    model_device,
    per_sequence_stats,
    token_kl,
)
from unlearn.objectives import MethodParams, SequenceStats, forget_weights, get_method
from unlearn.reference import Cached
from unlearn.rng import generator as make_generator
from unlearn.train import PRECISIONS, History, TrainConfig, forward_precision, train


def sample_weights(model: torch.nn.Module, split: Split, method: str, params: MethodParams,
                   ref_logp: torch.Tensor | None = None, batch_size: int = 1024) -> torch.Tensor:
    """The per-sequence weight of ``method``'s forget term on every sequence of ``split`` at the model's current
    parameters (float64, (n,)), for the weight-allocation experiment (SimNPO paper Figs 3-4;
    ``unlearn.objectives.forget_weights``).
    ``ref_logp``: the reference model's per-sequence log-probs on ``split`` (NPO-type methods only)."""
    stats = per_sequence_stats(model, split, batch_size)
    ref = None if ref_logp is None else ref_logp.to(stats.logp.device)
    return forget_weights(method, params, SequenceStats(stats.logp, stats.n_tokens, logp_ref=ref))


def unlearning_losses(method: str | Sequence[str], params: MethodParams | Sequence[MethodParams], forget: Split,
                      retain: Split, ref_logp: torch.Tensor, ref_retain_logits: torch.Tensor | None = None) -> Callable:
    """losses_fn for ``unlearn.train`` on the Markov world (``unlearn.losses.unlearning_losses``): batch =
    (forget index, retain index, mismatch index), one method on a model or one per member of an ensemble.

    The reference is cached (``unlearn.reference.Cached``): ``ref_logp`` (n_forget,), the reference model's
    log-probs taken before training, so no reference model runs, and, for *+KL methods, its logits on the
    retain split ``ref_retain_logits`` (n_retain, T, V). The only alternative responses here are random retain
    continuations of the forget prompts (``mismatched``; one retain sequence per forget sequence at the batch's
    third index), for the methods whose forget term asks for alternative="mismatch" (GA+Mismatch+KL). Splits
    and caches must live on the model's device.
    """
    for name in [method] if isinstance(method, str) else method:
        m = get_method(name)
        given = {"logp_ref", "alt_logp"} if m.forget.alternative == "mismatch" else {"logp_ref"}
        if not set(m.needs["forget"]) <= given:
            raise ValueError(f"method {name!r} needs alternative responses, which the Markov world does not have")
        if "kl" in m.needs["retain"] and ref_retain_logits is None:
            raise ValueError(f"method {name!r} needs the reference's retain logits (ref_retain_logits)")
    return losses.unlearning_losses(method, params, forget, retain, Cached(ref_logp, ref_retain_logits),
                                    alternative=lambda f, r: mismatched(forget, retain, f, r))


def mismatched(forget: Split, retain: Split, forget_index: torch.Tensor, retain_index: torch.Tensor) -> Split:
    """Yao et al.'s random mismatch responses on the Markov world: forget sequence f's prompt (its first state)
    followed by retain sequence r's continuation, i.e. input ids [f_0, r_1, ..., r_{L-2}] and labels
    [r_1, ..., r_{L-1}] (target_probs are the retain rows: these sequences are not evaluated)."""
    alt = retain.take(retain_index)
    input_ids = alt.input_ids.clone()
    input_ids[..., 0] = forget.input_ids[forget_index.to(input_ids.device), 0]
    return replace(alt, input_ids=input_ids)


def evaluator(world: MarkovWorld, device: str | torch.device, batch_size: int = 1024,
              limit: int | None = None) -> Callable:
    """(model, step) -> {"retain_kl", "forget1_kl", "forget2_kl"}: ``token_kl`` on the three test splits, or on
    the first ``limit`` sequences of each (the same ones at every call, so a curve stays smooth); one value per
    member for an ensemble."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 sequences (or None for whole splits), got {limit}")
    splits = {key: world[name].take(slice(0, limit)).to(device) for key, name in EVAL_SPLITS.items()}
    return lambda model, step: {key: token_kl(model, split, batch_size) for key, split in splits.items()}


def summary_evaluator(world: MarkovWorld, device: str | torch.device, limit: int | None = None,
                      batch_size: int = 1024, entropy: bool = True) -> Callable:
    """(model, step) -> {"forget_kl", "forget1_kl", "forget2_kl", "retain_kl", "entropy"} on the first ``limit``
    sequences of each test split: ``token_kl`` on Forget1 and on Forget2 test, ``forget_kl`` their token-count
    weighted mean (the token KL of the two splits taken together: every non-pad forget position counts once),
    ``token_kl`` and (unless ``entropy=False``) ``mean_entropy`` on retain test, both from one pass
    (``kl_and_entropy``). One value per member for an ensemble."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 sequences (or None for whole splits), got {limit}")
    splits = {key: world[name].take(slice(0, limit)).to(device) for key, name in EVAL_SPLITS.items()}
    tokens = {k: float(splits[f"{k}_kl"].mask.sum()) for k in ("forget1", "forget2")}

    def evaluate(model, step):
        out = {key: token_kl(model, split, batch_size) for key, split in splits.items() if key != "retain_kl"}
        if entropy:  # one pass over retain test for both
            retain = kl_and_entropy(model, splits["retain_kl"], batch_size)
            out.update(retain_kl=retain["kl"], entropy=retain["entropy"])
        else:
            out["retain_kl"] = token_kl(model, splits["retain_kl"], batch_size)
        f1, f2 = (torch.tensor(out[f"{k}_kl"], dtype=torch.float64) for k in tokens)
        out["forget_kl"] = ((tokens["forget1"] * f1 + tokens["forget2"] * f2) / sum(tokens.values())).tolist()
        return out

    return evaluate


def attribution_scores(kind: str, model: torch.nn.Module, world: MarkovWorld, mu: float = 1e-6,
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """``unlearn.attribution.scores`` on the Markov world: WAGLE's gradients are the forget NLL summed over
    forget train and the retain NLL summed over as many retain train sequences (a random pick from the stream
    (seed, "wagle-retain")); random scores come from the stream (seed, "mask-random")."""
    device = model_device(model)

    def gradients():
        forget = world.forget_set().to(device)
        pick = torch.randperm(len(world["retain_train"]), generator=make_generator(seed, "wagle-retain"))
        retain = world["retain_train"].take(pick[:len(forget)]).to(device)
        return attribution.nll_gradients(model, forget), attribution.nll_gradients(model, retain)

    return attribution.scores(kind, model, gradients=gradients, mu=mu, generator=make_generator(seed, "mask-random"))


def masks(spec: str, model: torch.nn.Module, world: MarkovWorld, mu: float = 1e-6,
          seed: int = 0) -> dict[str, torch.Tensor]:
    """The masks of a ``--mask`` spec (``unlearn.attribution.parse_mask_spec``) for a Markov model."""
    return attribution.masks_for(spec, model, lambda kind: attribution_scores(kind, model, world, mu, seed),
                                 make_generator(seed, "mask-threshold"))


@torch.no_grad()
def _reference_logits(model: torch.nn.Module, split: Split, batch_size: int = 1024) -> torch.Tensor:
    return torch.cat([logits.float() for _, logits in batched_logits(model, split, batch_size)])


@dataclass(frozen=True)
class _Unlearning:
    """What every unlearning run on a world shares: the splits on the model's device, the reference's cached
    statistics (taken from the model before it moves, in the run's precision), and the step count."""

    forget: Split
    retain: Split
    ref_logp: torch.Tensor
    ref_retain_logits: torch.Tensor | None
    steps: int

    @staticmethod
    def prepare(model, methods: Sequence[str], world: MarkovWorld, steps: int, batch_size: int,
                precision: str) -> _Unlearning:
        device = model_device(model)
        if precision != "bf16-autocast":
            model.to(PRECISIONS[precision])  # before the reference pass, so that logp = logp_ref exactly at step 0
        forget, retain = world.forget_set().to(device), world["retain_train"].to(device)
        with_kl = any("kl" in get_method(name).needs["retain"] for name in methods)
        with forward_precision(device, precision):
            ref_logp = per_sequence_stats(model, forget).logp
            ref_retain_logits = _reference_logits(model, retain) if with_kl else None
        return _Unlearning(forget, retain, ref_logp, ref_retain_logits,
                           min(steps, math.ceil(len(forget) / batch_size)))

    def orders(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A run's forget and retain permutations and, for each forget position, the retain sequence that gives
        its mismatch response (GA+Mismatch+KL), drawn in that order from its generator."""
        forget, retain = torch.randperm(len(self.forget), generator=g), torch.randperm(len(self.retain), generator=g)
        return forget, retain, torch.randint(len(self.retain), (len(self.forget),), generator=g)

    def windows(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions in the permutations read at ``step``: forget (the epoch's last batch may be smaller) and
        retain (wrapping around)."""
        window = torch.arange(step * batch_size, (step + 1) * batch_size)
        return window[window < len(self.forget)], window % len(self.retain)


def unlearn_run(model: torch.nn.Module, method: str, params: MethodParams, world: MarkovWorld, *, steps: int = 50,
                batch_size: int = 4, lr: float = 5e-4, generator: torch.Generator | None = None,
                evaluate_every: int = 1, evaluate: Callable | None = None, precision: str = "float32",
                masks: dict[str, torch.Tensor] | None = None, progress: bool | None = None,
                optimizer: str = "adamw", adam_betas: tuple[float, float] = TrainConfig.adam_betas,
                adam_eps: float = TrainConfig.adam_eps) -> History:
    """Unlearn ``world.forget_set()`` from ``model`` (in place; it is the reference) and return the History.

    One epoch over a random permutation of the forget set in batches of ``batch_size``, capped at ``steps``
    (SimNPO synthetic code: 50 steps of 4, AdamW lr 5e-4, no weight decay); a method with a retain term also
    draws retain batches of the same size from a permutation of retain_train. Both permutations come from
    ``generator`` (default: the stream (world seed, "markov-unlearn", method)). Evaluation (default
    ``evaluator``: token KL on the three test splits) runs before step 0, every ``evaluate_every`` steps and
    after the last; History.evals holds its values. ``masks``: {parameter name: bool tensor} of the weights
    that may move (``unlearn.attribution``; the others stay bitwise unchanged). ``optimizer``, ``adam_betas``,
    ``adam_eps``: ``unlearn.train.TrainConfig``'s (default: AdamW, betas (0.9, 0.999), eps 1e-8;
    ``UnlearningSetup.train_options`` gives them from a config).
    """
    run = _Unlearning.prepare(model, [method], world, steps, batch_size, precision)
    g = generator if generator is not None else make_generator(world.cfg.seed, "markov-unlearn", method)
    forget_order, retain_order, mismatch_order = run.orders(g)

    def micro_batches(step):
        f, r = run.windows(step, batch_size)
        return [(forget_order[f], retain_order[r], mismatch_order[f])]

    device = model_device(model)
    cfg = TrainConfig(steps=run.steps, lr=lr, optimizer=optimizer, adam_betas=adam_betas, adam_eps=adam_eps,
                      eval_every=evaluate_every, precision=precision, device=str(device), progress=progress,
                      name=f"unlearn markov ({method})")
    losses = unlearning_losses(method, params, run.forget, run.retain, run.ref_logp, run.ref_retain_logits)
    return train(model, losses, micro_batches, cfg, evaluate=evaluate or evaluator(world, device), masks=masks)


def unlearn_runs(model: torch.nn.Module, methods: Sequence[str], params: Sequence[MethodParams], world: MarkovWorld,
                 generators: Sequence[torch.Generator], *, steps: int = 50, batch_size: int = 4, lr: float = 5e-4,
                 evaluate_every: int = 1, evaluate: Callable | None = None, precision: str = "float32",
                 masks: Sequence[dict[str, torch.Tensor] | None] | None = None,
                 progress: bool | None = None, optimizer: str = "adamw",
                 adam_betas: tuple[float, float] = TrainConfig.adam_betas,
                 adam_eps: float = TrainConfig.adam_eps) -> tuple[History, Ensemble]:
    """M = len(methods) unlearning runs from ``model`` (left unchanged) trained side by side as one ensemble.

    Run m is ``unlearn_run(copy of model, methods[m], params[m], world, generator=generators[m], ...)``: the
    same reference statistics, batches and optimizer trajectory (tests/test_markov.py checks it to float32
    rounding), but all M runs take one batched forward and backward per step. History.evals hold one value
    per run at each evaluated step (at step 0, where every run is still the model, it is scored once); the
    returned ensemble holds the unlearned models (``.member(m)``).
    ``masks[m]``: {parameter name of the model: bool tensor} of the weights run m may move
    (``unlearn.attribution``), or None for a dense run. ``optimizer``, ``adam_betas``, ``adam_eps``: as in
    ``unlearn_run``.
    """
    M = len(methods)
    if not (M == len(params) == len(generators) and M > 0):
        raise ValueError(f"need one method, params and generator per run, got {M}, {len(params)}, {len(generators)}")
    device = model_device(model)
    model = copy.deepcopy(model)
    run = _Unlearning.prepare(model, methods, world, steps, batch_size, precision)
    forget_orders, retain_orders, mismatch_orders = (torch.stack(o) for o in zip(*(run.orders(g) for g in generators),
                                                                                  strict=True))
    ensemble = Ensemble.replicate(model, M)

    def micro_batches(step):
        f, r = run.windows(step, batch_size)
        return [(forget_orders[:, f], retain_orders[:, r], mismatch_orders[:, f])]

    cfg = TrainConfig(steps=run.steps, lr=lr, optimizer=optimizer, adam_betas=adam_betas, adam_eps=adam_eps,
                      eval_every=evaluate_every, precision=precision, device=str(device), progress=progress,
                      name=f"unlearn markov ({M} runs)")
    losses = unlearning_losses(methods, params, run.forget, run.retain, run.ref_logp, run.ref_retain_logits)
    stacked = None
    if masks is not None and any(m is not None for m in masks):
        if len(masks) != M:
            raise ValueError(f"need one mask (or None) per run, got {len(masks)} for {M} runs")
        stacked = {f"module.{name}": torch.stack([m[name] if m is not None and name in m
                                                  else torch.ones_like(p, dtype=torch.bool) for m in masks])
                   for name, p in model.named_parameters() if any(m is not None and name in m for m in masks)}
    score = evaluate or evaluator(world, device)

    def evaluate_members(members: Ensemble, step: int) -> dict:
        if step == 0:  # every member is still a copy of the model (Ensemble.replicate): score one, M times
            return {key: [value] * M for key, value in score(members.member(0), step).items()}
        return score(members, step)

    history = train(ensemble, losses, micro_batches, cfg, evaluate=evaluate_members, masks=stacked)
    return history, ensemble
