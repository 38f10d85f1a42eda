"""A dynamic feature selection problem: one seed's splits, feature groups, feature costs and pictures.

:func:`load` builds the :class:`Problem` a study runs on from a config (the ``configs/dfs`` fields): an embedded
scikit-learn classification dataset (standardized with training statistics), the synthetic :mod:`oracle`
problem, or a prepared TFDS image dataset (``'tfds:<name>'``, read through :func:`xattr.data.from_tfds`; pixels
become features in [0, 1]). Each seed has its own train/validation split; ``patch_size`` groups pixels into
square patches, which are then the players; :func:`costs` gives the players' acquisition costs.

Example:
  >>> import ml_collections
  >>> from xattr.selection import problem
  >>> config = ml_collections.ConfigDict(dict(
  ...     dataset="digits", data_dir=None, tfds_limit=None, patch_size=2, test_fraction=0.2, val_fraction=0.15,
  ...     num_test=10, costs="uniform", model=dict(kind="mlp", vit="mu/2"), oracle=dict()))
  >>> p = problem.load(config, seed=0)
  >>> p.num_features, p.num_players, p.image_shape, len(p.test["y"]), p.test_images.shape
  (64, 16, (8, 8), 10, (10, 8, 8))
  >>> problem.costs("uniform", 3).tolist()
  [1.0, 1.0, 1.0]
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from xattr import data as data_lib
from xattr import masks
from xattr.models import vit
from xattr.selection import oracle

__all__ = ["COSTS", "Problem", "split_validation", "costs", "oracle_spec", "read_tfds", "load"]

COSTS = ("uniform", "random")


class Problem(NamedTuple):
  """One seed's data and the selection problem's structure.

  Attributes:
    train, val, test: ``{"x": float32[n, ...], "y": int32[n]}`` (``x`` is ``[n, H, W, 1]`` for ViT models).
    num_classes: number of classes.
    groups: bool[num_players, num_features], or None when the players are the features.
    costs: float32[num_players] acquisition cost of each player.
    image_shape: ``(H, W)`` of image data, else None.
    test_images: float[n_test, H, W] test images in original units (for pictures), else None.
  """

  train: dict[str, np.ndarray]
  val: dict[str, np.ndarray]
  test: dict[str, np.ndarray]
  num_classes: int
  groups: np.ndarray | None
  costs: np.ndarray
  image_shape: tuple[int, int] | None
  test_images: np.ndarray | None

  @property
  def num_features(self) -> int:
    return int(np.prod(self.train["x"].shape[1:]))

  @property
  def num_players(self) -> int:
    return self.num_features if self.groups is None else self.groups.shape[0]


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float, seed: int
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """A seeded (train, validation) split of ``(x, y)``; the validation part holds ``fraction`` of the rows (>= 1).

  Example:
    >>> train, val = split_validation(np.arange(10.0), np.arange(10), 0.2, seed=0)
    >>> len(train["y"]), len(val["y"]), sorted(train["y"].tolist() + val["y"].tolist()) == list(range(10))
    (8, 2, True)
  """
  rng = np.random.default_rng([seed, 1])
  perm = rng.permutation(len(x))
  n_val = max(1, int(round(fraction * len(x))))
  val, train = perm[:n_val], perm[n_val:]
  return {"x": x[train], "y": y[train]}, {"x": x[val], "y": y[val]}


def costs(kind: str, num_players: int) -> np.ndarray:
  """The players' acquisition costs: ``'uniform'`` (all 1) or ``'random'`` (fixed draws in [0.5, 2]).

  The random costs are the same for every seed: they are part of the problem, not a source of seed variance.

  Raises:
    ValueError: ``kind`` is not one of :data:`COSTS`.

  Example:
    >>> c = costs("random", 4)
    >>> c.dtype, bool((c >= 0.5).all() and (c <= 2.0).all()), bool((c == costs("random", 4)).all())
    (dtype('float32'), True, True)
  """
  if kind == "uniform":
    return np.ones(num_players, np.float32)
  if kind == "random":
    return np.random.default_rng(12345).uniform(0.5, 2.0, num_players).astype(np.float32)
  raise ValueError(f"config.costs must be 'uniform' or 'random', got {kind!r}.")


def oracle_spec(config: Any) -> oracle.Spec:
  """The :class:`oracle.Spec` of a config's ``oracle`` section (``flips_a``, ``flips_b``, ``num_distractors``).

  Example:
    >>> oracle_spec({"oracle": {"flips_a": (0.1,), "flips_b": (0.2,), "num_distractors": 1}}).num_distractors
    1
  """
  section = config["oracle"]
  return oracle.Spec(tuple(section["flips_a"]), tuple(section["flips_b"]), section["num_distractors"])


def read_tfds(name: str, data_dir: str | None, split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
  """A prepared TFDS image split as ``(float32 images [n, H, W], int32 labels)``.

  Images stored with a channel axis keep their first channel only (grayscale ``[H, W, 1]`` -> ``[H, W]``).

  Args:
    name: TFDS name (``'mnist'``).
    data_dir: folder holding the prepared dataset (nothing is downloaded).
    split: split name.
    limit: read only the first ``limit`` examples (None: all).
  """
  source = data_lib.from_tfds(name, data_dir=data_dir, split=split, feature_key="image", label_key="label",
                              max_examples=limit)
  images, labels = source.read_all()
  images = np.asarray(images, np.float32)
  if images.ndim == 4:
    images = images[..., 0]
  return images, np.asarray(labels, np.int32)


def _raw_splits(config: Any, seed: int) -> tuple[np.ndarray, ...]:
  """(x_train, y_train, x_test, y_test, num_classes, image_shape, test_images) before the validation split."""
  name = config.dataset
  if name == "oracle":
    spec = oracle_spec(config)
    key = jax.random.fold_in(jax.random.key(seed), 7)
    x_train, y_train = oracle.sample(jax.random.fold_in(key, 0), spec, config.oracle.num_train)
    x_test, y_test = oracle.sample(jax.random.fold_in(key, 1), spec, config.oracle.num_test)
    return x_train, y_train, x_test, y_test, oracle.NUM_CLASSES, None, None
  if name.startswith("tfds:"):
    tr_img, y_train = read_tfds(name[5:], config.data_dir, "train", config.tfds_limit)
    te_img, y_test = read_tfds(name[5:], config.data_dir, "test", config.tfds_limit)
    scale = max(float(tr_img.max()), 1.0)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return (tr_img.reshape(len(tr_img), -1) / scale, y_train, te_img.reshape(len(te_img), -1) / scale, y_test,
            num_classes, tuple(tr_img.shape[1:3]), te_img / scale)
  ds = data_lib.load_embedded(name, seed=seed, test_fraction=config.test_fraction)
  if ds.task != "classification":
    raise ValueError(f"dfs needs a classification dataset; {name!r} is a {ds.task} task.")
  image_shape, test_images = None, None
  if name == "digits":
    image_shape, test_images = (8, 8), ds.unstandardize(ds.x_test).reshape(-1, 8, 8)
  return ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.num_classes, image_shape, test_images


def _check_model(config: Any, image_shape: tuple[int, int] | None) -> None:
  if config.model.kind == "vit":
    vit_patch = vit.config(config.model.vit, image_size=image_shape).patch_size if image_shape else None
    if image_shape is None or vit_patch != config.patch_size:
      raise ValueError(f"model.kind='vit' needs an image dataset and patch_size equal to the ViT's patch size "
                       f"({config.model.vit!r}); got dataset {config.dataset!r}, patch_size={config.patch_size}.")
  elif config.model.kind != "mlp":
    raise ValueError(f"config.model.kind must be 'mlp' or 'vit', got {config.model.kind!r}.")


def load(config: Any, seed: int) -> Problem:
  """The seed's splits (features standardized with training statistics), groups and costs.

  Args:
    config: a ``configs/dfs`` config (reads ``dataset``, ``data_dir``, ``tfds_limit``, ``test_fraction``,
      ``val_fraction``, ``num_test``, ``patch_size``, ``costs``, ``model.kind``/``model.vit`` and ``oracle``).
    seed: the seed (its own split of the data; the oracle's own samples).

  Raises:
    ValueError: a regression dataset, ``patch_size`` on non-image data, a ViT whose patch differs from
      ``patch_size``, or an unknown ``model.kind`` or ``costs``.
  """
  x_train, y_train, x_test, y_test, num_classes, image_shape, test_images = _raw_splits(config, seed)
  train, val = split_validation(np.asarray(x_train, np.float32), np.asarray(y_train, np.int32),
                                config.val_fraction, seed)
  test = {"x": np.asarray(x_test, np.float32), "y": np.asarray(y_test, np.int32)}
  if config.num_test is not None:
    test = {k: v[:config.num_test] for k, v in test.items()}
    test_images = None if test_images is None else test_images[:config.num_test]
  groups = None
  if config.patch_size:
    if image_shape is None:
      raise ValueError(f"patch_size={config.patch_size} needs an image dataset, got {config.dataset!r}.")
    groups = masks.patch_groups(image_shape, config.patch_size)
  num_players = train["x"].shape[1] if groups is None else groups.shape[0]
  _check_model(config, image_shape)
  if config.model.kind == "vit":
    # The ViT sees images [N, H, W, 1]; its patches are the players (and the groups of the pictures).
    for split in (train, val, test):
      split["x"] = split["x"].reshape(-1, *image_shape, 1)
  return Problem(train, val, test, int(num_classes), groups, costs(config.costs, num_players), image_shape,
                 test_images)
