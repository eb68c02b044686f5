"""The ``unlearn`` command line.

    unlearn list                                   every experiment and the claim its figure shows
    unlearn figures [NAME ...] [--preset fast|full] [--out DIR] [--device cpu|cuda] [--set key=value ...]
                    [--seeds N] [--timing]
    unlearn run --model markov --method NPO [--mask wagle:0.8] --out DIR     one unlearning run on a toy model
    unlearn relearn DIR --subset shortest|random                              a relearning attack on its result
    unlearn validate --model tiny|PATH|llama-7b-shape --task markov|facts|jsonl|tofu --out DIR   toy predictions, LM
    unlearn bench toy [--quick] [--out FILE]       ensembles vs loops of single runs on the toy models
    unlearn bench llm [--quick] [--out FILE]       cached / adapter references vs a frozen copy on a Llama
    unlearn eval tofu --model M --data DIR --split forget10 [--retain-logs RETAIN.json] --out OUT   TOFU metrics
    unlearn eval mia --model M --forget F --holdout H [--attacks loss,zlib,min_k,min_k++] --out OUT     MIA AUCs
    unlearn data tofu-like --out DIR               a complete TOFU-layout directory of generated facts

Each command's work is a recipe of its own (``recipes.figures``, ``run``, ``validate``, ``bench``, ``eval``); this
module
parses and dispatches. Every command but ``list`` runs from a typed frozen config dataclass (figures: the
experiment's; run: RunConfig, relearn: RelearnConfig, validate: ValidateConfig, bench: ToyBench / LLMBench, eval:
TofuEvalConfig / MiaEvalConfig, data: TofuLikeConfig),
which holds every default once.
``--set key=value`` (repeatable) sets any key, after the named options, which are aliases of keys (``Alias``);
``--show-config`` prints the resolved config as JSON and stops before any work.

Before any work each command also checks its device (``unlearn.train.resolve_device``: cpu, cuda, cuda:N) and
its output (``unlearn.io.writable_dir`` / ``writable_file``: created and probed), so that bad input costs
seconds, not a finished run. ``main`` turns expected errors (bad values, missing files, unreadable checkpoints)
into one line, ``unlearn CMD: error: ...``, exit status 2, and Ctrl-C into ``unlearn CMD: interrupted`` with
what was kept, exit status 130; neither prints a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from recipes.figures import FIGURES_HELP, cmd_figures, cmd_list
from unlearn.config import config_dict, format_value, resolve
from unlearn.io import package_versions, refuse_replacing


class Alias(NamedTuple):
    """A named flag of a command, an alias of one key of the command's config dataclass: given, it sets that
    key (through ``convert`` when its text needs one); absent (argparse default None), the config's default
    stands. Its help ends with that default, read from the dataclass (and the --quick preset's, where one
    differs), so that each default is written once, in the dataclass."""

    option: str  # "--batch-size"
    key: str  # "batch_size"
    help: str
    kwargs: dict = {}  # more add_argument keywords (type, choices, metavar, action); never mutated
    convert: Callable[[Any], Any] | None = None
    none: str = ""  # what a default of None means, shown after it


def _dest(alias: Alias) -> str:
    return f"config_{alias.key}"


def alias_help(alias: Alias, cls: type, preset: Any = None) -> str:
    """``alias``'s help: its text, then "(default X)" with X the field's default as --set spells it, what a
    None default means, the --quick preset's value where it differs, and the config key where it is not the
    option's name."""
    default = {f.name: f.default for f in dataclasses.fields(cls)}[alias.key]
    empty = default is None or default == ()  # both spelled "none"
    notes = [format_value(default).replace("\n", "\\n") + (f": {alias.none}" if alias.none and empty else "")]
    if preset is not None and getattr(preset, alias.key) != default:
        notes.append(f"--quick {format_value(getattr(preset, alias.key))}")
    if alias.key != alias.option.lstrip("-").replace("-", "_"):
        notes.append(f"config key {alias.key}")
    return f"{alias.help} (default {'; '.join(notes)})".replace("%", "%%")


def config_help(cls: type, preset: Any = None) -> str:
    """The paragraph of a command's --help that names its config keys and how they are set."""
    order = "the defaults" + (" (with --quick, its preset)" if preset is not None else "")
    text = (f"config: {order}, then the options below, then --set key=value (repeatable; lists comma-separated, "
            "optional keys take none); an option and a --set of the same key must agree. --show-config prints "
            "the resolved config as JSON and exits before any work. Keys: "
            + ", ".join(f.name for f in dataclasses.fields(cls)) + ".")
    return textwrap.fill(text, width=110, break_on_hyphens=False)


def add_config(parser: argparse.ArgumentParser, cls: type, aliases: tuple[Alias, ...], preset: Any = None) -> None:
    """The config flags of a command: its aliases, --set and --show-config."""
    for alias in aliases:
        kwargs = dict(alias.kwargs)
        if "action" not in kwargs and "choices" not in kwargs:
            kwargs.setdefault("metavar", alias.option.lstrip("-").replace("-", "_").upper())
        parser.add_argument(alias.option, dest=_dest(alias), default=None, help=alias_help(alias, cls, preset),
                            **kwargs)
    parser.add_argument("--set", action="append", default=[], metavar="key=value",
                        help="set one config key (repeatable; the keys are listed above)")
    parser.add_argument("--show-config", action="store_true", help="print the resolved config as JSON and exit")
    parser.set_defaults(aliases=aliases)


def resolve_config(args, base: Any) -> Any:
    """The command's config: ``base`` (a config class, or a preset), then the aliases given, then --set. A device
    given either way is checked by name first (cpu, cuda, cuda:N; validate's auto), so that an unknown one is
    named before a config that reads it (validate's precision by device) passes it to torch."""
    from unlearn.config import parse_overrides
    from unlearn.train import resolve_device

    given = {}
    for alias in args.aliases:
        value = getattr(args, _dest(alias))
        if value is not None:
            given[alias.key] = (alias.option, alias.convert(value) if alias.convert else value)
    cls = base if isinstance(base, type) else type(base)
    device = parse_overrides(cls, args.set).get("device", given.get("device", (None, None))[1])
    if device not in (None, "auto"):
        resolve_device(device, available=False)
    return resolve(base, given, args.set)


def check_device(cfg: Any) -> Any:
    """The config's device, refused before any work if unknown or not there (``resolve_device``)."""
    from unlearn.train import resolve_device

    return resolve_device(cfg.device)


def show_config(args, command: str, cfg: Any) -> bool:
    """With --show-config, print the resolved config (and a config's ``protocol()``: the values its fields left at
    None take) and say so (the command then returns, having done nothing)."""
    if args.show_config:
        doc = {"command": command, "config": config_dict(cfg)}
        if hasattr(cfg, "protocol"):
            doc["protocol"] = cfg.protocol()
        print(json.dumps(doc, indent=2))
    return args.show_config


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _positive_ints(option: str) -> Callable[[str], tuple[int, ...]]:
    """The converter of an option that takes comma-separated positive integers (``--members 8,32``)."""

    def convert(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(m) for m in text.split(","))
            if min(values) < 1:
                raise ValueError
        except ValueError:
            raise ValueError(f"{option} must be comma-separated positive integers, got {text!r}") from None
        return values

    return convert


def _model_and_task(model_help: str, task_note: str = "") -> tuple[Alias, ...]:
    """--model, and the data of a Hugging Face model: --task, --forget, --retain (run and validate)."""
    from recipes.validate import TASKS

    return (Alias("--model", "model", model_help),
            Alias("--task", "task", f"the data: {', '.join(TASKS)}{task_note}"),
            Alias("--forget", "forget", "forget set for --task jsonl", {"metavar": "FILE"}),
            Alias("--retain", "retain", "retain set for --task jsonl", {"metavar": "FILE"}),
            Alias("--data", "data", "TOFU directory for --task tofu (real TOFU files, or `unlearn data tofu-like`)",
                  {"metavar": "DIR"}),
            Alias("--split", "split", "--task tofu's forget split: forget01, forget05 or forget10 (the retain set "
                  "is TOFU's complement: retain99, retain95, retain90)"),
            Alias("--eval", "eval", "the field's metrics at every evaluation, recorded in the JSON: tofu (TOFU's "
                  "Prob, ROUGE-L, truth ratio, model utility) or mia (membership-inference AUCs against the split's "
                  "holdout file); needs --task tofu", {"choices": ("tofu", "mia")}, none="forget and retain NLL only"),
            Alias("--eval-every", "eval_every", "steps between evaluations", {"type": int, "metavar": "N"},
                  none="every epoch of a Hugging Face run counted in epochs, else a tenth of the steps"),
            Alias("--retain-logs", "retain_logs", "with --eval tofu: the retain model's eval.json of `unlearn eval "
                  "tofu`, for forget quality", {"metavar": "FILE"}, none="no forget quality"))


def run_aliases() -> tuple[Alias, ...]:
    from recipes.run import MODELS, PRECISION_CHOICES, REFERENCES, SAVES
    from unlearn.models.hf import ARCHITECTURES
    from unlearn.objectives import METHODS, RETAIN_NORMS
    from unlearn.optim import SCHEDULES

    alternative = [name for name, m in METHODS.items() if "alt_logp" in m.needs["forget"]]
    hf_default = "the protocol's: TOFU's for Hugging Face models (see above)"
    method_default = "the method's (see above)"
    return (
        *_model_and_task(f"{' or '.join(MODELS)}, or a Hugging Face model directory or architecture "
                         f"({', '.join(ARCHITECTURES)})", "; Hugging Face models only"),
        Alias("--method", "method", f"one of {', '.join(METHODS)} (docs/methods.md); those that read alternative "
                                    f"responses ({', '.join(alternative)}) take them from --alternatives or the "
                                    "built-in ones"),
        Alias("--beta", "beta", "NPO/SimNPO/DPO inverse temperature, read by the methods that list it below and "
                                "refused for the others", {"type": float}, none=method_default),
        Alias("--gamma", "gamma", "SimNPO margin", {"type": float}, none=method_default),
        Alias("--lam", "lam", "weight of the retain term", {"type": float}, none=method_default),
        Alias("--mismatch", "mismatch", "GA+Mismatch+KL's mismatch weight", {"type": float}, none=method_default),
        Alias("--retain-norm", "retain_norm", "the RT term's retain NLL: summed over each sequence, or the batch's "
                                              "mean per token", {"choices": RETAIN_NORMS},
              none="the method's: token for NPO, SimNPO and DPO + RT on Hugging Face models (as TOFU's code pairs "
                   "them), else sequence"),
        Alias("--steps", "steps", "unlearning steps (toy models: 50; Hugging Face models count --epochs unless "
                                  "this is given)", {"type": int}, none="the protocol's"),
        Alias("--epochs", "epochs", "Hugging Face models: passes over the forget set (TOFU: 10)", {"type": int},
              none=hf_default),
        Alias("--batch-size", "batch_size", "forget (and retain) sequences per micro-batch", {"type": int}),
        Alias("--grad-accum", "grad_accum", "Hugging Face models: micro-batches per optimizer step (TOFU on one "
                                            "GPU: 8, an effective batch of 32)", {"type": int}, none=hf_default),
        Alias("--lr", "lr", "AdamW learning rate (toy models 5e-4; Hugging Face models 1e-5, TOFU's)",
              {"type": float}, none="the protocol's"),
        Alias("--warmup-epochs", "warmup_epochs", "Hugging Face models: linear warm-up over this many epochs "
                                                  "(TOFU: 1)", {"type": float}, none=hf_default),
        Alias("--weight-decay", "weight_decay", "Hugging Face models: AdamW's decoupled weight decay (TOFU: 0.01)",
              {"type": float}, none=hf_default),
        Alias("--schedule", "schedule", "Hugging Face models: after the warm-up, constant or warmup_linear "
                                        "(linear decay to 0, TOFU's)", {"choices": SCHEDULES}, none=hf_default),
        Alias("--clip-norm", "clip_norm", "Hugging Face models: gradient-norm clipping (0: none, as TOFU's runs)",
              {"type": float}),
        Alias("--precision", "precision", "Hugging Face models: float32, bf16 (bf16 weights and moments), "
                                          "bf16-mixed (float32 weights, bf16 autocast) or auto (float32 on the CPU; "
                                          "on CUDA the first of bf16-mixed, bf16 that fits)",
              {"choices": PRECISION_CHOICES}),
        Alias("--lora", "lora", "Hugging Face models: train a LoRA adapter of this rank (peft) instead of every "
                                "weight", {"type": int, "metavar": "RANK"}, none="every weight trains"),
        Alias("--lora-alpha", "lora_alpha", "the LoRA adapter's alpha", {"type": float}),
        Alias("--gradient-checkpointing", "gradient_checkpointing", "Hugging Face models: recompute activations in "
                                                                    "the backward pass", {"action": "store_true"}),
        Alias("--alternatives", "alternatives", "Hugging Face models: JSONL of alternative responses, {prompt, "
                                                "response} or {prompt, alternatives: [...]}, covering every forget "
                                                "prompt", {"metavar": "FILE"},
              none="built-in: refusals for IDK and DPO, random retain answers for GA+Mismatch+KL"),
        Alias("--template", "template", "Hugging Face models: a plain prompt template with {prompt}, e.g. "
                                        "'[INST] {prompt} [/INST]' (TOFU's Llama-2 format)", {"metavar": "TEXT"},
              none="the tokenizer's chat template, else 'Question: {prompt}\\nAnswer: '"),
        Alias("--save", "save", "Hugging Face models: what DIR/hf holds, a peft adapter or merged weights",
              {"choices": SAVES}, none="adapter with --lora, else the whole model"),
        Alias("--mask", "mask", "train only the masked weights, see above", {"metavar": "KIND:R|FILE"},
              none="every weight trains"),
        Alias("--mu", "mu", "WAGLE's Hessian scale mu (as released)", {"type": float}),
        Alias("--seed", "seed", "batch order, alternative draws, mask draws", {"type": int}),
        Alias("--eval-limit", "eval_limit", "evaluate on the first N sequences of each evaluation set (toy models: "
                                            "the test splits; Hugging Face models: the forget and retain sets)",
              {"type": int, "metavar": "N"}, none="all"),
        Alias("--reference", "reference", "Hugging Face models: auto (the memory plan's choice, printed with its "
                                          "reason), cached (log-probs, and retain logits for *+KL methods, computed "
                                          "once), adapter (the LoRA base) or copy (a frozen model)",
              {"choices": REFERENCES}),
        Alias("--device", "device", "cpu or cuda"),
        Alias("--overwrite", "overwrite", "replace the run in an existing --out folder (its relearn.json, hf/, and "
                                          "its mask.safetensors when this run has no mask, are removed; a Hugging "
                                          "Face run's checkpoint of other settings is discarded)",
              {"action": "store_true"}),
        Alias("--stop-on", "stop_on", "collapse: end at the first collapsed evaluation (retain NLL or output entropy "
                                      "at log V, or entropy ~0) and keep the model of the last healthy one",
              {"choices": ("collapse",)}, none="run every step"),
        Alias("--logprob-chunk", "logprob_chunk", "Hugging Face models: take log-probs from the hidden states, N "
                                                  "response positions at a time (memory N x vocabulary instead of "
                                                  "batch x length x vocabulary)", {"type": int, "metavar": "N"},
              none="full logits"),
        Alias("--fused-logprobs", "fused_logprobs", "Hugging Face models on CUDA, bf16 or bf16-mixed: take log-probs "
                                                    "from the hidden states with cut-cross-entropy's fused kernel (no "
                                                    "logits in GPU memory; pip install 'unlearn-mechanics[gpu]')",
              {"action": "store_true"}),
        Alias("--compile", "compile", "Hugging Face models, one process: torch.compile the model's forward (the same "
                                      "run, compiled at the first step; `unlearn bench llm --compile` measures the "
                                      "gain)", {"action": "store_true"}),
    )


def relearn_aliases() -> tuple[Alias, ...]:
    from unlearn.relearn import SUBSETS

    return (
        Alias("--subset", "subset", "relearn on the shortest responses or on random draws", {"choices": SUBSETS}),
        Alias("--frac", "frac", "fraction of the forget set", {"type": float}),
        Alias("--epochs", "epochs", "relearning epochs", {"type": int}),
        Alias("--batch-size", "batch_size", "batch size", {"type": int}),
        Alias("--lr", "lr", "AdamW learning rate", {"type": float}, none="1e-4 on toy models, 1e-5 on Hugging Face "
                                                                         "models"),
        Alias("--draws", "draws", "random subsets to draw, with --subset random; the relearn figure and the "
                                  "SimNPO paper draw 5", {"type": int}),
        Alias("--device", "device", "cpu or cuda"),
    )


def validate_aliases() -> tuple[Alias, ...]:
    from recipes.validate import FREEZABLE, PRECISION_MODES, UNLEARN_OPTIMIZERS, VALIDATED_METHODS
    from unlearn.models.hf import ARCHITECTURES
    from unlearn.reference import MODES

    return (
        *_model_and_task(f"{', '.join(ARCHITECTURES)}, or a local model directory"),
        Alias("--methods", "methods", f"comma-separated, of {', '.join(VALIDATED_METHODS)}", convert=_comma_list),
        Alias("--steps", "steps", "unlearning steps per method", {"type": int}),
        Alias("--lr", "lr", "unlearning AdamW learning rate", {"type": float}, none="by model, above"),
        Alias("--memorise-lr", "memorise_lr", "memorising AdamW learning rate", {"type": float}, none="by model"),
        Alias("--batch-size", "batch_size", "forget sequences per step", {"type": int}),
        Alias("--memorise-epochs", "memorise_epochs", "most epochs of memorising", {"type": int}),
        Alias("--lora", "lora_rank", "unlearn through a LoRA adapter of this rank (RANK >= 1)",
              {"type": int, "metavar": "RANK"}, none="full fine-tuning"),
        Alias("--eval-limit", "eval_limit", "evaluate the first N sequences of the forget and retain sets (training "
                                            "always reads all of them)", {"type": int, "metavar": "N"}, none="all"),
        Alias("--reference", "reference", f"where NPO's log pi_ref comes from: {', '.join(MODES)} (adapter needs "
                                          "--lora)"),
        Alias("--precision", "precision", f"{', '.join(PRECISION_MODES)}, or auto, see above"),
        Alias("--gradient-checkpointing", "gradient_checkpointing", "trade compute for activation memory",
              {"action": "store_true"}),
        Alias("--prompt-format", "prompt_format", "auto, chat or plain (files and facts)"),
        Alias("--seed", "seed", "the task's draws, the initial weights of an architecture, batch order",
              {"type": int}),
        Alias("--device", "device", "cpu, cuda, or auto: cuda when a GPU is visible"),
        Alias("--stop-on", "stop_on", "collapse: end each method at its first collapsed evaluation (retain NLL or "
                                      "output entropy at log V, or entropy ~0)", {"choices": ("collapse",)},
              none="run every step"),
        Alias("--optimizer", "optimizer", f"the unlearning optimizer: {', '.join(UNLEARN_OPTIMIZERS)} (sgd: plain "
                                          "p -= lr * grad, with --methods GA)", {"choices": UNLEARN_OPTIMIZERS}),
        Alias("--freeze", "freeze", f"comma-separated, of {', '.join(FREEZABLE)}: keep the output head and/or the "
                                    "final norm's gain fixed while unlearning (full fine-tuning)",
              {"metavar": "PART,..."}, convert=_comma_list, none="train everything"),
    )


def bench_toy_aliases() -> tuple[Alias, ...]:
    return (
        Alias("--members", "members", "ensemble sizes, comma-separated", {"metavar": "M,M,..."},
              convert=_positive_ints("--members")),
        Alias("--device", "device", "cpu or cuda"),
    )


def bench_llm_aliases() -> tuple[Alias, ...]:
    from unlearn.models.hf import DTYPES

    return (
        Alias("--model", "model", "architecture or model directory"),
        Alias("--lora", "lora_rank", "LoRA rank", {"type": int, "metavar": "RANK"}),
        Alias("--seq-len", "seq_len", "tokens per sequence", {"type": int}),
        Alias("--batch-size", "batch_size", "sequences per batch", {"type": int}),
        Alias("--dtype", "dtype", "weights' dtype", {"choices": tuple(DTYPES)}),
        Alias("--gradient-checkpointing", "gradient_checkpointing", "recompute activations in backward",
              {"action": "store_true"}),
        Alias("--tokens-per-step", "tokens_per_step", "token batches to sweep, multiples of --seq-len",
              {"metavar": "N,N,..."}, convert=_positive_ints("--tokens-per-step")),
        Alias("--logprob-chunk", "logprob_chunk", "response positions per log-prob chunk (0: full logits)",
              {"type": int}),
        Alias("--fused-logprobs", "fused_logprobs", "log-probs by cut-cross-entropy's fused kernel (CUDA, --dtype "
                                                    "bf16; pip install 'unlearn-mechanics[gpu]'), and the log-prob "
                                                    "case measures that path too", {"action": "store_true"}),
        Alias("--compile", "compile", "also time LoRA NPO (cached) under torch.compile", {"action": "store_true"}),
        Alias("--cases", "cases", "settings to run, comma-separated: npo.cached, npo.copy, npo+kl.adapter, "
                                  "npo+kl.copy, full.npo.cached, full.npo.copy, mask.wagle", {"metavar": "A,B,..."},
              convert=lambda text: tuple(text.split(",")), none="all"),
        Alias("--profile", "profile", "profile each setting's last step: a table of its top kernels by time",
              {"action": "store_true"}),
        Alias("--device", "device", "cpu or cuda"),
    )


BENCH_TOY_HELP = """\
Train M unlearning runs of a toy model as one ensemble and, side by side, as a loop of single runs, for the
logistic model (npo-synthetic's size, float64) and the Markov transformer (4 layers, d 128, float32), and
print runs x steps per second of each, the speedup, and the ensemble's matmul FLOP rate as a fraction of
this machine's measured matmul rate. A benchmark, not a test: nothing is asserted.
"""


def cmd_bench_toy(args) -> int:
    from recipes import bench
    from unlearn.train import resolve_device

    cfg = resolve_config(args, bench.QUICK if args.quick else bench.ToyBench)
    if show_config(args, "bench toy", cfg):
        return 0
    device = resolve_device(cfg.device)
    _check_out_file(args)
    return _bench_report(bench.bench_toy(cfg, device), cfg, device, args)


def _check_out_file(args) -> None:
    """A benchmark's --out FILE, checked before it runs (``writable_file``)."""
    from unlearn.io import writable_file

    if args.out:
        writable_file(args.out)
        args.kept = lambda: f"the benchmark did not finish; {args.out} is written only when it finishes"


def _bench_report(results: dict, cfg, device, args) -> int:
    """Add the config, device and command to a benchmark's results; write them to --out if asked."""
    from recipes import bench
    from unlearn.io import atomic_write, environment, to_jsonable

    env = {**environment(str(device)), "command": " ".join(["unlearn", *args.argv]),
           "device_name": bench.device_name(device)}
    doc = {**results, "env": env, "config": config_dict(cfg)}
    if args.out:
        out = Path(args.out)  # checked before the benchmark ran (_check_out_file)
        atomic_write(out, lambda p: Path(p).write_text(json.dumps(to_jsonable(doc), indent=1)))
        print(f"wrote {out}")
    return 0


RUN_HELP = """\
Unlearn the cached original Markov transformer (`markov`: the SimNPO paper's setup; `markov-fast`: the fast
presets' smaller world and model; either is pretrained once and cached) with one method, and write DIR/run.json
(the resolved config, forget KL / retain KL / entropy before and after, the training history) and
DIR/model.safetensors.

A Hugging Face model (a directory, or tiny / llama-...-shape) trains on --task's data (markov, facts, jsonl with
--forget/--retain, or tofu with --data/--split) under the TOFU protocol of the NPO and SimNPO papers unless told
otherwise: AdamW at lr 1e-5, weight decay 0.01, 10 epochs of steps of 8 accumulated micro-batches of 4, a linear
warm-up over the first epoch, then linear decay, no clipping. Each method takes its published hyperparameters
(docs/methods.md): beta 0.1 and weights 1 (the NPO paper's), the retain NLL per token beside NPO, SimNPO and
DPO; for SimNPO the released TOFU values, beta 2.5 and forget weight 0.1375 on forget05, 4.5 and 0.125 on
forget10 (and elsewhere), as lam = 1/weight. --show-config prints them under "protocol".

A run prints its plan first (precision, reference, memory, steps; --dry-run stops there, having allocated
nothing), records forget/retain NLL per token at every epoch (with --steps, every tenth of them; with --eval
tofu|mia, the field's metrics too), writes DIR/hf as a Hugging Face model (config.json, the tokenizer, a peft
adapter or merged weights: `AutoModelForCausalLM.from_pretrained` or `PeftModel.from_pretrained` load it) and,
in one process, keeps DIR/run.ckpt after every epoch: rerunning the same command resumes there. Example (one
80 GB GPU):

  unlearn run --model DIR --task tofu --data TOFU --split forget10 --method NPO+RT --precision bf16-mixed \\
      --lora 32 --gradient-checkpointing --template '[INST] {prompt} [/INST]' --device cuda --out runs/npo

On several GPUs (or CPU processes), `torchrun --nproc_per_node N -m recipes.cli run --model ... --device cuda`
shards the model with FSDP2; each rank takes its slice of every micro-batch (which must split evenly) and
rank 0 writes DIR.

masks (--mask): wagle:R, magnitude:R or random:R keep the top fraction R in (0, 1] of weights by that score
(WAGLE: |(theta - g_r/mu) * g_f|, with --mu) and freeze the rest bitwise; a .safetensors file gives the
masks directly. A mask file must name every trainable parameter, unless its safetensors metadata says
missing=frozen (the parameters it leaves out stay fixed) or missing=free (they train); anything else is
refused, naming the file and the first missing parameters. The mask is written to DIR/mask.safetensors, and
run.json's moved_fraction counts the weights that actually changed.
"""

RELEARN_HELP = """\
Fine-tune the unlearned model of a run folder (written by `unlearn run`) on a fraction of its forget set, the
shortest responses or random draws, and record the forget KL, retain KL and entropy (toy models) or the forget
and retain NLL per token and the run's --eval metrics (Hugging Face models) after every epoch in
DIR/relearn.json (SimNPO paper Fig. 6's relearning attack), with the resolved config.
"""


def cmd_run(args) -> int:
    from recipes.run import RunConfig, run_unlearning
    from unlearn.distributed import is_main
    from unlearn.io import output_dir
    from unlearn.metrics.collapse import describe_collapse

    cfg = resolve_config(args, RunConfig)
    if show_config(args, "run", cfg):
        return 0
    if args.dry_run:
        check_device(cfg)
        run_unlearning(cfg, Path(args.out or "."), dry_run=True)  # prints the plan; writes nothing
        return 0
    if not args.out:
        args.parser.error("the following arguments are required: --out")
    check_device(cfg)
    with output_dir(args.out) as out:
        args.kept = lambda: (f"the run did not finish; {out} is written only when a run finishes (a Hugging Face "
                             f"run resumes from {out}/run.ckpt when the same command runs again)")
        doc = run_unlearning(cfg, out)
    if not is_main():  # under torchrun rank 0 reports
        return 0
    before, after = doc["before"], doc["after"]
    print(" ".join(f"{k} {before[k]:.4g} -> {after[k]:.4g}" for k in before if k != "collapse"))
    print(f"{describe_collapse(doc)}; wrote {args.out}/run.json")
    return 0


def cmd_relearn(args) -> int:
    from recipes.run import RelearnConfig, run_relearning
    from unlearn.io import writable_dir

    cfg = resolve_config(args, RelearnConfig)
    if show_config(args, "relearn", cfg):
        return 0
    if not args.run:
        args.parser.error("the following arguments are required: DIR")
    check_device(cfg)
    folder = writable_dir(args.run, "run folder", create=False)  # relearn.json is written there
    args.kept = lambda: f"the attack did not finish; {folder / 'relearn.json'} is written only when it finishes"
    doc = run_relearning(folder, cfg)
    for d, r in enumerate(doc["relearn"]):
        key = "forget_kl" if "forget_kl" in r else "forget_nll"  # a toy model's run, or a Hugging Face model's
        print(f"draw {d}: {key} by epoch " + " ".join(f"{v:.4g}" for v in r[key]))
    print(f"wrote {args.run}/relearn.json")
    return 0


VALIDATE_HELP = """\
Check on a causal LM what the toy models predict. The model is fine-tuned until it has memorised the forget
and retain sets (built-in tasks; skip with --memorise-epochs 0 for a model that knows its data), then unlearned
with each method; DIR/validate.json holds the resolved config, the forget NLL against steps with its acceleration
(late/early slope ratio, with a bootstrap interval over the forget sequences) and linear and log-step fits, the
per-sequence weights against |y| at the first and last evaluation, the retain drift, and
beside each the toy model's prediction; DIR/validate.png shows them. DIR/validate.ckpt lets an interrupted run
resume.

models: a local Hugging Face directory (local files only), or an architecture with random weights from a config
(no download). tasks: markov (the SimNPO Markov mixture as tokens), facts (fictitious authors, TOFU-like), jsonl
(--forget FILE --retain FILE: prompt/response JSONL or TOFU JSON), tofu (--data DIR --split forget10: a TOFU
directory, read as unlearn.tofu does; --eval tofu|mia adds the field's metrics at every evaluation).

Optimizer and precision: AdamW, its moments in the weights' dtype. --precision float32 (the CPU default),
bf16-mixed (float32 weights, bf16 autocast) or bf16 (bf16 weights: 8 bytes per weight with AdamW, so that
llama-7b-shape fits one 80 GB GPU, but updates smaller than a bf16 step of their weight are lost); on a GPU,
auto takes bf16-mixed when it fits the free memory (llama-7b-shape: about 113 GiB) and bf16 otherwise. A run
that does not fit is refused before it starts, with the memory it needs. Learning rates default by model, as
AdamW's usable rate falls with width (recipes.validate.LEARNING_RATES; the run prints the ones it uses, and
--show-config shows them).
"""


def cmd_validate(args) -> int:
    from recipes.validate import ValidateConfig, run_validate
    from unlearn.distributed import refuse_torchrun
    from unlearn.io import output_dir

    cfg = resolve_config(args, ValidateConfig)
    if show_config(args, "validate", cfg):
        return 0
    refuse_torchrun("unlearn validate")
    check_device(cfg)
    with output_dir(args.out) as out:
        args.kept = lambda: _validate_kept(out / "validate.ckpt")
        doc = run_validate(cfg, out)
    for key, value in doc["metrics"].items():
        prediction = doc["predictions"].get(key, {})
        shown = "null" if value is None else f"{value:.4g}"
        print(f"{key:<48} {shown:>10}" + ("" if prediction.get("value") is None else
                                          f"   (toy prediction {prediction['value']:.4g}: {prediction['verdict']})"))
    print(f"wrote {args.out}/validate.json and validate.png")
    return 0


def _validate_kept(ckpt: Path) -> str:
    """What an interrupted validate keeps: its checkpoints, from which the same command resumes."""
    if ckpt.is_dir() and any(ckpt.iterdir()):
        return f"what finished is kept in {ckpt}; rerun the same command to resume from there"
    return "nothing had finished yet; rerunning starts over"


BENCH_LLM_HELP = """\
NPO and NPO+KL steps on one Llama-shaped model (random weights), same batch, each setting in its own process:
the cached reference (NPO) and the adapter reference (NPO+KL, LoRA) against a frozen copy of the model (what
peer frameworks do), with LoRA, and NPO cached vs copy with full fine-tuning (AdamW on every weight). Prints
peak memory, step time, tokens per second and model FLOP utilisation (4 N + 2 N_trainable + 12 L d T FLOPs per
trained token over this device's matmul rate in the working dtype, measured in the same run) of each, and the
ratios. A setting that runs out of GPU memory is reported as such (and, on CUDA, whether each fits 80 GiB). A
benchmark: nothing is asserted.
"""


def cmd_bench_llm(args) -> int:
    from recipes import bench
    from unlearn.logprobs import check_fused_logprobs
    from unlearn.train import resolve_device

    cfg = resolve_config(args, bench.QUICK_LLM if args.quick else bench.LLMBench)
    if show_config(args, "bench llm", cfg):
        return 0
    device = resolve_device(cfg.device)
    if cfg.fused_logprobs:
        check_fused_logprobs(device)
    _check_out_file(args)
    return _bench_report(bench.bench_llm(cfg, device), cfg, device, args)


def eval_model_aliases() -> tuple[Alias, ...]:
    """The options every evaluation shares (``recipes.eval.ModelConfig``)."""
    from recipes.eval import DTYPES

    return (
        Alias("--model", "model", "a model directory, a run folder of `unlearn run`, or an architecture (tiny, "
              "llama-*-shape: random weights, bytes as tokens)"),
        Alias("--dtype", "dtype", "weights' dtype: auto keeps a checkpoint's bfloat16, else float32",
              {"choices": DTYPES}),
        Alias("--prompt-format", "prompt_format", "auto (the tokenizer's chat template if any), chat or plain",
              {"choices": ("auto", "chat", "plain")}),
        Alias("--template", "template", "the plain prompt template, with {prompt} (e.g. TOFU's Llama-2 format "
              "\"[INST] {prompt} [/INST]\")"),
        Alias("--batch-size", "batch_size", "sequences per forward pass", {"type": int}),
        Alias("--limit", "limit", "evaluate the first N questions of each set", {"type": int}, none="all"),
        Alias("--device", "device", "cpu, cuda, cuda:N, or auto: cuda when a GPU is visible"),
    )


def eval_tofu_aliases() -> tuple[Alias, ...]:
    return (*eval_model_aliases(),
            Alias("--data", "data", "a TOFU directory (real TOFU files, or `unlearn data tofu-like`)",
                  {"metavar": "DIR"}, none="required"),
            Alias("--split", "split", "forget split: forget01, forget05 or forget10"),
            Alias("--retain-logs", "retain_logs", "the retain model's eval.json of this command on the same split "
                  "(or open-unlearning's TOFU_EVAL.json, whose forget_truth_ratio scores are R)",
                  {"metavar": "FILE"}, none="no forget quality"),
            Alias("--max-new-tokens", "max_new_tokens", "greedy answer length for ROUGE-L", {"type": int}))


def eval_mia_aliases() -> tuple[Alias, ...]:
    return (*eval_model_aliases(),
            Alias("--forget", "forget", "members: prompt/response JSONL or TOFU JSON", {"metavar": "FILE"}),
            Alias("--holdout", "holdout", "non-members, same format", {"metavar": "FILE"}),
            Alias("--data", "data", "or a TOFU directory: forget = SPLIT.json, holdout = holdoutNN.json",
                  {"metavar": "DIR"}),
            Alias("--split", "split", "with --data: forget01, forget05 or forget10"),
            Alias("--attacks", "attacks", "comma-separated: loss, zlib, min_k, min_k++, reference",
                  {"metavar": "A,B,..."}, convert=_comma_list),
            Alias("--k", "k", "Min-K% and Min-K%++: the lowest fraction of tokens", {"type": float}),
            Alias("--reference-model", "reference_model", "the reference attack's model", {"metavar": "MODEL"}),
            Alias("--retain-logs", "retain_logs", "the retain model's eval.json of `unlearn eval mia` on the same "
                  "files: PrivLeak", {"metavar": "FILE"}, none="no PrivLeak"))


EVAL_TOFU_HELP = """\
TOFU's evaluation (Maini et al. 2024) of one causal LM on a TOFU directory, written to OUT/eval.json with every
per-question value beside its aggregate. Per split (forget = SPLIT_perturbed, retain = retain_perturbed,
real_authors, world_facts):
  SPLIT.prob            mean over questions of P(a|q) = exp(-mean token NLL of the answer); on real_authors and
                        world_facts the answer's share P(a) / (P(a) + sum_j P(perturbed_j))
  SPLIT.rouge_l_recall  ROUGE-L recall of the greedy answer (up to --max-new-tokens) against the answer
  SPLIT.truth_ratio     R = geometric mean_j P(perturbed_j) / P(base), base = the paraphrased answer (forget,
                        retain) or the answer (real_authors, world_facts); reported as mean min(R, 1/R) on forget
                        and mean max(0, 1 - R) elsewhere
  forget_quality        p-value of scipy.stats.ks_2samp between this model's and the retain model's per-question
                        forget R (needs --retain-logs; left out, never null, without it)
  model_utility         scipy.stats.hmean of the nine {retain, real_authors, world_facts} x {prob, rouge_l_recall,
                        truth_ratio}
Definitions, sources and pitfalls: docs/metrics.md.
"""

EVAL_MIA_HELP = """\
Membership-inference attacks on one causal LM: the forget set's responses are the members, the holdout set's the
non-members; every attack scores a sequence (higher = more likely a member) from its response tokens' log-probs:
  loss      mean token log p;  zlib  loss over the zlib-compressed bytes of the response;  min_k  mean of the
  lowest k fraction of token log p;  min_k++  the same of z_t = (log p - mu_t) / sigma_t, mu_t and sigma_t the mean
  and std of log p under the model's next-token distribution;  reference  loss minus the reference model's loss.
mia.ATTACK.auc = P(member score > non-member score) + 0.5 P(tie), members = the forget set (open-unlearning's AUC
is the same number; MUSE's privleak code reports 1 - this). With --retain-logs, mia.ATTACK.priv_leak = (AUC -
AUC_retain) / AUC_retain x 100 (MUSE eq. 2, in this AUC). Written to OUT/eval.json with every per-sample score;
the conventions of other codebases: docs/metrics.md.
"""

DATA_HELP = """\
Write a complete TOFU-layout directory from the built-in generator of fictitious authors (20 facts each):
full, forget01/05/10 and retain99/95/90, the *_perturbed files (paraphrased_answer, perturbed_answer), real
authors and world facts (real facts that no forget split touches) and holdout01/05/10 (authors never trained on,
for membership inference). Real TOFU files drop in unchanged wherever this directory is read.
"""


def cmd_eval(args) -> int:
    from recipes import eval as evaluation
    from unlearn.io import output_dir

    cls, run = {"tofu": (evaluation.TofuEvalConfig, evaluation.run_eval_tofu),
                "mia": (evaluation.MiaEvalConfig, evaluation.run_eval_mia)}[args.benchmark]
    cfg = evaluation.asked_as_trained(resolve_config(args, cls))  # a run folder's prompt, shown by --show-config
    if show_config(args, f"eval {args.benchmark}", cfg):
        return 0
    if not args.out:
        args.parser.error("the following arguments are required: --out")
    refuse_replacing(args.out, ["eval.json"], "an evaluation", args.overwrite)
    check_device(cfg)
    with output_dir(args.out) as out:
        args.kept = lambda: f"the evaluation did not finish; {out / 'eval.json'} is written only when it finishes"
        limit = f"the first {cfg.limit}" if cfg.limit else "all"
        print(f"unlearn eval {args.benchmark}: {cfg.model} on {cfg.device}, {limit} questions of each set")
        doc = run(cfg, out)
    for key, value in doc["metrics"].items():
        print(f"{key:<32} {value:.4g}")
    for note in doc["notes"]:
        print(f"note: {note}")
    print(f"wrote {out / 'eval.json'}")
    return 0


def cmd_data(args) -> int:
    from unlearn import tofu
    from unlearn.io import writable_dir

    cfg = resolve_config(args, tofu.TofuLikeConfig)
    if show_config(args, "data tofu-like", cfg):
        return 0
    if not args.out:
        args.parser.error("the following arguments are required: --out")
    refuse_replacing(args.out, ["full.json"], "a TOFU directory", args.overwrite)  # TOFU's first file
    counts = tofu.write_tofu_like(cfg, writable_dir(args.out))
    print(", ".join(f"{name} {n}" for name, n in counts.items()))
    print(f"wrote {len(counts)} files to {args.out}")
    return 0


LLM_EXTRA = ("transformers", "peft")  # pyproject's optional [llm] dependencies
PACKAGE = "unlearn-mechanics"  # pyproject's project name


def _described(description: str, cls: type, preset: Any = None) -> dict:
    """add_parser keywords of a configured command: its description, then its config paragraph."""
    return {"description": f"{description}\n{config_help(cls, preset)}",
            "formatter_class": argparse.RawDescriptionHelpFormatter}


def build_parser() -> argparse.ArgumentParser:
    from recipes import bench
    from recipes.eval import MiaEvalConfig, TofuEvalConfig
    from recipes.run import RelearnConfig, RunConfig
    from recipes.validate import ValidateConfig
    from unlearn.objectives import methods_help
    from unlearn.tofu import TofuLikeConfig

    parser = argparse.ArgumentParser(
        prog="unlearn",
        description="Theory, simulations and one training core for the mechanics of LLM unlearning "
                    "(GA, NPO, SimNPO).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_versions(PACKAGE)[PACKAGE]}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="name every experiment with its one-line claim")
    p_list.set_defaults(func=cmd_list)
    p_fig = sub.add_parser("figures", help="run experiments and write their figure and metrics",
                           description=FIGURES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_fig.add_argument("names", nargs="*", metavar="NAME", help="experiments to run (default: all; see `unlearn list`)")
    p_fig.add_argument("--preset", choices=("fast", "full"), default="full",
                       help="fast: quick preview; full: the paper's settings (default: full)")
    p_fig.add_argument("--out", default="figures", metavar="DIR", help="output folder (default: figures)")
    p_fig.add_argument("--device", choices=("cpu", "cuda"), help="where tensors live (default: the config's, cpu)")
    p_fig.add_argument("--set", action="append", metavar="key=value", help="override one config field (repeatable)")
    p_fig.add_argument("--seeds", type=int, metavar="N",
                       help="independent replicates of the experiments that have them (config key 'seeds')")
    p_fig.add_argument("--timing", action="store_true", help="print a table of wall times at the end")
    p_fig.add_argument("--show-config", action="store_true", help="print the resolved config(s) and exit")
    p_fig.set_defaults(func=cmd_figures)
    p_run = sub.add_parser("run", help="one unlearning run on a toy or Hugging Face model",
                           epilog=f"methods [the hyperparameters each reads]:\n{methods_help()}",
                           **_described(RUN_HELP, RunConfig))
    add_config(p_run, RunConfig, run_aliases())
    p_run.add_argument("--out", metavar="DIR", help="the run folder to write (required unless --show-config or "
                                                    "--dry-run)")
    p_run.add_argument("--dry-run", action="store_true", help="Hugging Face models: read the data, print the plan "
                       "(precision, reference and why, memory, steps) and exit, allocating no weights")
    p_run.set_defaults(func=cmd_run, parser=p_run)
    p_re = sub.add_parser("relearn", help="a relearning attack on the model of a run folder",
                          **_described(RELEARN_HELP, RelearnConfig))
    p_re.add_argument("run", nargs="?", metavar="DIR", help="a folder written by `unlearn run`")
    add_config(p_re, RelearnConfig, relearn_aliases())
    p_re.set_defaults(func=cmd_relearn, parser=p_re)
    p_val = sub.add_parser("validate", help="check the toy models' predictions on a causal LM",
                           **_described(VALIDATE_HELP, ValidateConfig))
    add_config(p_val, ValidateConfig, validate_aliases())
    p_val.add_argument("--out", default="validate", metavar="DIR", help="output folder (default validate)")
    p_val.set_defaults(func=cmd_validate)
    p_bench = sub.add_parser("bench", help="benchmarks: measured ratios against a baseline, side by side")
    bench_sub = p_bench.add_subparsers(dest="bench", required=True)
    p_toy = bench_sub.add_parser("toy", help="ensembles vs loops of single runs on the toy models",
                                 **_described(BENCH_TOY_HELP, bench.ToyBench, bench.QUICK))
    p_toy.add_argument("--quick", action="store_true", help="fewer steps and sizes: under a minute on 2 CPU cores")
    add_config(p_toy, bench.ToyBench, bench_toy_aliases(), bench.QUICK)
    p_toy.add_argument("--out", metavar="FILE", help="also write the results as JSON")
    p_toy.set_defaults(func=cmd_bench_toy)
    p_llm = bench_sub.add_parser("llm", help="cached / adapter references vs a frozen copy on a Llama",
                                 **_described(BENCH_LLM_HELP, bench.LLMBench, bench.QUICK_LLM))
    p_llm.add_argument("--quick", action="store_true", help="a smaller model: about a minute on 2 CPU cores")
    add_config(p_llm, bench.LLMBench, bench_llm_aliases(), bench.QUICK_LLM)
    p_llm.add_argument("--out", metavar="FILE", help="also write the results as JSON")
    p_llm.set_defaults(func=cmd_bench_llm)
    p_eval = sub.add_parser("eval", help="the field's metrics of one model: TOFU, membership inference")
    eval_sub = p_eval.add_subparsers(dest="benchmark", required=True)
    for name, help_text, description, cls, aliases in (
            ("tofu", "TOFU forget quality, model utility, Prob, ROUGE-L, truth ratio", EVAL_TOFU_HELP,
             TofuEvalConfig, eval_tofu_aliases()),
            ("mia", "membership-inference AUCs and PrivLeak", EVAL_MIA_HELP, MiaEvalConfig, eval_mia_aliases())):
        p = eval_sub.add_parser(name, help=help_text, **_described(description, cls))
        add_config(p, cls, aliases)
        p.add_argument("--out", metavar="DIR", help="output folder for eval.json (required unless --show-config)")
        p.add_argument("--overwrite", action="store_true", help="replace an eval.json already in --out")
        p.set_defaults(func=cmd_eval, parser=p)
    p_data = sub.add_parser("data", help="write data sets: a TOFU-layout directory of generated facts")
    data_sub = p_data.add_subparsers(dest="dataset", required=True)
    p_tl = data_sub.add_parser("tofu-like", help="a complete TOFU-layout directory", **_described(DATA_HELP,
                                                                                                  TofuLikeConfig))
    add_config(p_tl, TofuLikeConfig, (Alias("--authors", "n_authors", "fictitious authors", {"type": int}),
                                      Alias("--seed", "seed", "the generator's seed", {"type": int})))
    p_tl.add_argument("--out", metavar="DIR", help="the directory to write (required unless --show-config)")
    p_tl.add_argument("--overwrite", action="store_true", help="rewrite a TOFU directory already in --out")
    p_tl.set_defaults(func=cmd_data, parser=p_tl)
    return parser


def _os_error(err: OSError) -> str:
    """An OSError in one line, with the path(s) it names: "PATH: No space left on device"."""
    if err.filename is None:
        return str(err)
    paths = str(err.filename) + (f" -> {err.filename2}" if err.filename2 is not None else "")
    return f"{paths}: {err.strerror or err}"


def _is_safetensors_error(err: Exception) -> bool:
    """Whether ``err`` is safetensors' error for a file it cannot read (a truncated or foreign file); imported
    only when such an error is in hand."""
    if not type(err).__module__.startswith("safetensors"):
        return False
    from safetensors import SafetensorError

    return isinstance(err, SafetensorError)


def main(argv: list[str] | None = None) -> int:
    """Parse and dispatch. Expected errors print one line, ``unlearn CMD: error: ...``, and return 2; Ctrl-C
    prints ``unlearn CMD: interrupted`` with what was kept (``args.kept``, set by the command) and returns 130."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    args.kept = None  # a command sets it to a callable: what an interruption leaves behind, in a few words
    name = " ".join(["unlearn", args.command] + [getattr(args, d) for d in ("bench", "benchmark", "dataset")
                                                 if getattr(args, d, None)])  # as argparse names the command
    try:
        return args.func(args)
    except KeyboardInterrupt:
        kept = args.kept() if args.kept else None
        print(f"{name}: interrupted" + (f"; {kept}" if kept else ""), file=sys.stderr)
        return 130
    except (ValueError, RuntimeError) as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{name}: error: {_os_error(err)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        if err.name not in LLM_EXTRA:
            raise
        print(f"{name}: error: Hugging Face models need {err.name}, which is not installed: "
              "pip install 'unlearn-mechanics[llm]' (from a clone: pip install -e '.[llm]')", file=sys.stderr)
        return 2
    except Exception as err:
        if not _is_safetensors_error(err):
            raise
        print(f"{name}: error: a .safetensors file could not be read (truncated, or not a safetensors file): "
              f"{err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from unlearn.distributed import exit_process

    exit_process(main())
