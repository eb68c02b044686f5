"""unlearn.cache: keyed by config, atomic writes, unreadable entries rebuilt with a warning."""

import warnings

import pytest
import torch

from unlearn import cache


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path))
    return tmp_path


def counting_build(value):
    calls = []

    def build():
        calls.append(1)
        return {"t": torch.full((3,), float(value))}

    return build, calls


def test_a_key_with_a_tuple_is_found_again():
    """The stored key went through JSON (tuples become lists): it still matches the key it was stored under."""
    build, calls = counting_build(2)
    cache.cached("model", {"betas": (0.1, 1.0)}, build)
    cache.cached("model", {"betas": (0.1, 1.0)}, build)
    assert len(calls) == 1


def test_a_changed_config_rebuilds_and_an_unchanged_one_loads():
    build, calls = counting_build(1)
    first = cache.cached("model", {"lr": 0.1, "steps": 5}, build)
    again = cache.cached("model", {"steps": 5, "lr": 0.1}, build)  # key order does not matter
    assert len(calls) == 1 and torch.equal(first["t"], again["t"])
    other_build, other_calls = counting_build(2)
    other = cache.cached("model", {"lr": 0.2, "steps": 5}, other_build)
    assert len(other_calls) == 1 and torch.equal(other["t"], torch.full((3,), 2.0))
    assert torch.equal(cache.load("model", {"lr": 0.1, "steps": 5})["t"], first["t"])  # the old entry stays


def test_an_absent_entry_is_none_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.load("model", {"absent": True}) is None


def test_an_interrupted_write_leaves_no_half_file(monkeypatch, private_cache):
    key = {"run": 1}
    cache.store("model", key, {"t": torch.zeros(2)})
    real_save = torch.save

    def crash_midway(obj, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        cache.store("model", key, {"t": torch.ones(2)})
    with pytest.raises(KeyboardInterrupt):
        cache.store("model", {"run": 2}, {"t": torch.ones(2)})
    monkeypatch.setattr(torch, "save", real_save)
    files = sorted(p.name for p in private_cache.rglob("*") if p.is_file())
    assert files == [cache.entry_path("model", key).name]  # no temporary file, no entry for run 2
    assert torch.equal(cache.load("model", key)["t"], torch.zeros(2))  # the previous entry is intact
    assert cache.load("model", {"run": 2}) is None


@pytest.mark.parametrize("content", [b"", b"not a torch file", "truncated", "not an entry"])
def test_a_corrupt_entry_is_rebuilt_with_a_warning_naming_it(content):
    key = {"corrupt": str(content)}
    path = cache.store("model", key, {"t": torch.arange(1000.0)})
    if content == "truncated":
        content = path.read_bytes()[:200]
    elif content == "not an entry":
        torch.save({"something": torch.ones(1)}, path)
    if isinstance(content, bytes):
        path.write_bytes(content)
    build, calls = counting_build(7)
    with pytest.warns(RuntimeWarning, match=path.name):
        rebuilt = cache.cached("model", key, build)
    assert len(calls) == 1 and torch.equal(rebuilt["t"], torch.full((3,), 7.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(cache.load("model", key)["t"], torch.full((3,), 7.0))  # overwritten, readable again


def test_an_entry_stored_under_another_key_is_none_without_a_warning():
    cache.store("model", {"a": 1}, {"t": torch.ones(2)})
    cache.entry_path("model", {"a": 1}).rename(cache.entry_path("model", {"a": 2}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.load("model", {"a": 2}) is None
