"""Files and records: atomic writes, JSON-ready values, the environment a result was computed in, output paths
checked before any work, and the NAME.failed.json a run keeps when it stops on a non-finite loss.

Every command and experiment writes through ``atomic_write`` (readers never see half a file) and records
``environment`` beside its numbers; every command checks its output folder (``writable_dir``) or file
(``writable_file``) before it computes anything, so that a bad ``--out`` costs seconds, not a finished run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def to_jsonable(value: Any) -> Any:
    """Nested dicts/lists/arrays -> JSON data; NaN and inf become null."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    return _finite_or_none(value)


def git_sha() -> str | None:
    """The commit of the checkout this package runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: str) -> dict[str, Any]:
    """Versions, platform, device and git sha: what every result file records beside its numbers."""
    import matplotlib
    import scipy
    import torch

    return {
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "scipy": scipy.__version__, "matplotlib": matplotlib.__version__, "platform": platform.platform(),
        "device": device, "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "threads": torch.get_num_threads(), "git_sha": git_sha(),
    }


def package_versions(*packages: str) -> dict[str, str | None]:
    """{package: its installed version, or None}: the libraries a result read beside ``environment``'s."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def _new_file_mode() -> int:
    """The mode open() gives a new file: 0666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """``write(tmp)`` into a temporary file of its own in the same folder, flush it to disk, then rename it over
    ``path``: readers never see half a file, an interruption leaves the old file (or none), and two writers of
    the same path never share a temporary file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode())  # mkstemp makes it private (0600); a result file is as open() makes it
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def writable_dir(path: str | Path, option: str = "--out", create: bool = True) -> Path:
    """``path`` as a folder this process can write into, checked before any work: created (parents too) unless
    ``create`` is False (then it must exist), then probed by creating and deleting a temporary file in it.
    Raises a one-line ValueError naming ``option`` and ``path`` otherwise."""
    path = Path(path)
    where = f"{option} {path}"
    if path.exists() and not path.is_dir():
        raise ValueError(f"{where}: is a file, not a folder")
    if not path.exists():
        if not create:
            raise ValueError(f"{where}: no such folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"{where}: cannot create a folder there ({_reason(err)})") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{where}: cannot write into this folder ({_reason(err)})") from None
    return path


@contextmanager
def output_dir(path: str | Path, option: str = "--out") -> Iterator[Path]:
    """``writable_dir(path, option)`` for the duration of a command: if the command fails and this call created
    the folder, the folder is removed again while it is still empty, so a refused or failed run leaves nothing."""
    existed = Path(path).exists()
    folder = writable_dir(path, option)
    try:
        yield folder
    except BaseException:
        if not existed:
            with suppress(OSError):  # not empty: it holds what the run kept
                folder.rmdir()
        raise


def refuse_replacing(out: str | Path, names: Sequence[str], what: str, overwrite: bool,
                     replace: str = "replace it") -> None:
    """Refuse, before any work, an --out folder that already holds ``what`` (any file or folder of ``names``),
    unless ``overwrite``; the message names what it found."""
    found = [name for name in names if (Path(out) / name).exists()]
    if found and not overwrite:
        raise ValueError(f"--out {out}: already holds {what} ({', '.join(found)}); give a new folder, or --overwrite "
                         f"to {replace}")


def writable_file(path: str | Path, option: str = "--out") -> Path:
    """``path`` as a file this process can write (through ``atomic_write``), checked before any work: not a
    folder, and its folder writable (``writable_dir``: created, parents too, and probed). Raises a one-line
    ValueError naming ``option`` and ``path`` otherwise."""
    path = Path(path)
    where = f"{option} {path}"
    if path.is_dir():
        raise ValueError(f"{where}: is a folder, not a file")
    writable_dir(path.parent, f"{where}: its folder")
    return path


def failed_record(config: Mapping[str, Any], error: BaseException, history: Any = None, **extra: Any) -> dict:
    """{**extra, "config", "error" (its message), "error_type", "step", "run", "terms", "history"}.

    ``step`` (the step that failed), ``run`` (the TrainConfig name) and ``terms`` (the offending loss terms or
    parameters) come from a ``NonFiniteLossError`` and are None for another error; ``history`` defaults to the
    error's and is stored as its fields (loss, terms, eval_steps, evals), or None when there is none.
    ``extra`` holds what the command adds (e.g. name and preset for figures, or a collapse summary).
    """
    history = getattr(error, "history", None) if history is None else history
    if history is not None and not isinstance(history, Mapping):
        history = vars(history)
    return {**extra, "config": dict(config), "error": str(error), "error_type": type(error).__name__,
            "step": getattr(error, "step", None), "run": getattr(error, "name", None),
            "terms": getattr(error, "terms", None), "history": history}


def write_failed(out_dir: str | Path, name: str, record: Mapping[str, Any]) -> Path:
    """Write ``record`` (NaN and inf as null) to OUT_DIR/NAME.failed.json atomically, creating the folder;
    return the path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.failed.json"
    text = json.dumps(to_jsonable(dict(record)), indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path
