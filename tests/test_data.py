"""unlearn.data at scale and the data of `unlearn validate` / `unlearn run`: an architecture reads bytes, so its
size never depends on the data's; a local checkpoint keeps its own tokenizer; batched tokenising gives what
one example at a time gives; reading and tokenising report their time."""

import json

import pytest
import torch

from recipes import validate
from unlearn import data as D
from unlearn.models import hf


def test_the_byte_tokenizer_is_one_id_per_utf8_byte():
    tok = D.byte_tokenizer()
    text = 'Où est "<eos>"? 東京\n'
    ids = tok(text)["input_ids"]
    assert len(tok) == D.BYTE_VOCAB == 258 and (tok.pad_token_id, tok.eos_token_id) == (0, 1)
    assert ids == [b + 2 for b in text.encode("utf-8")]  # "<eos>" in the data is bytes, never the EOS
    assert tok.decode(ids) == text and tok.decode(torch.tensor(ids + [1, 0])) == text + "<eos><pad>"
    assert tok([text, "a"])["input_ids"] == [ids, [ord("a") + 2]]


def test_byte_examples_split_where_the_response_begins():
    tok = D.byte_tokenizer()
    data = D.tokenize_examples([D.Example("Where?", "in Oslo", "f:1"), D.Example("q", "Lima", "f:2")], tok, 64)
    assert data.n_tokens.tolist() == [len("in Oslo") + 1, len("Lima") + 1]  # response bytes + EOS
    assert tok.decode(data.labels[0][data.mask[0]]) == "in Oslo<eos>"
    ids = torch.cat([data.input_ids[1, :1], data.labels[1]])[: len("Question: q\nAnswer: Lima") + 1].tolist()
    assert tok.decode(ids) == "Question: q\nAnswer: Lima<eos>"


@pytest.mark.parametrize("make", [D.byte_tokenizer, lambda: D.word_tokenizer(["Where was Ada born ? Lisbon",
                                                                              D.PLAIN_TEMPLATE])])
def test_tokenising_in_chunks_gives_what_one_call_gives(make, monkeypatch):
    examples = [D.Example("Where was Ada born ?", "Lisbon" + " Lisbon" * (i % 4), f"f:{i}") for i in range(7)]
    whole = D.tokenize_examples(examples, make(), 128)
    monkeypatch.setattr(D, "TOKENIZE_CHUNK", 2)
    chunked = D.tokenize_examples(examples, make(), 128)
    for name in ("input_ids", "attention_mask", "labels", "mask"):
        assert torch.equal(getattr(whole, name), getattr(chunked, name))
    single = [D.tokenize_examples([ex], make(), 128) for ex in examples]
    assert whole.n_tokens.tolist() == [int(s.n_tokens[0]) for s in single]


def _write_jsonl(path, n, salt=""):
    path.write_text("\n".join(json.dumps({"prompt": f"Where does {salt}author {i} live?",
                                          "response": f"in {salt}city {7 * i} by river {i % 13}"})
                              for i in range(n)))


def test_an_architecture_does_not_grow_with_its_data(tmp_path):
    """10 lines or 2,000 lines of different words: the same 258-id vocabulary, and the same model (a word
    vocabulary grew with the data: 50k lines gave 100,010 words and 6.4M parameters for tiny)."""
    sizes = []
    for n, salt in ((10, ""), (2000, "other ")):
        _write_jsonl(tmp_path / f"f{n}.jsonl", n, salt)
        _write_jsonl(tmp_path / f"r{n}.jsonl", n, salt + "x ")
        for model in ("tiny", "llama-20m-shape"):
            cfg = validate.ValidateConfig(model=model, task="jsonl", forget=str(tmp_path / f"f{n}.jsonl"),
                                          retain=str(tmp_path / f"r{n}.jsonl"), device="cpu")
            forget, retain, vocab, _ = validate.task_data(cfg, report=None)
            assert vocab == D.BYTE_VOCAB and len(forget) == len(retain) == n
            assert int(forget.input_ids.max()) < D.BYTE_VOCAB
            sizes.append((model, validate.model_size(cfg, vocab)))
    assert sizes[:2] == sizes[2:]
    assert dict(sizes)["tiny"][0] < 40_000


def test_reading_and_tokenising_report_their_time(tmp_path):
    _write_jsonl(tmp_path / "f.jsonl", 5)
    _write_jsonl(tmp_path / "r.jsonl", 3)
    lines = []
    cfg = validate.ValidateConfig(task="jsonl", forget=str(tmp_path / "f.jsonl"), retain=str(tmp_path / "r.jsonl"),
                                  device="cpu")
    validate.task_data(cfg, report=lines.append)
    assert lines[0].startswith("read 5 forget and 3 retain examples in ") and lines[0].endswith(" s")
    assert lines[1].startswith("tokenised 8 examples (bytes, 258 ids; widths ") and lines[1].endswith(" s")


def test_a_local_checkpoint_keeps_its_own_tokenizer(tmp_path):
    """A model directory's data is tokenised by the tokenizer saved with it (here a word-level one), and its
    vocabulary is the checkpoint's (task_data returns None: nothing to override)."""
    tokenizer = D.word_tokenizer(["Where does author 0 1 2 live ? in city by river 7 14", D.PLAIN_TEMPLATE])
    config = hf.architecture_config("tiny", len(tokenizer))
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    _write_jsonl(tmp_path / "f.jsonl", 3)
    _write_jsonl(tmp_path / "r.jsonl", 2)
    cfg = validate.ValidateConfig(model=str(tmp_path / "ckpt"), task="jsonl", forget=str(tmp_path / "f.jsonl"),
                                  retain=str(tmp_path / "r.jsonl"), device="cpu")
    forget, _, vocab, _ = validate.task_data(cfg, report=None)
    assert vocab is None
    expected = D.tokenize_examples(D.read_examples(tmp_path / "f.jsonl"), tokenizer, cfg.max_length)
    assert torch.equal(forget.input_ids, expected.input_ids)
