"""How `unlearn run --task jsonl` scales with the data: generated JSONL files of 2k, 8k and 50k lines (forget
and retain each), one run of --steps 2 on each in its own process (so that its peak memory is its own), and
the wall time, the peak resident memory and the model's size per size, then the ratios of the largest size to
the smallest. A benchmark, not a test: nothing is asserted.

    python benchmarks/jsonl_scaling.py                          unlearn run --model tiny, 2k / 8k / 50k lines
    python benchmarks/jsonl_scaling.py --command validate       unlearn validate --memorise-epochs 0 --methods NPO
    python benchmarks/jsonl_scaling.py --eval-limit 1024           evaluating the first 1024 sequences of each set
    python benchmarks/jsonl_scaling.py --lines 1000,4000 --model llama-20m-shape

Every line has words of its own (random letters), as real data does: a vocabulary built from the data would
grow with it (50k lines once gave 100,010 words and grew tiny from 19k to 6.4M parameters); the byte-level
tokenizer of the architectures keeps the model the same at every size. The runs' own lines on reading and
tokenising (their times) are shown under the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_lines(path: Path, n: int, seed: int) -> None:
    """``n`` prompt/response lines, each with words that no other line has."""
    rng = random.Random(seed)

    def word() -> str:
        return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 9)))

    with path.open("w") as f:
        for i in range(n):
            prompt = f"Where did {word().title()} {word().title()} (author {i}) first publish?"
            response = f"In {word().title()}, with {word()} {word()} press, in {1900 + rng.randrange(120)}."
            f.write(json.dumps({"prompt": prompt, "response": response}) + "\n")


def command(kind: str, model: str, forget: Path, retain: Path, out: Path, steps: int,
            eval_limit: int | None) -> list[str]:
    base = [sys.executable, "-m", "recipes.cli", kind, "--model", model, "--task", "jsonl", "--forget", str(forget),
            "--retain", str(retain), "--steps", str(steps), "--device", "cpu", "--out", str(out)]
    limit = [] if eval_limit is None else ["--set", f"eval_limit={eval_limit}"]
    if kind == "validate":
        return [*base, "--memorise-epochs", "0", "--methods", "NPO", *limit]
    return base + limit


def measure(argv: list[str], threads: int) -> tuple[float, int, int, str]:
    """(wall seconds, peak resident bytes, exit status, output) of one process, with ``threads`` torch threads."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        return seconds, usage.ru_maxrss * 1024, proc.returncode, log.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", default="2000,8000,50000", help="lines per file, comma-separated")
    parser.add_argument("--command", choices=("run", "validate"), default="run")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-limit", type=int, default=None, help="the runs' eval_limit (default: theirs)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1: on a shared "
                        "machine two threads of small ops wait on each other; a 800-line run took 57 s with 2, 17 s "
                        "with 1)")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.lines.split(",")]
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            forget, retain = Path(tmp) / f"forget-{n}.jsonl", Path(tmp) / f"retain-{n}.jsonl"
            write_lines(forget, n, args.seed)
            write_lines(retain, n, args.seed + 1)
            out = Path(tmp) / f"out-{n}"
            argv_n = command(args.command, args.model, forget, retain, out, args.steps, args.eval_limit)
            seconds, peak, status, text = measure(argv_n, args.threads)
            params = re.search(r"\(([\d,]+) parameters", text)
            if args.command == "run" and status == 0:  # run prints no model size: read it off the weights
                from safetensors import safe_open

                with safe_open(str(out / "model.safetensors"), "pt") as f:
                    params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
            elif params:
                params = int(params.group(1).replace(",", ""))
            rows.append((n, seconds, peak, params, status))
            notes += [f"  {n:>6} lines: {line.strip()}" for line in text.splitlines()
                      if line.startswith(("read ", "tokenised ", "evaluating "))]
            if status:
                notes.append(f"  {n:>6} lines: exit status {status}: {text.strip().splitlines()[-1:]}")
    limit = "" if args.eval_limit is None else f" --set eval_limit={args.eval_limit}"
    print(f"unlearn {args.command} --model {args.model} --task jsonl --steps {args.steps}{limit} (forget and retain "
          f"files of N lines each; {os.cpu_count()} CPU cores, {args.threads} torch thread(s) per run)")
    print(f"{'lines':>8} {'wall s':>8} {'peak MiB':>9} {'parameters':>11} {'status':>6}")
    for n, seconds, peak, params, status in rows:
        shown = f"{params:,}" if isinstance(params, int) else "?"
        print(f"{n:>8,} {seconds:>8.1f} {peak / 2**20:>9.0f} {shown:>11} {status:>6}")
    (n0, s0, p0, *_), (n1, s1, p1, *_) = rows[0], rows[-1]
    print(f"ratio {n1:,}/{n0:,} lines = {n1 / n0:.1f}: time {s1 / s0:.2f}x, peak memory {p1 / p0:.2f}x")
    print("\n".join(notes))
    return max(r[-1] for r in rows)


if __name__ == "__main__":
    sys.exit(main())
