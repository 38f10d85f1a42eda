"""Robustness of removal-based attributions on scikit-learn's breast cancer data (30 features as 10 players: mean, error and worst of each measurement).

Run (from the repository root; CPU):

  python -m experiments.robustness --config=configs/robustness/breast_cancer.py --workdir=runs/robustness_breast_cancer

Tiny version: ``--config=configs/robustness/breast_cancer.py:smoke``.
"""

import ml_collections

from configs.robustness import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The breast_cancer study; ``arg='smoke'`` shrinks everything."""
  common.check_arg(arg)
  config = common.base()
  config.dataset = "breast_cancer"
  config.players = "breast_cancer"
  if arg == "smoke":
    config = common.smoke(config)
  return config
