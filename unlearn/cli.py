"""The ``unlearn`` command line.

    unlearn list                                   every experiment and the claim its figure shows
    unlearn figures [NAME ...] [--preset fast|full] [--out DIR] [--device cpu|cuda] [--set key=value ...]
    unlearn figures NAME --show-config             print the resolved config and stop
"""

from __future__ import annotations

import argparse
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
  --show-config to see every key with its resolved value.

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
        cfg = exp.config(args.preset, overrides)
        resolve_device(cfg.device)
        plans.append((exp, cfg))
    if args.show_config:
        for exp, cfg in plans:
            print(json.dumps({"name": exp.name, "preset": args.preset, "config": config_dict(cfg)}, indent=2))
        return 0
    out = Path(args.out)
    for exp, cfg in plans:
        start = time.perf_counter()
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
    return 0


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
    p_fig.add_argument("--show-config", action="store_true", help="print the resolved config(s) and exit")
    p_fig.set_defaults(func=cmd_figures)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError) as err:
        print(f"unlearn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
