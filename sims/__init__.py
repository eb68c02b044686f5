"""Toy worlds (logistic, Markov mixtures) and the experiments that reproduce the papers' figures."""
