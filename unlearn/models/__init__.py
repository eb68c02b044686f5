"""Models that the training core runs. Each returns logits shaped (B, T, V) for ``unlearn.logprobs``."""
