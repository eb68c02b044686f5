"""Closed-form theory of LLM unlearning objectives, float64 NumPy/SciPy, no training loops.

Modules: ``objectives`` (GA, NPO, SimNPO, DPO values, weights, bounds, limits). Symbols: NOTATION.md.
``allocation`` (SimNPO Sec. 4, App. G: NPO/SimNPO weights against |y| and likelihood, speed heuristic, exact flows).
``markov`` (SimNPO App. H Markov mixture: distributions, log-probs, per-token KL, retrained KL, Bayes predictors).
"""
