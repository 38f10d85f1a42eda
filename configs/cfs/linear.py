"""Contrastive feature selection on the linear-Gaussian benchmark (the salient features are known exactly).

Run (from the repository root; CPU is enough):

  python -m experiments.cfs --config=configs/cfs/linear.py --workdir=runs/cfs_linear

Tiny version for tests (seconds):

  python -m experiments.cfs --config=configs/cfs/linear.py:smoke --workdir=/tmp/cfs_linear_smoke

``x = A z + B s + noise`` with ``s = 0`` in the background (:func:`xattr.data.contrastive.linear_gaussian`): 30
nuisance features driven by 10 latent factors (larger variance), 10 salient features loaded by B only, 20 noise
features. Reported: the recovery rate of the salient features against k.
"""

import ml_collections

from configs.cfs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Linear-Gaussian, 60 features, 10 salient; ``arg='smoke'`` shrinks everything."""
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'smoke'.")
  config = common.base()
  config.dataset = "linear"
  config.data = ml_collections.ConfigDict({"num_target": 2000, "num_background": 2000, "num_test": 1000})
  config.budgets = (5, 10, 15, 20)
  if arg == "smoke":
    config = common.smoke(config)
    config.budgets = (10,)
    config.methods = ("cfs", "cae", "laplacian", "variance", "pca")
    config.data.num_target = 1000
    config.data.num_background = 1000
    config.data.num_test = 0
  return config
