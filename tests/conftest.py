"""Shared test set-up: hypothesis profiles, a private model cache, the fast figures of the session.

Profiles: ``ci`` (selected when CI=true: derandomized, no example database, so CI never flakes) and ``dev``
(more examples, random). Override with HYPOTHESIS_PROFILE=name.
"""

import json
import os
import tempfile

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, database=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

# Tests never read or fill the user's model cache; one private cache is shared by the whole session
# (including notebook kernels, which inherit the environment).
os.environ["UNLEARN_CACHE"] = tempfile.mkdtemp(prefix="unlearn-test-cache-")


@pytest.fixture(scope="session")
def fast_figure(tmp_path_factory):
    """``fast_figure(name)``: the NAME.json document of ``unlearn figures NAME --preset fast``, run at most once
    per test session into one folder, ``fast_figure.out`` (NAME.png beside it)."""
    from recipes.cli import main

    out = tmp_path_factory.mktemp("figures")
    docs = {}

    def run(name: str) -> dict:
        if name not in docs:
            assert main(["figures", name, "--preset", "fast", "--out", str(out), "--set", "progress=false"]) == 0
            docs[name] = json.loads((out / f"{name}.json").read_text())
        return docs[name]

    run.out = out
    return run
