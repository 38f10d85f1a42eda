"""FastSHAP on images: digits through the masked-ViT pipeline of experiments.vit_shapley (surrogate + ViT explainer).

Run (from the repository root):

  python -m experiments.fastshap --config=configs/fastshap/digits.py --workdir=runs/fastshap_digits

Tiny version for tests: ``--config=configs/fastshap/digits.py:smoke``. This is the same job as
``python -m experiments.vit_shapley --config=configs/vit_shapley/digits.py`` (its fields live under ``config.vit``).
"""

import ml_collections

from configs.vit_shapley import digits as vit_digits


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The image FastSHAP job; ``arg='smoke'`` is the ViT Shapley smoke config."""
  config = ml_collections.ConfigDict()
  config.modality = "images"
  config.vit = vit_digits.get_config(arg)
  return config
