"""Every evaluator of the project: token-level statistics (``tokens``), curve fits (``curves``), collapse
(``collapse``), the final-norm ceiling (``ceiling``), and the field's benchmarks: TOFU's forget quality and model
utility (``tofu``, with ``generate`` for greedy answers) and membership-inference attacks (``mia``).

The benchmarks' formulas are exported here: ``truth_ratio``, ``forget_quality``, ``model_utility``, ``auc``,
``priv_leak``, ``min_k_plus_plus`` (definitions and pitfalls in each module's docstring and docs/metrics.md).
"""

from unlearn.metrics.mia import auc, min_k_plus_plus, priv_leak
from unlearn.metrics.tofu import forget_quality, model_utility, truth_ratio

__all__ = ["auc", "forget_quality", "min_k_plus_plus", "model_utility", "priv_leak", "truth_ratio"]
