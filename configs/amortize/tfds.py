"""The amortization study on a TFDS tabular dataset (a vector feature and a class label), read with
``tfds.data_source`` from a prepared ``data_dir`` (never downloads).

Run (from the repository root):

  python -m experiments.amortize --config=configs/amortize/tfds.py \
      --config.tfds.data_dir=/path/to/tensorflow_datasets --workdir=runs/amortize_penguins

Default dataset 'penguins/processed' (4 features, 3 species); other datasets via ``--config.tfds.name``,
``--config.tfds.feature_key``, ``--config.tfds.label_key``. Tiny version for tests: ``tfds.py:smoke``.
"""

import ml_collections

from configs.amortize.base import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """TFDS source; ``arg='smoke'`` shrinks every budget."""
  config = base_config(("tfds",), arg)
  config.source = "tfds"
  config.tfds.name = "penguins/processed"
  return config
