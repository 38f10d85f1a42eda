"""Contrastive feature selection on grassy digits: scikit-learn digits on structured textures (offline).

Run (from the repository root; CPU is enough):

  python -m experiments.cfs --config=configs/cfs/grassy_digits.py --workdir=runs/cfs_grassy

Tiny version for tests (seconds):

  python -m experiments.cfs --config=configs/cfs/grassy_digits.py:smoke --workdir=/tmp/cfs_grassy_smoke

Target: the 1,797 digits upsampled to 12x12 on a 16x16 canvas plus stripe textures whose contrast grows towards
the borders; background: textures alone (:func:`xattr.data.contrastive.grassy_digits`). Reported: digit accuracy
of a classifier on the k selected pixels (k in 5, 10, 20, 40; 5 seeds), overlap with the digit-ink region, and
maps of the selected pixels. Override any field, e.g. ``--config.seeds='(0,)'``.
"""

import ml_collections

from configs.cfs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Grassy digits, 256 pixel features; ``arg='smoke'`` shrinks everything."""
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'smoke'.")
  config = common.base()
  config.dataset = "grassy_digits"
  config.data = ml_collections.ConfigDict({"image_size": 16, "digit_size": 12, "num_background": 2000})
  if arg == "smoke":
    config = common.smoke(config)
    config.budgets = (20,)
    config.methods = ("cfs", "cae", "laplacian", "variance", "pca")
    config.data.num_background = 1000
    config.plots.map_budgets = (20,)
  return config
