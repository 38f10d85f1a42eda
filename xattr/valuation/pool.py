"""The training pool a valuation job values: data from a config, label noise, and the utility trained on it.

A :class:`Pool` holds the training points (labels possibly flipped), their clean labels and the validation set
the utility U(D) is scored on. :func:`load_pool` builds it from a config: embedded scikit-learn data,
precomputed embeddings in an ``.npz`` (arrays ``x_train``, ``y_train``, ``x_val``, ``y_val``) or a prepared TFDS
dataset (read through :func:`xattr.data.from_tfds`) or the synthetic pool of :mod:`xattr.data.scaling_pool`
(points whose scaling laws differ by construction; the pool then knows each point's group); then :func:`make_pool`
caps the pool (stratified), projects it (PCA) and flips a fraction of its labels, all seeded. :func:`make_utility`
builds U from a ``model`` section.

Example:
  >>> import numpy as np
  >>> from xattr.valuation import pool
  >>> rng = np.random.default_rng(0)
  >>> x, y = rng.normal(size=(40, 3)).astype(np.float32), np.arange(40) % 2
  >>> p = pool.make_pool("toy", x, y, x[:10], y[:10], 2, seed=0, label_noise=0.25)
  >>> int(p.flipped.sum()), p.features.shape
  (10, (40, 5))
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn import decomposition, model_selection

from xattr import data as data_lib
from xattr.data import scaling_pool
from xattr.valuation import utility

__all__ = ["Pool", "standardize", "flip_labels", "make_pool", "read_arrays", "load_pool", "make_utility",
           "SOURCES", "MODELS"]

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, str]


@dataclasses.dataclass(frozen=True)
class Pool:
  """The training pool (labels possibly corrupted) and the validation set U scores on.

  Attributes:
    name: dataset name (for the report).
    x, y: float32[n, f] features and int32[n] (possibly flipped) labels of the pool.
    y_clean: int32[n] the labels before flipping.
    x_val, y_val: the validation set.
    num_classes: number of classes.
    groups: int32[n] each point's group (index into ``group_names``) where the source knows it, else None.
    group_names: the groups' names (``()`` without groups).
  """

  name: str
  x: np.ndarray
  y: np.ndarray
  y_clean: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  num_classes: int
  groups: np.ndarray | None = None
  group_names: tuple[str, ...] = ()

  @property
  def flipped(self) -> np.ndarray:
    """bool[n]: which labels were flipped."""
    return self.y != self.y_clean

  @property
  def features(self) -> np.ndarray:
    """Inputs of the amortized networks: the point's features and its (possibly wrong) one-hot label."""
    return np.concatenate([self.x, np.eye(self.num_classes, dtype=np.float32)[self.y]], 1)

  @property
  def arrays(self) -> tuple[np.ndarray, ...]:
    """The pool's arrays (what fingerprints of results computed on it hash)."""
    return self.x, self.y, self.y_clean, self.x_val, self.y_val


def standardize(x_train: np.ndarray, x_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Both arrays shifted and scaled by the training columns' mean and std (constant columns: scale 1), float32.

  Example:
    >>> a, b = standardize(np.array([[0.0, 1.0], [2.0, 1.0]]), np.array([[1.0, 3.0]]))
    >>> a.tolist(), b.tolist()
    ([[-1.0, 0.0], [1.0, 0.0]], [[0.0, 2.0]])
  """
  mean, scale = x_train.mean(0), x_train.std(0)
  scale = np.where(scale > 0, scale, 1.0)
  return ((x_train - mean) / scale).astype(np.float32), ((x_val - mean) / scale).astype(np.float32)


def flip_labels(y: np.ndarray, num_classes: int, fraction: float, seed: int) -> np.ndarray:
  """A copy of ``y`` with ``round(fraction * n)`` labels (chosen by ``seed``) moved to another class at random.

  Example:
    >>> y = np.zeros(10, np.int32)
    >>> int((flip_labels(y, 3, 0.3, seed=0) != y).sum())
    3
  """
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"label_noise must lie in [0, 1], got {fraction}.")
  rng = np.random.default_rng([seed, 1])
  y_clean = np.asarray(y).astype(np.int32)
  flip = rng.choice(len(y_clean), int(round(fraction * len(y_clean))), replace=False)
  y_noisy = y_clean.copy()
  y_noisy[flip] = (y_clean[flip] + rng.integers(1, num_classes, len(flip))) % num_classes
  return y_noisy


def make_pool(name: str, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, num_classes: int, *,
              seed: int, max_pool: int | None = None, pca_dims: int | None = None, label_noise: float = 0.0) -> Pool:
  """A pool from arrays: at most ``max_pool`` points (stratified), ``pca_dims`` whitened principal components
  (fitted on the pool), then ``label_noise`` of the labels flipped (:func:`flip_labels`)."""
  if max_pool and max_pool < len(x):
    x, _, y, _ = model_selection.train_test_split(x, y, train_size=max_pool, random_state=seed, stratify=y)
  if pca_dims:
    pca = decomposition.PCA(pca_dims, whiten=True, random_state=seed).fit(x)
    x, x_val = pca.transform(x).astype(np.float32), pca.transform(x_val).astype(np.float32)
  y_clean = np.asarray(y).astype(np.int32)
  y_noisy = flip_labels(y_clean, num_classes, label_noise, seed)
  return Pool(name, np.asarray(x, np.float32), y_noisy, y_clean, np.asarray(x_val, np.float32),
              np.asarray(y_val).astype(np.int32), int(num_classes))


def _read_embedded(config: Any) -> Arrays:
  ds = data_lib.load_embedded(config.dataset, seed=config.seed, test_fraction=config.test_fraction)
  if ds.task != "classification":
    raise ValueError(f"data valuation values points of a classification pool; config.dataset={config.dataset!r} "
                     f"is a {ds.task} task (use xattr.valuation.RidgeRegression with the samplers directly).")
  return ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.num_classes, ds.name


def _read_npz(config: Any) -> Arrays:
  if not config.npz_path:
    raise ValueError("source='npz' needs config.npz_path (arrays x_train, y_train, x_val, y_val), got "
                     f"{config.npz_path!r}.")
  name = os.path.basename(config.npz_path)
  train = data_lib.from_npz(config.npz_path, x_key="x_train", y_key="y_train", name=name).read_all()
  val = data_lib.from_npz(config.npz_path, x_key="x_val", y_key="y_val", name=name).read_all()
  (x, y), (x_val, y_val) = train, val
  x, x_val = standardize(x.reshape(len(x), -1).astype(np.float32), x_val.reshape(len(x_val), -1).astype(np.float32))
  return x, y, x_val, y_val, int(max(y.max(), y_val.max()) + 1), name


def _read_tfds(config: Any) -> Arrays:
  t = config.tfds
  if not t.name:
    raise ValueError(f"source='tfds' needs config.tfds.name (and config.tfds.data_dir), got {t.name!r}.")

  def split(name: str, limit: int) -> data_lib.Source:
    return data_lib.from_tfds(t.name, data_dir=t.data_dir, split=name, feature_key=t.feature_key,
                              label_key=t.label_key, flatten=True, max_examples=int(limit))

  train = split(t.train_split, t.max_train)
  (x, y), (x_val, y_val) = train.read_all(), split(t.val_split, t.max_val).read_all()
  x, x_val = standardize(x, x_val)
  return x, y, x_val, y_val, train.num_classes, t.name


def _synthetic(config: Any) -> scaling_pool.ScalingPool:
  if config.max_pool or config.pca_dims:
    raise ValueError(f"source='synthetic' draws its pool to size (config.synthetic.num_train): config.max_pool and "
                     f"config.pca_dims must be unset, got {config.max_pool} and {config.pca_dims}.")
  return scaling_pool.make(seed=config.seed, **config.synthetic.to_dict())


def _read_synthetic(config: Any) -> Arrays:
  p = _synthetic(config)
  return p.x_train, p.y_train, p.x_val, p.y_val, 2, "synthetic"


SOURCES: dict[str, Callable[[Any], Arrays]] = {"embedded": _read_embedded, "npz": _read_npz, "tfds": _read_tfds,
                                               "synthetic": _read_synthetic}


def read_arrays(config: Any) -> Arrays:
  """``(x, y, x_val, y_val, num_classes, name)`` of ``config.source`` (a key of :data:`SOURCES`).

  Args:
    config: a valuation config (``configs/valuation/base.py``): ``source``, and ``dataset``, ``seed``,
      ``test_fraction`` (embedded), ``npz_path`` (npz), the ``tfds`` section (tfds) or the ``synthetic`` section
      (synthetic: the keyword arguments of :func:`xattr.data.scaling_pool.make`).
  """
  if config.source not in SOURCES:
    raise ValueError(f"config.source must be one of {sorted(SOURCES)}, got {config.source!r}.")
  return SOURCES[config.source](config)


def load_pool(config: Any) -> Pool:
  """Loads the data (:func:`read_arrays`), caps and projects the pool, and flips ``label_noise`` of its labels.

  Example:
    >>> from configs.valuation import breast_cancer
    >>> p = load_pool(breast_cancer.get_config("smoke"))
    >>> p.x.shape, int(p.flipped.sum())
    ((80, 30), 12)
  """
  x, y, x_val, y_val, num_classes, name = read_arrays(config)
  pool = make_pool(name, x, y, x_val, y_val, num_classes, seed=config.seed, max_pool=config.max_pool,
                   pca_dims=config.pca_dims, label_noise=config.label_noise)
  if config.source == "synthetic":       # same rows in the same order: the generator's groups apply
    p = _synthetic(config)
    pool = dataclasses.replace(pool, groups=p.groups_train, group_names=p.group_names)
  return pool


def _logistic(model: Any, pool: Pool, seed: int) -> utility.LogisticRegression:
  del seed   # Newton steps from the size path: deterministic
  return utility.LogisticRegression.create(
      pool.x, pool.y, pool.x_val, pool.y_val, num_classes=pool.num_classes, l2=model.l2,
      path_steps=model.get("path_steps", 5), newton_steps=model.newton_steps, chord_steps=model.chord_steps, add_newton_steps=model.add_newton_steps,
      add_chord_steps=model.add_chord_steps, refine_steps=model.get("refine_steps", 4))


def _mlp(model: Any, pool: Pool, seed: int) -> utility.MLPClassifier:
  return utility.MLPClassifier.create(pool.x, pool.y, pool.x_val, pool.y_val, num_classes=pool.num_classes,
                                      hidden_sizes=model.hidden_sizes, learning_rate=model.learning_rate,
                                      num_steps=model.num_steps, seed=seed)


MODELS: dict[str, Callable[[Any, Pool, int], utility.Utility]] = {"logistic": _logistic, "mlp": _mlp}


def make_utility(model: Any, pool: Pool, *, seed: int = 0) -> utility.Utility:
  """The utility U(D) of ``model.kind`` (a key of :data:`MODELS`) on ``pool``, built from a ``model`` section.

  Example:
    >>> import ml_collections
    >>> rng = np.random.default_rng(0); x = rng.normal(size=(30, 2)).astype(np.float32); y = np.arange(30) % 2
    >>> model = ml_collections.ConfigDict(dict(kind="logistic", l2=1.0, newton_steps=8, chord_steps=2,
    ...                                        add_newton_steps=5, add_chord_steps=2))
    >>> make_utility(model, make_pool("toy", x, y, x, y, 2, seed=0)).num_points
    30
  """
  if model.kind not in MODELS:
    raise ValueError(f"config.model.kind must be one of {sorted(MODELS)}, got {model.kind!r}.")
  return MODELS[model.kind](model, pool, seed)
