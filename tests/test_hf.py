"""unlearn.models.hf, unlearn.data and unlearn.reference on tiny Hugging Face models built from configs (no
downloads): the logits contract, response-only log-probs with chat-template prompts masked, LoRA with the
adapter off equal to the base model, the three references giving the same losses and gradients, and data
files failing with messages that name the file, line and field."""

import json
import math

import pytest
import torch

from unlearn import data as D
from unlearn.logprobs import sequence_logprobs
from unlearn.losses import unlearning_losses
from unlearn.models import hf
from unlearn.objectives import MethodParams
from unlearn.reference import Cached, make_reference

CHAT = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|> {% endif %}")


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["Where was Ada born ? Lisbon , near the sea", "What does Bram play ? the violin", D.PLAIN_TEMPLATE,
             "<|user|> <|end|> <|assistant|>"]
    return D.word_tokenizer(texts)


def tiny(vocab, lora=None):
    return hf.load_model(hf.ModelSpec("tiny", vocab_size=vocab, lora=lora))


def test_logits_contract_and_determinism(tokenizer):
    model = tiny(len(tokenizer))
    ids = torch.randint(0, len(tokenizer), (3, 7), generator=torch.Generator().manual_seed(0))
    out = model(ids, attention_mask=torch.ones_like(ids, dtype=torch.bool))
    assert out.logits.shape == (3, 7, len(tokenizer))
    again = tiny(len(tokenizer))(ids).logits
    torch.testing.assert_close(out.logits, again)  # the same seed gives the same random model
    state = torch.random.get_rng_state()
    tiny(len(tokenizer))
    assert torch.equal(state, torch.random.get_rng_state())  # building a model leaves the global stream alone


def test_logprobs_cover_the_response_and_eos_only_with_chat_prompts_masked(tokenizer):
    tokenizer.chat_template = CHAT
    try:
        examples = [D.Example("Where was Ada born ?", "Lisbon , near the sea", "x:1"),
                    D.Example("What does Bram play ?", "the violin", "x:2")]
        tokens = D.tokenize_examples(examples, tokenizer, 64, "chat")
    finally:
        tokenizer.chat_template = None
    model = tiny(len(tokenizer))
    logits = model(tokens.input_ids, attention_mask=tokens.attention_mask).logits
    got = sequence_logprobs(logits, tokens.labels, tokens.mask).logp
    for b, ex in enumerate(examples):
        prompt = tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": ex.prompt}], tokenize=False,
                                                         add_generation_prompt=True, chat_template=CHAT),
                           add_special_tokens=False)["input_ids"]
        response = tokenizer(ex.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([prompt + response])
        logq = model(ids).logits.log_softmax(-1)[0]
        manual = sum(logq[len(prompt) - 1 + i, tok] for i, tok in enumerate(response))
        torch.testing.assert_close(got[b], manual, rtol=1e-5, atol=1e-5)
        assert int(tokens.mask[b].sum()) == len(response)
        assert "assistant" in tokenizer.decode(tokens.input_ids[b][tokens.attention_mask[b]])  # the template ran
        assert tokenizer.decode(tokens.labels[b][tokens.mask[b]]) == f"{ex.response} <eos>"


def test_chat_format_without_a_template_is_refused(tokenizer):
    with pytest.raises(ValueError, match="no chat template; use 'plain'"):
        D.tokenize_examples([D.Example("q", "a", "f:1")], tokenizer, 32, "chat")


def test_lora_with_the_adapter_off_is_the_base_model(tokenizer):
    base = tiny(len(tokenizer))
    lora = hf.add_lora(tiny(len(tokenizer)), hf.LoraSpec(rank=4))
    with torch.no_grad():  # move the adapter away from its zero start
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    ids = torch.randint(0, len(tokenizer), (2, 6), generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(lora(ids).logits, base(ids).logits)
    with lora.disable_adapter():
        torch.testing.assert_close(lora(ids).logits, base(ids).logits)
    assert hf.n_parameters(lora, trainable_only=True) < hf.n_parameters(base) / 4
    assert set(hf.lora_targets(base)) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_sizes_on_the_meta_device_match_the_built_model(tokenizer):
    """meta_model allocates nothing yet has the real model's parameter count; lora_size counts what peft adds."""
    spec = hf.ModelSpec("tiny", vocab_size=len(tokenizer))
    meta = hf.meta_model(spec)
    assert all(p.is_meta for p in meta.parameters())
    assert hf.n_parameters(meta) == hf.n_parameters(tiny(len(tokenizer)))
    lora = hf.LoraSpec(rank=4)
    assert hf.lora_size(meta, lora) == hf.n_parameters(tiny(len(tokenizer), lora), trainable_only=True)


def test_lora_on_a_mixture_of_experts_model_adapts_attention_only():
    """Qwen2-MoE: the adapter goes on q/k/v/o (not the experts' fused weights nor the shared-expert gate), and
    the planned size is what peft trains."""
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    model = Qwen2MoeForCausalLM(Qwen2MoeConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                               moe_intermediate_size=8, shared_expert_intermediate_size=16,
                                               num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                               num_experts=4, num_experts_per_tok=2))
    assert hf.lora_targets(model) == hf.ATTENTION
    lora = hf.LoraSpec(rank=2)
    planned = hf.lora_size(model, lora)
    adapted = hf.add_lora(model, lora)
    assert planned == hf.n_parameters(adapted, trainable_only=True) > 0
    trained = [name for name, p in adapted.named_parameters() if p.requires_grad]
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trained} == set(hf.ATTENTION)


def test_lora_targets_for_gpt2_and_unknown_models():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
    assert hf.lora_targets(gpt2) == ("c_attn", "c_proj", "c_fc")
    lora = hf.LoraSpec(rank=4)  # GPT-2's projections are Conv1D, not Linear: the planned size counts them too
    assert hf.lora_size(gpt2, lora) == hf.n_parameters(hf.add_lora(gpt2, lora), trainable_only=True) > 0

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.out = torch.nn.Linear(3, 3), torch.nn.Linear(3, 5)

        def get_output_embeddings(self):
            return self.out

    assert hf.lora_targets(Odd()) == ("inner",)


def test_weight_decay_skips_what_the_hugging_face_trainer_skips():
    """``no_decay_names`` is the complement of the Trainer's own decayed set (Trainer.get_decay_parameter_names):
    on the tiny Llama its RMSNorm gains (2 per layer and the final norm), on GPT-2 its LayerNorms and biases too;
    with LoRA only the adapter trains, and none of it is exempt."""
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer

    llama = hf.load_model(hf.ModelSpec("tiny", vocab_size=64))
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
    for model in (llama, gpt2):
        names = {name for name, _ in model.named_parameters()}
        assert hf.no_decay_names(model) == names - set(Trainer.get_decay_parameter_names(None, model))
    norms = ("input_layernorm", "post_attention_layernorm")
    assert hf.no_decay_names(llama) == {"model.norm.weight"} | {f"model.layers.{i}.{norm}.weight" for i in range(2)
                                                              for norm in norms}
    assert {"transformer.h.0.attn.c_attn.bias", "transformer.ln_f.weight"} <= hf.no_decay_names(gpt2)
    assert hf.no_decay_names(hf.add_lora(llama, hf.LoraSpec(rank=2))) == set()


def _tokens(tokenizer):
    examples = [D.Example(q, a, f"t:{i}") for i, (q, a) in enumerate(
        [("Where was Ada born ?", "Lisbon"), ("What does Bram play ?", "the violin , near the sea"),
         ("Where was Bram born ?", "near the sea")])]
    return D.tokenize_examples(examples, tokenizer, 64, "plain")


def test_concatenated_token_sets_keep_every_row_log_probs(tokenizer):
    """Sets of different widths are padded to the widest; the padding is masked, so each row's log-prob is the
    one it had in its own set."""
    from unlearn.reference import batched_logprobs

    data = _tokens(tokenizer)
    wide, narrow = data.take(slice(1, 2)), data.take(slice(2, 3)).trim()
    assert narrow.input_ids.shape[1] < wide.input_ids.shape[1]
    both = D.TokenSet.concat([narrow, wide])
    model = tiny(len(tokenizer))
    torch.testing.assert_close(batched_logprobs(model, both),
                               torch.cat([batched_logprobs(model, narrow), batched_logprobs(model, wide)]))


@pytest.mark.parametrize("method", ["NPO", "NPO+KL"])
def test_cached_adapter_and_copy_references_give_the_same_losses_and_gradients(tokenizer, method):
    """A LoRA model whose adapter has moved; its reference is the base model, provided three ways."""
    forget, retain = _tokens(tokenizer), _tokens(tokenizer).take(slice(0, 2))
    model = tiny(len(tokenizer), lora=hf.LoraSpec(rank=4))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(3))
    with model.disable_adapter():
        cached = make_reference("cached", model, forget, retain, with_logits=True)
    references = {"cached": cached, "adapter": make_reference("adapter", model, forget),
                  "copy": make_reference("copy", tiny(len(tokenizer)), forget)}  # same seed: the same base
    results = {}
    for mode, ref in references.items():
        terms = unlearning_losses(method, MethodParams(beta=0.5), forget, retain, ref)(
            model, (torch.arange(3), torch.arange(2), None))
        grads = torch.autograd.grad(sum(t.mean() for t in terms.values()),
                                    [p for p in model.parameters() if p.requires_grad])
        results[mode] = (torch.cat([t.detach() for t in terms.values()]), grads)
    assert results["cached"][0][:3].abs().max() > 0
    for mode in ("adapter", "copy"):
        torch.testing.assert_close(results[mode][0], results["cached"][0], rtol=1e-5, atol=1e-6)
        for g, h in zip(results[mode][1], results["cached"][1], strict=True):
            torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["NPO+RT", "NPO+KL", "SimNPO"])
@pytest.mark.parametrize("lora", [None, hf.LoraSpec(rank=4)])
def test_chunked_log_probs_give_the_logits_paths_losses_and_gradients(tokenizer, method, lora):
    """logprob_chunk takes forget (and, without KL, retain) log-probs from the decoder's hidden states and the
    head, 2 positions at a time: the same losses and gradients as the logits path, with and without LoRA (the KL
    term still reads the retain logits)."""
    forget, retain = _tokens(tokenizer), _tokens(tokenizer).take(slice(0, 2))
    model = tiny(len(tokenizer), lora=lora)
    reference = make_reference("copy", tiny(len(tokenizer)), forget)
    with torch.no_grad():  # move the model off its reference so that every term is non-trivial
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    results = []
    for chunk in (None, 2):
        terms = unlearning_losses(method, MethodParams(beta=0.5), forget, retain, reference, logprob_chunk=chunk)(
            model, (torch.arange(3), torch.arange(2), None))
        grads = torch.autograd.grad(sum(t.mean() for t in terms.values()),
                                    [p for p in model.parameters() if p.requires_grad])
        results.append((torch.cat([t.detach() for t in terms.values()]), grads))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    assert all(g.abs().max() > 0 for g in results[0][1][-1:])
    for g, h in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method, retain_calls", [("NPO+RT", 1), ("NPO+KL", 0)])
def test_fused_log_probs_take_the_kernels_values_where_the_logits_path_reads_logits(tokenizer, method,
                                                                                   retain_calls,
                                                                                   fused_kernel_on_cpu):
    """fused_logprobs: the forget (and, without KL, retain) log-probs come from the fused kernel, here replaced by
    the cross entropy it computes, on a bf16 model: the losses and gradients of the logits path, up to the bf16
    rounding of its logits, which the kernel does not round. The kernel itself is checked on a GPU."""
    forget, retain = _tokens(tokenizer), _tokens(tokenizer).take(slice(0, 2))
    model = hf.load_model(hf.ModelSpec("tiny", vocab_size=len(tokenizer), dtype="bf16", lora=hf.LoraSpec(4)))
    reference = make_reference("copy", hf.load_model(hf.ModelSpec("tiny", vocab_size=len(tokenizer), dtype="bf16")),
                               forget)
    with torch.no_grad():  # move the model off its reference so that every term is non-trivial
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    results = []
    for fused in (False, True):
        terms = unlearning_losses(method, MethodParams(beta=0.5), forget, retain, reference, fused_logprobs=fused)(
            model, (torch.arange(3), torch.arange(2), None))
        grads = torch.autograd.grad(sum(t.mean() for t in terms.values()),
                                    [p for p in model.parameters() if p.requires_grad])
        results.append((torch.cat([t.detach() for t in terms.values()]), torch.cat([g.flatten() for g in grads])))
    assert fused_kernel_on_cpu == [int(forget.mask.sum())] + [int(retain.mask.sum())] * retain_calls
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-3, atol=2e-3)
    assert (results[1][1] - results[0][1]).float().norm() < 3e-2 * results[0][1].float().norm()
    with pytest.raises(ValueError, match="two ways to the same log-probs"):
        unlearning_losses(method, MethodParams(beta=0.5), forget, retain, reference, logprob_chunk=2,
                          fused_logprobs=True)


@pytest.mark.parametrize("mode", ["cached", "adapter", "copy"])
def test_a_reference_on_the_fused_path_starts_npo_exactly_ga_like(tokenizer, mode, fused_kernel_on_cpu):
    """log pi_ref on the losses' own log-prob path: with fused log-probs (the kernel replaced by what it
    computes), every reference of the model at step 0 gives NPO's (2/beta) log 2 exactly; a reference on the
    logits path misses it by the bf16 rounding of the logits, which the kernel does not round (checked to be
    visible here, so the test can fail)."""
    forget = _tokens(tokenizer)
    model = hf.load_model(hf.ModelSpec("tiny", vocab_size=len(tokenizer), dtype="bf16", lora=hf.LoraSpec(4)))
    index = torch.arange(len(forget))

    def npo_losses(reference):
        return unlearning_losses("NPO", MethodParams(beta=0.5), forget, None, reference, fused_logprobs=True)(
            model, (index, None, None))["forget"].detach()

    same_path = npo_losses(make_reference(mode, model, forget, fused_logprobs=True))
    assert torch.equal(same_path, torch.full((len(forget),), 4 * math.log(2)))
    logits_path = npo_losses(make_reference(mode, model, forget))
    assert (logits_path - 4 * math.log(2)).abs().max() > 1e-4


def test_compile_in_place_compiles_the_model_and_the_decoder_that_hidden_state_log_probs_call(tokenizer):
    """Both forwards that a training step may call are compiled (nn.Module.compile sets _compiled_call_impl), and
    the parameters keep their names, so that saving and checkpoints do not change."""
    model = tiny(len(tokenizer), lora=hf.LoraSpec(4))
    names = [name for name, _ in model.named_parameters()]
    hf.compile_in_place(model)
    decoder, _ = hf.decoder_and_head(model)
    assert model._compiled_call_impl is not None and decoder._compiled_call_impl is not None
    assert [name for name, _ in model.named_parameters()] == names


def test_chunked_log_probs_are_refused_where_they_do_not_apply(tokenizer):
    from unlearn.models.transformer import Transformer, TransformerConfig

    forget = _tokens(tokenizer)
    reference = make_reference("cached", tiny(len(tokenizer)), forget)
    with pytest.raises(ValueError, match="not an ensemble"):
        unlearning_losses(["NPO", "GA"], [MethodParams(beta=0.5)] * 2, forget, None, reference, logprob_chunk=4)
    with pytest.raises(ValueError, match="positive number of positions"):
        unlearning_losses("NPO", MethodParams(beta=0.5), forget, None, reference, logprob_chunk=0)
    toy = Transformer(TransformerConfig(vocab_size=len(tokenizer)))
    with pytest.raises(ValueError, match="log-probs from the hidden states need a causal LM"):
        unlearning_losses("NPO", MethodParams(beta=0.5), forget, None, reference, logprob_chunk=4)(
            toy, (torch.arange(3), None, None))


@pytest.mark.parametrize("mode", ["cached", "copy"])
def test_under_bf16_autocast_every_reference_starts_npo_exactly_ga_like(tokenizer, mode):
    """Built under the run's autocast (unlearn.train.forward_precision), each reference reproduces the loss's own
    log pi at step 0, so every NPO loss is (2/beta) log 2 exactly; a cache taken in float32 misses it by the
    bf16 rounding of log pi (checked to be visible here, so the test can fail)."""
    from unlearn.train import forward_precision

    forget = _tokens(tokenizer)
    model = tiny(len(tokenizer))
    bf16 = forward_precision("cpu", "bf16-autocast")
    index = torch.arange(len(forget))

    def npo_losses(reference):
        with bf16:
            return unlearning_losses("NPO", MethodParams(beta=0.5), forget, forget, reference)(
                model, (index, index, None))["forget"].detach()

    with bf16:
        reference = make_reference(mode, model, forget)
    assert torch.equal(npo_losses(reference), torch.full((len(forget),), 4 * math.log(2)))
    float32_cache = npo_losses(make_reference("cached", model, forget))
    assert (float32_cache - 4 * math.log(2)).abs().max() > 1e-4


def test_dropout_is_off_in_every_loaded_model(tmp_path):
    """A GPT-2 checkpoint with dropout 0.1 everywhere loads with every dropout probability 0: two passes in train
    mode agree, so a cached reference equals the model at step 0."""
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32, resid_pdrop=0.1,
                               embd_pdrop=0.1, attn_pdrop=0.1)).save_pretrained(tmp_path)
    model = hf.load_model(hf.ModelSpec(str(tmp_path)))
    assert model.training
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(ids).logits, model(ids).logits)


def test_cached_reference_equals_recomputed(tokenizer):
    forget = _tokens(tokenizer)
    model = tiny(len(tokenizer))
    ref = Cached.build(model, forget, batch_size=2)
    logits = model(forget.input_ids, attention_mask=forget.attention_mask).logits
    torch.testing.assert_close(ref.logp, sequence_logprobs(logits, forget.labels, forget.mask).logp)
    with pytest.raises(ValueError, match="holds no retain logits"):
        ref.retain_logits(model, torch.arange(2), forget)


def test_adapter_reference_needs_lora(tokenizer):
    with pytest.raises(ValueError, match="needs a LoRA model"):
        make_reference("adapter", tiny(len(tokenizer)), _tokens(tokenizer))
    with pytest.raises(ValueError, match="unknown reference 'twin'"):
        make_reference("twin", tiny(len(tokenizer)), _tokens(tokenizer))


# ------------------------------------------------------------------------------------------------- data files


def test_jsonl_and_tofu_files_are_read(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"prompt": "p1", "response": "r1"}\n\n{"prompt": "p2", "response": "r2"}\n')
    (tmp_path / "b.json").write_text(json.dumps([{"question": "q", "answer": "a"}]))
    assert [(e.prompt, e.response) for e in D.read_examples(tmp_path / "a.jsonl")] == [("p1", "r1"), ("p2", "r2")]
    assert D.read_examples(tmp_path / "b.json")[0].source.endswith("b.json item 0")
    # valid JSON Lines that str.splitlines would break: a line separator inside a string; a byte-order mark
    rows = [{"prompt": "p\u2028q", "response": "r\x85s"}, {"prompt": "p2", "response": "r2"}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8-sig")
    examples = D.read_examples(tmp_path / "c.jsonl")
    assert [(e.prompt, e.response) for e in examples] == [(r["prompt"], r["response"]) for r in rows]
    assert examples[1].source.endswith("c.jsonl:2")


@pytest.mark.parametrize("content, message", [
    (b'{"prompt": "p", "response": "r"}\n{"prompt": "p"\n', "bad.jsonl:2: invalid JSON"),
    (b'{"prompt": "p", "response": "r"}\n{"prompt": "p"}\n', "bad.jsonl:2: missing field 'response'"),
    (b'{"prompt": "p", "response": "  "}\n', "bad.jsonl:1: field 'response' is empty"),
    (b'{"prompt": "p", "response": 3}\n', "bad.jsonl:1: field 'response' must be a string"),
    (b'{"prompt": "p", "response": "r"}\n{"prompt": "\xff"}\n', "bad.jsonl:2: not UTF-8"),
    (b'{"text": "x"}\n', "bad.jsonl:1: missing field 'prompt'/'response'"),
    (b"  \n", "bad.jsonl: empty file"),
    (b'[1, 2]', "bad.jsonl item 0: expected an object"),
])
def test_bad_data_files_name_file_line_and_field(tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_bytes(content)
    with pytest.raises(ValueError, match=message.replace("(", "\\(")):
        D.read_examples(tmp_path / "bad.jsonl")


def test_unreadable_data_paths_are_named(tmp_path):
    with pytest.raises(ValueError, match="nope.jsonl: no such file"):
        D.read_examples(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match=f"{tmp_path}: cannot be read"):
        D.read_examples(tmp_path)


def test_a_plain_prompt_and_its_response_are_tokenized_as_one_text():
    """With a byte-level BPE (GPT-2's kind, trained here) "Answer: Lisbon" is "Answer", ":", " Lisbon": the
    example's ids are those of the whole text plus EOS, and the response mask covers " Lisbon" and the EOS (split
    apart, the template's trailing space would be a token of its own and the response would lose its space)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = "Question: Where was Ada born?\nAnswer: Lisbon"
    core = Tokenizer(models.BPE())
    core.pre_tokenizer, core.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    core.train_from_iterator([text] * 20, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<eos>")
    data = D.tokenize_examples([D.Example("Where was Ada born?", "Lisbon", "f:1")], bpe, 64, "plain")
    ids = torch.cat([data.input_ids[0, :1], data.labels[0]]).tolist()
    assert ids == bpe(text)["input_ids"] + [bpe.eos_token_id]
    assert bpe.decode(data.labels[0][data.mask[0]]) == " Lisbon<eos>"


def test_a_response_that_does_not_fit_is_refused(tokenizer):
    with pytest.raises(ValueError, match="f:7: prompt .* exceed max_length=6; the response would be truncated"):
        D.tokenize_examples([D.Example("Where was Ada born ?", "Lisbon , near the sea", "f:7")], tokenizer, 6)


def test_facts_task_splits_authors():
    forget, retain = D.facts_task(40, "forget05")
    assert len(forget) == 2 * len(D.ATTRIBUTES) and len(retain) == 38 * len(D.ATTRIBUTES)
    assert {e.source for e in forget}.isdisjoint({e.source for e in retain})
    assert D.facts_task(40, "forget05") == (forget, retain)
    with pytest.raises(ValueError, match="unknown facts split"):
        D.facts_task(40, "forget50")


def test_missing_model_directories_are_refused(tmp_path):
    with pytest.raises(ValueError, match="neither a local model directory nor one of the built-in architectures"):
        hf.load_model(hf.ModelSpec(str(tmp_path / "nope")))
    with pytest.raises(ValueError, match="has no config.json"):
        hf.load_model(hf.ModelSpec(str(tmp_path)))
