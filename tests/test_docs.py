"""The documentation stays true to the repository: the README's figure table and docs/reproduction.md are what
``python -m recipes.docs`` generates from the registry and the committed figures/*.json, every relative link
points to a file (and heading) that exists, and the README stays a short front page."""

import json
import re
import shutil
from pathlib import Path

import pytest

from recipes import docs
from sims.experiments import EXPERIMENTS

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
STALE = f"stale: run `{docs.COMMAND}` and commit the result"


def readme_block(text: str) -> str:
    start, end = text.index(docs.BEGIN) + len(docs.BEGIN), text.index(docs.END)
    return text[start:end].strip("\n") + "\n"


def test_the_readme_figure_table_is_generated():
    assert readme_block((ROOT / "README.md").read_text()) == docs.figure_table(EXPERIMENTS, "figures"), \
        f"README.md's figure table is {STALE}"


def test_the_reproduction_page_is_generated():
    assert (ROOT / "docs" / "reproduction.md").read_text() == docs.reproduction_page(EXPERIMENTS, ROOT / "figures"), \
        f"docs/reproduction.md is {STALE}"


def test_the_figure_table_has_one_row_per_experiment_in_registry_order():
    rows = docs.figure_table(EXPERIMENTS).splitlines()[2:]
    assert [re.match(r"\| \[([^\]]+)\]", row).group(1) for row in rows] == list(EXPERIMENTS)
    for row, (name, exp) in zip(rows, EXPERIMENTS.items(), strict=True):
        assert row.endswith(f"| `unlearn figures {name}` |")
        assert docs.cell(exp.claim) in row


def test_a_claim_with_pipes_stays_in_its_cell():
    assert docs.cell("1/|y| and ||x||\n  next") == "1/\\|y\\| and \\|\\|x\\|\\| next"


def test_numbers_are_rounded_to_four_significant_digits():
    assert [docs.number(v) for v in (0.020683287, 25.9234, 1088.2, 4.44e-16, 0.0, None, 3)] == \
        ["0.02068", "25.92", "1088", "4.44e-16", "0", "null", "3"]


def test_every_paper_reading_is_on_the_reproduction_page():
    page = (ROOT / "docs" / "reproduction.md").read_text()
    for name in EXPERIMENTS:
        doc = json.loads((ROOT / "figures" / f"{name}.json").read_text())
        assert doc["env"]["git_sha"][:7] in page
        for key, value in doc["paper"].items():
            assert f"| `{key}` | {docs.number(value)} | {docs.number(doc['metrics'][key])} |" in page


@pytest.fixture
def checkout(tmp_path):
    """A copy of what recipes.docs reads and writes: README.md, docs/reproduction.md, figures/*.json."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "figures").mkdir()
    for rel in ("README.md", "docs/reproduction.md"):
        shutil.copy(ROOT / rel, tmp_path / rel)
    for path in (ROOT / "figures").glob("*.json"):
        shutil.copy(path, tmp_path / "figures" / path.name)
    return tmp_path


def test_the_check_fails_when_a_measured_metric_changes(checkout, capsys):
    assert docs.main(["--check", "--root", str(checkout)]) == 0
    path = checkout / "figures" / "markov-length.json"
    doc = json.loads(path.read_text())
    doc["metrics"]["npo.retain_cost_f2_to_retrained"] *= 1.5
    changed = docs.number(doc["metrics"]["npo.retain_cost_f2_to_retrained"])
    path.write_text(json.dumps(doc))
    capsys.readouterr()
    assert docs.main(["--check", "--root", str(checkout)]) == 1
    out = capsys.readouterr().out
    assert "docs/reproduction.md" in out and "python -m recipes.docs" in out and "README.md" not in out
    assert (checkout / "docs" / "reproduction.md").read_text() == (ROOT / "docs" / "reproduction.md").read_text()
    assert docs.main(["--root", str(checkout)]) == 0  # regenerates in place
    assert docs.main(["--check", "--root", str(checkout)]) == 0
    assert f"| {changed} |" in (checkout / "docs" / "reproduction.md").read_text()


def test_the_check_fails_when_the_readme_table_is_edited(checkout, capsys):
    readme = checkout / "README.md"
    readme.write_text(readme.read_text().replace("`unlearn figures collapse`", "`unlearn figures colapse`"))
    assert docs.main(["--check", "--root", str(checkout)]) == 1
    assert "README.md is stale" in capsys.readouterr().out
    docs.main(["--root", str(checkout)])
    assert readme.read_text() == (ROOT / "README.md").read_text()


def test_a_readme_without_markers_is_an_error():
    with pytest.raises(ValueError, match="figures:begin"):
        docs.replace_block("# no table here\n", "| a |\n")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def links(text: str) -> list[str]:
    """The targets of the Markdown links of ``text``, outside fenced code blocks."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    """A relative link names a file inside the repository; an anchor names a heading of its page."""
    broken = []
    for target in links(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        rel, _, anchor = target.partition("#")
        path = (page.parent / rel).resolve() if rel else page
        if not path.is_relative_to(ROOT) or not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", path.read_text(), flags=re.S), re.M)
            if anchor not in {slug(h) for h in headings}:
                broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to nothing: {broken}"


def test_links_and_anchors_are_parsed():
    assert links("[a](docs/x.md) [b](https://x.org) `[c](d)`\n```\n[e](f.md)\n```\n") == \
        ["docs/x.md", "https://x.org", "d"]
    assert slug("Memory at 7B") == "memory-at-7b" and slug("Causal LMs: validate") == "causal-lms-validate"


def test_the_readme_is_a_short_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    assert "pip install -e \".[dev]\"" in text and "python -m pytest" in text  # the commands .ci/run runs
    assert "../" not in text, "the README names something outside the repository"
