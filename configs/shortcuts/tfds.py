"""Adversarial shortcuts on a TFDS image dataset prepared in a user data_dir (default cifar10; never downloads).

Run (from the repository root; prepare the dataset once as the error message explains):

  python -m experiments.shortcuts --config=configs/shortcuts/tfds.py --workdir=runs/shortcuts_cifar10 \
      --config.data.data_dir=/path/to/tensorflow_datasets

Another dataset: ``--config.data.name=tfds:mnist --config.data.image_size=32``. Smoke variant (tests use TFDS mock
data): ``--config=configs/shortcuts/tfds.py:smoke``.
"""

import ml_collections

from configs.shortcuts import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """cifar10 at 32x32 with flips in the augmentation defence; ``arg='smoke'`` shrinks everything."""
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'smoke'.")
  config = common.base()
  config.data.name = "tfds:cifar10"
  config.data.image_size = 32
  config.data.max_train = 10000
  config.data.max_test = 2000
  config.cnn.channels = (32, 64)
  config.train.num_steps = 2000
  config.augment.flip = True
  config.augment.crop_padding = 4
  if arg == "smoke":
    config = common.smoke(config)
    config.data.max_train = 64
    config.data.max_test = 32
    config.train.num_steps = 10
    config.train.batch_size = 32
  return config
