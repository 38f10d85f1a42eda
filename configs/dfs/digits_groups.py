"""Dynamic feature selection on scikit-learn's 8x8 digits with 2x2 pixel blocks as players (16 groups).

Run (from the repository root; CPU, about 3-4 minutes on 2 cores):

  python -m experiments.dfs --config=configs/dfs/digits_groups.py --workdir=runs/dfs_digits_groups

Tiny version: ``--config=configs/dfs/digits_groups.py:smoke``.
"""

import ml_collections

from configs.dfs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Digits in 16 groups of 2x2 pixels, K = 10 groups; ``arg='smoke'`` shrinks everything."""
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'smoke'.")
  config = common.base()
  config.dataset = "digits"
  config.patch_size = 2
  config.max_features = 10
  config.cae.budgets = (1, 2, 3, 5, 7, 10)
  config.report_budgets = (1, 2, 3, 4, 5, 7, 10)
  config.small_budgets = (1, 2, 3)
  if arg == "smoke":
    config = common.smoke(config)
    config.max_features = 4
  return config
