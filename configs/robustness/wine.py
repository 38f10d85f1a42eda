"""Robustness of removal-based attributions on scikit-learn's wine data (13 features as 7 contiguous groups).

Run (from the repository root; CPU):

  python -m experiments.robustness --config=configs/robustness/wine.py --workdir=runs/robustness_wine

Tiny version: ``--config=configs/robustness/wine.py:smoke``.
"""

import ml_collections

from configs.robustness import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The wine study; ``arg='smoke'`` shrinks everything."""
  common.check_arg(arg)
  config = common.base()
  config.dataset = "wine"
  config.players = "split:7"
  config.explain_class = 0
  if arg == "smoke":
    config = common.smoke(config)
  return config
