"""Datasets. ``embedded``: scikit-learn's bundled tabular datasets (no network), the default for CPU runs;
``source``: the one reader of arrays, ``.npz`` files and prepared TFDS datasets every job uses; ``images`` and
``mosaic``: image datasets built on it; ``contrastive``: target/background pairs; ``synthetic``: a generated
tabular task. Those four are imported on use (``from xattr.data import images``), so loading tabular data does
not import them.

Example:
  >>> from xattr import data
  >>> data.load_embedded("wine").class_names
  ('class_0', 'class_1', 'class_2')
"""

from xattr.data import embedded, source
from xattr.data.embedded import DATASETS as EMBEDDED_DATASETS
from xattr.data.embedded import Dataset
from xattr.data.embedded import load as load_embedded
from xattr.data.source import Source, from_arrays, from_npy, from_npz, from_tfds, resize

__all__ = ["Dataset", "EMBEDDED_DATASETS", "Source", "embedded", "from_arrays", "from_npy", "from_npz",
           "from_tfds", "load_embedded", "resize", "source"]
