"""Shared test set-up: hypothesis profiles, a private model cache, float64 helpers.

Profiles: ``ci`` (selected when CI=true: derandomized, no example database, so CI never flakes) and ``dev``
(more examples, random). Override with HYPOTHESIS_PROFILE=name.
"""

import os
import tempfile

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, database=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

# Tests never read or fill the user's model cache; one private cache is shared by the whole session
# (including notebook kernels, which inherit the environment).
os.environ["UNLEARN_CACHE"] = tempfile.mkdtemp(prefix="unlearn-test-cache-")


def fast_figures(tmp_path_factory, *names: str) -> dict:
    """Run ``unlearn figures NAMES --preset fast`` into a fresh folder: {name: its JSON document, "out": folder}."""
    import json

    from unlearn.cli import main

    out = tmp_path_factory.mktemp("figures")
    assert main(["figures", *names, "--preset", "fast", "--out", str(out), "--set", "progress=false"]) == 0
    return {name: json.loads((out / f"{name}.json").read_text()) for name in names} | {"out": out}
