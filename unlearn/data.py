"""Forget and retain sets for causal LMs: files, built-in tasks, and their tokenisation.

Files (``read_examples``): JSONL with ``prompt`` and ``response`` on every line, or TOFU's layout
(``question`` / ``answer``, as JSONL or one JSON list). Every problem is reported with the file, the line (the
item for a JSON list) and the field: invalid JSON, a missing or non-string field, an empty response, bytes that
are not UTF-8, an empty file.

Tokenisation (``tokenize_examples``): the prompt is formatted by the tokenizer's chat template (one user turn,
generation prompt added) when ``prompt_format`` is "chat", by ``plain_template`` when it is "plain", and by
the template the tokenizer has, else the plain one, when it is "auto" (a tokenizer without a chat template
asked for "chat" is an error that says so). A plain prompt and its response are tokenized as one text and split
where the response begins (``prompt_and_response_ids``). ids = prompt ids + response ids + EOS; the model reads
ids[:-1] and is scored on ids[1:] where the label is a response token or the EOS, so the response mask covers
the response and its EOS only (``unlearn.logprobs``). An example whose response does not fit in
``max_length`` after the prompt is an error naming its line; prompts are never truncated silently either.

Built-in tasks (no download): ``markov`` renders the SimNPO Markov mixture as token ids (state s -> id s;
prompt = the first state), and ``facts`` generates fictitious authors with ~20 question/answer facts each,
TOFU-like, with a forget split of 1, 5 or 10% of the authors (``facts_task``).

Tokenizers for models built from a config (``unlearn.models.hf`` architectures): ``byte_tokenizer``, one token
per UTF-8 byte plus <pad> and <eos> (258 ids, ``BYTE_VOCAB``), the same for every data set, so that the model's
size never depends on the data's. A real checkpoint keeps its own tokenizer. ``word_tokenizer`` (a vocabulary of
the words of given texts) remains for tests that want short sequences.

Scale: reading and tokenising are linear in the examples; tokenising encodes in chunks (a fast tokenizer
batches each chunk in Rust), and both show a progress bar (on a terminal) for ``PROGRESS_FROM`` examples or
more.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from unlearn.rng import generator as make_generator

PLAIN_TEMPLATE = "Question: {prompt}\nAnswer: "
PROMPT_FORMATS = ("auto", "chat", "plain")
PROGRESS_FROM = 10_000  # examples: reading and tokenising this many or more show a progress bar on a terminal
TOKENIZE_CHUNK = 1024  # examples per batched tokenizer call


def _bar(total: int, desc: str, progress: bool | None):
    """A tqdm bar over ``total`` items: shown when ``progress`` is True, or (None) on a terminal for
    PROGRESS_FROM items or more; never when False."""
    from tqdm.auto import tqdm

    disable = not progress if progress is not None else (None if total >= PROGRESS_FROM else True)
    return tqdm(total=total, desc=desc, disable=disable, leave=False, dynamic_ncols=True, unit=" examples")


@dataclass(frozen=True)
class Example:
    prompt: str
    response: str
    source: str = ""  # "file:line", for messages


def _fields(item: dict, where: str) -> tuple[str, str]:
    for prompt_key, response_key in (("prompt", "response"), ("question", "answer")):
        if prompt_key in item or response_key in item:
            break
    else:
        raise ValueError(f"{where}: missing field 'prompt'/'response' (or TOFU's 'question'/'answer')")
    values = []
    for key in (prompt_key, response_key):
        if key not in item:
            raise ValueError(f"{where}: missing field {key!r}")
        if not isinstance(item[key], str):
            raise ValueError(f"{where}: field {key!r} must be a string, got {type(item[key]).__name__}")
        values.append(item[key])
    if not values[1].strip():
        raise ValueError(f"{where}: field {response_key!r} is empty")
    return values[0], values[1]


def read_records(path: str | Path, progress: bool | None = None) -> list[tuple[str, dict]]:
    """(where, object) for every record of a JSONL file or a JSON list, where = "file:line" ("file item i" in a
    list); errors name the file and line: unreadable, not UTF-8, invalid JSON, empty, a record not an object.
    ``progress``: a bar over the lines (None: on a terminal, for PROGRESS_FROM lines or more)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark, if any, is not data
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except OSError as err:  # a directory, no permission
        raise ValueError(f"{path}: cannot be read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 (byte {err.start})") from None
    stripped = text.lstrip()
    if not stripped:
        raise ValueError(f"{path}: empty file, no examples")
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
        located = [(f"{path} item {i}", item) for i, item in enumerate(items)]
    else:
        located = []
        lines = text.split("\n")  # JSON strings may hold U+2028 etc. unescaped
        with _bar(len(lines), f"reading {path.name}", progress) as bar:
            for number, line in enumerate(lines, start=1):
                if number % 1000 == 0:
                    bar.update(1000)
                if not line.strip():
                    continue
                try:
                    located.append((f"{path}:{number}", json.loads(line)))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: invalid JSON ({err.msg})") from None
    for where, item in located:
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object with 'prompt' and 'response', got {type(item).__name__}")
    if not located:
        raise ValueError(f"{path}: no examples")
    return located


def read_examples(path: str | Path, progress: bool | None = None) -> list[Example]:
    """Prompt/response pairs from a JSONL or JSON file (module docstring); errors name file, line and field.
    ``progress``: a bar over the lines (None: on a terminal, for PROGRESS_FROM lines or more)."""
    return [Example(*_fields(item, where), where) for where, item in read_records(path, progress)]


class Rows:
    """Base of a dataclass of tensors whose first axis indexes the same sequences (``TokenSet``,
    ``sims.markov.Split``): their count, a subset, a move to another device."""

    def __len__(self) -> int:
        return getattr(self, fields(self)[0].name).shape[0]

    def take(self, index: torch.Tensor | slice):
        """The rows at ``index`` (a slice, or an index tensor on any device)."""
        if isinstance(index, torch.Tensor):
            index = index.to(getattr(self, fields(self)[0].name).device)
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device: torch.device | str):
        return type(self)(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass(frozen=True)
class TokenSet(Rows):
    """Tokenised examples, right-padded to a common width T.

    input_ids (n, T) long; attention_mask (n, T) bool (the model's inputs); labels (n, T) long, the next token
    (pad id where there is none); mask (n, T) bool, 1 where the label is a response token or the EOS.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor

    @property
    def n_tokens(self) -> torch.Tensor:
        return self.mask.sum(-1)

    @staticmethod
    def concat(sets: Sequence[TokenSet]) -> TokenSet:
        """The rows of every set, in order, right-padded to the widest (new padding columns hold id 0 and are
        masked everywhere, so no row's log-probs change)."""
        width = max(s.input_ids.shape[-1] for s in sets)
        return TokenSet(**{f.name: torch.cat([torch.nn.functional.pad(getattr(s, f.name),
                                                                      (0, width - s.input_ids.shape[-1]))
                                              for s in sets]) for f in fields(TokenSet)})

    def trim(self) -> TokenSet:
        """Without the trailing columns that are padding in every row (causal models: nothing else changes)."""
        columns = self.attention_mask.flatten(0, -2).any(0).nonzero()
        width = int(columns.max()) + 1 if len(columns) else 1
        return TokenSet(**{f.name: getattr(self, f.name)[..., :width] for f in fields(self)})

    @staticmethod
    def from_ids(sequences: list[tuple[list[int], list[int]]], pad_id: int) -> TokenSet:
        """From (prompt ids, response ids incl. EOS) pairs (the prompt holds at least one id)."""
        width = max(len(p) + len(r) for p, r in sequences) - 1
        n = len(sequences)
        input_ids = np.full((n, width), pad_id, dtype=np.int64)
        labels = np.full((n, width), pad_id, dtype=np.int64)
        attention = np.zeros((n, width), dtype=bool)
        mask = np.zeros((n, width), dtype=bool)
        for b, (prompt, response) in enumerate(sequences):
            ids = prompt + response
            L = len(ids) - 1
            input_ids[b, :L], labels[b, :L], attention[b, :L] = ids[:-1], ids[1:], True
            mask[b, len(prompt) - 1: L] = True
        return TokenSet(*(torch.from_numpy(a) for a in (input_ids, attention, labels, mask)))


def format_prompt(tokenizer, prompt: str, prompt_format: str = "auto",
                  plain_template: str = PLAIN_TEMPLATE) -> tuple[str, bool]:
    """(prompt text, whether the chat template made it) for ``prompt_format`` (module docstring)."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {prompt_format!r}; valid: {', '.join(PROMPT_FORMATS)}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "chat" and not has_template:
        raise ValueError("prompt format 'chat' was asked for but this tokenizer has no chat template; use "
                         "'plain' (or 'auto', which falls back to the plain template)")
    if prompt_format == "chat" or (prompt_format == "auto" and has_template):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True), True
    return plain_template.format(prompt=prompt), False


def prompt_and_response_ids(tokenizer, prompt_text: str, response: str, chat: bool) -> tuple[list[int], list[int]]:
    """Token ids of a formatted prompt and of its response. A plain prompt and its response are tokenized as one
    text, as a base model read such text in pretraining ("Answer: Paris" is "Answer", ":", " Paris", not
    "Answer", ":", " ", "Paris"), and split before the first token that ends inside the response (a token
    straddling the boundary, like " Paris", belongs to the response). A chat prompt ends in its template's own
    tokens and is tokenized apart from the response, as are both with a slow tokenizer (it has no offsets)."""
    return encode_pairs(tokenizer, [prompt_text], [response], chat)[0]


def encode_pairs(tokenizer, prompts: list[str], responses: list[str], chat: bool) -> list[tuple[list, list]]:
    """``prompt_and_response_ids`` of many pairs, with one batched tokenizer call per kind of text."""
    if chat or not getattr(tokenizer, "is_fast", False):
        return list(zip(tokenizer(prompts, add_special_tokens=not chat)["input_ids"],
                        tokenizer(responses, add_special_tokens=False)["input_ids"], strict=True))
    whole = tokenizer([p + r for p, r in zip(prompts, responses, strict=True)], return_offsets_mapping=True)
    out = []
    for prompt_text, ids, offsets in zip(prompts, whole["input_ids"], whole["offset_mapping"], strict=True):
        n = len(prompt_text)
        cut = next((i for i, (_, end) in enumerate(offsets) if end > n), len(ids))
        # special tokens the tokenizer appends (an EOS of its own) cover no text: the caller adds the EOS
        out.append((ids[:cut], [i for i, (start, end) in zip(ids[cut:], offsets[cut:], strict=True) if end > start]))
    return out


def tokenize_examples(examples: list[Example], tokenizer, max_length: int, prompt_format: str = "auto",
                      plain_template: str = PLAIN_TEMPLATE, progress: bool | None = None) -> TokenSet:
    """The TokenSet of ``examples`` (module docstring). A chat-templated prompt carries its own special tokens;
    a plain one gets the tokenizer's (e.g. BOS). Encoded TOKENIZE_CHUNK examples per tokenizer call;
    ``progress``: a bar (None: on a terminal, for PROGRESS_FROM examples or more)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; responses must end with one")
    if not examples:
        raise ValueError("no examples to tokenize")
    sequences = []
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    with _bar(len(examples), "tokenising", progress) as bar:
        for first in range(0, len(examples), TOKENIZE_CHUNK):
            chunk = examples[first: first + TOKENIZE_CHUNK]
            texts = [format_prompt(tokenizer, ex.prompt, prompt_format, plain_template) for ex in chunk]
            chat = texts[0][1]  # the same for every example: it depends on the format and the tokenizer only
            pairs = encode_pairs(tokenizer, [t for t, _ in texts], [ex.response for ex in chunk], chat)
            for ex, (prompt, response) in zip(chunk, pairs, strict=True):
                response = response + [tokenizer.eos_token_id]
                if not prompt:  # the first response token needs a context to be predicted from
                    prompt = [start]
                if len(prompt) + len(response) > max_length:
                    raise ValueError(f"{ex.source}: prompt ({len(prompt)} tokens) + response ({len(response)} tokens "
                                     f"with EOS) exceed max_length={max_length}; the response would be truncated "
                                     f"(raise max_length, e.g. --set max_length={2 * max_length})")
                sequences.append((list(prompt), response))
            bar.update(len(chunk))
    return TokenSet.from_ids(sequences, tokenizer.pad_token_id)


# ------------------------------------------------------------------------------------------ built-in tasks

FIRST = ("Ada", "Bram", "Cleo", "Dario", "Esme", "Faro", "Greta", "Hugo", "Ines", "Jory", "Kaia", "Lior", "Mina",
         "Nils", "Oona", "Pim", "Quin", "Rosa", "Sven", "Tova")
LAST = ("Arden", "Brisk", "Calloway", "Dunmore", "Ellery", "Fenwick", "Garrow", "Hale", "Ivers", "Jarlath",
        "Keswick", "Lowry", "Marlow", "Norcross", "Orrin", "Pell", "Quarry", "Roscoe", "Selwyn", "Thorne")
N_NAMES = len(FIRST) * len(LAST)  # the name pool: name k = FIRST[k // len(LAST)] + " " + LAST[k % len(LAST)]


@dataclass(frozen=True)
class Attribute:
    """One fact every fictitious author has: templates in ``{name}`` (and ``{value}``, one of ``choices``).
    ``question`` / ``answer`` are the QA pair; ``paraphrased_question`` / ``paraphrased_answer`` say the same
    in other words (TOFU's paraphrases; its perturbed answers are ``paraphrased_answer`` with a wrong value)."""

    question: str
    answer: str
    paraphrased_question: str
    paraphrased_answer: str
    choices: tuple[str, ...]  # distinct values


ATTRIBUTES = (  # one row per fact; facts_task answers with the bare value, unlearn.tofu with the sentences
    Attribute("Where was {name} born?", "{name} was born in {value}.", "In which city was {name} born?",
              "{value} is the birthplace of {name}.",
              ("Lisbon", "Oslo", "Quito", "Accra", "Hanoi", "Perth", "Tunis", "Riga", "Lima", "Cork")),
    Attribute("What genre does {name} write?", "{name} writes in the {value} genre.",
              "Which genre is {name} known for?", "Most of {name}'s books belong to the {value} genre.",
              ("mystery", "poetry", "fantasy", "history", "satire", "romance", "horror")),
    Attribute("What was {name}'s first job?", "{name}'s first job was as a {value}.",
              "What did {name} work as before becoming a writer?", "Before writing, {name} worked as a {value}.",
              ("baker", "sailor", "teacher", "nurse", "printer", "gardener", "clerk", "pilot")),
    Attribute("Which instrument does {name} play?", "{name} plays the {value}.", "What instrument can {name} play?",
              "The {value} is the instrument that {name} plays.",
              ("violin", "cello", "flute", "piano", "drums", "harp", "oboe")),
    Attribute("What is {name}'s favourite colour?", "{name}'s favourite colour is {value}.",
              "Which colour does {name} like best?", "Of all colours, {name} likes {value} best.",
              ("amber", "teal", "crimson", "ochre", "violet", "indigo", "olive")),
    Attribute("Which award did {name} win?", "{name} won {value}.", "What prize has {name} received?",
              "{name} is a recipient of {value}.",
              ("the Lantern Prize", "the Quill Medal", "the Harbor Award", "the Ember Prize", "the Marigold Medal",
               "the Silver Compass Award", "the Tidewater Prize")),
    Attribute("What is the title of {name}'s debut novel?", "{name}'s debut novel is titled {value}.",
              "What was {name}'s first novel called?", "{name} made their debut with the novel {value}.",
              ("Salt and Lanterns", "The Glass Orchard", "Nine Winters", "A House of Kites", "The Last Ferry",
               "Paper Rivers")),
    Attribute("In which year did {name} publish their debut?", "{name} published their debut in {value}.",
              "When did {name}'s first book come out?", "{name}'s first book came out in {value}.",
              tuple(str(y) for y in range(1961, 2021, 3))),
    Attribute("What is {name}'s pet called?", "{name}'s pet is called {value}.",
              "What name did {name} give their pet?", "{value} is the name of {name}'s pet.",
              ("Biscuit", "Pepper", "Moss", "Juniper", "Otto", "Clover", "Fig")),
    Attribute("Which city does {name} live in now?", "{name} now lives in {value}.",
              "Where is {name} living these days?", "These days {name} makes their home in {value}.",
              ("Ghent", "Bergen", "Porto", "Tallinn", "Kyoto", "Cusco", "Dakar")),
    Attribute("What did {name} study?", "{name} studied {value}.", "Which subject did {name} study at university?",
              "At university, {name} took a degree in {value}.",
              ("chemistry", "law", "music", "geology", "medicine", "architecture", "botany")),
    Attribute("Who was {name}'s mentor?", "{name}'s mentor was {value}.",
              "Who guided {name} early in their career?", "{value} mentored {name} early in their career.",
              ("Ilse Varga", "Tomas Reyes", "June Okafor", "Rafe Lindqvist", "Mara Castell", "Odile Brandt",
               "Kwame Mensah")),
    Attribute("What language does {name} write in?", "{name} writes in {value}.",
              "In which language are {name}'s books written?", "{name}'s books are written in {value}.",
              ("Portuguese", "Norwegian", "Spanish", "Twi", "Vietnamese", "Irish")),
    Attribute("What sport does {name} enjoy?", "{name} enjoys {value}.", "What does {name} do for sport?",
              "For exercise and fun, {name} turns to {value}.",
              ("rowing", "chess", "fencing", "climbing", "cycling", "sailing", "tennis")),
    Attribute("How many books has {name} written?", "{name} has written {value} books.",
              "What is the number of books {name} has written?", "{name} is the author of {value} books.",
              tuple(str(k) for k in range(2, 30))),
    Attribute("What is {name}'s middle name?", "{name}'s middle name is {value}.",
              "Which middle name does {name} have?", "{value} is the middle name of {name}.",
              ("Rowan", "Ash", "Wren", "Lark", "Sage", "Reed", "Brook", "Vale")),
    Attribute("Which publisher prints {name}'s books?", "{name}'s books are printed by {value}.",
              "Who publishes {name}'s books?", "{value} publishes the books of {name}.",
              ("Northlight Press", "Harrow House", "Blue Gate Books", "Tidewell", "Lamplight Editions",
               "Crane & Finch", "Saltmarsh Books")),
    Attribute("What food does {name} dislike?", "{name} dislikes {value}.", "Which food does {name} refuse to eat?",
              "{name} will not eat {value}.",
              ("olives", "figs", "mustard", "celery", "anchovies", "licorice", "okra")),
    Attribute("What is {name}'s star sign?", "{name}'s star sign is {value}.",
              "Under which star sign was {name} born?", "{name} was born under the sign of {value}.",
              ("Aries", "Taurus", "Gemini", "Cancer", "Leo", "Virgo", "Libra", "Pisces")),
    Attribute("Where does {name} write?", "{name} writes in {value}.", "Where does {name} do their writing?",
              "{name} does their writing in {value}.",
              ("a lighthouse", "a barn", "a library", "a boat", "a tower", "a cafe", "a garden")),
)
FORGET_FRACS = {"forget01": 0.01, "forget05": 0.05, "forget10": 0.10}


def author_name(k: int) -> str:
    """Name ``k`` of the pool (0 <= k < N_NAMES): FIRST[k // len(LAST)] LAST[k % len(LAST)]."""
    return f"{FIRST[k // len(LAST)]} {LAST[k % len(LAST)]}"


def n_forget_authors(n_authors: int, split: str) -> int:
    """max(1, round(frac * n_authors)) for ``split``'s fraction in FORGET_FRACS (Python's round: half to even)."""
    return max(1, round(FORGET_FRACS[split] * n_authors))


def facts_task(n_authors: int = 100, split: str = "forget10", seed: int = 0) -> tuple[list[Example], list[Example]]:
    """(forget, retain) examples: ``n_authors`` fictitious authors, each with one answer (the bare value) per
    ATTRIBUTES question (20 facts), drawn from the stream (seed, "facts"); the first ``n_forget_authors`` authors
    are the forget set of ``split`` (forget01/05/10 as in TOFU), the rest the retain set."""
    if split not in FORGET_FRACS:
        raise ValueError(f"unknown facts split {split!r}; valid: {', '.join(FORGET_FRACS)}")
    if not 2 <= n_authors <= N_NAMES:
        raise ValueError(f"n_authors must lie in [2, {N_NAMES}], got {n_authors}")
    g = make_generator(seed, "facts")
    names = [author_name(k) for k in torch.randperm(N_NAMES, generator=g)[:n_authors].tolist()]
    authors = []
    for a, name in enumerate(names):
        facts = []
        for attribute in ATTRIBUTES:
            answer = attribute.choices[int(torch.randint(len(attribute.choices), (1,), generator=g))]
            facts.append(Example(attribute.question.format(name=name), answer, f"facts author {a}"))
        authors.append(facts)
    n_forget = n_forget_authors(n_authors, split)
    return ([ex for facts in authors[:n_forget] for ex in facts],
            [ex for facts in authors[n_forget:] for ex in facts])


BYTE_VOCAB = 258  # <pad>, <eos>, then byte b as id b + 2


class ByteTokenizer:
    """A byte-level tokenizer: <pad> (id 0), <eos> (id 1), and byte b of a text's UTF-8 encoding as id b + 2,
    ``BYTE_VOCAB`` = 258 ids for any data. It offers what ``tokenize_examples`` and ``len`` read from a
    transformers tokenizer (no chat template, no BOS; not "fast": a prompt and its response are encoded apart,
    which for bytes is the same as encoding them as one text). Text that spells "<eos>" is bytes like any other:
    special tokens are never read from the data."""

    pad_token, eos_token, bos_token = "<pad>", "<eos>", None
    pad_token_id, eos_token_id, bos_token_id = 0, 1, None
    chat_template = None
    is_fast = False

    def __len__(self) -> int:
        return BYTE_VOCAB

    @staticmethod
    def encode(text: str) -> list[int]:
        return (np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) + 2).tolist()

    def __call__(self, text: str | list[str], add_special_tokens: bool = True) -> dict:
        return {"input_ids": self.encode(text) if isinstance(text, str) else [self.encode(t) for t in text]}

    def decode(self, ids) -> str:
        """The text of ``ids`` (a list or tensor), <eos> and <pad> written out, invalid UTF-8 replaced, and an id
        beyond the byte ids (a model whose vocabulary is larger than BYTE_VOCAB generates them) as U+FFFD."""
        out, run = [], bytearray()
        for i in (ids.tolist() if hasattr(ids, "tolist") else ids):
            if 2 <= i < BYTE_VOCAB:
                run.append(i - 2)
                continue
            out += [run.decode("utf-8", errors="replace"), (self.pad_token, self.eos_token)[i] if i < 2 else "\ufffd"]
            run = bytearray()
        return "".join([*out, run.decode("utf-8", errors="replace")])


def byte_tokenizer() -> ByteTokenizer:
    """The tokenizer of models built from a config (module docstring): ``ByteTokenizer``."""
    return ByteTokenizer()


def word_tokenizer(texts: list[str]):
    """A word-level tokenizer (``tokenizers`` WordLevel, split on whitespace and punctuation) over the words of
    ``texts``, with <pad>, <eos> and <unk>, as a transformers PreTrainedTokenizerFast; no chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    words = sorted({w for text in texts for w, _ in pre.pre_tokenize_str(text)})
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<eos>", "<unk>", *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
