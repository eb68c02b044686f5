"""TOFU's file layout (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs"; the Hugging Face data
set locuslab/TOFU): reading it, and writing a TOFU-like one of any size without a download.

One directory of JSON-lines files:

    full.json                       every fictitious-author QA pair: {"question", "answer"}
    forget01/05/10.json             the QA of the first 1 / 5 / 10% of the authors (the forget sets; nested)
    retain99/95/90.json             their complements in full.json (the retain sets): SPLITS pairs them
    forgetNN_perturbed.json         the forget split's questions for evaluation: {"question", "answer",
                                    "paraphrased_answer", "paraphrased_question", "perturbed_answer": [str, ...]};
                                    perturbed answers are wrong answers in the paraphrase's style
    retain_perturbed.json           the same fields for a subset of the retain questions, of authors in no forget
                                    split (TOFU: 400 questions of the last 20 authors)
    real_authors.json,              facts a base model knows from pretraining that no forget split touches:
    world_facts.json                {"question", "answer"}; their *_perturbed.json add "perturbed_answer" (no
                                    paraphrase: their truth ratio compares the answer itself with wrong ones)
    holdout01/05/10.json            QA of fictitious authors NOT in full.json, as many as forgetNN has: non-members
                                    for membership-inference attacks

Training reads forgetNN.json and its retain file (``read_training``: ``unlearn.data.Example``); evaluation reads
the four sets of EVAL_SETS (``read_eval_sets``: ``Question``). Real TOFU files and generated ones are read the
same way, through ``unlearn.data.read_records`` (errors name file, line and field; fields beyond TOFU's are
ignored), after ``check_split`` has refused a split whose files are absent, naming the splits that are there.

``tofu_like`` generates the layout: ``n_authors`` fictitious authors from ``unlearn.data``'s name pool, each
with one value per ``unlearn.data.ATTRIBUTES`` row (20 facts, answered by its sentence templates), forget splits
of the first ``unlearn.data.n_forget_authors`` authors as in ``facts_task``, perturbed answers = the paraphrase
template with distinct wrong values of the attribute, retain_perturbed = the last ``n_retain_perturbed``
authors, holdout = further authors from the pool; real authors and world facts come from the fixed tables
REAL_AUTHORS and WORLD_FACTS (their perturbed answers: the same sentence with other rows' values of the same
kind). Every draw comes from the stream (seed, "tofu-like").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from unlearn.data import (
    ATTRIBUTES,
    N_NAMES,
    Attribute,
    Example,
    author_name,
    n_forget_authors,
    read_examples,
    read_records,
)
from unlearn.io import atomic_write, writable_dir
from unlearn.objectives import DPO, NPO, SIMNPO, get_method
from unlearn.rng import generator as make_generator

SPLITS = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}  # forget -> retain (TOFU's)
EVAL_SETS = ("forget", "retain", "real_authors", "world_facts")
PARAPHRASED = {"forget": True, "retain": True, "real_authors": False, "world_facts": False}


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    paraphrased: str | None  # forget, retain: the paraphrased answer; None on real_authors / world_facts
    perturbed: tuple[str, ...]  # wrong answers (at least one)
    source: str = ""  # "file:line", for messages


# --------------------------------------------------------------------------- the published unlearning runs

# SimNPO's released TOFU settings by split (README and model cards): (beta, forget weight c_f). forget01 has none
# released: the forget10 pair, which open-unlearning takes for every split.
SIMNPO_RELEASED = {"forget01": (4.5, 0.125), "forget05": (2.5, 0.1375), "forget10": (4.5, 0.125)}
# forget terms that the released code sums per sequence beside a retain NLL per token (Hugging Face's .loss); its
# GA and IDK terms are token means like its retain term, which per-sequence sums of both keep in proportion
TOKEN_RETAIN_BESIDE = (NPO, SIMNPO, DPO)


def published_hyperparameters(method: str, split: str = "forget10") -> dict:
    """The hyperparameters of ``method``'s published TOFU runs on ``split`` where they differ from
    ``MethodParams``' defaults (beta 0.1, every weight 1, sums per sequence: the NPO paper's values), only those
    the method reads: the SimNPO methods' released beta and forget weight c_f, as lam = 1/c_f (the release
    weights the forget term, c_f L_f + L_RT; without clipping AdamW's step is the same for L_f + L_RT / c_f, up
    to its eps), and the RT term's NLL per token beside the forget terms of TOKEN_RETAIN_BESIDE."""
    m = get_method(method)
    out = {}
    if m.forget is SIMNPO:
        beta, forget_weight = SIMNPO_RELEASED[split]
        out |= {"beta": beta, "lam": 1.0 / forget_weight}
    if m.forget in TOKEN_RETAIN_BESIDE:
        out["retain_norm"] = "token"
    return {key: value for key, value in out.items() if key in m.hyperparameters}


# ------------------------------------------------------------------------------------------------- reading


def eval_files(split: str) -> dict[str, str]:
    """{evaluation set: file name} of ``split``, for every name of EVAL_SETS."""
    return {"forget": f"{split}_perturbed.json", "retain": "retain_perturbed.json",
            "real_authors": "real_authors_perturbed.json", "world_facts": "world_facts_perturbed.json"}


def holdout_file(split: str) -> str:
    """"forgetNN" -> "holdoutNN.json": the non-members as many as the forget split's authors."""
    return f"holdout{split.removeprefix('forget')}.json"


def split_files(split: str) -> tuple[str, str, str]:
    """The files a split is made of: forget, retain and forget-perturbed."""
    return f"{split}.json", f"{SPLITS[split]}.json", f"{split}_perturbed.json"


def splits_in(data_dir: str | Path) -> list[str]:
    """The forget splits whose files (``split_files``) are all in ``data_dir``."""
    return [s for s in SPLITS if all((Path(data_dir) / f).is_file() for f in split_files(s))]


def check_split(data_dir: str | Path, split: str) -> None:
    """Raise a one-line ValueError unless ``data_dir`` is a directory that holds every file of ``split`` (a key
    of SPLITS); the message names what is wrong and the splits that are there."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        reason = "not a directory" if data_dir.exists() else "no such directory"
        raise ValueError(f"TOFU data directory {data_dir}: {reason}")
    there = f"splits there: {', '.join(splits_in(data_dir)) or 'none'}"
    if split not in SPLITS:
        raise ValueError(f"split {split!r} does not exist in {data_dir}: not a TOFU split (valid: "
                         f"{', '.join(SPLITS)}); {there}")
    missing = [f for f in split_files(split) if not (data_dir / f).is_file()]
    if missing:
        raise ValueError(f"split {split!r} does not exist in {data_dir}: missing {', '.join(missing)}; {there}")


def _text(item: dict, key: str, where: str, empty_ok: bool = False) -> str:
    if key not in item:
        raise ValueError(f"{where}: missing field {key!r}")
    value = item[key]
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    if not empty_ok and not value.strip():
        raise ValueError(f"{where}: field {key!r} is empty")
    return value


def _kind_of(value: object) -> str:
    """How a value that should be a non-empty list of strings looks, for messages."""
    if not isinstance(value, list):
        return type(value).__name__
    odd = sorted({type(v).__name__ for v in value if not isinstance(v, str)})
    return f"a list holding {', '.join(odd)}" if odd else "an empty list"


def _texts(item: dict, key: str, where: str) -> tuple[str, ...]:
    if key not in item:
        raise ValueError(f"{where}: missing field {key!r}")
    value = item[key]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: field {key!r} must be a non-empty list of strings, got {_kind_of(value)}")
    return tuple(value)


def question_of(item: dict, where: str, paraphrased: bool) -> Question:
    """The Question of one record: question and answer (non-empty strings), paraphrased_answer (a string) when
    ``paraphrased``, perturbed_answer (a non-empty list of strings); other fields are ignored."""
    return Question(_text(item, "question", where), _text(item, "answer", where),
                    _text(item, "paraphrased_answer", where, empty_ok=True) if paraphrased else None,
                    _texts(item, "perturbed_answer", where), where)


def read_questions(path: str | Path, paraphrased: bool) -> list[Question]:
    """Every record of a TOFU perturbed file (JSONL or a JSON list) as a Question (``question_of``); errors name
    "file:line" and the field."""
    return [question_of(item, where, paraphrased) for where, item in read_records(path)]


def read_eval_sets(data_dir: str | Path, split: str) -> dict[str, list[Question]]:
    """{set: questions} for every name of EVAL_SETS (``eval_files``), after ``check_split``; forget and retain
    carry the paraphrased answer, real authors and world facts do not."""
    check_split(data_dir, split)
    return {name: read_questions(Path(data_dir) / file, PARAPHRASED[name]) for name, file in eval_files(split).items()}


def read_training(data_dir: str | Path, split: str) -> tuple[list[Example], list[Example]]:
    """(forget, retain) examples of {split}.json and {SPLITS[split]}.json, after ``check_split``."""
    check_split(data_dir, split)
    return read_examples(Path(data_dir) / f"{split}.json"), read_examples(Path(data_dir) / f"{SPLITS[split]}.json")


# ------------------------------------------------------------------------- real facts (no fictitious author)


@dataclass(frozen=True)
class Fact:
    """A real fact: ``question``, and ``sentence`` with ``{value}`` whose true filling is ``value``."""

    question: str
    sentence: str
    value: str


def _kind(question: str, sentence: str, rows: tuple[tuple[str, str], ...]) -> tuple[Fact, ...]:
    """Facts of one kind: ``question`` and ``sentence`` in {subject}, one (subject, value) per row."""
    return tuple(Fact(question.format(subject=s), sentence.format(subject=s, value="{value}"), v) for s, v in rows)


REAL_AUTHORS = (  # kinds; the values of a kind are distinct, so another row's value is a wrong answer
    _kind("Who wrote {subject}?", "{subject} was written by {value}.", (
        ("Pride and Prejudice", "Jane Austen"), ("Nineteen Eighty-Four", "George Orwell"),
        ("Moby-Dick", "Herman Melville"), ("War and Peace", "Leo Tolstoy"), ("Don Quixote", "Miguel de Cervantes"),
        ("Hamlet", "William Shakespeare"), ("Great Expectations", "Charles Dickens"),
        ("Crime and Punishment", "Fyodor Dostoevsky"), ("The Great Gatsby", "F. Scott Fitzgerald"),
        ("To Kill a Mockingbird", "Harper Lee"), ("One Hundred Years of Solitude", "Gabriel García Márquez"),
        ("Frankenstein", "Mary Shelley"), ("Jane Eyre", "Charlotte Brontë"), ("Wuthering Heights", "Emily Brontë"),
        ("The Divine Comedy", "Dante Alighieri"), ("Les Misérables", "Victor Hugo"),
        ("The Old Man and the Sea", "Ernest Hemingway"), ("Mrs Dalloway", "Virginia Woolf"),
        ("Adventures of Huckleberry Finn", "Mark Twain"), ("Ulysses", "James Joyce"),
        ("Madame Bovary", "Gustave Flaubert"), ("The Metamorphosis", "Franz Kafka"),
        ("Things Fall Apart", "Chinua Achebe"))),
    _kind("Who created the character {subject}?", "The character {subject} was created by {value}.", (
        ("Sherlock Holmes", "Arthur Conan Doyle"), ("Hercule Poirot", "Agatha Christie"),
        ("Harry Potter", "J. K. Rowling"), ("Winnie-the-Pooh", "A. A. Milne"), ("Peter Rabbit", "Beatrix Potter"),
        ("James Bond", "Ian Fleming"), ("Captain Nemo", "Jules Verne"), ("Long John Silver", "Robert Louis Stevenson"),
        ("Mowgli", "Rudyard Kipling"), ("Tarzan", "Edgar Rice Burroughs"))),
)
WORLD_FACTS = (
    _kind("What is the capital of {subject}?", "The capital of {subject} is {value}.", (
        ("France", "Paris"), ("Japan", "Tokyo"), ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Egypt", "Cairo"),
        ("Brazil", "Brasília"), ("Italy", "Rome"), ("Kenya", "Nairobi"), ("Germany", "Berlin"),
        ("Argentina", "Buenos Aires"), ("India", "New Delhi"), ("Spain", "Madrid"))),
    _kind("What is the chemical symbol for {subject}?", "The chemical symbol for {subject} is {value}.", (
        ("gold", "Au"), ("silver", "Ag"), ("iron", "Fe"), ("sodium", "Na"), ("potassium", "K"), ("lead", "Pb"),
        ("oxygen", "O"), ("helium", "He"))),
    (Fact("Which planet is closest to the Sun?", "The planet closest to the Sun is {value}.", "Mercury"),
     Fact("Which planet is known as the Red Planet?", "The Red Planet is {value}.", "Mars"),
     Fact("What is the largest planet in the Solar System?", "The largest planet in the Solar System is {value}.",
          "Jupiter"),
     Fact("Which planet is third from the Sun?", "The third planet from the Sun is {value}.", "Earth"),
     Fact("Which planet is farthest from the Sun?", "The planet farthest from the Sun is {value}.", "Neptune"),
     Fact("Which planet is the hottest in the Solar System?", "The hottest planet in the Solar System is {value}.",
          "Venus"),
     Fact("Which planet rotates tipped on its side?", "The planet that rotates tipped on its side is {value}.",
          "Uranus"),
     Fact("Which planet has the most prominent rings?", "The planet with the most prominent rings is {value}.",
          "Saturn")),
)
REAL_TABLES = {"real_authors": REAL_AUTHORS, "world_facts": WORLD_FACTS}
MAX_PERTURBED = min([len(a.choices) for a in ATTRIBUTES] + [len(k) for t in REAL_TABLES.values() for k in t]) - 1


# ----------------------------------------------------------------------------------------------- generating


@dataclass(frozen=True)
class TofuLikeConfig:
    n_authors: int = 200  # fictitious authors in full.json, 20 facts each (4000 QA, as TOFU)
    # the last authors (in no forget split): retain_perturbed.json; None: a tenth of the authors, at least 1
    # (TOFU: 20 of 200, 400 QA)
    n_retain_perturbed: int | None = None
    n_perturbed: int = 5  # perturbed answers per question
    seed: int = 0

    @property
    def retain_perturbed_authors(self) -> int:
        """n_retain_perturbed, or a tenth of the authors (at least 1) when it is None."""
        return self.n_retain_perturbed if self.n_retain_perturbed is not None else max(1, round(self.n_authors / 10))

    def __post_init__(self):
        n_forget10 = n_forget_authors(self.n_authors, "forget10")  # also the holdout authors drawn
        if self.n_authors < 10 or self.n_authors + n_forget10 > N_NAMES:
            raise ValueError(f"n_authors must be >= 10 and leave room in the pool of {N_NAMES} names for its "
                             f"holdout authors (n_authors + round(0.1 n_authors) <= {N_NAMES}), got {self.n_authors}")
        free = self.n_authors - n_forget10
        if not 1 <= self.retain_perturbed_authors <= free:
            raise ValueError(f"n_retain_perturbed must lie in [1, {free}] (the authors in no forget split), "
                             f"got {self.retain_perturbed_authors}")
        if not 1 <= self.n_perturbed <= MAX_PERTURBED:
            raise ValueError(f"n_perturbed must lie in [1, {MAX_PERTURBED}] (the fewest choices of any attribute "
                             f"or kind of real fact, less the true one), got {self.n_perturbed}")


def _wrong(values: list[str], g: torch.Generator, n: int) -> list[str]:
    """``n`` of ``values`` in a random order (uniform without replacement)."""
    return [values[i] for i in torch.randperm(len(values), generator=g)[:n].tolist()]


def _fact_record(attribute: Attribute, name: str, g: torch.Generator, n_perturbed: int) -> dict:
    """One author's fact: a value drawn uniformly from the attribute's choices, then ``n_perturbed`` distinct
    wrong values for the perturbed answers (the paraphrase template filled with them)."""
    choices = attribute.choices
    value = choices[int(torch.randint(len(choices), (1,), generator=g))]
    wrong = _wrong([c for c in choices if c != value], g, n_perturbed)
    return {"question": attribute.question.format(name=name),
            "answer": attribute.answer.format(name=name, value=value),
            "paraphrased_answer": attribute.paraphrased_answer.format(name=name, value=value),
            "paraphrased_question": attribute.paraphrased_question.format(name=name),
            "perturbed_answer": [attribute.paraphrased_answer.format(name=name, value=w) for w in wrong]}


def _real_record(fact: Fact, kind: tuple[Fact, ...], g: torch.Generator, n_perturbed: int) -> dict:
    """A real fact with ``n_perturbed`` perturbed answers: its sentence with other rows' values of its kind."""
    wrong = _wrong([f.value for f in kind if f.value != fact.value], g, n_perturbed)
    return {"question": fact.question, "answer": fact.sentence.format(value=fact.value),
            "perturbed_answer": [fact.sentence.format(value=w) for w in wrong]}


def _qa(records: list[dict]) -> list[dict]:
    return [{"question": r["question"], "answer": r["answer"]} for r in records]


def tofu_like(cfg: TofuLikeConfig) -> dict[str, list[dict]]:
    """{file name: records} of a TOFU-like directory (module docstring), a pure function of ``cfg``: names are a
    random draw of n_authors + n_forget_authors(n_authors, "forget10") from the pool (full, then holdout), each
    author's facts are drawn in turn, then the real facts' perturbed answers."""
    g = make_generator(cfg.seed, "tofu-like")
    n = cfg.n_authors
    names = [author_name(k) for k in
             torch.randperm(N_NAMES, generator=g)[: n + n_forget_authors(n, "forget10")].tolist()]
    authors = [[_fact_record(a, name, g, cfg.n_perturbed) for a in ATTRIBUTES] for name in names]
    full, holdout = authors[:n], authors[n:]

    def flat(group: list[list[dict]]) -> list[dict]:
        return [record for facts in group for record in facts]

    files = {"full.json": _qa(flat(full))}
    for split, retain in SPLITS.items():
        k = n_forget_authors(n, split)
        files |= {f"{split}.json": _qa(flat(full[:k])), f"{retain}.json": _qa(flat(full[k:])),
                  f"{split}_perturbed.json": flat(full[:k]), holdout_file(split): _qa(flat(holdout[:k]))}
    files["retain_perturbed.json"] = flat(full[n - cfg.retain_perturbed_authors:])
    for name, table in REAL_TABLES.items():
        records = [_real_record(fact, kind, g, cfg.n_perturbed) for kind in table for fact in kind]
        files |= {f"{name}.json": _qa(records), f"{name}_perturbed.json": records}
    return files


def write_tofu_like(cfg: TofuLikeConfig, out: str | Path) -> dict[str, int]:
    """Write ``tofu_like(cfg)`` into the folder ``out`` (created), one JSON object per line (UTF-8, not escaped),
    each file atomically; return {file name: records}."""
    out = writable_dir(out, "TOFU-like out")
    files = tofu_like(cfg)
    for file, records in files.items():
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        atomic_write(out / file, lambda tmp, text=text: Path(tmp).write_text(text, encoding="utf-8"))
    return {file: len(records) for file, records in files.items()}
