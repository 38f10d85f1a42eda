"""Dynamic feature selection on scikit-learn's 8x8 digits with masked ViTs: 16 patches of 2x2 pixels are the players.

The predictor, the GDFS policy and the DIME value network are small Vision Transformers (xattr.models.vit, 'mu'
size) that hold unselected patches out by attention masking.

Run (from the repository root; CPU, several minutes on 2 cores):

  python -m experiments.dfs --config=configs/dfs/digits_vit.py --workdir=runs/dfs_digits_vit

Tiny version: ``--config=configs/dfs/digits_vit.py:smoke``.
"""

import ml_collections

from configs.dfs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Digits as 8x8x1 images, ViT 'mu/2' networks, K = 10 patches; ``arg='smoke'`` shrinks everything."""
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'smoke'.")
  config = common.base()
  config.dataset = "digits"
  config.patch_size = 2
  config.model.kind = "vit"
  config.model.vit = "mu/2"
  config.max_features = 10
  config.pretrain.num_steps = 3000
  config.pretrain.learning_rate = 1e-3
  config.cae.budgets = (1, 2, 3, 5, 7, 10)
  config.report_budgets = (1, 2, 3, 4, 5, 7, 10)
  config.small_budgets = (1, 2, 3)
  if arg == "smoke":
    config = common.smoke(config)
    config.model.vit = "nano/2"
    config.max_features = 3
  return config
