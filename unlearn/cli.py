"""The ``unlearn`` command line.

    unlearn list                                   every experiment and the claim its figure shows
    unlearn figures [NAME ...] [--preset fast|full] [--out DIR] [--device cpu|cuda] [--set key=value ...]
                    [--seeds N] [--timing]
    unlearn figures NAME --show-config             print the resolved config and stop
    unlearn run --model markov --method NPO [--mask wagle:0.8] --out DIR     one unlearning run on a toy model
    unlearn relearn DIR --subset shortest|random                              a relearning attack on its result
    unlearn validate --model tiny|PATH|llama-7b-shape --task markov|facts|jsonl --out DIR    toy predictions on an LM
    unlearn bench toy [--quick] [--out FILE]       ensembles vs loops of single runs on the toy models
    unlearn bench llm [--quick] [--out FILE]       cached / adapter references vs a frozen copy on a Llama
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

FIGURES_HELP = """\
Run experiments and write DIR/NAME.png (the figure) and DIR/NAME.json (config, metrics beside the paper's
values, curves, environment, wall time). With no NAME, every experiment runs.

presets:
  fast   seconds to a minute on a laptop CPU: one draw, shortened sweeps (what CI and notebooks run)
  full   the paper's settings: several independent draws, full sweeps (what figures/ holds)

overrides:
  --set key=value changes one field of the experiment's config (repeatable); lists are comma-separated
  (--set methods=GA,NPO+RT), optional fields take "none". --set seed=7 gives another independent draw of
  data and initialisations. Unknown keys and invalid values stop before any work, naming the key; use
  --show-config to see every key with its resolved value. --seeds N sets the number of independent
  replicates (the config key `seeds`) of the experiments that have one; figures show their mean with a
  +-1 std band.

timing:
  every NAME.json holds the experiment's wall time (wall_s); --timing also prints a summary table with the
  total and the number of pretrained models built and loaded from the cache. Budget on 2 CPU cores, from an
  empty cache: every figure of the full preset in under 20 minutes, the fast preset in under 3.

pretrained models are cached in $UNLEARN_CACHE (default ~/.cache/unlearn-mechanics) and reused.
"""


def _experiments():
    from sims.experiments import EXPERIMENTS, get_experiment

    return EXPERIMENTS, get_experiment


def cmd_list(args) -> int:
    experiments, _ = _experiments()
    width = max(map(len, experiments))
    for name, exp in experiments.items():
        print(f"{name:<{width}}  {exp.claim}")
    return 0


def cmd_figures(args) -> int:
    from sims.experiment import run_and_save, to_jsonable
    from unlearn import cache
    from unlearn.config import config_dict
    from unlearn.train import NonFiniteLossError, resolve_device

    experiments, get_experiment = _experiments()
    names = args.names or list(experiments)
    overrides = list(args.set or [])
    if args.device:
        overrides.append(f"device={args.device}")
    # Resolve every config first: a bad name, key or value fails before any experiment runs.
    plans = []
    for name in names:
        exp = get_experiment(name)
        seeds = []
        if args.seeds is not None:
            if hasattr(exp.presets[args.preset], "seeds"):
                seeds = [f"seeds={args.seeds}"]
            elif args.names:
                with_seeds = [n for n, e in experiments.items() if hasattr(e.presets[args.preset], "seeds")]
                raise ValueError(f"--seeds: {name} has no replicates (no config key 'seeds'); experiments with "
                                 f"replicates: {', '.join(with_seeds)}")
        cfg = exp.config(args.preset, [*overrides, *seeds])
        resolve_device(cfg.device)
        plans.append((exp, cfg))
    if args.show_config:
        for exp, cfg in plans:
            print(json.dumps({"name": exp.name, "preset": args.preset, "config": config_dict(cfg)}, indent=2))
        return 0
    out = Path(args.out)
    timings = []
    for exp, cfg in plans:
        start = time.perf_counter()
        cache.EVENTS.clear()
        try:
            doc = run_and_save(exp, args.preset, cfg, out)
        except NonFiniteLossError as err:
            kept = out / f"{exp.name}.failed.json"
            out.mkdir(parents=True, exist_ok=True)
            kept.write_text(json.dumps(to_jsonable({
                "name": exp.name, "preset": args.preset, "config": config_dict(cfg), "error": str(err),
                "step": err.step, "run": err.name, "terms": err.terms, "history": vars(err.history),
            }), indent=1))
            print(f"unlearn figures {exp.name}: {err}; what was computed is in {kept}", file=sys.stderr)
            return 3
        print(f"{exp.name}: wrote {out / (exp.name + '.png')} and .json in {time.perf_counter() - start:.1f}s "
              f"({len(doc['metrics'])} metrics)")
        timings.append((exp.name, doc["wall_s"], cache.EVENTS["stored"], cache.EVENTS["loaded"]))
    if args.timing:
        print_timing(timings, args.preset)
    return 0


BUDGET_S = {"full": 20 * 60, "fast": 3 * 60}  # every figure from an empty cache, 2 CPU cores


def print_timing(timings: list[tuple[str, float, int, int]], preset: str) -> None:
    """The --timing table: each experiment's wall time (its JSON's wall_s), its share, and the pretrained
    models it built (stored in the cache) or loaded; then the total against the preset's budget."""
    total = sum(t for _, t, _, _ in timings)
    width = max(len("experiment"), *(len(name) for name, *_ in timings))
    print(f"\n{'experiment':<{width}}  {'wall s':>8}  {'share':>6}  {'models built':>12}  {'loaded':>6}")
    for name, wall, built, loaded in timings:
        print(f"{name:<{width}}  {wall:>8.1f}  {wall / max(total, 1e-9):>6.1%}  {built:>12}  {loaded:>6}")
    budget = BUDGET_S[preset]
    print(f"{'total':<{width}}  {total:>8.1f}  (budget for every {preset} figure on 2 CPU cores from an empty "
          f"cache: {budget / 60:.0f} min)")


BENCH_TOY_HELP = """\
Train M unlearning runs of a toy model as one ensemble and, side by side, as a loop of single runs, for the
logistic model (npo-synthetic's size, float64) and the Markov transformer (4 layers, d 128, float32), and
print runs x steps per second of each, the speedup, and the ensemble's matmul FLOP rate as a fraction of
this machine's measured matmul rate. A benchmark, not a test: nothing is asserted.
"""


def cmd_bench_toy(args) -> int:
    from unlearn import bench
    from unlearn.train import resolve_device

    cfg = bench.QUICK if args.quick else bench.ToyBench()
    if args.members:
        try:
            members = tuple(int(m) for m in args.members.split(","))
            if min(members) < 1:
                raise ValueError
        except ValueError:
            raise ValueError(f"--members must be comma-separated positive integers, got {args.members!r}") from None
        cfg = dataclasses.replace(cfg, members=members)
    device = resolve_device(args.device)
    return _bench_report(bench.bench_toy(cfg, device), cfg, device, args)


def _bench_report(results: dict, cfg, device, args) -> int:
    """Add the config, device and command to a benchmark's results; write them to --out if asked."""
    from sims.experiment import atomic_write, to_jsonable
    from unlearn import bench

    doc = {**results, "env": bench.environment(device, ["unlearn", *args.argv]), "config": dataclasses.asdict(cfg)}
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, lambda p: Path(p).write_text(json.dumps(to_jsonable(doc), indent=1)))
        print(f"wrote {out}")
    return 0


RUN_HELP = """\
Unlearn the cached original Markov transformer (`markov`: the SimNPO paper's setup; `markov-fast`: the fast
presets' smaller world and model; either is pretrained once and cached) with one method, and write DIR/run.json
(settings, forget KL / retain KL / entropy before and after, the training history) and DIR/model.safetensors.
With a Hugging Face model (a directory, or tiny / llama-...-shape) the data is --task's (markov, facts, or
jsonl with --forget/--retain), the reference is --reference's, and forget/retain NLL per token are recorded;
methods that read alternative responses (IDK+RT, DPO*, GA+Mismatch+KL) run on the toy models only.
On several GPUs (or CPU processes), `torchrun --nproc_per_node N -m unlearn.cli run --model ... --device cuda`
shards the model with FSDP2; each rank takes its slice of every batch (--batch-size must split evenly) and
rank 0 writes DIR.

masks (--mask): wagle:R, magnitude:R or random:R keep the top fraction R in (0, 1] of weights by that score
(WAGLE: |(theta - g_r/mu) * g_f|, with --mu) and freeze the rest bitwise; a .safetensors file gives the
masks directly (it must match the model). The mask is written to DIR/mask.safetensors.
"""

RELEARN_HELP = """\
Fine-tune the unlearned model of a run folder (written by `unlearn run`) on a fraction of its forget set, the
shortest responses or random draws, and record the forget KL, retain KL and entropy after every epoch in
DIR/relearn.json (SimNPO paper Fig. 6's relearning attack).
"""


def cmd_run(args) -> int:
    from sims.toy_run import RunConfig, unlearn_toy
    from unlearn.distributed import is_main

    cfg = RunConfig(model=args.model, task=args.task, forget=args.forget, retain=args.retain, method=args.method,
                    beta=args.beta, gamma=args.gamma, lam=args.lam,
                    mismatch=args.mismatch, steps=args.steps, batch_size=args.batch_size, lr=args.lr, mask=args.mask,
                    mu=args.mu, seed=args.seed, eval_limit=args.eval_limit, device=args.device,
                    reference=args.reference)
    doc = unlearn_toy(cfg, Path(args.out))
    if not is_main():  # under torchrun rank 0 reports
        return 0
    before, after = doc["before"], doc["after"]
    print(" ".join(f"{k} {before[k]:.4g} -> {after[k]:.4g}" for k in before) + f"; wrote {args.out}/run.json")
    return 0


def cmd_relearn(args) -> int:
    from sims.toy_run import relearn_toy

    doc = relearn_toy(Path(args.run), args.subset, args.frac, args.epochs, args.batch_size, args.lr, args.draws,
                      args.device)
    for d, r in enumerate(doc["relearn"]):
        print(f"draw {d}: forget_kl by epoch " + " ".join(f"{v:.4g}" for v in r["forget_kl"]))
    print(f"wrote {args.run}/relearn.json")
    return 0


VALIDATE_HELP = """\
Check on a causal LM what the toy models predict. The model is fine-tuned until it has memorised the forget
and retain sets (built-in tasks; skip with --memorise-epochs 0 for a model that knows its data), then unlearned
with each method; DIR/validate.json holds the forget NLL against steps with linear and log-step fits, the
per-sequence weights against |y| at the first and last evaluation, the retain drift, and beside each the toy
model's prediction; DIR/validate.png shows them. DIR/validate.ckpt lets an interrupted run resume.

models: a local Hugging Face directory (local files only), or tiny / llama-20m-shape / llama-100m-shape /
llama-7b-shape (random weights from a config; no download). tasks: markov (the SimNPO Markov mixture as
tokens), facts (fictitious authors, TOFU-like), jsonl (--forget FILE --retain FILE: prompt/response JSONL or
TOFU JSON).

Optimizer and precision: AdamW, its moments in the weights' dtype. --precision float32 (the CPU default),
bf16-mixed (float32 weights, bf16 autocast) or bf16 (bf16 weights: 8 bytes per weight with AdamW, so that
llama-7b-shape fits one 80 GB GPU, but updates smaller than a bf16 step of their weight are lost); on a GPU,
auto takes bf16-mixed when it fits the free memory (llama-7b-shape: about 113 GiB) and bf16 otherwise. A run
that does not fit is refused before it starts, with the memory it needs. Learning rates default by model, as
AdamW's usable rate falls with width (sims.validate.LEARNING_RATES; the run prints the ones it uses).
"""


def cmd_validate(args) -> int:
    from sims.validate import ValidateConfig, run_validate

    cfg = ValidateConfig(model=args.model, task=args.task, forget=args.forget, retain=args.retain,
                         methods=tuple(args.methods.split(",")), steps=args.steps, lr=args.lr,
                         memorise_lr=args.memorise_lr, batch_size=args.batch_size,
                         memorise_epochs=args.memorise_epochs, lora_rank=args.lora, reference=args.reference,
                         precision=args.precision, gradient_checkpointing=args.gradient_checkpointing,
                         prompt_format=args.prompt_format, seed=args.seed, device=args.device)
    doc = run_validate(cfg, Path(args.out))
    for key, value in doc["metrics"].items():
        predicted = doc["predictions"].get(key, {}).get("value")
        shown = "null" if value is None else f"{value:.4g}"
        print(f"{key:<48} {shown:>10}" + ("" if predicted is None else f"   (toy prediction {predicted:.4g})"))
    print(f"wrote {args.out}/validate.json and validate.png")
    return 0


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
    from unlearn import bench
    from unlearn.train import resolve_device

    cfg = bench.QUICK_LLM if args.quick else bench.LLMBench()
    overrides = {k: v for k, v in (("model", args.model), ("lora_rank", args.lora), ("seq_len", args.seq_len),
                                   ("batch_size", args.batch_size), ("dtype", args.dtype)) if v is not None}
    if args.gradient_checkpointing:
        overrides["gradient_checkpointing"] = True
    cfg = dataclasses.replace(cfg, **overrides)
    device = resolve_device(args.device)
    return _bench_report(bench.bench_llm(cfg, device), cfg, device, args)


def _add_model_and_task(parser: argparse.ArgumentParser, model: str, model_help: str, task_note: str = "") -> None:
    """--model, and the data of a Hugging Face model: --task, --forget, --retain (run and validate)."""
    parser.add_argument("--model", default=model, help=model_help)
    parser.add_argument("--task", default="markov", help=f"markov, facts or jsonl{task_note} (default markov)")
    parser.add_argument("--forget", metavar="FILE", help="forget set for --task jsonl")
    parser.add_argument("--retain", metavar="FILE", help="retain set for --task jsonl")


LLM_EXTRA = ("transformers", "peft")  # pyproject's optional [llm] dependencies


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unlearn",
        description="Theory, simulations and one training core for the mechanics of LLM unlearning "
                    "(GA, NPO, SimNPO).",
    )
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
    p_run = sub.add_parser("run", help="one unlearning run on a toy model (optionally with a weight mask)",
                           description=RUN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_and_task(p_run, "markov", "markov or markov-fast (default markov), or a Hugging Face model directory "
                                         "or architecture (tiny, llama-...-shape)", "; Hugging Face models only")
    p_run.add_argument("--method", default="NPO", help="a method of docs/methods.md, e.g. GA, NPO, SimNPO, GA+RT, "
                                                       "NPO+KL, GA+Mismatch+KL (toy models) (default NPO)")
    p_run.add_argument("--beta", type=float, default=0.1,
                       help="NPO/SimNPO/DPO inverse temperature (default 0.1 for every method; the SimNPO "
                            "experiments use 4)")
    p_run.add_argument("--gamma", type=float, default=0.0, help="SimNPO margin (default 0)")
    p_run.add_argument("--lam", type=float, default=1.0, help="weight of the retain term (default 1)")
    p_run.add_argument("--mismatch", type=float, default=1.0, help="GA+Mismatch+KL's mismatch weight (default 1)")
    p_run.add_argument("--steps", type=int, default=50, help="unlearning steps (default 50)")
    p_run.add_argument("--batch-size", type=int, default=4, help="forget (and retain) batch size (default 4)")
    p_run.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate (default 5e-4)")
    p_run.add_argument("--mask", metavar="KIND:R|FILE", help="train only the masked weights (see above)")
    p_run.add_argument("--mu", type=float, default=1e-6, help="WAGLE's Hessian scale mu (default 1e-6, as released)")
    p_run.add_argument("--seed", type=int, default=0, help="batch order, mask draws (default 0)")
    p_run.add_argument("--eval-limit", type=int,
                       help="toy models: evaluate on the first N sequences of each test split (default all)")
    p_run.add_argument("--reference", choices=("cached", "copy"), default="cached",  # sims.toy_run.REFERENCES
                       help="Hugging Face models: cached (log-probs, and retain logits for *+KL methods, computed "
                            "once) or copy (a frozen model: less memory than cached logits of a large vocabulary) "
                            "(default cached)")
    p_run.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p_run.add_argument("--out", required=True, metavar="DIR", help="the run folder to write")
    p_run.set_defaults(func=cmd_run)
    p_re = sub.add_parser("relearn", help="a relearning attack on the model of a run folder",
                          description=RELEARN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_re.add_argument("run", metavar="DIR", help="a folder written by `unlearn run`")
    p_re.add_argument("--subset", choices=("shortest", "random"), default="shortest",
                      help="relearn on the shortest responses or on random draws (default shortest)")
    p_re.add_argument("--frac", type=float, default=0.2, help="fraction of the forget set (default 0.2)")
    p_re.add_argument("--epochs", type=int, default=3, help="relearning epochs (default 3)")
    p_re.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    p_re.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    p_re.add_argument("--draws", type=int, default=3,
                      help="random subsets to draw, with --subset random (default 3; the relearn figure and the "
                           "SimNPO paper draw 5)")
    p_re.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p_re.set_defaults(func=cmd_relearn)
    p_val = sub.add_parser("validate", help="check the toy models' predictions on a causal LM",
                           description=VALIDATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_and_task(p_val, "tiny", "tiny (default), llama-20m-shape, llama-100m-shape, llama-7b-shape, or a "
                                       "model directory")
    p_val.add_argument("--methods", default="GA,NPO,SimNPO",
                       help="comma-separated, of GA, NPO and SimNPO (default all three)")
    p_val.add_argument("--steps", type=int, default=300, help="unlearning steps per method (default 300)")
    p_val.add_argument("--lr", type=float, help="unlearning AdamW learning rate (default: by model, above)")
    p_val.add_argument("--memorise-lr", type=float, help="memorising AdamW learning rate (default: by model)")
    p_val.add_argument("--batch-size", type=int, default=32, help="forget sequences per step (default 32)")
    p_val.add_argument("--memorise-epochs", type=int, default=300, help="most epochs of memorising (default 300)")
    p_val.add_argument("--lora", type=int, metavar="RANK", help="unlearn through a LoRA adapter of this rank")
    p_val.add_argument("--reference", default="cached",
                       help="cached (default), adapter (needs --lora) or copy: where NPO's log pi_ref comes from")
    p_val.add_argument("--precision", default="auto", help="float32, bf16-mixed, bf16, or auto (default; above)")
    p_val.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for activation memory")
    p_val.add_argument("--prompt-format", default="auto", help="auto, chat or plain (files and facts)")
    p_val.add_argument("--seed", type=int, default=0,
                       help="the task's draws, the initial weights of an architecture, batch order (default 0)")
    p_val.add_argument("--device", default="auto", help="cpu, cuda, or auto (default): cuda when a GPU is visible")
    p_val.add_argument("--out", default="validate", metavar="DIR", help="output folder (default validate)")
    p_val.set_defaults(func=cmd_validate)
    p_bench = sub.add_parser("bench", help="benchmarks: measured ratios against a baseline, side by side")
    bench_sub = p_bench.add_subparsers(dest="bench", required=True)
    p_toy = bench_sub.add_parser("toy", help="ensembles vs loops of single runs on the toy models",
                                 description=BENCH_TOY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_toy.add_argument("--members", metavar="M,M,...", help="ensemble sizes (default 8,32,128; --quick 8,32)")
    p_toy.add_argument("--quick", action="store_true", help="fewer steps and sizes: under a minute on 2 CPU cores")
    p_toy.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p_toy.add_argument("--out", metavar="FILE", help="also write the results as JSON")
    p_toy.set_defaults(func=cmd_bench_toy)
    p_llm = bench_sub.add_parser("llm", help="cached / adapter references vs a frozen copy on a Llama",
                                 description=BENCH_LLM_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_llm.add_argument("--model", help="architecture or model directory (default llama-100m-shape; --quick "
                                       "llama-20m-shape)")
    p_llm.add_argument("--quick", action="store_true", help="a smaller model: about a minute on 2 CPU cores")
    p_llm.add_argument("--lora", type=int, metavar="RANK", help="LoRA rank (default 16)")
    p_llm.add_argument("--seq-len", type=int, help="tokens per sequence (default 256; --quick 128)")
    p_llm.add_argument("--batch-size", type=int, help="sequences per batch (default 2)")
    p_llm.add_argument("--dtype", choices=("float32", "bf16"), help="weights' dtype (default float32)")
    p_llm.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in backward")
    p_llm.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p_llm.add_argument("--out", metavar="FILE", help="also write the results as JSON")
    p_llm.set_defaults(func=cmd_bench_llm)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except (ValueError, RuntimeError) as err:
        print(f"unlearn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        if err.name not in LLM_EXTRA:
            raise
        print(f"unlearn {args.command}: error: Hugging Face models need {err.name}, which is not installed: "
              "pip install 'unlearn-mechanics[llm]' (from a clone: pip install -e '.[llm]')", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
