"""Robustness of removal-based attributions on scikit-learn's 8x8 digits with patch players (8 blocks of 4 x 2 pixels).

Run (from the repository root; CPU):

  python -m experiments.robustness --config=configs/robustness/digits.py --workdir=runs/robustness_digits

Tiny version: ``--config=configs/robustness/digits.py:smoke``.
"""

import ml_collections

from configs.robustness import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The digits study; ``arg='smoke'`` shrinks everything."""
  common.check_arg(arg)
  config = common.base()
  config.dataset = "digits"
  config.players = "blocks:4,2"
  config.explain_class = 3
  config.eps = (0.1, 0.3, 1.0, 3.0)
  if arg == "smoke":
    config = common.smoke(config)
  return config
