"""The shared training core: one log-prob path, pure objectives, one loop, for toy models and LLMs alike.

Modules: ``logprobs`` (logits -> per-sequence statistics), ``objectives`` (METHODS), ``train`` (the loop),
``config`` (key=value overrides), ``rng`` (named random streams), ``cache`` (pretrained models on disk),
``models`` (toy models), ``cli`` (the ``unlearn`` command).
"""
