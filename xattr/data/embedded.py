"""scikit-learn's bundled tabular datasets as small, standardized, deterministic train/test splits.

These datasets ship inside scikit-learn's wheel, so loading them needs no network: they are the project's
default data for CPU runs and tests.

Example:
  >>> from xattr.data import embedded
  >>> ds = embedded.load("breast_cancer", seed=0)
  >>> ds.x_train.shape, ds.x_test.shape, ds.task, ds.class_names
  ((455, 30), (114, 30), 'classification', ('malignant', 'benign'))
  >>> bool(abs(ds.x_train.mean(0)).max() < 1e-5)
  True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from sklearn import datasets as sk_datasets
from sklearn import model_selection

__all__ = ["Dataset", "DATASETS", "load"]

# name -> (scikit-learn loader, task). Every loader reads files bundled with scikit-learn (no download).
DATASETS: dict[str, tuple[Callable[..., object], str]] = {
    "breast_cancer": (sk_datasets.load_breast_cancer, "classification"),
    "wine": (sk_datasets.load_wine, "classification"),
    "digits": (sk_datasets.load_digits, "classification"),
    "diabetes": (sk_datasets.load_diabetes, "regression"),
}


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A standardized train/test split of a tabular dataset (numpy arrays, host memory).

  Attributes:
    name: registry name.
    task: 'classification' (y int32 class indices) or 'regression' (y float32).
    x_train, x_test: float32[n, d], standardized with the training split's mean and scale.
    y_train, y_test: int32[n] or float32[n].
    feature_names: d names.
    class_names: class names (classification) or None (regression).
    mean, scale: float32[d] training statistics; raw features are ``x * scale + mean``.
  """

  name: str
  task: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  feature_names: tuple[str, ...]
  class_names: tuple[str, ...] | None
  mean: np.ndarray
  scale: np.ndarray

  @property
  def num_features(self) -> int:
    return self.x_train.shape[1]

  @property
  def num_classes(self) -> int | None:
    return None if self.class_names is None else len(self.class_names)

  def unstandardize(self, x: np.ndarray) -> np.ndarray:
    """Maps standardized features back to the dataset's original units."""
    return np.asarray(x) * self.scale + self.mean


def load(name: str, *, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
  """Loads a bundled dataset, splits it (stratified for classification) and standardizes it.

  Args:
    name: one of :data:`DATASETS` ('breast_cancer', 'wine', 'digits', 'diabetes').
    seed: seed of the split; the same seed always gives the same split.
    test_fraction: fraction of rows in the test split, in (0, 1).

  Returns:
    A frozen :class:`Dataset`. Features are standardized with the *training* mean and standard deviation
    (constant features get scale 1), so no test statistic leaks into the model.

  Raises:
    ValueError: unknown ``name`` (the message lists the known ones) or ``test_fraction`` outside (0, 1).
  """
  if name not in DATASETS:
    raise ValueError(f"Unknown embedded dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}.")
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}.")
  loader, task = DATASETS[name]
  bunch = loader()
  x = np.asarray(bunch.data, np.float64)
  y = np.asarray(bunch.target)
  classification = task == "classification"
  x_train, x_test, y_train, y_test = model_selection.train_test_split(
      x, y, test_size=test_fraction, random_state=int(seed), stratify=y if classification else None)
  mean = x_train.mean(0)
  scale = x_train.std(0)
  scale = np.where(scale > 0, scale, 1.0)    # constant columns (e.g. digits' border pixels) stay at 0
  standardize = lambda a: ((a - mean) / scale).astype(np.float32)
  y_dtype = np.int32 if classification else np.float32
  feature_names = getattr(bunch, "feature_names", None)
  if feature_names is None:
    feature_names = [f"x{i}" for i in range(x.shape[1])]
  class_names = tuple(str(c) for c in bunch.target_names) if classification else None
  return Dataset(
      name=name, task=task,
      x_train=standardize(x_train), y_train=y_train.astype(y_dtype),
      x_test=standardize(x_test), y_test=y_test.astype(y_dtype),
      feature_names=tuple(str(f) for f in feature_names), class_names=class_names,
      mean=mean.astype(np.float32), scale=scale.astype(np.float32))
