"""Closed-form theory of LLM unlearning objectives, float64 NumPy/SciPy, no training loops.

Modules: ``objectives`` (GA, NPO, SimNPO, DPO values, weights, bounds, limits). Symbols: NOTATION.md.
"""
