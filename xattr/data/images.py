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
from PIL import Image
from sklearn import datasets as sk_datasets
from sklearn import model_selection

__all__ = ["ImageDataset", "load", "digits", "from_tfds", "PREPARE_HINT"]

PREPARE_HINT = ("Prepare it once on a machine with network access, e.g.\n"
                "  python -c \"import tensorflow_datasets as tfds; tfds.data_source('{name}', data_dir='{data_dir}')\"\n"
                "(or `tfds build {name} --data_dir={data_dir} --file_format=array_record`), then copy that folder "
                "here and pass it as data_dir. xattr never downloads at run time.")


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


def _resize_float(channel: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of one float channel [h, w] already in [0, 1]."""
  out = Image.fromarray(np.asarray(channel, np.float32)).resize((size, size), Image.BILINEAR)
  return np.clip(np.asarray(out), 0.0, 1.0).astype(np.float32)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
  """Centre-crops to a square and resizes bilinearly; float32 [size, size, C] in [0, 1]."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  h, w = image.shape[:2]
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  image = image[top:top + s, left:left + s]
  image = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
  return np.stack([_resize_float(image[..., c], size) for c in range(image.shape[-1])], -1)


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
  x = np.stack([_resize_float(p, image_size) for p in pixels])[..., None]
  y = raw.target.astype(np.int32)
  tr, te = model_selection.train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=seed,
                                            stratify=y)
  return ImageDataset("digits", x[tr], y[tr], x[te], y[te], tuple(str(c) for c in range(10)))


def _read_split(source, image_size: int, max_examples: int | None) -> tuple[np.ndarray, np.ndarray]:
  n = len(source) if max_examples is None else min(len(source), int(max_examples))
  xs, ys = [], []
  for i in range(n):
    example = source[i]
    xs.append(_resize(example["image"], image_size))
    ys.append(int(example["label"]))
  return np.stack(xs), np.asarray(ys, np.int32)


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
  import tensorflow_datasets as tfds   # deferred: importing TFDS costs seconds that digits users need not pay

  hint = PREPARE_HINT.format(name=name, data_dir=data_dir or "/path/to/tfds")
  if data_dir is None or not os.path.isdir(data_dir):
    raise FileNotFoundError(f"data_dir for TFDS dataset {name!r} must be an existing folder, got {data_dir!r}. "
                            + hint)
  try:
    builder = tfds.builder(name, data_dir=os.fspath(data_dir))
    sources = {split: builder.as_data_source(split=split) for split in (train_split, test_split)}
  except Exception as err:   # TFDS raises several types (AssertionError, DatasetNotFoundError, ...)
    raise FileNotFoundError(f"TFDS dataset {name!r} is not prepared in data_dir={os.fspath(data_dir)!r} "
                            f"({type(err).__name__}: {err}). " + hint) from err
  x_train, y_train = _read_split(sources[train_split], image_size, max_train)
  x_test, y_test = _read_split(sources[test_split], image_size, max_test)
  label = builder.info.features["label"]
  class_names = tuple(label.names) if getattr(label, "names", None) else tuple(map(str, range(label.num_classes)))
  return ImageDataset(name, x_train, y_train, x_test, y_test, class_names)


def load(name: str, *, image_size: int = 32, data_dir: str | os.PathLike | None = None, seed: int = 0,
         **kwargs) -> ImageDataset:
  """``'digits'`` (embedded) or a TFDS name read from ``data_dir``; ``kwargs`` go to :func:`from_tfds`."""
  if name == "digits":
    if kwargs:
      raise ValueError(f"digits takes no TFDS options, got {sorted(kwargs)}.")
    return digits(image_size=image_size, seed=seed)
  return from_tfds(name, data_dir=data_dir, image_size=image_size, **kwargs)
