"""Contrastive-analysis datasets: a *target* set (nuisance plus variation of interest) and a *background* set
(the same nuisance variation only), for contrastive feature selection (:mod:`xattr.cfs`).

* :func:`linear_gaussian` - ``x = A z + B s + noise`` with ``s = 0`` in the background; the salient features,
  loaded by ``B`` only, are known exactly. The nuisance features carry more variance than the salient ones, so a
  method that looks at the target alone is drawn to them.
* :func:`grassy_digits` - an offline "Grassy MNIST": scikit-learn's 8x8 digits upsampled and centred on a
  square canvas, superimposed on structured textures (oriented stripes at fixed frequencies with random
  amplitude and phase, contrast growing towards the borders, plus faint pixel noise); the background is textures
  alone. The digit-ink region is the ground truth, the digit labels the downstream task.
* :func:`load_files` - a user's own target/background arrays from ``.npz`` or CSV files (optional labels).

Everything is generated from a seed with numpy (no download, no network); the same seed gives the same arrays.

Example:
  >>> from xattr.data import contrastive
  >>> ds = contrastive.linear_gaussian(seed=0, num_target=100, num_background=80)
  >>> ds.target.shape, ds.background.shape, len(ds.salient)
  ((100, 60), (80, 60), 10)
  >>> bool(ds.background[:, ds.salient].std() < ds.target[:, ds.salient].std())
  True
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Sequence

import numpy as np
from sklearn import datasets as sk_datasets
from sklearn import model_selection

from xattr import _checks
from xattr.data.source import resize

__all__ = ["ContrastiveData", "check_pair", "linear_gaussian", "stripe_textures", "grassy_digits", "load_files",
           "read_table"]


@dataclasses.dataclass(frozen=True)
class ContrastiveData:
  """A target/background pair of feature matrices and what is known about them.

  Attributes:
    name: dataset name (reports, fingerprints).
    target: float32[n, d], the data whose enriched variation is wanted (selection is fitted on it).
    background: float32[m, d], nuisance variation only.
    target_labels: int32[n] labels of ``target`` for the downstream classifier, or None.
    test: float32[n_test, d] held-out target rows for the downstream classifier, or None.
    test_labels: int32[n_test] or None.
    salient: int[num_salient] indices of the features that carry the target-only variation, if known.
    ink: bool[d] ground-truth region (digit ink) for image data, if known.
    image_shape: (H, W) when features are pixels, else None.
    feature_names: d names, or None.
  """

  name: str
  target: np.ndarray
  background: np.ndarray
  target_labels: np.ndarray | None = None
  test: np.ndarray | None = None
  test_labels: np.ndarray | None = None
  salient: np.ndarray | None = None
  ink: np.ndarray | None = None
  image_shape: tuple[int, int] | None = None
  feature_names: tuple[str, ...] | None = None

  @property
  def num_features(self) -> int:
    return int(self.target.shape[1])

  @property
  def num_classes(self) -> int | None:
    return None if self.target_labels is None else int(self.target_labels.max()) + 1


def check_pair(target: np.ndarray, background: np.ndarray | None, *, target_name: str = "target",
               background_name: str = "background") -> tuple[np.ndarray, np.ndarray | None]:
  """Validates a target/background pair; returns them as float32 arrays.

  Raises:
    ValueError: not 2-D, no rows, or different numbers of features (both counts named in the message).
    FloatingPointError: NaN or inf values.

  Example:
    >>> t, b = check_pair(np.zeros((3, 2)), np.ones((4, 2)))
    >>> t.dtype, b.shape
    (dtype('float32'), (4, 2))
  """
  out = []
  for name, arr in ((target_name, target), (background_name, background)):
    if arr is None and name == background_name:
      out.append(None)
      continue
    arr = np.asarray(arr)
    if arr.ndim != 2:
      raise ValueError(f"{name} must be a 2-D array float[num_rows, num_features], got shape {arr.shape}.")
    if arr.shape[0] == 0:
      raise ValueError(f"{name} must have at least one row, got shape {arr.shape} (an empty {name}).")
    if not np.issubdtype(arr.dtype, np.number):
      raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}.")
    arr = arr.astype(np.float32)
    _checks.finite(name, arr, "Remove or impute those rows first.")
    out.append(arr)
  if out[1] is not None and out[1].shape[1] != out[0].shape[1]:
    raise ValueError(f"{target_name} and {background_name} must have the same number of features: {target_name} has "
                     f"{out[0].shape[1]}, {background_name} has {out[1].shape[1]}.")
  return out[0], out[1]


def linear_gaussian(*, seed: int = 0, num_target: int = 2000, num_background: int = 2000, num_nuisance: int = 30,
                    nuisance_dim: int = 10, num_salient: int = 10, num_noise: int = 20, nuisance_scale: float = 2.0,
                    salient_scale: float = 1.0, noise: float = 0.3, num_test: int = 0) -> ContrastiveData:
  """``x = A z + B s + noise``, ``s = 0`` in the background: the salient features are those loaded by B only.

  Columns are shuffled (seeded), so their position says nothing. ``z ~ N(0, I_nuisance_dim)`` loads
  ``num_nuisance`` features through ``A`` (entries ``N(0, nuisance_scale^2 / nuisance_dim)``), ``s ~ N(0,
  I_num_salient)`` loads ``num_salient`` other features through ``B`` (full rank, entries ``N(0, salient_scale^2 /
  num_salient)``), ``num_noise`` features are noise alone, and every feature gets ``N(0, noise^2)`` noise. Labels
  of the target (for a supervised baseline): ``y = [s_0 > 0] + 2 [s_1 > 0]``.

  Args:
    seed: the one source of randomness.
    num_target, num_background, num_test: rows (``num_test`` extra target rows for a downstream classifier).
    num_nuisance, nuisance_dim, num_salient, num_noise: block sizes.
    nuisance_scale, salient_scale, noise: standard deviations (per feature, roughly) of the three parts.

  Example:
    >>> ds = linear_gaussian(seed=1, num_target=50, num_background=50)
    >>> ds.num_features, sorted(ds.salient.tolist()) == sorted(set(ds.salient.tolist()))
    (60, True)
  """
  for name, v in (("num_target", num_target), ("num_background", num_background), ("num_nuisance", num_nuisance),
                  ("nuisance_dim", nuisance_dim), ("num_salient", num_salient)):
    _checks.positive_int(name, v)
  _checks.positive_int("num_noise", num_noise, minimum=0)
  _checks.positive_int("num_test", num_test, minimum=0)
  rng = np.random.default_rng(seed)
  d = num_nuisance + num_salient + num_noise
  a = rng.normal(0.0, nuisance_scale / np.sqrt(nuisance_dim), (nuisance_dim, num_nuisance))
  b = rng.normal(0.0, salient_scale / np.sqrt(num_salient), (num_salient, num_salient))
  perm = rng.permutation(d)                      # column j of the unshuffled layout goes to position perm[j]

  def rows(n: int, salient: bool) -> tuple[np.ndarray, np.ndarray]:
    x = np.zeros((n, d))
    x[:, :num_nuisance] = rng.normal(size=(n, nuisance_dim)) @ a
    s = rng.normal(size=(n, num_salient)) if salient else np.zeros((n, num_salient))
    x[:, num_nuisance:num_nuisance + num_salient] = s @ b
    x += rng.normal(0.0, noise, x.shape)
    out = np.empty_like(x)
    out[:, perm] = x
    return out.astype(np.float32), ((s[:, 0] > 0) + 2 * (s[:, 1 % num_salient] > 0)).astype(np.int32)

  target, labels = rows(num_target, True)
  background, _ = rows(num_background, False)
  test, test_labels = rows(num_test, True) if num_test else (None, None)
  salient = np.sort(perm[num_nuisance:num_nuisance + num_salient]).astype(np.int32)
  return ContrastiveData("linear_gaussian", target, background, labels, test, test_labels, salient,
                         feature_names=tuple(f"x{j}" for j in range(d)))


def stripe_textures(rng: np.random.Generator, num: int, image_size: int, *, frequencies: Sequence[float],
                    orientations: Sequence[float], amplitude: float, center_gain: float, noise: float) -> np.ndarray:
  """Structured textures float32[num, image_size, image_size]: oriented stripes with random amplitude and phase.

  For every (frequency, orientation) pair a stripe ``a cos(w.p) + b sin(w.p)`` with ``a, b ~ N(0, amplitude^2)``
  (a random phase and contrast), summed, times a fixed contrast map that grows linearly from ``center_gain`` at
  the centre to 1 + center_gain at the corners, plus ``N(0, noise^2)`` pixel noise. The stripes span a linear
  subspace of dimension 2 * len(frequencies) * len(orientations).

  Example:
    >>> t = stripe_textures(np.random.default_rng(0), 3, 8, frequencies=[0.2], orientations=[0.0], amplitude=0.3,
    ...                     center_gain=0.25, noise=0.01)
    >>> t.shape
    (3, 8, 8)
  """
  yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float64)
  c = (image_size - 1) / 2
  radius = np.hypot(yy - c, xx - c)
  gain = center_gain + radius / radius.max()
  bases = []
  for f in frequencies:
    for theta in orientations:
      phase = 2 * np.pi * f * (xx * np.cos(theta) + yy * np.sin(theta))
      bases += [np.cos(phase), np.sin(phase)]
  bases = np.stack(bases) * gain                                      # [2J, H, W]
  coef = rng.normal(0.0, amplitude, (num, len(bases)))
  out = np.einsum("nj,jhw->nhw", coef, bases) + rng.normal(0.0, noise, (num, image_size, image_size))
  return out.astype(np.float32)


def _placed_digits(image_size: int, digit_size: int) -> tuple[np.ndarray, np.ndarray]:
  raw = sk_datasets.load_digits()
  small = np.stack([resize((im / 16.0).astype(np.float32), digit_size)[..., 0] for im in raw.images])
  canvas = np.zeros((len(small), image_size, image_size), np.float32)
  o = (image_size - digit_size) // 2
  canvas[:, o:o + digit_size, o:o + digit_size] = small
  return canvas, raw.target.astype(np.int32)


def grassy_digits(*, seed: int = 0, image_size: int = 16, digit_size: int = 12, num_background: int = 2000,
                  test_fraction: float = 0.25, frequencies: Sequence[float] = (0.25, 0.4),
                  orientations: Sequence[float] = (0.0, 0.785, 1.571, 2.356), amplitude: float = 0.25,
                  center_gain: float = 0.25, noise: float = 0.05, ink_threshold: float = 0.1) -> ContrastiveData:
  """Digits on structured textures (target) and textures alone (background), flattened to pixel features.

  Each of scikit-learn's 1,797 8x8 digits is upsampled to ``digit_size`` (bilinear, [0, 1]) and centred on an
  ``image_size`` canvas; every target image adds its own texture (:func:`stripe_textures`), and the background
  is ``num_background`` further textures. The digits are split (stratified by class, seeded) into the target
  rows the selection is fitted on and held-out test rows for the downstream classifier. ``ink`` marks the pixels
  whose mean digit intensity (over all digits) exceeds ``ink_threshold``.

  Example:
    >>> ds = grassy_digits(seed=0, num_background=10)
    >>> ds.target.shape[1], ds.image_shape, ds.background.shape, int(ds.ink.sum()) > 50
    (256, (16, 16), (10, 256), True)
  """
  if not isinstance(digit_size, int) or not 8 <= digit_size <= image_size:
    raise ValueError(f"digit_size must be an int in [8, image_size={image_size}], got {digit_size!r}.")
  _checks.positive_int("num_background", num_background)
  rng = np.random.default_rng(seed)
  digits, labels = _placed_digits(image_size, digit_size)
  texture = lambda n: stripe_textures(rng, n, image_size, frequencies=frequencies, orientations=orientations,
                                      amplitude=amplitude, center_gain=center_gain, noise=noise)
  target = (digits + texture(len(digits))).reshape(len(digits), -1)
  background = texture(num_background).reshape(num_background, -1)
  tr, te = model_selection.train_test_split(np.arange(len(labels)), test_size=test_fraction, random_state=seed,
                                            stratify=labels)
  ink = digits.mean(0).reshape(-1) > ink_threshold
  return ContrastiveData("grassy_digits", target[tr], background, labels[tr], target[te], labels[te], ink=ink,
                         image_shape=(image_size, image_size))


def read_table(path: str | os.PathLike, *, name: str, x_key: str = "x", label_key: str = "y",
               label_column: str | None = None, require_label: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
  """Features and optional labels from an ``.npz`` file (arrays ``x_key``, ``label_key``) or a numeric CSV.

  A CSV may start with a header row; ``label_column`` (a header name) is then taken out as the labels (a missing
  column raises unless ``require_label`` is False). ``name`` is the argument name used in error messages.

  Example:
    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = open(p, "w").write("a,b,label\\n1,2,0\\n3,4,1\\n")
    >>> x, y = read_table(p, name="target", label_column="label")
    >>> x.tolist(), y.tolist()
    ([[1.0, 2.0], [3.0, 4.0]], [0, 1])
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{name} must be an existing .npz or .csv file, got {path!r}.")
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as f:
      if x_key not in f.files:
        raise KeyError(f"{name} file {path} must hold an array {x_key!r} (x_key); it holds {sorted(f.files)}.")
      return f[x_key], (f[label_key].astype(np.int32) if label_key in f.files else None)
  if not path.endswith(".csv"):
    raise ValueError(f"{name} must be a .npz or .csv file, got {path!r}.")
  with open(path, newline="") as f:
    rows = [r for r in csv.reader(f) if r]
  header = None
  try:
    float(rows[0][0])
  except (ValueError, IndexError):
    header, rows = rows[0], rows[1:]
  try:
    table = np.array(rows, np.float64)
  except ValueError as err:
    raise ValueError(f"{name} file {path} must hold numbers only (after an optional header row): {err}.") from err
  if label_column is None or header is None or label_column not in header:
    if label_column is not None and require_label:
      raise KeyError(f"{name} file {path} has no column {label_column!r} (label_column); header: {header}.")
    return table, None
  j = header.index(label_column)
  return np.delete(table, j, axis=1), table[:, j].astype(np.int32)


def load_files(target_path: str | os.PathLike, background_path: str | os.PathLike, *, x_key: str = "x",
               label_key: str = "y", label_column: str | None = None, test_fraction: float = 0.25,
               seed: int = 0) -> ContrastiveData:
  """A user's target and background data from ``.npz`` or CSV files (see :func:`read_table`), checked.

  When the target has labels, a stratified ``test_fraction`` of its rows (seeded) is held out for the downstream
  classifier; the selection never sees them.

  Raises:
    FileNotFoundError, KeyError: missing files or arrays; ValueError / FloatingPointError: see
    :func:`check_pair`.

  Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> np.savez(os.path.join(folder, "t.npz"), x=np.ones((8, 3)), y=np.arange(8) % 2)
    >>> np.savez(os.path.join(folder, "b.npz"), x=np.zeros((5, 3)))
    >>> ds = load_files(os.path.join(folder, "t.npz"), os.path.join(folder, "b.npz"))
    >>> ds.target.shape, ds.test.shape, ds.background.shape
    ((6, 3), (2, 3), (5, 3))
  """
  x_t, y_t = read_table(target_path, name="target_path", x_key=x_key, label_key=label_key, label_column=label_column)
  x_b, _ = read_table(background_path, name="background_path", x_key=x_key, label_key=label_key,
                      label_column=label_column, require_label=False)
  target, background = check_pair(x_t, x_b, target_name="target_path", background_name="background_path")
  name = os.path.splitext(os.path.basename(os.fspath(target_path)))[0]
  if y_t is None:
    return ContrastiveData(name, target, background)
  if len(y_t) != len(target):
    raise ValueError(f"target_path labels must have one entry per row ({len(target)}), got {len(y_t)}.")
  counts = np.bincount(y_t - y_t.min())
  stratify = y_t if counts[counts > 0].min() >= 2 else None
  tr, te = model_selection.train_test_split(np.arange(len(y_t)), test_size=test_fraction, random_state=seed,
                                            stratify=stratify)
  return ContrastiveData(name, target[tr], background, y_t[tr], target[te], y_t[te])
