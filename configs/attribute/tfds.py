"""Attributions for a TFDS image dataset read from your own ``data_dir`` with a converted (pretrained) ViT.

Prepare the dataset once where there is network access (xattr never downloads), convert the checkpoint, then:

  python -m xattr.models.convert --src weights/vit.safetensors --dst weights/vit_xattr --image_size 224
  python -m experiments.attribute --config=configs/attribute/tfds.py:cifar10 --config.data.data_dir=/data/tfds \
      --config.model.path=weights/vit_xattr --workdir=runs/attribute_cifar10

Or the models of a vit_shapley TFDS workdir (configs/vit_shapley/tfds.py) with ``arg='vit_shapley'``:

  python -m experiments.attribute --config=configs/attribute/tfds.py:vit_shapley \
      --config.model.workdir=runs/vit_shapley_imagenette --config.data.data_dir=/data/tfds --workdir=runs/attr_inet

Examples are read from the array_record files chunk by chunk, so memory stays bounded whatever the split size.
"""

import ml_collections

from configs.attribute.base import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = arg or "cifar10"
  config = base_config()
  config.target = "predicted"
  config.kernel_shap.update(num_samples=2048, batch_size=256)
  config.chunk_size = 64
  config.report.curve_steps = 20
  if arg == "vit_shapley":
    config.method = "explainer"
    config.removal = "surrogate"
    config.model.kind = "vit_shapley"
    config.model.config = "configs/vit_shapley/tfds.py:imagenette"
  else:
    config.removal = "attention"
    config.model.kind = "vit"
    config.data.name = arg                  # e.g. cifar10, imagenette/320px-v2
    config.data.image_size = 224
  return config
