"""Image classification datasets as in-memory arrays: scikit-learn digits (embedded) and TFDS (user ``data_dir``).

Images are float32 [N, H, W, C] in [0, 1] (channels last, what :class:`xattr.models.vit.ViT` takes), labels int32.
Zero is "black", so pixel-level removal with zeros (``removal="zero_input"``) means a blank patch.

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download), upsampled bilinearly
  to ``image_size`` (32 by default, i.e. a 4x4 grid of 8x8 patches: 16 players, small enough for exact Shapley).
* any TFDS image classification dataset (``cifar10``, ``imagenette``, ``oxford_iiit_pet``, ...) read with
  ``tfds.data_source`` from a ``data_dir`` prepared beforehand (array_record format; no TensorFlow needed and
  nothing is downloaded at run time), centre-cropped and resized to ``image_size``.

Example:
  >>> from xattr.data import images
  >>> ds = images.load("digits", image_size=32)
  >>> ds.x_train.shape, ds.x_test.shape, ds.num_classes
  ((1437, 32, 32, 1), (360, 32, 32, 1), 10)
  >>> bool(ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0)
  True
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from sklearn import datasets as sk_datasets
from sklearn import model_selection

from xattr.data import source
from xattr.data.source import PREPARE_HINT, resize

__all__ = ["ImageDataset", "load", "digits", "from_tfds", "resize", "PREPARE_HINT"]



@dataclasses.dataclass(frozen=True)
class ImageDataset:
  """A train/test split of an image classification dataset (numpy arrays in host memory).

  Attributes:
    name: dataset name.
    x_train, x_test: float32[N, H, W, C] in [0, 1].
    y_train, y_test: int32[N].
    class_names: one name per class.
  """

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  class_names: tuple[str, ...]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


def digits(*, image_size: int = 32, seed: int = 0, test_fraction: float = 0.2) -> ImageDataset:
  """scikit-learn's 8x8 digits as ``image_size`` x ``image_size`` grayscale images (stratified split).

  Args:
    image_size: output side length (>= 8); 32 with 8x8 patches gives 16 players.
    seed: seeds the train/test split.
    test_fraction: share of images in the test split.
  """
  if not isinstance(image_size, int) or image_size < 8:
    raise ValueError(f"image_size must be an int >= 8 (digits are 8x8), got {image_size!r}.")
  raw = sk_datasets.load_digits()
  pixels = (raw.images / 16.0).astype(np.float32)               # [1797, 8, 8] in [0, 1]
  x = np.stack([resize(p, image_size) for p in pixels])               # [1797, size, size, 1]
  y = raw.target.astype(np.int32)
  tr, te = model_selection.train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=seed,
                                            stratify=y)
  return ImageDataset("digits", x[tr], y[tr], x[te], y[te], tuple(str(c) for c in range(10)))


def from_tfds(name: str, *, data_dir: str | os.PathLike | None, image_size: int = 224, train_split: str = "train",
              test_split: str = "test", max_train: int | None = None, max_test: int | None = None) -> ImageDataset:
  """Reads a prepared TFDS image classification dataset from ``data_dir`` (never downloads).

  Args:
    name: TFDS name, e.g. 'cifar10', 'imagenette/320px-v2', 'oxford_iiit_pet'.
    data_dir: the folder holding the prepared dataset.
    image_size: output side length.
    train_split, test_split: TFDS split names (e.g. 'validation' for imagenette).
    max_train, max_test: read at most this many examples (None: all).

  Raises:
    FileNotFoundError: ``data_dir`` missing or the dataset not prepared in it (the message says how to prepare it).
  """
  train = source.from_tfds(name, data_dir=data_dir, split=train_split, image_size=image_size, max_examples=max_train)
  test = source.from_tfds(name, data_dir=data_dir, split=test_split, image_size=image_size, max_examples=max_test)
  x_train, y_train = train.read_all()
  x_test, y_test = test.read_all()
  return ImageDataset(name, x_train, y_train, x_test, y_test, train.class_names)


def load(name: str, *, image_size: int = 32, data_dir: str | os.PathLike | None = None, seed: int = 0,
         **kwargs) -> ImageDataset:
  """``'digits'`` (embedded) or a TFDS name read from ``data_dir``; ``kwargs`` go to :func:`from_tfds`."""
  if name == "digits":
    if kwargs:
      raise ValueError(f"digits takes no TFDS options, got {sorted(kwargs)}.")
    return digits(image_size=image_size, seed=seed)
  return from_tfds(name, data_dir=data_dir, image_size=image_size, **kwargs)
