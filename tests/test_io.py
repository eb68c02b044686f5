"""unlearn.io's output checks: a folder or file a command will write is created and probed before any work, and a
bad one is refused with one line naming the option and the path; the probe leaves nothing behind."""

import errno
import re
import sys
import tempfile

import pytest

from unlearn.io import atomic_write, writable_dir, writable_file

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")


def test_a_folder_is_created_with_its_parents_and_left_empty(tmp_path):
    out = tmp_path / "a" / "b"
    assert writable_dir(out) == out and out.is_dir()
    assert list(out.iterdir()) == []  # the probe file is gone
    assert writable_dir(str(out)) == out  # an existing folder is fine too


def test_an_existing_file_is_not_a_folder_and_stays_untouched(tmp_path):
    path = tmp_path / "results"
    path.write_text("keep")
    with pytest.raises(ValueError, match=f"^--out {re.escape(str(path))}: is a file, not a folder$"):
        writable_dir(path)
    assert path.read_text() == "keep"


@LINUX
def test_a_folder_that_cannot_be_created_is_named():
    with pytest.raises(ValueError, match=r"^--out /proc/nope: cannot create a folder there \(.+\)$"):
        writable_dir("/proc/nope")


def test_a_folder_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(ValueError, match=f"^--out {re.escape(str(tmp_path))}: cannot write into this folder "
                                         r"\(Permission denied\)$"):
        writable_dir(tmp_path)


def test_without_create_a_missing_folder_is_refused_and_not_made(tmp_path):
    with pytest.raises(ValueError, match="^run folder .*missing: no such folder$"):
        writable_dir(tmp_path / "missing", "run folder", create=False)
    assert not (tmp_path / "missing").exists()
    assert writable_dir(tmp_path, "run folder", create=False) == tmp_path


def test_a_file_output_gets_its_folder_and_is_not_written(tmp_path):
    path = tmp_path / "sub" / "bench.json"
    assert writable_file(path) == path
    assert path.parent.is_dir() and not path.exists()
    atomic_write(path, lambda p: open(p, "w").write("{}"))  # what the command then does
    assert writable_file(path) == path and path.read_text() == "{}"  # an existing file is fine and untouched


def test_a_folder_is_not_a_file_output(tmp_path):
    with pytest.raises(ValueError, match=f"^--out {re.escape(str(tmp_path))}: is a folder, not a file$"):
        writable_file(tmp_path)


def test_a_file_output_under_a_file_names_both(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("keep")
    b = re.escape(str(blocker))
    with pytest.raises(ValueError, match=f"^--out {b}/x.json: its folder {b}: is a file, not a folder$"):
        writable_file(blocker / "x.json")
    assert blocker.read_text() == "keep"


@LINUX
def test_a_file_output_whose_folder_cannot_be_created_is_named():
    with pytest.raises(ValueError, match=r"^--out /proc/nope/x.json: its folder /proc/nope: cannot create a folder"):
        writable_file("/proc/nope/x.json")


def test_atomic_write_gives_the_mode_a_new_file_gets(tmp_path):
    """The temporary file of mkstemp is private (0600); the written file must not stay so."""
    import os
    import stat

    from unlearn.io import atomic_write

    path = tmp_path / "out.json"
    atomic_write(path, lambda tmp: open(tmp, "w").write("{}"))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask and path.read_text() == "{}"
