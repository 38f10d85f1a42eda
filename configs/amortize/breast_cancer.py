"""Error vs model evaluations on breast_cancer: per-example estimators, FastSHAP and stochastic amortization.

Run (from the repository root, CPU):

  python -m experiments.amortize --config=configs/amortize/breast_cancer.py --workdir=runs/amortize_breast_cancer

Tiny version for tests: --config=configs/amortize/breast_cancer.py:smoke. Override any field, e.g.
``--config.removal=surrogate`` (a misspelled field fails: the config is locked).
"""

import ml_collections

from configs.amortize.base import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The breast_cancer study; ``arg='smoke'`` shrinks every budget."""
  return base_config(("breast_cancer",), arg)
