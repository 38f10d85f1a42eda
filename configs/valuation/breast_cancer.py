"""Data valuation on breast cancer: logistic-regression utility, scaling laws, mislabeled points, point addition.

Run (from the repository root; CPU, a few minutes on 2 cores):

  python -m experiments.valuation --config=configs/valuation/breast_cancer.py --workdir=runs/valuation

Seconds-long version (tests):

  python -m experiments.valuation --config=configs/valuation/breast_cancer.py:smoke --workdir=/tmp/valuation_smoke

455 training points (15% of their labels flipped) are valued with U = validation neg. cross-entropy of an
L2-regularised logistic regression on the 114 held-out rows. Override fields on the command line, e.g.
``--config.label_noise=0.1`` (the config is locked: a misspelled field fails).
"""

import ml_collections

from configs.valuation import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Default config; ``arg='smoke'`` shrinks every budget."""
  base.check_arg(arg)
  config = base.base_config("breast_cancer")
  return base.smoke(config) if arg == "smoke" else config
