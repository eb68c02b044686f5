"""``unlearn list`` and ``unlearn figures``: the experiments of ``sims.experiments.EXPERIMENTS``, run by preset
and written as DIR/NAME.png and DIR/NAME.json (``sims.experiment``'s contract), with an optional timing table.
"""

from __future__ import annotations

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
    from sims.experiment import run_and_save
    from unlearn import cache
    from unlearn.config import config_dict
    from unlearn.io import failed_record, writable_dir, write_failed
    from unlearn.train import NonFiniteLossError, resolve_device

    experiments, get_experiment = _experiments()
    names = args.names or list(experiments)
    if len(set(names)) < len(names):
        raise ValueError(f"an experiment named twice: {', '.join(names)}")
    overrides = list(args.set or [])
    # Resolve every config first: a bad name, key or value fails before any experiment runs, naming the experiment.
    plans = []
    for name in names:
        exp = get_experiment(name)
        flags = {"device": ("--device", args.device)} if args.device else {}
        if args.seeds is not None:
            if hasattr(exp.presets[args.preset], "seeds"):
                flags["seeds"] = ("--seeds", args.seeds)
            elif args.names:
                with_seeds = [n for n, e in experiments.items() if hasattr(e.presets[args.preset], "seeds")]
                raise ValueError(f"--seeds: {name} has no replicates (no config key 'seeds'); experiments with "
                                 f"replicates: {', '.join(with_seeds)}")
        try:
            cfg = exp.config(args.preset, overrides, flags)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
        resolve_device(cfg.device)
        plans.append((exp, cfg))
    if args.show_config:
        for exp, cfg in plans:
            print(json.dumps({"name": exp.name, "preset": args.preset, "config": config_dict(cfg)}, indent=2))
        return 0
    out = writable_dir(args.out)  # before any experiment runs: a bad --out costs seconds, not a finished run
    timings, written = [], []
    running = [None]
    args.kept = lambda: _kept(written, running[0], out)
    for exp, cfg in plans:
        running[0] = exp.name
        start = time.perf_counter()
        cache.EVENTS.clear()
        try:
            doc = run_and_save(exp, args.preset, cfg, out)
        except NonFiniteLossError as err:
            kept = write_failed(out, exp.name, failed_record(config_dict(cfg), err, name=exp.name,
                                                              preset=args.preset))
            print(f"unlearn figures {exp.name}: {err}; what was computed is in {kept}", file=sys.stderr)
            return 3
        print(f"{exp.name}: wrote {out / (exp.name + '.png')} and .json in {time.perf_counter() - start:.1f}s "
              f"({len(doc['metrics'])} metrics)")
        timings.append((exp.name, doc["wall_s"], cache.EVENTS["stored"], cache.EVENTS["loaded"]))
        written.append(exp.name)
    running[0] = None
    if args.timing:
        print_timing(timings, args.preset)
    return 0


def _kept(written: list[str], running: str | None, out: Path) -> str:
    """What an interrupted ``unlearn figures`` keeps: the experiments it wrote, and the one it stopped in."""
    stopped = f"{running} did not finish" if running else ""
    if not written:
        return f"no experiment had finished, nothing was written to {out}" + (f" ({stopped})" if stopped else "")
    return (f"kept {', '.join(written)} in {out} (NAME.png and NAME.json)" + (f"; {stopped}" if stopped else ""))


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


# ------------------------------------------------------------------ configs: run, relearn, validate, bench
