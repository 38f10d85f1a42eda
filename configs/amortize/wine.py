"""Error vs model evaluations on wine: per-example estimators, FastSHAP and stochastic amortization.

Run (from the repository root, CPU):

  python -m experiments.amortize --config=configs/amortize/wine.py --workdir=runs/amortize_wine

Tiny version for tests: --config=configs/amortize/wine.py:smoke. Override any field, e.g.
``--config.removal=surrogate`` (a misspelled field fails: the config is locked).
"""

import ml_collections

from configs.amortize.base import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The wine study; ``arg='smoke'`` shrinks every budget."""
  return base_config(("wine",), arg)
