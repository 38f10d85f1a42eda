"""Adversarial shortcuts on single-digit 2x2 mosaics (32x32, offline; the digit sits in a random cell on noise).

Run (from the repository root; CPU is enough):

  python -m experiments.shortcuts --config=configs/shortcuts/mosaic.py --workdir=runs/shortcuts_mosaic

Tiny version for tests:

  python -m experiments.shortcuts --config=configs/shortcuts/mosaic.py:smoke --workdir=/tmp/shortcuts_mosaic
"""

import ml_collections

from configs.shortcuts import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Single-digit mosaics, 2000 train / 500 test; ``arg='smoke'`` shrinks everything."""
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'smoke'.")
  config = common.base()
  config.data.name = "mosaic"
  config.data.max_train = 2000
  config.data.max_test = 500
  config.train.num_steps = 800
  if arg == "smoke":
    config = common.smoke(config)
    config.data.max_train = 256
    config.data.max_test = 100
  return config
