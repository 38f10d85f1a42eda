"""Dynamic feature selection on scikit-learn's 8x8 digits, 64 pixels as features (the default experiment).

Run (from the repository root; CPU is enough: about 11 minutes on a busy 2-core box, 5 seeds):

  python -m experiments.dfs --config=configs/dfs/digits.py --workdir=runs/dfs_digits

Tiny version for tests (seconds):

  python -m experiments.dfs --config=configs/dfs/digits.py:smoke --workdir=/tmp/dfs_smoke

Override any field, e.g. ``--config.seeds='(0,)' --config.methods='("gdfs","random")'``.
"""

import ml_collections

from configs.dfs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Digits, 64 single-pixel players, K = 20; ``arg='smoke'`` shrinks everything."""
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'smoke'.")
  config = common.base()
  config.dataset = "digits"
  config.max_features = 20
  if arg == "smoke":
    config = common.smoke(config)
    config.max_features = 5
  return config
