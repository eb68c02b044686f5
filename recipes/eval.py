"""``unlearn eval tofu`` and ``unlearn eval mia``: the field's evaluation of one causal LM, into OUT/eval.json.

The model is a local Hugging Face directory (its own tokenizer), a run folder of ``unlearn run`` on a Hugging Face
model (its run.json names the model, OUT/hf holds merged weights or an adapter), or an architecture with random weights
(``tiny``, ``llama-*-shape``: bytes as tokens, for tests). ``dtype auto`` keeps a checkpoint's bfloat16 (its
config's torch_dtype) and loads everything else in float32.

eval.json = {"command", "config", "model": {"path", "identity"}, "metrics": {flat keys}, "per_question" (tofu) or
"per_sample" (mia), "notes", "env", "versions", "wall_s"}; every aggregate can be recomputed from the per-question
or per-sample values (``unlearn.metrics.tofu.summarise``, ``unlearn.metrics.mia.auc``). The formulas:
``unlearn.metrics.tofu``, ``unlearn.metrics.mia`` and docs/metrics.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unlearn.data import PLAIN_TEMPLATE, PROMPT_FORMATS
from unlearn.io import atomic_write, environment, package_versions, to_jsonable

DTYPES = ("auto", "float32", "bf16")
DEFAULT_SPLIT = "forget10"  # TOFU's largest forget split, the papers' headline
FORGET_QUALITY_NEEDS = ("forget quality needs the retain model's per-question forget truth ratios: run `unlearn eval "
                        "tofu --model RETAIN_MODEL --data {data} --split {split} --out RETAIN_OUT` on the model "
                        "trained without the forget set, then pass --retain-logs RETAIN_OUT/eval.json")


@dataclass(frozen=True)
class ModelConfig:
    """The fields every evaluation shares: the model, how it is asked, and where it runs."""

    model: str = "tiny"
    dtype: str = "auto"  # auto: a checkpoint's bfloat16 stays bf16, anything else float32
    prompt_format: str = "auto"  # auto: the tokenizer's chat template if it has one, else the plain template
    template: str = PLAIN_TEMPLATE  # the plain template; must contain {prompt}
    max_length: int = 512  # tokens of prompt + answer
    batch_size: int = 32  # sequences per forward pass
    limit: int | None = None  # evaluate the first N questions (or samples) of each set; None: all
    device: str = "auto"  # cuda when a GPU is visible, else cpu
    seed: int = 0  # the random weights of an architecture

    def __post_init__(self):
        if self.device == "auto":
            object.__setattr__(self, "device", "cuda" if torch.cuda.is_available() else "cpu")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"unknown prompt_format {self.prompt_format!r}; valid: {', '.join(PROMPT_FORMATS)}")
        if "{prompt}" not in self.template:
            raise ValueError(f"template must contain {{prompt}}, got {self.template!r}")
        for key in ("max_length", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 (questions per set), or none for all, got {self.limit}")


@dataclass(frozen=True)
class TofuEvalConfig(ModelConfig):
    """``unlearn eval tofu``."""

    data: str | None = None  # a TOFU directory (real or `unlearn data tofu-like`)
    split: str = DEFAULT_SPLIT  # forget01, forget05, forget10 (the retain set is TOFU's retain_perturbed); a run
    # folder's own split replaces the default (asked_as_trained)
    retain_logs: str | None = None  # the retain model's eval.json (or open-unlearning's TOFU_EVAL.json)
    max_new_tokens: int = 200  # greedy answer length for ROUGE-L

    def __post_init__(self):
        super().__post_init__()
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class MiaEvalConfig(ModelConfig):
    """``unlearn eval mia``: members (the forget set) against non-members (a holdout set)."""

    forget: str | None = None  # members: prompt/response JSONL or TOFU JSON
    holdout: str | None = None  # non-members, same format
    data: str | None = None  # or a TOFU directory: forget = SPLIT.json, holdout = holdoutNN.json
    split: str = DEFAULT_SPLIT  # as TofuEvalConfig's
    attacks: tuple[str, ...] = ("loss", "zlib", "min_k", "min_k++")
    k: float = 0.4  # Min-K% and Min-K%++: the lowest fraction of tokens
    reference_model: str | None = None  # the reference attack's model
    retain_logs: str | None = None  # the retain model's eval.json of `unlearn eval mia`: PrivLeak

    def __post_init__(self):
        from unlearn.metrics.mia import check_attacks

        super().__post_init__()
        if self.data is None and not (self.forget and self.holdout):
            raise ValueError("give --forget FILE and --holdout FILE, or --data TOFU_DIR (with --split)")
        if self.data is None and self.split != DEFAULT_SPLIT:
            raise ValueError(f"--split {self.split} chooses the files of --data; --forget and --holdout name them")
        if self.data is not None and (self.forget or self.holdout):
            raise ValueError("--data takes the forget and holdout sets from a TOFU directory; do not also give "
                             "--forget or --holdout")
        if not 0 < self.k <= 1:
            raise ValueError(f"k must lie in (0, 1], got {self.k}")
        check_attacks(self.attacks, self.reference_model is not None)

    def files(self) -> tuple[Path, Path]:
        from unlearn import tofu

        if self.data is None:
            return Path(self.forget), Path(self.holdout)
        tofu.check_split(self.data, self.split)
        return Path(self.data) / f"{self.split}.json", Path(self.data) / tofu.holdout_file(self.split)


# ---------------------------------------------------------------------------------------------------- model


def run_record(name: str) -> dict | None:
    """The run.json of ``name`` when it is a run folder of `unlearn run` (not a model directory), else None."""
    path = Path(name)
    if (path / "run.json").is_file() and not (path / "config.json").is_file():
        return json.loads((path / "run.json").read_text())
    return None


def asked_as_trained(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with a run folder's prompt (run.json's prompt format and plain template) in place of the defaults,
    so that a model trained on '[INST] {prompt} [/INST]' is asked that way, and, for a run on a TOFU split, that
    split in place of the default forget10, so that its forget metrics are of the authors it unlearned. A prompt
    or split other than the defaults stays (the default template itself: --prompt-format plain)."""
    record = run_record(cfg.model)
    if record is None:
        return cfg
    changes = {}
    prompt, defaults = record.get("template"), ModelConfig()
    if prompt and (cfg.prompt_format, cfg.template) == (defaults.prompt_format, defaults.template):
        changes.update(prompt_format=prompt["prompt_format"], template=prompt["plain_template"])
    trained = record["config"]
    if getattr(cfg, "data", None) and cfg.split == DEFAULT_SPLIT and trained.get("task") == "tofu":
        changes["split"] = trained.get("split", DEFAULT_SPLIT)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def load_for_eval(name: str, cfg: ModelConfig):
    """(model in eval mode, tokenizer, {"path", "identity"}) of a directory, a run folder or an architecture."""
    from unlearn.data import BYTE_VOCAB, byte_tokenizer
    from unlearn.models import hf
    from unlearn.train import resolve_device

    path = Path(name)
    record = run_record(name)
    if record is not None:
        from recipes.run import load_hf_run

        run = record["config"]
        if run.get("task") == "markov":
            raise ValueError(f"{path}: a run on the markov task reads state ids, not text; evaluate runs on text "
                             "tasks (facts, jsonl, tofu)")
        if cfg.dtype != "auto":
            raise ValueError(f"--dtype {cfg.dtype} does not apply to a run folder: its model loads in the precision "
                             "it trained in (run.json)")
        name = run["model"]
        architecture = hf.ModelSpec(name).is_architecture
        model = load_hf_run(path, resolve_device(cfg.device))
    else:
        in_run = path.is_dir() and run_record(str(path.parent)) is not None
        tokenizer_saved = any((path / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json",
                                                             "tokenizer.model"))
        adapter = (path / "adapter_config.json").is_file()
        if adapter or (in_run and not tokenizer_saved):
            what = "a peft adapter" if adapter else "a model without its tokenizer"
            where = f"the run folder {path.parent}" if in_run else "a run folder of `unlearn run` or a full model"
            raise ValueError(f"--model {path}: {what}; evaluate {where}, which names the base model, tokenizer and "
                             "precision")
        spec = hf.ModelSpec(name, dtype=_dtype(name, cfg.dtype), device=cfg.device, seed=cfg.seed,
                            vocab_size=BYTE_VOCAB if name == "tiny" else None)
        architecture, model = spec.is_architecture, hf.load_model(spec)
    tokenizer = byte_tokenizer() if architecture else hf.load_tokenizer(name)
    return model.eval(), tokenizer, {"path": str(path), "identity": model_identity(model)}


def _dtype(name: str, dtype: str) -> str:
    """``dtype`` resolved: auto is bf16 for a checkpoint whose config says bfloat16, else float32."""
    if dtype != "auto":
        return dtype
    config = Path(name) / "config.json"
    saved = json.loads(config.read_text()) if config.is_file() else {}
    return "bf16" if saved.get("torch_dtype", saved.get("dtype")) == "bfloat16" else "float32"


def model_identity(model: torch.nn.Module) -> str:
    """sha256 of the model's config and its weights' names, shapes and dtypes (not their values): which model,
    cheaply; two checkpoints of one architecture share it."""
    config = getattr(model, "config", None)
    text = config.to_json_string(use_diff=False) if config is not None else type(model).__name__
    shapes = sorted((k, tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items())
    return hashlib.sha256((text + repr(shapes)).encode()).hexdigest()


def _record(command: str, cfg, identity: dict, metrics: dict, values: dict, notes: list[str], start: float) -> dict:
    return to_jsonable({"command": command, "config": dataclasses.asdict(cfg), "model": identity,
                        "metrics": metrics, **values, "notes": notes, "env": environment(cfg.device),
                        "versions": package_versions("transformers", "peft", "rouge-score"),
                        "wall_s": time.perf_counter() - start})


def write_eval(doc: dict, out: Path) -> Path:
    path = out / "eval.json"
    atomic_write(path, lambda p: Path(p).write_text(json.dumps(doc, indent=1)))
    return path


# ----------------------------------------------------------------------------------------------------- TOFU


def tofu_settings(cfg: TofuEvalConfig):
    from unlearn.metrics.tofu import TofuEvalSettings

    return TofuEvalSettings(cfg.prompt_format, cfg.template, cfg.max_length, cfg.batch_size, cfg.max_new_tokens)


def limited(sets: dict, limit: int | None) -> dict:
    return {name: questions[:limit] for name, questions in sets.items()}


def run_eval_tofu(cfg: TofuEvalConfig, out: Path, progress: bool | None = None) -> dict:
    """Evaluate ``cfg.model`` on the TOFU sets of ``cfg.data`` / ``cfg.split`` and write out/eval.json. Data, split
    and retain logs are checked before the model is loaded."""
    from unlearn import tofu
    from unlearn.metrics.tofu import FORGET_SET, evaluate_tofu, retain_truth_ratios, summarise

    start = time.perf_counter()
    cfg = asked_as_trained(cfg)
    if cfg.data is None:
        raise ValueError("--data TOFU_DIR is required (a TOFU directory, or one written by `unlearn data tofu-like`)")
    sets = limited(tofu.read_eval_sets(cfg.data, cfg.split), cfg.limit)
    questions = [q.question for q in sets[FORGET_SET]]
    retain = retain_truth_ratios(cfg.retain_logs, cfg.split, questions) if cfg.retain_logs else None
    model, tokenizer, identity = load_for_eval(cfg.model, cfg)
    per_question = evaluate_tofu(model, tokenizer, sets, tofu_settings(cfg), progress)
    metrics = summarise(per_question, retain)
    notes = [] if retain is not None else [FORGET_QUALITY_NEEDS.format(data=cfg.data, split=cfg.split)]
    doc = _record("eval tofu", cfg, identity, metrics, {"per_question": per_question}, notes, start)
    write_eval(doc, out)
    return doc


# ------------------------------------------------------------------------------------------------------ MIA


def read_mia_sets(cfg: MiaEvalConfig, tokenizer):
    """{"forget": (TokenSet, response texts), "holdout": (...)} of the config's files, first ``limit`` of each."""
    from unlearn.data import read_examples, tokenize_examples

    sets = {}
    for name, path in zip(("forget", "holdout"), cfg.files(), strict=True):
        examples = read_examples(path)[: cfg.limit]
        sets[name] = (tokenize_examples(examples, tokenizer, cfg.max_length, cfg.prompt_format, cfg.template),
                      [ex.response for ex in examples])
    return sets


def mia_metrics(scores: dict[str, dict[str, np.ndarray]], retain_aucs: dict[str, float] | None) -> dict[str, float]:
    """mia.ATTACK.auc for every attack, and mia.ATTACK.priv_leak where the retain model's AUC is given."""
    from unlearn.metrics.mia import auc, priv_leak

    metrics = {}
    for attack in scores["forget"]:
        value = auc(scores["forget"][attack], scores["holdout"][attack])
        metrics[f"mia.{attack}.auc"] = value
        if retain_aucs is not None and attack in retain_aucs:
            metrics[f"mia.{attack}.priv_leak"] = priv_leak(value, retain_aucs[attack])
    return metrics


def retain_aucs(path: str, cfg: MiaEvalConfig) -> dict[str, float]:
    """The retain model's AUC per attack from its eval.json of ``unlearn eval mia`` on the same forget and holdout
    data (the same files' contents, by hash), refused otherwise."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--retain-logs {path}: not a readable JSON file ({err})") from None
    if doc.get("command") != "eval mia":
        raise ValueError(f"--retain-logs {path}: not an eval.json of `unlearn eval mia`")
    if doc.get("data_hashes") != data_hashes(cfg):
        raise ValueError(f"--retain-logs {path} was computed on other forget/holdout data (or another limit); "
                         "evaluate the retain model on the same files")
    aucs = {key.split(".")[1]: v for key, v in doc["metrics"].items() if key.endswith(".auc")}
    missing = [a for a in cfg.attacks if a not in aucs]
    if missing:
        raise ValueError(f"--retain-logs {path} has no AUC for {', '.join(missing)}")
    return aucs


def data_hashes(cfg: MiaEvalConfig) -> dict[str, str]:
    """sha256 of the forget and holdout files' bytes, with the limit: what makes two MIA evaluations comparable."""
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() + f":limit={cfg.limit}"
            for name, path in zip(("forget", "holdout"), cfg.files(), strict=True)}


def run_eval_mia(cfg: MiaEvalConfig, out: Path) -> dict:
    """Score the forget (members) and holdout (non-members) sets with each attack; write out/eval.json."""
    from tqdm.auto import tqdm

    from unlearn.metrics.mia import mia_scores

    start = time.perf_counter()
    cfg = asked_as_trained(cfg)
    for path in cfg.files():
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
    aucs = retain_aucs(cfg.retain_logs, cfg) if cfg.retain_logs else None
    model, tokenizer, identity = load_for_eval(cfg.model, cfg)
    reference = load_for_eval(cfg.reference_model, cfg)[0] if cfg.reference_model else None
    sets = read_mia_sets(cfg, tokenizer)
    scores = {name: mia_scores(model, data, texts, cfg.attacks, cfg.k, reference, cfg.batch_size)
              for name, (data, texts) in tqdm(sets.items(), desc="MIA sets", leave=False, disable=None)}
    notes = [] if aucs else ["priv_leak needs the retain model's eval.json of `unlearn eval mia` on the same data "
                             "(--retain-logs)"]
    doc = _record("eval mia", cfg, identity, mia_metrics(scores, aucs),
                  {"per_sample": scores, "data_hashes": data_hashes(cfg)}, notes, start)
    write_eval(doc, out)
    return doc


# ------------------------------------------------------------------------------------ during a training run

FIELD_EVALS = ("tofu", "mia")


def field_evaluator(kind: str, data: str, split: str, tokenizer, *, retain_logs: str | None = None,
                    prompt_format: str = "auto", template: str = PLAIN_TEMPLATE, max_length: int = 512,
                    limit: int | None = None):
    """model -> {key: value}: the TOFU metrics (keys ``tofu.SPLIT.prob``, ..., ``tofu.model_utility``, and
    ``tofu.forget_quality`` with ``retain_logs``) or the MIA AUCs (``mia.ATTACK.auc``; forget = the split's
    forget set, holdout = its holdout file) of a TOFU directory, for ``unlearn run`` and ``unlearn validate``'s
    evaluations (``--eval tofu|mia``). The sets are read and checked once, here, before any training."""
    from unlearn import tofu
    from unlearn.metrics.mia import ATTACKS, mia_scores
    from unlearn.metrics.tofu import FORGET_SET, TofuEvalSettings, evaluate_tofu, retain_truth_ratios, summarise

    if kind not in FIELD_EVALS:
        raise ValueError(f"unknown eval {kind!r}; valid: {', '.join(FIELD_EVALS)}")
    if kind == "tofu":
        sets = limited(tofu.read_eval_sets(data, split), limit)
        ratios = (retain_truth_ratios(retain_logs, split, [q.question for q in sets[FORGET_SET]])
                  if retain_logs else None)
        settings = TofuEvalSettings(prompt_format=prompt_format, template=template, max_length=max_length)
        return lambda model: {f"tofu.{k}": v for k, v in summarise(
            evaluate_tofu(model, tokenizer, sets, settings, progress=False), ratios).items()}
    cfg = MiaEvalConfig(data=data, split=split, prompt_format=prompt_format, template=template,
                        max_length=max_length, limit=limit, device="cpu")
    sets = read_mia_sets(cfg, tokenizer)
    attacks = [a for a in ATTACKS if a != "reference"]

    return lambda model: mia_metrics({name: mia_scores(model, token_set, texts, attacks, cfg.k)
                                      for name, (token_set, texts) in sets.items()}, None)
