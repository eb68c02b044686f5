"""A small causal transformer: the model of the SimNPO paper's Markov-chain study (Fan et al. 2024, App. H).

It follows the released synthetic code, not the paper's "GPT-2 small" wording:

    h_0 = tok_emb[ids] + pos_emb[0:T]                                   pos_emb ~ N(0, 0.02^2)
    for each of n_layer blocks (post-LayerNorm, single head, no dropout):
        a = softmax(causal(q k^T / sqrt(d))) v,   q, k, v = h W_q, h W_k, h W_v   (no bias, no out projection)
        h = LN(h + a)
        h = LN(h + W_2 relu(W_1 h + b_1) + b_2)                         W_1, W_2: d x d
    logits = h W_head + b_head                                          (B, T, V)

At the defaults (vocab 10, max_len 19, 4 layers, d = 128) it has 335,754 parameters ("about 0.34M").

Contract (DESIGN 7): ``model(input_ids, attention_mask=None).logits``, like a Hugging Face causal LM, so the
training core and ``unlearn.logprobs`` treat it like any other LM. ``attention_mask`` (B, T) is 1 on real tokens:
a padded key is never attended, and causal masking always applies, so the logits at a real position depend only
on the real tokens at or before it (left or right padding alike). A padded query attends to itself as well,
which keeps its softmax finite and cannot reach a real position.

Initialisation draws from an explicit generator (``unlearn.rng``), never the global RNG, with the distributions
of PyTorch's defaults: Linear weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)), token embedding N(0, 1),
LayerNorm (1, 0); the positional embedding is N(0, 0.02^2) as in the released code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unlearn.config import require_at_least_one


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of the model; defaults are the SimNPO synthetic study's (10 states, inputs of 19 tokens)."""

    vocab_size: int = 10
    max_len: int = 19
    n_layer: int = 4
    d_model: int = 128

    def __post_init__(self):
        require_at_least_one(self, "vocab_size", "max_len", "n_layer", "d_model")


@dataclass(frozen=True)
class CausalLMOutput:
    """What the model returns: ``logits`` (B, T, V), as in Hugging Face's ``CausalLMOutput``."""

    logits: torch.Tensor


class CausalSelfAttention(nn.Module):
    """One head of width d over the whole residual stream, scores scaled by 1/sqrt(d), no output projection."""

    def __init__(self, d: int):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(d, d, bias=False) for _ in range(3))

    def forward(self, h: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        q, k, v = (proj(h).unsqueeze(1) for proj in (self.q, self.k, self.v))  # (B, 1, T, d): one head
        if allowed is None:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # default scale: 1/sqrt(d)
        return a.squeeze(1)


class Block(nn.Module):
    """Post-LN block: h = LN(h + attn(h)); h = LN(h + mlp(h))."""

    def __init__(self, d: int):
        super().__init__()
        self.attn = CausalSelfAttention(d)
        self.ln_1 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
        self.ln_2 = nn.LayerNorm(d)

    def forward(self, h: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        h = self.ln_1(h + self.attn(h, allowed))
        return self.ln_2(h + self.mlp(h))


def attention_allowed(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) bool, True where query t may attend key s: s <= t and (key s is real or s == t)."""
    T = attention_mask.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=attention_mask.device).tril()
    eye = torch.eye(T, dtype=torch.bool, device=attention_mask.device)
    return (causal & (attention_mask.bool()[:, None, :] | eye)).unsqueeze(1)


def _concrete(x: torch.Tensor) -> bool:
    """False inside torch.func.vmap (an ensemble with per-member inputs), where a branch on the ids' values
    cannot run; the embedding lookup still refuses out-of-range ids there, with torch's own message."""
    return not torch._C._functorch.is_batchedtensor(x)


class Transformer(nn.Module):
    """The SimNPO synthetic-study decoder (module docstring): ids (B, T) -> CausalLMOutput(logits (B, T, V))."""

    def __init__(self, cfg: TransformerConfig = TransformerConfig(), generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        self.pos_emb = nn.Parameter(torch.empty(cfg.max_len, d))
        self.blocks = nn.ModuleList(Block(d) for _ in range(cfg.n_layer))
        self.head = nn.Linear(d, cfg.vocab_size)
        self.reset_parameters(generator if generator is not None else torch.Generator().manual_seed(0))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Draw every parameter from ``generator`` (distributions in the module docstring)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)
                module.weight.uniform_(-bound, bound, generator=generator)
                if module.bias is not None:
                    module.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, 1.0, generator=generator)
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
        self.pos_emb.normal_(0.0, 0.02, generator=generator)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> CausalLMOutput:
        B, T = input_ids.shape
        if T > self.cfg.max_len:
            raise ValueError(f"sequence of {T} tokens is longer than this model's max_len={self.cfg.max_len}")
        ids = input_ids
        if _concrete(ids) and ids.numel() and (ids.min() < 0 or ids.max() >= self.cfg.vocab_size):
            lo, hi = int(input_ids.min()), int(input_ids.max())
            raise ValueError(f"token ids must lie in [0, {self.cfg.vocab_size}), got ids in [{lo}, {hi}]")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids {(B, T)}")
        allowed = None if attention_mask is None else attention_allowed(attention_mask)
        h = self.tok_emb(input_ids) + self.pos_emb[:T]  # (B, T, d)
        for block in self.blocks:
            h = block(h, allowed)
        return CausalLMOutput(logits=self.head(h))


def n_params(model: nn.Module) -> int:
    """Number of parameters (all of them, trainable or not)."""
    return sum(p.numel() for p in model.parameters())
