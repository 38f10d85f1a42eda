"""Attributions for the digits test images of a trained ViT Shapley workdir (masked ViT, 16 patches of 8x8).

Train the models once (see configs/vit_shapley/digits.py), then explain every test image with the trained
explainer (one forward pass per image) or any other method on the surrogate's attention-masking game:

  python -m experiments.vit_shapley --config=configs/vit_shapley/digits.py --workdir=runs/vit_shapley
  python -m experiments.attribute --config=configs/attribute/digits.py --workdir=runs/attribute_digits
  python -m experiments.attribute --config=configs/attribute/digits.py --config.method=kernel_shap \
      --workdir=runs/attribute_digits_ks

``arg='smoke'`` reads the smoke vit_shapley config (``--config.model.workdir`` must then be a workdir it trained).
"""

import ml_collections

from configs.attribute.base import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'smoke'.")
  config = base_config()
  config.method = "explainer"
  config.target = "predicted"
  config.removal = "surrogate"
  config.chunk_size = 32
  config.model.kind = "vit_shapley"
  config.model.config = "configs/vit_shapley/digits.py"
  config.model.workdir = "runs/vit_shapley"
  config.kernel_shap.update(num_samples=256, batch_size=128)
  if arg == "smoke":
    config.model.config = "configs/vit_shapley/digits.py:smoke"
    config.chunk_size = 4
    config.data.max_examples = 8
    config.kernel_shap.update(num_samples=32, batch_size=16)
    config.report.num_images = 2
    config.progress = False
  return config
