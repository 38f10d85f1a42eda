"""One data source for every job: in-memory arrays, ``.npz`` files and prepared TFDS datasets, read lazily.

A :class:`Source` is a sequence of labelled examples that a job reads a range at a time (``read(start, end)``),
so a dataset larger than memory is never loaded whole, and :meth:`Source.read_all` gives the arrays of a small
one. Every driver and loader builds its data through :func:`from_arrays`, :func:`from_npz` or :func:`from_tfds`.

TFDS datasets are read with TFDS array_record data sources from a ``data_dir`` prepared beforehand (no
TensorFlow, nothing downloaded): images are centre-cropped and resized (:func:`resize`), vector features can be
flattened to float32.

Example:
  >>> import numpy as np
  >>> from xattr.data import source
  >>> src = source.from_arrays("toy", np.arange(12.0).reshape(6, 2), np.arange(6) % 2)
  >>> src.num_examples, src.example_shape, src.class_names
  (6, (2,), ('0', '1'))
  >>> x, y = src.read(2, 4)
  >>> x.tolist(), y.tolist()
  ([[4.0, 5.0], [6.0, 7.0]], [0, 1])
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["PREPARE_HINT", "Source", "resize", "from_arrays", "from_npz", "from_npy", "from_tfds", "tfds_builder"]

PREPARE_HINT = ("Prepare it once on a machine with network access, e.g.\n"
                "  python -c \"import tensorflow_datasets as tfds; tfds.data_source('{name}', data_dir='{data_dir}')\"\n"
                "(or `tfds build {name} --data_dir={data_dir} --file_format=array_record`), then copy that folder "
                "here and pass it as data_dir. xattr never downloads at run time.")


@dataclasses.dataclass(frozen=True)
class Source:
  """Labelled examples read a range at a time.

  Attributes:
    name: dataset name (for reports and fingerprints).
    num_examples: how many examples can be read.
    example_shape: shape of one example (``(H, W, C)`` images, ``(d,)`` vectors).
    read: ``(start, end) -> (x[end - start, ...], labels int32[end - start])``.
    class_names: one name per class.
    feature_names: one name per feature (vector data), else None.
    identity: what identifies the data for fingerprints (path, TFDS name/split/settings, or an array hash).
  """

  name: str
  num_examples: int
  example_shape: tuple[int, ...]
  read: Callable[[int, int], tuple[np.ndarray, np.ndarray]]
  class_names: tuple[str, ...]
  feature_names: tuple[str, ...] | None = None
  identity: tuple = ()

  @property
  def is_image(self) -> bool:
    return len(self.example_shape) == 3

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def read_all(self) -> tuple[np.ndarray, np.ndarray]:
    """Every example as two arrays (only for data that fits in memory)."""
    return self.read(0, self.num_examples)

  def head(self, max_examples: int | None) -> Source:
    """The same source limited to its first ``max_examples`` examples (None: unchanged)."""
    if max_examples is None:
      return self
    n = min(self.num_examples, int(max_examples))
    return dataclasses.replace(self, num_examples=n, identity=(*self.identity, ("head", n)))


def _check_range(src_name: str, n: int, start: int, end: int) -> None:
  if not 0 <= start <= end <= n:
    raise ValueError(f"read(start, end) of source {src_name!r} needs 0 <= start <= end <= {n}, got ({start}, {end}).")


def _class_names(class_names: Sequence[str] | None, y: np.ndarray) -> tuple[str, ...]:
  if class_names is not None:
    return tuple(str(c) for c in class_names)
  return tuple(str(c) for c in range(int(y.max()) + 1 if len(y) else 0))


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """Centre-crops an image to a square and resizes it bilinearly: float32 ``[size, size, C]`` in [0, 1].

  uint8 images are scaled by 1/255; float images are taken to be in [0, 1] already; 2-D images get a channel.

  Example:
    >>> resize(np.full((10, 20), 255, np.uint8), 4).shape, float(resize(np.full((10, 20), 255, np.uint8), 4).max())
    ((4, 4, 1), 1.0)
  """
  from PIL import Image

  if not isinstance(size, (int, np.integer)) or size < 1:
    raise ValueError(f"size must be a positive int, got {size!r}.")
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3:
    raise ValueError(f"image must have shape [H, W] or [H, W, C], got {image.shape}.")
  h, w = image.shape[:2]
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  image = image[top:top + s, left:left + s]
  image = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)

  def channel(c: np.ndarray) -> np.ndarray:
    out = Image.fromarray(np.asarray(c, np.float32)).resize((int(size), int(size)), Image.BILINEAR)
    return np.clip(np.asarray(out), 0.0, 1.0).astype(np.float32)

  return np.stack([channel(image[..., c]) for c in range(image.shape[-1])], -1)


def from_arrays(name: str, x: np.ndarray, y: np.ndarray, *, class_names: Sequence[str] | None = None,
                feature_names: Sequence[str] | None = None, max_examples: int | None = None) -> Source:
  """A source over arrays in memory (``x[N, ...]``, integer labels ``y[N]``)."""
  x, y = np.asarray(x), np.asarray(y)
  if len(x) != len(y):
    raise ValueError(f"x and y must have the same number of rows, got x {x.shape} and y {y.shape}.")
  n = len(x)

  def read(start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    _check_range(name, n, start, end)
    return x[start:end], y[start:end].astype(np.int32)

  from xattr import artifacts
  identity = ("arrays", name, artifacts.data_identity([x, y]))
  src = Source(name, n, tuple(x.shape[1:]), read, _class_names(class_names, y),
               tuple(feature_names) if feature_names is not None else None, identity)
  return src.head(max_examples)


def from_npz(path: str | os.PathLike, *, x_key: str = "x", y_key: str = "y", name: str | None = None,
             class_names: Sequence[str] | None = None, max_examples: int | None = None) -> Source:
  """A source over an ``.npz`` file holding ``x_key`` (examples) and ``y_key`` (labels) arrays.

  Class names come from ``class_names``, else from a ``class_names`` array in the file, else ``'0', '1', ...``;
  feature names from a ``feature_names`` array if present.

  Raises:
    FileNotFoundError: no such file.
    KeyError: the file lacks ``x_key`` or ``y_key`` (the message lists what it holds).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"path must be an existing .npz file, got {path!r}.")
  with np.load(path, allow_pickle=False) as f:
    missing = [k for k in (x_key, y_key) if k not in f.files]
    if missing:
      raise KeyError(f"{path} must hold arrays {missing} (x_key/y_key); it holds {sorted(f.files)}.")
    x, y = f[x_key], f[y_key]
    if class_names is None and "class_names" in f.files:
      class_names = [str(c) for c in f["class_names"]]
    feature_names = [str(c) for c in f["feature_names"]] if "feature_names" in f.files else None
  src = from_arrays(name or os.path.splitext(os.path.basename(path))[0], x, y, class_names=class_names,
                    feature_names=feature_names, max_examples=max_examples)
  return dataclasses.replace(src, identity=("npz", os.path.abspath(path), *src.identity[2:]))


class _NpyFile:
  """An ``.npy`` file read a row range at a time by file offset (no mapping: pages read are not kept resident)."""

  def __init__(self, path: str, arg: str):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{arg} must be an existing .npy file, got {path!r}.")
    with open(path, "rb") as f:
      version = np.lib.format.read_magic(f)
      read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                     else np.lib.format.read_array_header_2_0)
      shape, fortran, dtype = read_header(f)
      self.offset = f.tell()
    if fortran or dtype.hasobject or not shape:
      raise ValueError(f"{arg} must be a C-ordered numeric .npy array with a leading example axis, got shape "
                       f"{shape}, dtype {dtype}{', Fortran order' if fortran else ''} in {path!r}.")
    self.path, self.shape, self.dtype = path, tuple(shape), dtype
    self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

  def read(self, start: int, end: int) -> np.ndarray:
    with open(self.path, "rb") as f:
      f.seek(self.offset + start * self.row_bytes)
      flat = np.fromfile(f, self.dtype, count=(end - start) * self.row_bytes // self.dtype.itemsize)
    return flat.reshape((end - start, *self.shape[1:]))

  def digest(self, block_rows: int) -> str:
    """sha256 of the array bytes, read ``block_rows`` at a time (bounded memory)."""
    h = hashlib.sha256(repr((self.shape, str(self.dtype))).encode())
    for start in range(0, self.shape[0], block_rows):
      h.update(self.read(start, min(start + block_rows, self.shape[0])).tobytes())
    return h.hexdigest()[:16]


def from_npy(x_path: str | os.PathLike, y_path: str | os.PathLike, *, name: str | None = None,
             class_names: Sequence[str] | None = None, feature_names: Sequence[str] | None = None,
             max_examples: int | None = None, block_rows: int = 4096) -> Source:
  """A source over ``.npy`` files of examples and labels on disk, read one range at a time (bounded memory).

  For datasets larger than memory: nothing is loaded whole, not even to fingerprint it (its identity hashes the
  files ``block_rows`` rows at a time), so a job's memory does not grow with the number of rows. Write such
  files with ``np.lib.format.open_memmap`` chunk by chunk.

  Args:
    x_path: ``x[N, ...]`` examples.
    y_path: ``y[N]`` integer labels.
    name: dataset name (default: the file name of ``x_path``).
    class_names: one per class (default ``'0'...``: read from the labels' maximum, one block at a time).
    feature_names: one per feature of vector data.
    max_examples: read only the first rows.
    block_rows: rows per read while hashing and scanning labels.

  Raises:
    FileNotFoundError: a path is not a file.
    ValueError: the arrays are not numeric, C-ordered, or disagree on the number of rows.

  Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> np.save(f"{d}/x.npy", np.arange(12.0).reshape(6, 2)); np.save(f"{d}/y.npy", np.arange(6) % 3)
    >>> src = from_npy(f"{d}/x.npy", f"{d}/y.npy")
    >>> src.num_examples, src.class_names, src.read(4, 6)[0].tolist()
    (6, ('0', '1', '2'), [[8.0, 9.0], [10.0, 11.0]])
  """
  xf, yf = _NpyFile(os.fspath(x_path), "x_path"), _NpyFile(os.fspath(y_path), "y_path")
  if yf.shape[0] != xf.shape[0] or len(yf.shape) != 1:
    raise ValueError(f"y_path must hold one label per example of x_path: x has shape {xf.shape}, y {yf.shape}.")
  n = xf.shape[0]
  src_name = name or os.path.splitext(os.path.basename(os.fspath(x_path)))[0]

  def read(start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    _check_range(src_name, n, start, end)
    return xf.read(start, end), yf.read(start, end).astype(np.int32)

  if class_names is None:
    top = max((int(yf.read(s, min(s + block_rows, n)).max()) for s in range(0, n, block_rows)), default=-1)
    class_names = [str(c) for c in range(top + 1)]
  identity = ("npy", os.path.abspath(os.fspath(x_path)), xf.digest(block_rows), yf.digest(block_rows))
  src = Source(src_name, n, xf.shape[1:], read, tuple(str(c) for c in class_names),
               tuple(feature_names) if feature_names is not None else None, identity)
  return src.head(max_examples)


def tfds_builder(name: str, data_dir: str | os.PathLike | None):
  """The TFDS builder of a dataset prepared in ``data_dir`` (never downloads).

  Raises:
    FileNotFoundError: ``data_dir`` is not a folder, or the dataset is not prepared in it (the message says how to
      prepare it).
  """
  hint = PREPARE_HINT.format(name=name, data_dir=data_dir or "/path/to/tfds")
  if not data_dir or not os.path.isdir(data_dir):
    raise FileNotFoundError(f"data_dir for TFDS dataset {name!r} must be an existing folder, got {data_dir!r}. "
                            + hint)
  import tensorflow_datasets as tfds   # deferred: seconds of import that embedded runs need not pay

  try:
    return tfds.builder(name, data_dir=os.fspath(data_dir))
  except Exception as err:   # TFDS raises several types (AssertionError, DatasetNotFoundError, ...)
    raise FileNotFoundError(f"TFDS dataset {name!r} is not prepared in data_dir={os.fspath(data_dir)!r} "
                            f"({type(err).__name__}: {err}). " + hint) from err


def from_tfds(name: str, *, data_dir: str | os.PathLike | None, split: str, feature_key: str = "image",
              label_key: str = "label", image_size: int | None = None, flatten: bool = False,
              max_examples: int | None = None) -> Source:
  """A prepared TFDS dataset read lazily (array_record data source: only the asked rows are decoded).

  Args:
    name: TFDS name, e.g. ``'cifar10'``, ``'mnist'``.
    data_dir: the folder holding the prepared dataset.
    split: split name (``'train'``, ``'test[:10%]'``, ...).
    feature_key, label_key: feature names of the example and its class label.
    image_size: resize images (centre crop, bilinear, [0, 1]) to this side; None keeps the stored values.
    flatten: turn each example into a float32 vector (tabular use of images or vector features).
    max_examples: read at most this many.

  Raises:
    FileNotFoundError: see :func:`tfds_builder`.
    KeyError: ``feature_key`` or ``label_key`` is not a feature of the dataset.
  """
  builder = tfds_builder(name, data_dir)
  features = builder.info.features
  for arg, key in (("feature_key", feature_key), ("label_key", label_key)):
    if key not in features:
      raise KeyError(f"{arg} must be a feature of TFDS dataset {name!r} ({sorted(features.keys())}), got {key!r}.")
  try:
    data = builder.as_data_source(split=split)
  except Exception as err:
    raise FileNotFoundError(f"TFDS dataset {name!r} (split {split!r}) is not prepared in data_dir="
                            f"{os.fspath(data_dir)!r} as a random-access (array_record) source "
                            f"({type(err).__name__}: {err}). "
                            + PREPARE_HINT.format(name=name, data_dir=data_dir)) from err
  label = features[label_key]
  class_names = tuple(label.names) if getattr(label, "names", None) else tuple(map(str, range(label.num_classes)))

  def example(i: int) -> np.ndarray:
    value = data[i][feature_key]
    if image_size is not None:
      value = resize(value, image_size)
    value = np.asarray(value)
    return value.astype(np.float32).reshape(-1) if flatten else value

  n = len(data)

  def read(start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    _check_range(name, n, start, end)
    rows = range(start, end)
    return (np.stack([example(i) for i in rows]) if end > start else np.zeros((0, *shape)),
            np.asarray([int(data[i][label_key]) for i in rows], np.int32))

  shape = tuple(example(0).shape) if n else ()
  identity = ("tfds", name, os.path.abspath(os.fspath(data_dir)), split, feature_key, label_key, image_size, flatten)
  return Source(name, n, shape, read, class_names, None, identity).head(max_examples)
