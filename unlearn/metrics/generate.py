"""A causal LM asked questions: the mean NLL of given answers, and its own greedy answers, batched.

Both format each question as training does (``unlearn.data.format_prompt``: the tokenizer's chat template, or
the plain template) and batch sequences of similar length together (sorted by length, results returned in the
caller's order), so padding costs little. Log-probs come from ``unlearn.logprobs`` (float32 log-softmax).

Greedy answers (``greedy_answers``): prompts left-padded, ``model.generate`` with do_sample=False and the
tokenizer's EOS, up to ``max_new_tokens`` new tokens; the text is what precedes the first EOS. A prompt's ids
are those a training sequence has (``prompt_ids``): a plain template ending in a space ("Answer: ") is
tokenised with its answer in training, where the space joins the answer's first token, so the prompt is cut the
same way here rather than ending in a lone space token the model never saw before an answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

PLACEHOLDER = "A"  # a response to cut plain prompts against (``prompt_ids``); any text starting with a letter


def _order(lengths: Sequence[int]) -> np.ndarray:
    """Indices that sort by length, longest first (stable)."""
    return np.argsort(-np.asarray(lengths), kind="stable")


def answer_nll(model, tokenizer, prompts: Sequence[str], answers: Sequence[str], settings) -> np.ndarray:
    """Mean NLL per answer token (EOS included, as in training) of answers[i] after prompts[i], float64 (n,).
    ``settings``: prompt_format, template, max_length, batch_size (``unlearn.metrics.tofu.TofuEvalSettings``)."""
    from unlearn.data import Example, tokenize_examples
    from unlearn.metrics.tokens import model_device, per_sequence_stats

    examples = [Example(p, a, f"answer {i}") for i, (p, a) in enumerate(zip(prompts, answers, strict=True))]
    data = tokenize_examples(examples, tokenizer, settings.max_length, settings.prompt_format, settings.template,
                             progress=False)
    order = torch.from_numpy(_order(data.attention_mask.sum(-1).numpy()))
    stats = per_sequence_stats(model, data.take(order).to(model_device(model)), settings.batch_size)
    nll = np.empty(len(examples))
    nll[order.numpy()] = (-stats.logp / stats.n_tokens).double().cpu().numpy()
    return nll


def prompt_ids(tokenizer, prompts: Sequence[str], prompt_format: str, template: str) -> list[list[int]]:
    """The ids of each formatted prompt as a training sequence holds them (module docstring); an empty prompt is
    the tokenizer's BOS (else its EOS), as in ``unlearn.data.tokenize_examples``."""
    from unlearn.data import encode_pairs, format_prompt

    texts = [format_prompt(tokenizer, p, prompt_format, template) for p in prompts]
    chat = bool(texts and texts[0][1])
    pairs = encode_pairs(tokenizer, [t for t, _ in texts], [PLACEHOLDER] * len(texts), chat)
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [list(ids) or [start] for ids, _ in pairs]


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: Sequence[str], settings, progress: bool | None = False) -> list[str]:
    """The model's greedy answer to each prompt (module docstring), in the prompts' order. ``settings``:
    prompt_format, template, batch_size, max_new_tokens; ``progress``: a bar over the batches (None: on a
    terminal)."""
    from tqdm.auto import tqdm

    from unlearn.metrics.tokens import model_device

    ids = prompt_ids(tokenizer, prompts, settings.prompt_format, settings.template)
    device, pad, eos = model_device(model), tokenizer.pad_token_id, tokenizer.eos_token_id
    out: list[str] = [""] * len(ids)
    order = _order([len(i) for i in ids])
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(order), settings.batch_size), desc="greedy answers", leave=False,
                          disable=None if progress is None else not progress):
            rows = order[start: start + settings.batch_size]
            width = max(len(ids[r]) for r in rows)
            input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            for b, r in enumerate(rows):  # left padding: every prompt ends where generation starts
                input_ids[b, width - len(ids[r]):] = torch.tensor(ids[r])
                attention[b, width - len(ids[r]):] = 1
            generated = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                       max_new_tokens=settings.max_new_tokens, do_sample=False, num_beams=1,
                                       pad_token_id=pad, eos_token_id=eos)[:, width:].tolist()
            for r, new in zip(rows, generated, strict=True):
                out[r] = decode_answer(tokenizer, new)
    finally:
        model.train(was_training)
    return out


def decode_answer(tokenizer, new_ids: Sequence[int]) -> str:
    """The text of generated ids up to the first EOS, padding dropped, stripped of surrounding space."""
    eos = tokenizer.eos_token_id
    cut = list(new_ids).index(eos) if eos in new_ids else len(new_ids)
    return tokenizer.decode([i for i in new_ids[:cut] if i != tokenizer.pad_token_id]).strip()
