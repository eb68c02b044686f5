"""unlearn.tofu: the TOFU layout generated (every file, TOFU's counts and pairings, perturbed answers wrong and
distinct, deterministic in the seed), read back field for field, refused with file, line and field when it is
malformed or a split is absent, and real TOFU files (extra fields and all) read the same way."""

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearn import data as D
from unlearn import tofu as T

SMALL = T.TofuLikeConfig(n_authors=20, n_retain_perturbed=5, n_perturbed=3, seed=0)
LAYOUT = {"full.json", "forget01.json", "forget05.json", "forget10.json", "retain99.json", "retain95.json",
          "retain90.json", "forget01_perturbed.json", "forget05_perturbed.json", "forget10_perturbed.json",
          "retain_perturbed.json", "real_authors.json", "world_facts.json", "real_authors_perturbed.json",
          "world_facts_perturbed.json", "holdout01.json", "holdout05.json", "holdout10.json"}
POOL = [D.author_name(k) for k in range(D.N_NAMES)]
NAME = re.compile(rf"\b(?:{'|'.join(D.FIRST)}) (?:{'|'.join(D.LAST)})\b")


def authors(records: list[dict]) -> set[str]:
    """The pool names the questions of ``records`` are about (each question names exactly one)."""
    named = [NAME.findall(r["question"]) for r in records]
    assert all(len(n) == 1 for n in named)
    return {n[0] for n in named}


def questions(records: list[dict]) -> list[str]:
    return [r["question"] for r in records]


def check_layout(files: dict[str, list[dict]], cfg: T.TofuLikeConfig) -> None:
    """Every invariant of the layout the module docstring states."""
    assert set(files) == LAYOUT
    full = files["full.json"]
    assert len(full) == len(set(questions(full))) == len(D.ATTRIBUTES) * cfg.n_authors
    assert len(authors(full)) == cfg.n_authors
    forget_authors = set()
    for split, retain in T.SPLITS.items():
        k = D.n_forget_authors(cfg.n_authors, split)
        forget, kept = files[f"{split}.json"], files[f"{retain}.json"]
        assert len(forget) == 20 * k and len(authors(forget)) == k
        assert set(questions(forget)) | set(questions(kept)) == set(questions(full))
        assert not set(questions(forget)) & set(questions(kept))
        assert forget + kept == full  # the first authors, in order
        perturbed = files[f"{split}_perturbed.json"]
        assert [(r["question"], r["answer"]) for r in perturbed] == [(r["question"], r["answer"]) for r in forget]
        holdout = files[T.holdout_file(split)]
        assert len(holdout) == len(forget) and len(authors(holdout)) == k
        assert not authors(holdout) & authors(full)
        forget_authors |= authors(forget)
    retain_perturbed = files["retain_perturbed.json"]
    assert len(retain_perturbed) == 20 * cfg.retain_perturbed_authors
    assert not authors(retain_perturbed) & forget_authors
    assert set(questions(retain_perturbed)) <= set(questions(files["retain90.json"]))
    for name in ("real_authors", "world_facts"):
        qa, perturbed = files[f"{name}.json"], files[f"{name}_perturbed.json"]
        assert qa == [{"question": r["question"], "answer": r["answer"]} for r in perturbed] and len(qa) >= 25
        assert not any(NAME.search(" ".join([r["question"], r["answer"], *r["perturbed_answer"]])) for r in perturbed)
    for file, records in files.items():
        for r in records:
            assert all(isinstance(v, str) and v.strip() for v in r.values() if not isinstance(v, list))
            if "perturbed_answer" not in r:
                assert set(r) == {"question", "answer"}, file
                continue
            wrong = r["perturbed_answer"]
            assert len(wrong) == len(set(wrong)) == cfg.n_perturbed and all(isinstance(w, str) for w in wrong)
            assert not {r["answer"], r.get("paraphrased_answer")} & set(wrong)
            if file in ("real_authors_perturbed.json", "world_facts_perturbed.json"):
                assert set(r) == {"question", "answer", "perturbed_answer"}, file
            else:
                assert set(r) == {"question", "answer", "paraphrased_answer", "paraphrased_question",
                                  "perturbed_answer"}, file
                assert r["paraphrased_question"] != r["question"] and r["paraphrased_answer"] != r["answer"]


def test_the_attributes_table_serves_both_tasks():
    for a in D.ATTRIBUTES:
        assert len(set(a.choices)) == len(a.choices) > T.MAX_PERTURBED
        for template in (a.question, a.paraphrased_question):
            assert "{name}" in template and "{value}" not in template and template.endswith("?")
        for template in (a.answer, a.paraphrased_answer):
            assert "{name}" in template and "{value}" in template and template.endswith(".")
            assert template.format(name="Ada Arden", value=a.choices[0])[0].isupper()
    assert T.MAX_PERTURBED == 5 and list(T.SPLITS) == list(D.FORGET_FRACS)
    forget, _ = D.facts_task(10, "forget10")  # the bare value stays facts_task's answer
    assert all(ex.response in a.choices for ex, a in zip(forget, D.ATTRIBUTES, strict=True))


def test_a_generated_directory_has_every_file_with_tofus_counts(tmp_path):
    counts = T.write_tofu_like(SMALL, tmp_path / "tofu")
    files = T.tofu_like(SMALL)
    assert counts == {f: len(r) for f, r in files.items()} and counts["full.json"] == 400
    assert {p.name for p in (tmp_path / "tofu").iterdir()} == LAYOUT  # no temporary files left
    for file, records in files.items():
        lines = (tmp_path / "tofu" / file).read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == records
    assert "Brasília" in (tmp_path / "tofu" / "world_facts.json").read_text(encoding="utf-8")  # not escaped
    check_layout(files, SMALL)


def test_tofus_own_sizes_by_default():
    files = T.tofu_like(T.TofuLikeConfig())
    assert {f: len(files[f]) for f in ("full.json", "forget01.json", "forget05.json", "forget10.json",
                                       "retain90.json", "retain_perturbed.json", "holdout10.json")} == {
        "full.json": 4000, "forget01.json": 40, "forget05.json": 200, "forget10.json": 400, "retain90.json": 3600,
        "retain_perturbed.json": 400, "holdout10.json": 400}
    assert all(len(r["perturbed_answer"]) == 5 for r in files["forget10_perturbed.json"])
    # fewer authors: retain_perturbed keeps TOFU's tenth of them (at least one), inside the authors of no split
    assert [T.TofuLikeConfig(n_authors=n).retain_perturbed_authors for n in (10, 15, 20, 64)] == [1, 2, 2, 6]


@settings(max_examples=20)
@given(n_authors=st.integers(10, 60), n_perturbed=st.integers(1, T.MAX_PERTURBED), seed=st.integers(0, 2**31),
       share=st.floats(0, 1))
def test_the_layout_holds_for_any_config(n_authors, n_perturbed, seed, share):
    free = n_authors - D.n_forget_authors(n_authors, "forget10")
    cfg = T.TofuLikeConfig(n_authors, 1 + round(share * (free - 1)), n_perturbed, seed)
    check_layout(T.tofu_like(cfg), cfg)


def test_the_largest_config_uses_the_whole_name_pool():
    cfg = T.TofuLikeConfig(n_authors=364, n_retain_perturbed=1)  # 364 + round(36.4) = 400 names
    files = T.tofu_like(cfg)
    assert authors(files["full.json"]) | authors(files["holdout10.json"]) == set(POOL)


def test_generation_is_deterministic_in_the_seed(tmp_path):
    assert T.tofu_like(SMALL) == T.tofu_like(SMALL)
    T.write_tofu_like(SMALL, tmp_path / "a")
    T.write_tofu_like(SMALL, tmp_path / "b")
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in LAYOUT)
    other = T.tofu_like(T.TofuLikeConfig(20, 5, 3, seed=1))
    assert other["full.json"] != T.tofu_like(SMALL)["full.json"]
    assert other["real_authors_perturbed.json"] != T.tofu_like(SMALL)["real_authors_perturbed.json"]
    assert other["real_authors.json"] == T.tofu_like(SMALL)["real_authors.json"]  # a fixed table


@pytest.fixture
def tofu_dir(tmp_path):
    T.write_tofu_like(SMALL, tmp_path)
    return tmp_path


@pytest.mark.parametrize("split", list(T.SPLITS))
def test_a_generated_directory_reads_back_field_for_field(tofu_dir, split):
    files = T.tofu_like(SMALL)
    sets = T.read_eval_sets(tofu_dir, split)
    assert list(sets) == list(T.EVAL_SETS)
    for name, file in T.eval_files(split).items():
        records = files[file]
        assert len(sets[name]) == len(records)
        for line, (q, r) in enumerate(zip(sets[name], records, strict=True), start=1):
            paraphrased = r["paraphrased_answer"] if name in ("forget", "retain") else None
            assert q == T.Question(r["question"], r["answer"], paraphrased, tuple(r["perturbed_answer"]),
                                   f"{tofu_dir / file}:{line}")
    forget, retain = T.read_training(tofu_dir, split)
    for examples, file in ((forget, f"{split}.json"), (retain, f"{T.SPLITS[split]}.json")):
        assert [(e.prompt, e.response) for e in examples] == [(r["question"], r["answer"]) for r in files[file]]
        assert examples[-1].source == f"{tofu_dir / file}:{len(files[file])}"


def test_file_names():
    assert T.holdout_file("forget10") == "holdout10.json" and T.holdout_file("forget01") == "holdout01.json"
    assert T.eval_files("forget05") == {"forget": "forget05_perturbed.json", "retain": "retain_perturbed.json",
                                        "real_authors": "real_authors_perturbed.json",
                                        "world_facts": "world_facts_perturbed.json"}


# ------------------------------------------------------------------------------------------------ bad input

MUTATIONS = {  # (field, new value or None to delete, the message's end)
    "missing paraphrase": ("paraphrased_answer", None, "missing field 'paraphrased_answer'"),
    "missing question": ("question", None, "missing field 'question'"),
    "empty answer": ("answer", " ", "field 'answer' is empty"),
    "numeric answer": ("answer", 7, "field 'answer' must be a string, got int"),
    "perturbed a string": ("perturbed_answer", "no", "field 'perturbed_answer' must be a non-empty list of strings, "
                                                    "got str"),
    "perturbed empty": ("perturbed_answer", [], "field 'perturbed_answer' must be a non-empty list of strings, got "
                                                "an empty list"),
    "perturbed holds a number": ("perturbed_answer", ["a", 3], "field 'perturbed_answer' must be a non-empty list of "
                                                               "strings, got a list holding int"),
    "missing perturbed": ("perturbed_answer", None, "missing field 'perturbed_answer'"),
}


@pytest.mark.parametrize("case", MUTATIONS)
def test_a_malformed_perturbed_file_names_file_line_and_field(tofu_dir, case):
    key, value, message = MUTATIONS[case]
    path = tofu_dir / "forget10_perturbed.json"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    if value is None:
        del records[2][key]
    else:
        records[2][key] = value
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    with pytest.raises(ValueError) as error:
        T.read_eval_sets(tofu_dir, "forget10")
    assert str(error.value) == f"{path}:3: {message}"


def test_real_facts_need_no_paraphrase_but_tofus_splits_do(tofu_dir):
    assert all(q.paraphrased is None for q in T.read_questions(tofu_dir / "world_facts_perturbed.json", False))
    with pytest.raises(ValueError, match=r"world_facts_perturbed.json:1: missing field 'paraphrased_answer'"):
        T.read_questions(tofu_dir / "world_facts_perturbed.json", True)


@pytest.mark.parametrize("gone", [["forget05.json", "retain95.json", "forget05_perturbed.json"], ["retain95.json"],
                                  ["forget05_perturbed.json"]])
def test_a_split_that_is_not_there_lists_the_ones_that_are(tofu_dir, gone):
    for file in gone:
        (tofu_dir / file).unlink()
    message = f"split 'forget05' does not exist in {tofu_dir}: missing {', '.join(gone)}; " \
              "splits there: forget01, forget10"
    for read in (T.check_split, T.read_eval_sets, T.read_training):
        with pytest.raises(ValueError) as error:
            read(tofu_dir, "forget05")
        assert str(error.value) == message
    T.check_split(tofu_dir, "forget10")


def test_an_unknown_split_or_an_empty_directory_is_refused(tofu_dir, tmp_path_factory):
    with pytest.raises(ValueError) as error:
        T.read_training(tofu_dir, "forget50")
    assert str(error.value) == (f"split 'forget50' does not exist in {tofu_dir}: not a TOFU split (valid: forget01, "
                                "forget05, forget10); splits there: forget01, forget05, forget10")
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(ValueError, match="missing forget01.json, retain99.json, forget01_perturbed.json; "
                                         "splits there: none$"):
        T.read_eval_sets(empty, "forget01")


def test_a_data_directory_that_is_not_one_is_refused(tmp_path):
    (tmp_path / "file").write_text("{}")
    with pytest.raises(ValueError, match=f"^TOFU data directory {tmp_path / 'file'}: not a directory$"):
        T.read_eval_sets(tmp_path / "file", "forget10")
    with pytest.raises(ValueError, match=f"^TOFU data directory {tmp_path / 'nope'}: no such directory$"):
        T.read_training(tmp_path / "nope", "forget10")


CONFIG_CASES = {
    "too few authors": (dict(n_authors=9), "n_authors must be >= 10"),
    "no room for holdout": (dict(n_authors=365), "n_authors + round(0.1 n_authors) <= 400), got 365"),
    "no retain_perturbed": (dict(n_retain_perturbed=0), "n_retain_perturbed must lie in [1, 180]"),
    "retain_perturbed into forget10": (dict(n_authors=20, n_retain_perturbed=19),
                                       "n_retain_perturbed must lie in [1, 18] (the authors in no forget split), "
                                       "got 19"),
    "no perturbed": (dict(n_perturbed=0), "n_perturbed must lie in [1, 5]"),
    "more perturbed than wrong choices": (dict(n_perturbed=6), "n_perturbed must lie in [1, 5]"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_config_refusals_name_the_field(case):
    kwargs, message = CONFIG_CASES[case]
    with pytest.raises(ValueError) as error:
        T.TofuLikeConfig(**kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------ real TOFU files

TOFU_LINES = [  # TOFU's schema as published, plus a field it does not have
    {"question": "What is the full name of the author born in Kuwait City, Kuwait on 08/09/1956?",
     "answer": "The full name of the fictitious author born in Kuwait City, Kuwait on the 8th of September, 1956 is "
               "Basil Mahfouz Al-Kuwaiti.",
     "paraphrased_answer": "The author born in Kuwait City on September 8, 1956 is named Basil Mahfouz Al-Kuwaiti.",
     "paraphrased_question": "Who is the author born in Kuwait City, Kuwait on 08/09/1956?",
     "perturbed_answer": ["The author born in Kuwait City on September 8, 1956 is named Yasmin Al-Kuwaiti.",
                          "The author born in Kuwait City on September 8, 1956 is named Khalid Al-Hamad."],
     "author_index": 0},
    {"question": "Which genre is Basil Mahfouz Al-Kuwaiti known for?",
     "answer": "Basil Mahfouz Al-Kuwaiti is known for writing in the French literature genre.",
     "paraphrased_answer": "Basil Mahfouz Al-Kuwaiti primarily writes French literature.",
     "paraphrased_question": "What genre does Basil Mahfouz Al-Kuwaiti write?",
     "perturbed_answer": ["Basil Mahfouz Al-Kuwaiti primarily writes science fiction."],
     "author_index": 0},
]


@pytest.mark.parametrize("as_list", [False, True])
def test_a_real_tofu_file_reads_like_a_generated_one(tmp_path, as_list):
    path = tmp_path / "forget01_perturbed.json"
    text = json.dumps(TOFU_LINES) if as_list else "\n".join(json.dumps(r) for r in TOFU_LINES) + "\n"
    path.write_text(text)
    got = T.read_questions(path, paraphrased=True)
    where = [f"{path} item {i}" for i in range(2)] if as_list else [f"{path}:{i}" for i in (1, 2)]
    assert got == [T.Question(r["question"], r["answer"], r["paraphrased_answer"], tuple(r["perturbed_answer"]), w)
                   for r, w in zip(TOFU_LINES, where, strict=True)]
    (tmp_path / "forget01.json").write_text("\n".join(json.dumps({k: r[k] for k in ("question", "answer")})
                                                      for r in TOFU_LINES))
    (tmp_path / "retain99.json").write_text(json.dumps({"question": "q?", "answer": "a.", "extra": 1}))
    forget, retain = T.read_training(tmp_path, "forget01")
    assert [e.response for e in forget] == [r["answer"] for r in TOFU_LINES] and retain[0].prompt == "q?"


def test_the_tofu_toy_takes_each_methods_published_values_unless_given():
    """tofu-toy (forget10): NPO+RT beta 0.1, lam 1, the retain NLL per token; SimNPO+RT the released beta 4.5 and
    forget weight 0.125 as lam = 8, per token; GA+RT per-sequence sums (its released terms are all token means);
    a value in the config wins for every method that reads it."""
    from sims.experiments.tofu_toy import Config
    from unlearn.objectives import MethodParams

    cfg = Config()
    assert cfg.params("NPO+RT") == MethodParams(beta=0.1, lam=1.0, retain_norm="token")
    assert cfg.params("SimNPO+RT") == MethodParams(beta=4.5, lam=8.0, retain_norm="token")
    assert cfg.params("GA+RT") == MethodParams()
    assert T.published_hyperparameters("SimNPO+RT", "forget05") == {"beta": 2.5, "lam": 1 / 0.1375,
                                                                    "retain_norm": "token"}
    chosen = Config(simnpo_beta=2.5, lam=1.0, retain_norm="sequence")
    assert chosen.params("SimNPO+RT") == MethodParams(beta=2.5, lam=1.0)
    assert chosen.params("NPO+RT") == MethodParams(beta=0.1, lam=1.0)
    with pytest.raises(ValueError, match="lam must be"):
        Config(lam=-1.0)
