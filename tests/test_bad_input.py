"""Bad input to the core's building blocks fails at once with a ValueError that names the problem (the CLI's
bad-input tests cover the commands; these cover the library calls a script would make)."""

import pytest
import torch

from unlearn import attribution, distributed, relearn
from unlearn import data as D
from unlearn.losses import unlearning_losses
from unlearn.models import hf
from unlearn.objectives import MethodParams


class NoEOS:
    eos_token_id, chat_template = None, None


def tiny_model():
    return hf.load_model(hf.ModelSpec("tiny"))


CASES = {
    "relearn subset": (lambda: relearn.relearn_subset(torch.ones(5), 0.2, "longest"),
                       "unknown relearning subset 'longest'; valid: shortest, random"),
    "relearn fraction": (lambda: relearn.relearn_subset(torch.ones(5), 0.0, "shortest"), "frac must lie in (0, 1]"),
    "relearn draw": (lambda: relearn.relearn_subset(torch.ones(5), 0.2, "random"),
                     "a random relearning subset needs a generator"),
    "WAGLE mu": (lambda: attribution.wagle_scores(tiny_model(), {}, {}, mu=0.0), "mu must be a finite number > 0"),
    "mask kind": (lambda: attribution.scores("snip", tiny_model()), "unknown mask kind 'snip'; valid: wagle"),
    "sharding": (lambda: distributed.wrap(tiny_model(), "zero3"), "unknown sharding 'zero3'; valid: fsdp, ddp"),
    "retain term without a retain set": (lambda: unlearning_losses("NPO+RT", MethodParams(), None, None, None),
                                         "method 'NPO+RT' has a retain term but there is no retain set"),
    "prompt format": (lambda: D.format_prompt(NoEOS(), "q", "markdown"), "unknown prompt format 'markdown'"),
    "tokenizer without EOS": (lambda: D.tokenize_examples([D.Example("q", "a", "f:1")], NoEOS(), 8),
                              "the tokenizer has no EOS token"),
    "LoRA rank": (lambda: hf.LoraSpec(rank=0), "LoRA needs rank >= 1 and alpha > 0, got rank=0"),
    "dtype": (lambda: hf.ModelSpec("tiny", dtype="fp16"), "unknown dtype 'fp16'; valid: float32, bf16"),
    "facts split": (lambda: D.facts_task(10, "forget50"), "unknown facts split 'forget50'"),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_names_the_problem(name):
    call, message = CASES[name]
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)
