"""Closed-form theory of LLM unlearning objectives, float64 NumPy/SciPy, no training loops. Symbols: NOTATION.md.

Modules:
``objectives``  GA, NPO, SimNPO, DPO values, weights, bounds and limits (NPO paper Sec. 2-3, SimNPO eq. 4).
``logistic``    NPO paper Theorem 2: the exact reduced recursion, ODE predictions, explicit envelopes, assumptions.
``adam``        the forget margin's rates under Adam (three regimes, per-token rates against |y|) and sign descent.
``allocation``  SimNPO Sec. 4, App. G: NPO/SimNPO weights against |y| and likelihood, speed heuristic, exact flows.
``ceiling``     the final-norm ceiling: no hidden state gives a token an NLL above C_y + log V under an RMSNorm head.
``markov``      SimNPO App. H Markov mixture: distributions, log-probs, per-token KL, retrained KL, Bayes predictors.
"""
