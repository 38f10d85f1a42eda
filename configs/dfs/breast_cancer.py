"""Dynamic feature selection on scikit-learn's breast cancer data (30 features, AUROC).

Run (from the repository root; CPU, about 2-3 minutes on 2 cores):

  python -m experiments.dfs --config=configs/dfs/breast_cancer.py --workdir=runs/dfs_breast_cancer

With non-uniform feature costs (DIME then selects by CMI per unit cost):

  python -m experiments.dfs --config=configs/dfs/breast_cancer.py:costs --workdir=runs/dfs_breast_cancer_costs

Tiny version: ``--config=configs/dfs/breast_cancer.py:smoke``.
"""

import ml_collections

from configs.dfs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Breast cancer, K = 10 features; ``arg='costs'`` random feature costs, ``'smoke'`` shrinks everything."""
  if arg not in (None, "", "smoke", "costs"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument, 'costs' or 'smoke'.")
  config = common.base()
  config.dataset = "breast_cancer"
  config.max_features = 10
  config.model.hidden_sizes = (64, 64)
  config.cae.budgets = (1, 2, 3, 5, 7, 10)
  config.report_budgets = (1, 2, 3, 4, 5, 7, 10)
  config.small_budgets = (1, 2, 3)
  config.sweeps.penalties = (0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
  if arg == "costs":
    config.costs = "random"
  if arg == "smoke":
    config = common.smoke(config)
    config.max_features = 4
  return config
