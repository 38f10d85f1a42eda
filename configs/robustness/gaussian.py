"""Robustness of removal-based attributions on synthetic Gaussian (6 correlated features, exact conditional removal).

Run (from the repository root; CPU):

  python -m experiments.robustness --config=configs/robustness/gaussian.py --workdir=runs/robustness_gaussian

Tiny version: ``--config=configs/robustness/gaussian.py:smoke``.
"""

import ml_collections

from configs.robustness import common

def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The gaussian study; ``arg='smoke'`` shrinks everything."""
  common.check_arg(arg)
  config = common.base()
  config.dataset = "gaussian"

  if arg == "smoke":
    config = common.smoke(config)
  return config
