"""The floors of the project: theory <- unlearn <- sims <- recipes. A module may import its own floor and the
floors below it, never one above (every import statement, including those inside functions)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("theory", "unlearn", "sims", "recipes")


def imported_packages(path: Path) -> set[str]:
    """The top-level package of every module that ``path`` imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def upward_imports(floor: str) -> list[str]:
    above = set(FLOORS[FLOORS.index(floor) + 1:])
    return [f"{path.relative_to(ROOT)} imports {', '.join(sorted(imported_packages(path) & above))}"
            for path in sorted((ROOT / floor).rglob("*.py")) if imported_packages(path) & above]


@pytest.mark.parametrize("floor", FLOORS)
def test_no_floor_imports_a_floor_above_it(floor):
    assert upward_imports(floor) == []


def test_the_check_sees_an_upward_import(tmp_path):
    """A module of the core that imports the simulators, even inside a function, is found."""
    path = tmp_path / "m.py"
    path.write_text("import torch\n\ndef f():\n    from sims.markov import world\n    import recipes.cli\n")
    assert imported_packages(path) == {"torch", "sims", "recipes"}
