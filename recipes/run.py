"""One unlearning run, and relearning attacks on its result: what ``unlearn run`` and ``unlearn relearn`` do with
``--model markov`` (the paper's setup) or ``--model markov-fast`` (the fast presets' smaller world and model).
``unlearn run`` also takes a Hugging Face model (a directory, or an architecture such as ``tiny``) with a task
(``--task markov|facts|jsonl``, the data of ``unlearn validate``). A run folder holds:

    run.json            the settings, the metrics before and after (forget KL, retain KL, entropy), the History
    model.safetensors   the unlearned model's weights
    mask.safetensors    the mask it was trained with (``--mask``), if any
    relearn.json        what ``unlearn relearn`` measured, if it ran
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from sims import markov
from unlearn import attribution, distributed
from unlearn.config import config_dict, require_at_least_one, require_positive
from unlearn.io import atomic_write, to_jsonable
from unlearn.losses import token_mean_nll
from unlearn.models.transformer import Transformer
from unlearn.objectives import MethodParams, get_method
from unlearn.relearn import SUBSETS, relearn, relearn_subset
from unlearn.rng import generator
from unlearn.train import resolve_device

MODELS = {"markov": markov.Setup(), "markov-fast": markov.Setup(**markov.FAST_SETUP)}
REFERENCES = ("cached", "copy")  # the adapter reference needs LoRA, which `unlearn run` does not train


@dataclass(frozen=True)
class RunConfig:
    """``unlearn run``: a toy model (``MODELS``) or a Hugging Face model and task."""

    model: str = "markov"
    task: str = "markov"  # Hugging Face models: markov, facts or jsonl (with forget and retain files)
    forget: str | None = None
    retain: str | None = None
    method: str = "NPO"
    beta: float = 0.1
    gamma: float = 0.0
    lam: float = 1.0
    mismatch: float = 1.0
    steps: int = 50
    batch_size: int = 4
    lr: float = 5e-4
    mask: str | None = None
    mu: float = 1e-6
    seed: int = 0
    eval_limit: int | None = None
    device: str = "cpu"
    reference: str = "cached"  # Hugging Face models: cached or copy (unlearn.reference); toy models: cached

    def __post_init__(self):
        if self.model not in MODELS:
            self.as_validate_config()  # an architecture name or a model directory, and a valid task
        if self.reference not in REFERENCES:
            raise ValueError(f"unknown reference {self.reference!r}; valid: {', '.join(REFERENCES)}")
        if self.model in MODELS and self.reference != "cached":
            raise ValueError(f"the toy models ({', '.join(MODELS)}) use the cached reference; "
                             f"--reference {self.reference} is for Hugging Face models")
        get_method(self.method)
        self.params()  # validates beta, gamma, lam, mismatch
        if self.mask is not None:
            attribution.parse_mask_spec(self.mask)
        require_at_least_one(self, "steps", "batch_size")

    def params(self) -> MethodParams:
        return MethodParams(beta=self.beta, gamma=self.gamma, lam=self.lam, mismatch=self.mismatch)

    def as_validate_config(self):
        """The ``recipes.validate.ValidateConfig`` that names the same model and task (its data and model code)."""
        from recipes.validate import ValidateConfig

        try:
            return ValidateConfig(model=self.model, task=self.task, forget=self.forget, retain=self.retain,
                                  seed=self.seed, device=self.device, precision="float32")
        except ValueError as err:
            raise ValueError(f"model {self.model!r}: not a toy model ({', '.join(MODELS)}) and not a usable "
                             f"Hugging Face model or task: {err}") from None


def _save(out: Path, model, masks, cfg: RunConfig, doc: dict) -> dict:
    """Write the run folder (rank 0 only under torchrun; the weights gathered from the shards first)."""
    from safetensors.torch import save_file

    state = distributed.full_state_dict(model)  # collective when sharded: every rank takes part
    if not distributed.is_main():
        return doc
    doc["moved_fraction"] = None if masks is None else \
        sum(int(m.sum()) for m in masks.values()) / sum(p.numel() for p in model.parameters())
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "model.safetensors", lambda p: save_file({k: v.contiguous() for k, v in state.items()}, p))
    if masks is not None:
        attribution.save_masks(masks, out / "mask.safetensors", {"spec": cfg.mask})
    atomic_write(out / "run.json", lambda p: Path(p).write_text(json.dumps(to_jsonable(doc), indent=1)))
    return doc


def unlearn_language_model(cfg: RunConfig, out: Path, progress: bool | None = None) -> dict:
    """``unlearn run`` on a Hugging Face model (a directory or a named architecture) and task: the reference of
    ``cfg.reference`` (cached: the forget log-probs and, for *+KL methods, the retain logits, n_retain x T x V
    floats on the device; copy: a frozen model), masks from NLL gradients summed over the forget and retain
    sets, forget and retain NLL per token before and after.

    Under ``torchrun --nproc_per_node N -m recipes.cli run ...`` the model is sharded with FSDP2
    (``unlearn.distributed``): every rank builds the same model, data and reference, takes its slice of each
    seeded global batch, and the run follows the one-process run up to reduction order; the recorded losses
    are averaged over ranks and rank 0 writes the folder. Masks need the whole model: one process only."""
    from recipes import validate
    from unlearn.losses import unlearning_losses
    from unlearn.models import hf
    from unlearn.reference import make_reference
    from unlearn.train import TrainConfig, shuffled_batches, train

    with distributed.process_group(cfg.device) as (rank, world, device):
        if world > 1 and cfg.mask:
            raise ValueError(f"--mask selects weights of the whole model, which FSDP2 shards over the {world} "
                             "ranks; run masked runs in one process")
        vcfg = dataclasses.replace(cfg.as_validate_config(), device=str(device))
        forget, retain, vocab, _ = validate.task_data(vcfg)
        size = min(cfg.batch_size, len(forget))
        distributed.check_batches(len(forget), size, world, "--batch-size on the forget set")
        distributed.check_batches(len(retain), min(size, len(retain)), world, "--batch-size on the retain set")
        forget, retain = forget.to(device), retain.to(device)
        model = hf.load_model(vcfg.model_spec(vocab))
        reference = make_reference(cfg.reference, model, forget, retain,
                                   with_logits="kl" in get_method(cfg.method).needs["retain"])
        losses = unlearning_losses(cfg.method, cfg.params(), forget, retain, reference)  # refuses what it can't run

        def scores(kind):
            gradients = lambda: (attribution.nll_gradients(model, forget), attribution.nll_gradients(model, retain))
            return attribution.scores(kind, model, gradients=gradients, mu=cfg.mu,
                                      generator=generator(cfg.seed, "mask-random"))

        masks = (attribution.masks_for(cfg.mask, model, scores, generator(cfg.seed, "mask-threshold"))
                 if cfg.mask else None)
        forget_batches, _ = shuffled_batches(len(forget), size, cfg.seed, "run", "forget")
        retain_batches, _ = shuffled_batches(len(retain), min(size, len(retain)), cfg.seed, "run", "retain")

        def micro_batches(step):
            return [(distributed.rank_slice(forget_batches(step)[0], rank, world),
                     distributed.rank_slice(retain_batches(step)[0], rank, world), None)]

        def evaluate(m, step):  # every rank runs the same passes over the whole sets (FSDP2 gathers in each)
            return {"forget_nll": validate.nll_per_token(m, forget), "retain_nll": validate.nll_per_token(m, retain)}

        before = evaluate(model, 0)
        if world > 1:
            model = distributed.wrap(model, "fsdp")
        tc = TrainConfig(steps=cfg.steps, lr=cfg.lr, optimizer="adamw", eval_every=max(1, cfg.steps // 10),
                         device=str(device), progress=progress if distributed.is_main() else False,
                         name=f"unlearn {cfg.method}")
        history = train(model, losses, micro_batches, tc, evaluate=evaluate, masks=masks)
        history.loss = distributed.mean_over_ranks(history.loss)
        history.terms = {k: distributed.mean_over_ranks(v) for k, v in history.terms.items()}
        doc = {"config": dataclasses.asdict(cfg), "world_size": world, "before": before,
               "after": {k: v[-1] for k, v in history.evals.items()}, "history": vars(history)}
        return _save(out, model, masks, cfg, doc)


def run_unlearning(cfg: RunConfig, out: Path, progress: bool | None = None) -> dict:
    """Unlearn the cached original model with ``cfg`` and write the run folder (module docstring); a model
    that is not a toy goes to ``unlearn_language_model``."""
    if cfg.model not in MODELS:
        return unlearn_language_model(cfg, out, progress)
    device = resolve_device(cfg.device)
    setup = MODELS[cfg.model]
    world, original, _ = setup.models(device, progress)
    model = original
    masks = markov.masks(cfg.mask, model, world, cfg.mu, cfg.seed) if cfg.mask else None
    evaluate = markov.summary_evaluator(world, device, cfg.eval_limit)
    before = evaluate(model, 0)
    history = markov.unlearn_run(model, cfg.method, cfg.params(), world, steps=cfg.steps, batch_size=cfg.batch_size,
                                 lr=cfg.lr, generator=generator(cfg.seed, "markov-unlearn", cfg.method),
                                 evaluate_every=max(1, cfg.steps // 10), evaluate=evaluate, masks=masks,
                                 progress=progress)
    doc = {"config": dataclasses.asdict(cfg), "before": before,
           "after": {k: v[-1] for k, v in history.evals.items()}, "history": vars(history)}
    return _save(out, model, masks, cfg, doc)


def load_run(folder: Path, device) -> tuple[RunConfig, Transformer]:
    """The RunConfig and unlearned model of a run folder; errors name the folder and what is missing."""
    from safetensors.torch import load_file

    for name in ("run.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise ValueError(f"{folder}: no {name}; is this a folder written by `unlearn run`?")
    try:
        cfg = RunConfig(**json.loads((folder / "run.json").read_text())["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{folder / 'run.json'}: not a run record ({err})") from None
    if cfg.model not in MODELS:
        raise ValueError(f"{folder}: `unlearn relearn` takes runs of the toy models ({', '.join(MODELS)}), "
                         f"this one is {cfg.model!r}")
    setup = MODELS[cfg.model]
    model = Transformer(markov.model_config(setup.world_config(), setup.pretrain_config()))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return cfg, model.to(device).eval()


@dataclass(frozen=True)
class RelearnConfig:
    """``unlearn relearn`` on a run folder of a toy model."""

    subset: str = "shortest"  # SUBSETS: the shortest responses, or random draws
    frac: float = 0.2  # of the forget set
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-4
    draws: int = 3  # random subsets to draw (subset random); the relearn figure and the SimNPO paper draw 5
    device: str = "cpu"

    def __post_init__(self):
        if self.subset not in SUBSETS:
            raise ValueError(f"unknown relearning subset {self.subset!r}; valid: {', '.join(SUBSETS)}")
        if not 0 < self.frac <= 1:
            raise ValueError(f"frac must lie in (0, 1], got {self.frac!r}")
        require_at_least_one(self, "draws", "epochs", "batch_size")
        require_positive(self, "lr")


def run_relearning(folder: Path, cfg: RelearnConfig = RelearnConfig(), progress: bool | None = None) -> dict:
    """Relearning attacks on the model of a run folder (``unlearn.relearn``): one run on the shortest ``cfg.frac``
    of the forget set, or ``cfg.draws`` runs on random subsets; forget metrics after each epoch, written to
    relearn.json in the folder with ``cfg``."""
    dev = resolve_device(cfg.device)
    run, unlearned = load_run(folder, dev)
    world = markov.make_world(MODELS[run.model].world_config())
    forget = world.forget_set().to(dev)
    evaluate = markov.summary_evaluator(world, dev, run.eval_limit)
    indices = ([relearn_subset(forget.n_tokens, cfg.frac, "shortest")] if cfg.subset == "shortest" else
               [relearn_subset(forget.n_tokens, cfg.frac, "random", generator(run.seed, "relearn-subset", d))
                for d in range(cfg.draws)])
    runs = []
    for d, index in enumerate(indices):
        model = Transformer(unlearned.cfg).to(dev)
        model.load_state_dict(unlearned.state_dict())
        part = forget.take(index)
        history = relearn(model, token_mean_nll(part), len(part), epochs=cfg.epochs, batch_size=cfg.batch_size,
                          lr=cfg.lr, seed=run.seed, keys=(cfg.subset, d), evaluate=evaluate, progress=progress)
        runs.append({"epochs": list(range(len(history.eval_steps))), **history.evals})
    doc = {"run": str(folder), "subset": cfg.subset, "frac": cfg.frac, "epochs": cfg.epochs,
           "batch_size": cfg.batch_size, "lr": cfg.lr, "draws": len(indices), "config": config_dict(cfg),
           "relearn": runs}
    atomic_write(folder / "relearn.json", lambda p: Path(p).write_text(json.dumps(to_jsonable(doc), indent=1)))
    return doc
