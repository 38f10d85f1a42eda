"""Datasets. ``embedded``: scikit-learn's bundled tabular datasets (no network), the default for CPU runs.

Example:
  >>> from xattr import data
  >>> data.load_embedded("wine").class_names
  ('class_0', 'class_1', 'class_2')
"""

from xattr.data import embedded
from xattr.data.embedded import DATASETS as EMBEDDED_DATASETS
from xattr.data.embedded import Dataset
from xattr.data.embedded import load as load_embedded

__all__ = ["Dataset", "EMBEDDED_DATASETS", "embedded", "load_embedded"]
