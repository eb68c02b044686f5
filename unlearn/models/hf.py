"""Hugging Face causal LMs for the shared core: a local checkpoint directory, or a named architecture built
from a config with random weights (no download, ever).

    load_model(ModelSpec("path/to/llama"))                       AutoModelForCausalLM, local files only
    load_model(ModelSpec("tiny"))                                a 2-layer Llama for tests (27k parameters at vocab 128,
                                                                 35k at the byte vocabulary's 258)
    load_model(ModelSpec("llama-7b-shape", dtype="bf16", lora=LoraSpec(rank=16)))   Llama-2-7B's shape, random

An architecture's vocabulary never depends on the data: it is the shape's, or a fixed override (``vocab_size``:
``unlearn.data.BYTE_VOCAB`` for text read as bytes, the states of the markov task), so that a larger data set
never makes a larger model.

The output contract is the one every model of the project follows: ``model(input_ids, attention_mask=...)``
returns an object whose ``.logits`` are (B, T, V) with logits[b, t] the distribution of token t + 1.

Precision: "float32", or "bf16" (weights in bfloat16; log-probs are still taken in float32 by
``unlearn.logprobs``). LoRA goes through peft (rank, alpha, dropout 0): target modules are found from the
architecture (Llama/Mistral/Qwen: the attention and MLP projections; Mixtral, Qwen-MoE: attention only; GPT-2:
c_attn, c_proj, c_fc; otherwise every Linear or Conv1D but the output head) unless given. The adapter's base is
the frozen reference that ``unlearn.reference`` switches back on with ``adapter`` mode. A tokenizer without a
pad token gets its EOS token as pad (padding is always masked out of losses and attention).

Dropout is switched off in every model loaded here (the config's dropout probabilities are set to 0 before
the model is built): unlearning compares the model with its reference, and with dropout (GPT-2 checkpoints
carry 0.1) log pi_theta would be noisy, a cached log pi_ref would hold one draw of that noise, and NPO's
weights would not be exactly 1 at step 0.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}

# Llama-architecture shapes, built from configs (random weights): name -> LlamaConfig keyword arguments.
ARCHITECTURES = {
    "tiny": dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=1024),  # eval: 512 tokens + 200 new
    "llama-20m-shape": dict(vocab_size=8000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024),
    "llama-100m-shape": dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=8,
                             num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=2048),
    "llama-7b-shape": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                           num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096),
}
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
LORA_TARGETS = {  # model_type -> module names
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3"), (*ATTENTION, "gate_proj", "up_proj", "down_proj")),
    # mixture-of-experts models: attention only (their experts are fused parameters, not Linear modules, and a
    # router such as Qwen2-MoE's shared_expert_gate must not get an adapter)
    **dict.fromkeys(("mixtral", "qwen2_moe", "qwen3_moe"), ATTENTION),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
}


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] | None = None  # None: found from the architecture (module docstring)

    def __post_init__(self):
        if self.rank < 1 or not self.alpha > 0:
            raise ValueError(f"LoRA needs rank >= 1 and alpha > 0, got rank={self.rank}, alpha={self.alpha}")


@dataclass(frozen=True)
class ModelSpec:
    """What to load: ``name`` is a local model directory or a key of ARCHITECTURES."""

    name: str
    dtype: str = "float32"
    device: str = "cpu"
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"
    lora: LoraSpec | None = None
    vocab_size: int | None = None  # architectures only: override the shape's vocabulary (a fixed size, above)
    seed: int = 0

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', got {self.attn_implementation!r}")

    @property
    def is_architecture(self) -> bool:
        return self.name in ARCHITECTURES


def check_model(name: str) -> None:
    """Refuse, before any work, a model name that is neither a built-in architecture nor a model directory."""
    if name not in ARCHITECTURES:
        check_directory(Path(name))


def check_directory(path: Path) -> None:
    if not path.is_dir():
        raise ValueError(f"model {str(path)!r} is neither a local model directory nor one of the built-in "
                         f"architectures ({', '.join(ARCHITECTURES)}); models are never downloaded")
    if not (path / "config.json").is_file():
        raise ValueError(f"model directory {path} has no config.json; is it a Hugging Face checkpoint?")


def architecture_config(name: str, vocab_size: int | None = None):
    from transformers import LlamaConfig

    kwargs = dict(ARCHITECTURES[name])
    if vocab_size is not None:
        kwargs["vocab_size"] = vocab_size
    return LlamaConfig(**kwargs, tie_word_embeddings=False)


def without_dropout(config):
    """``config`` with every dropout probability (``*dropout*``, ``*pdrop``: Llama's attention_dropout, GPT-2's
    resid/embd/attn_pdrop, ...) set to 0, in place."""
    for key, value in config.to_dict().items():
        if ("dropout" in key or key.endswith("pdrop")) and isinstance(value, float):
            setattr(config, key, 0.0)
    return config


def load_model(spec: ModelSpec) -> nn.Module:
    """The model of ``spec`` on its device, in train mode without dropout (module docstring), with LoRA and
    gradient checkpointing if asked."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from unlearn.train import resolve_device

    device = resolve_device(spec.device)
    dtype = DTYPES[spec.dtype]
    # from_config and peft's LoRA initialisation draw from the global streams: seeded here, and restored afterwards
    # (random weights depend on the device type, as CPU and CUDA generators differ)
    cuda = [] if device.type != "cuda" else [torch.cuda.current_device() if device.index is None else device.index]
    if spec.is_architecture:
        config = without_dropout(architecture_config(spec.name, spec.vocab_size))
        with torch.random.fork_rng(devices=cuda, device_type="cuda"), torch.device(device):
            torch.manual_seed(spec.seed)
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=spec.attn_implementation)
    else:
        path = Path(spec.name)
        check_directory(path)
        config = without_dropout(AutoConfig.from_pretrained(path, local_files_only=True))
        model = AutoModelForCausalLM.from_pretrained(path, config=config, local_files_only=True, dtype=dtype,
                                                     attn_implementation=spec.attn_implementation).to(device)
    if spec.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x; the older name is deprecated
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if spec.lora is not None:
        with torch.random.fork_rng(devices=cuda, device_type="cuda"):
            torch.manual_seed(spec.seed)
            model = add_lora(model, spec.lora)
    return model.train()


def meta_model(spec: ModelSpec) -> nn.Module:
    """The model of ``spec`` (without LoRA) on the meta device: every module and shape, no memory, no weights
    read; for planning memory before loading."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if spec.is_architecture:
        config = architecture_config(spec.name, spec.vocab_size)
    else:
        check_directory(Path(spec.name))
        config = AutoConfig.from_pretrained(spec.name, local_files_only=True)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=DTYPES[spec.dtype])


def _projections(model: nn.Module):
    """(leaf name, module, in + out features) of every linear projection: nn.Linear, and transformers' Conv1D
    (GPT-2's c_attn, c_proj, c_fc: a Linear with its weight stored (in, out))."""
    from transformers.pytorch_utils import Conv1D

    for name, m in model.named_modules():
        if isinstance(m, nn.Linear | Conv1D):
            yield name.rsplit(".", 1)[-1], m, sum(m.weight.shape)


def lora_size(model: nn.Module, spec: LoraSpec) -> int:
    """Parameters of a LoRA adapter on ``model``: rank * (in + out features) for every targeted projection."""
    targets = set(spec.targets or lora_targets(model))
    return sum(spec.rank * features for name, _, features in _projections(model) if name in targets)


def lora_targets(model: nn.Module) -> tuple[str, ...]:
    """Module names for LoRA: by model_type (LORA_TARGETS), else every projection's leaf name but the head's."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in LORA_TARGETS:
        return LORA_TARGETS[model_type]
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {name for name, m, _ in _projections(model) if m is not head}
    if not names:
        raise ValueError(f"found no Linear or Conv1D modules for LoRA in {type(model).__name__}; pass "
                         "LoraSpec(targets=...)")
    return tuple(sorted(names))


def add_lora(model: nn.Module, spec: LoraSpec) -> nn.Module:
    """A peft LoRA model (dropout 0, so that the adapter-off reference is deterministic): only the adapter
    trains; ``with model.disable_adapter():`` gives the base model back."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    targets = list(spec.targets or lora_targets(model))
    conv1d = any(isinstance(m, Conv1D) for name, m, _ in _projections(model) if name in targets)  # (in, out) weights
    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=0.0, target_modules=targets, bias="none",
                        fan_in_fan_out=conv1d, task_type="CAUSAL_LM")
    with peft_quietly():
        return get_peft_model(model, config)


@contextmanager
def peft_quietly():
    """peft's wrappers ask transformers' ``is_gradient_checkpointing``, which transformers 5 deprecates with a
    FutureWarning on every call, whatever the model; that one warning is dropped, nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def load_tokenizer(name: str):
    """The tokenizer of a local model directory (local files only), with a pad token (module docstring)."""
    from transformers import AutoTokenizer

    path = Path(name)
    check_directory(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"model directory {path} has no usable tokenizer ({err})") from None
    return ensure_pad_token(tokenizer)


def ensure_pad_token(tokenizer):
    """Give a tokenizer without a pad token its EOS token as pad (refusing one with neither). The model needs no
    pad id: padding is masked by position, and a pad = EOS label inside the response is still the EOS."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token; add one before unlearning")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# parameter names the Hugging Face Trainer keeps out of weight decay (Trainer.get_decay_parameter_names)
NO_DECAY_PATTERNS = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")


def no_decay_names(model: nn.Module) -> set[str]:
    """The trainable parameters of ``model`` that the Hugging Face Trainer (TOFU's, NPO's and SimNPO's runs)
    exempts from weight decay: biases and the weights of normalisation layers (``nn.LayerNorm``, or a name that
    says norm), by ``transformers.trainer_pt_utils.get_parameter_names``."""
    from transformers.trainer_pt_utils import get_parameter_names

    decayed = set(get_parameter_names(model, [nn.LayerNorm], list(NO_DECAY_PATTERNS)))
    return {name for name, p in model.named_parameters() if p.requires_grad and name not in decayed}


def n_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def compile_in_place(model: nn.Module) -> None:
    """torch.compile the model's forward in place (``nn.Module.compile``: its parameters and state-dict names stay
    as they are, so saving and checkpoints are unchanged), and its decoder's, which the log-prob paths from the
    hidden states call alone (``decoder_and_head``). Compilation happens at the first call of each."""
    model.compile()
    split = decoder_and_head(model)
    if split is not None:
        split[0].compile()


def decoder_and_head(model: nn.Module) -> tuple[nn.Module, torch.Tensor] | None:
    """(decoder, head weight (V, d)) when the model's logits are exactly ``head(decoder(...).last_hidden_state)``
    with a bias-free linear head and nothing after it (no soft-capping, no logit scale), LoRA wrappers followed to
    their base: the split that ``unlearn.logprobs.head_token_logprobs`` needs. None for any other model, and for
    a model sharded with FSDP2, whose root forward is what gathers the head's shards."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    get_decoder, get_head = getattr(base, "get_decoder", None), getattr(base, "get_output_embeddings", None)
    if get_decoder is None or get_head is None:
        return None
    from torch.distributed.tensor import DTensor

    head, config = get_head(), getattr(base, "config", None)
    if not isinstance(head, nn.Linear) or head.bias is not None or isinstance(head.weight, DTensor):
        return None
    if any(getattr(config, key, None) not in (None, 1.0) for key in ("final_logit_softcapping", "logit_scale")):
        return None
    decoder = get_decoder()
    return (decoder, head.weight) if decoder is not None and decoder is not base else None
