"""Entry points: the `unlearn` command and the recipes it runs (figures, run, relearn, validate, bench).

The top floor: recipes import sims, unlearn and theory; nothing imports recipes.
"""
