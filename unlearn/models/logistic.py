"""Random-features logistic model of the NPO paper's synthetic experiments (Sec. 4, App. D).

    pi_theta(y=1|x) = sigma(theta^T phi(x)),   phi(x) = relu(W x),   W in R^{p x d} iid N(0, 1/d), fixed,

with theta in R^p trainable and no bias. Because W never trains, phi is computed once per data set
(``random_relu_features``) and the trainable model is the linear head on phi, ``LogisticHead``. The paper's
code writes the class-0 logit as a^T phi with a = -theta; gradient descent on either gives the same model.

The head holds M = W * K independent members: K members (runs differing in method or hyperparameters) for
each of W data sets ("worlds"), theta shaped (W, K, p). The K members of a world read the same inputs, so one
batched matrix product serves them all, and member m's gradient depends on member m's loss only.

Like every model of the project it returns an object with ``.logits`` (``CausalLMOutput``, the Hugging Face
convention). As a classifier, a member's "response" is one label, i.e. a one-token sequence: logits come out
shaped (M, B, 1, 2), member m = w * K + k, with classes (y=0, y=1) and logit 0 for y=0, the layout of an
ensemble's logits, so ``unlearn.ensemble.member_logprobs`` and ``member_kl`` turn them into per-member
statistics like any other model's (labels (M, B, 1), mask all ones).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearn.models.transformer import CausalLMOutput


def random_feature_matrix(d: int, p: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """W in R^{p x d} with iid N(0, 1/d) entries."""
    return torch.randn(p, d, generator=generator, dtype=dtype) / d**0.5


def random_relu_features(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """phi(x) = relu(W x) for each row of x: (n, d) -> (n, p)."""
    return torch.relu(x @ W.T)


class LogisticHead(nn.Module):
    """W x K binary logistic models on fixed features: phi (W, B, p) -> .logits (W*K, B, 1, 2), theta at 0."""

    def __init__(self, p: int, worlds: int = 1, members_per_world: int = 1, dtype=torch.float64):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(worlds, members_per_world, p, dtype=dtype))

    def forward(self, phi: torch.Tensor, attention_mask: torch.Tensor | None = None) -> CausalLMOutput:
        """Features phi (W, B, p) of each world's B samples -> CausalLMOutput with logits (W*K, B, 1, 2).
        ``attention_mask`` is accepted for the shared ``model(inputs, attention_mask=...)`` contract and
        ignored: each sample is a one-token sequence, with nothing to attend to."""
        z = torch.bmm(self.theta, phi.transpose(1, 2))  # (W, K, B): logit of y=1
        return CausalLMOutput(F.pad(z.flatten(0, 1).unsqueeze(-1).unsqueeze(-1), (1, 0)))  # logits (0, z)
