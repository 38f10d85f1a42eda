"""Digit mosaics: an offline patch-level semantics benchmark with per-patch multi-hot class labels.

Locality alignment asks whether a ViT's patch tokens say *what is in that patch*. Real benchmarks for this
(Patch-Seg on COCO/ADE20K) reduce segmentation masks to the patch grid; they need downloads. This module builds a
small stand-in from scikit-learn's bundled digits: each image is a ``grid x grid`` mosaic of digit tiles on a noisy
background, some cells left empty, each tile shifted by a random ``jitter`` so digits can straddle patch borders.
A patch is labelled with every digit class that has ink (pixel value above ``ink_threshold``) inside it, so the
labels are multi-hot sets per patch (empty for background patches), and the image-level label is their union: the
only supervision a CLIP-like "image-level" backbone gets.

Train and test mosaics are built from disjoint digit images (sklearn's order, shuffled with ``seed``).

:func:`patch_labels_from_segmentation` reduces a per-pixel class map to the same per-patch multi-hot form, and
:func:`from_tfds_segmentation` reads a TFDS segmentation dataset from disk (never downloading) into a
:class:`MosaicDataset`, so real datasets plug into the same probes.

Example:
  >>> from xattr.data import mosaic
  >>> ds = mosaic.digit_mosaics(num_train=8, num_test=4, grid=2, tile_size=16, patch_size=8, seed=0)
  >>> ds.x_train.shape, ds.patch_train.shape, ds.y_train.shape
  ((8, 32, 32, 1), (8, 16, 10), (8, 10))
  >>> bool((ds.patch_train.any(1) == ds.y_train).all())      # image labels = union of the patch labels
  True
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from xattr import _checks
from xattr.data.source import resize as _resize_image

__all__ = ["MosaicDataset", "digit_mosaics", "patch_labels_from_segmentation", "from_tfds_segmentation", "describe"]


@dataclasses.dataclass(frozen=True)
class MosaicDataset:
  """Images with image-level and patch-level multi-hot labels.

  Attributes:
    x_train, x_test: float32 ``[N, H, W, C]`` in [0, 1].
    y_train, y_test: bool ``[N, num_classes]``, classes present anywhere in the image.
    patch_train, patch_test: bool ``[N, num_patches, num_classes]``, classes present in each patch (row-major grid).
    patch_size: side of the square patches the labels refer to.
    class_names: one name per class.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  patch_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  patch_test: np.ndarray
  patch_size: int
  class_names: tuple[str, ...]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def grid(self) -> tuple[int, int]:
    h, w = self.x_train.shape[1:3]
    return h // self.patch_size, w // self.patch_size


def _patch_any(pixel_mask: np.ndarray, patch_size: int) -> np.ndarray:
  """bool[N, H, W] -> bool[N, gh * gw]: does the patch hold any True pixel (row-major patches)."""
  n, h, w = pixel_mask.shape
  p = patch_size
  return pixel_mask.reshape(n, h // p, p, w // p, p).any(axis=(2, 4)).reshape(n, -1)


def patch_labels_from_segmentation(segmentation: np.ndarray, patch_size: int, num_classes: int, *,
                                   min_fraction: float = 0.0, ignore_index: int | None = None) -> np.ndarray:
  """Per-pixel class maps ``int[N, H, W]`` -> per-patch multi-hot ``bool[N, num_patches, num_classes]``.

  A patch gets class ``c`` when more than ``min_fraction`` of its pixels have class ``c`` (0: any pixel). Pixels
  equal to ``ignore_index`` (e.g. 255 for "void", or 0 for background) count for no class.

  Example:
    >>> seg = np.array([[[0, 0, 1, 1], [0, 0, 1, 2], [3, 3, 3, 3], [3, 3, 3, 3]]])
    >>> patch_labels_from_segmentation(seg, 2, 4, ignore_index=0)[0].astype(int).tolist()
    [[0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1]]
  """
  seg = np.asarray(segmentation)
  if seg.ndim != 3 or not np.issubdtype(seg.dtype, np.integer):
    raise ValueError(f"segmentation must be int[N, H, W] class maps, got {seg.dtype} of shape {seg.shape}.")
  p = _checks.positive_int("patch_size", patch_size)
  k = _checks.positive_int("num_classes", num_classes)
  if seg.shape[1] % p or seg.shape[2] % p:
    raise ValueError(f"segmentation height and width {seg.shape[1:]} must be divisible by patch_size {p}.")
  n, h, w = seg.shape
  patches = seg.reshape(n, h // p, p, w // p, p).transpose(0, 1, 3, 2, 4).reshape(n, -1, p * p)
  onehot = patches[..., None] == np.arange(k)                    # [N, P, p*p, K]
  if ignore_index is not None and 0 <= ignore_index < k:
    onehot[..., ignore_index] = False
  return onehot.mean(axis=2) > min_fraction


def digit_mosaics(*, num_train: int = 4000, num_test: int = 1000, grid: int = 2, tile_size: int = 16,
                  patch_size: int = 8, jitter: int = 2, empty_prob: float = 0.2, noise: float = 0.15,
                  ink_threshold: float = 0.3, seed: int = 0, test_fraction: float = 0.3) -> MosaicDataset:
  """Mosaics of ``grid x grid`` scikit-learn digits (upsampled to ``tile_size``) on noise, with patch labels.

  Args:
    num_train, num_test: mosaics to build.
    grid: digits per side; the image side is ``grid * tile_size``.
    tile_size: side of each digit tile (the 8x8 digits are resized to it).
    patch_size: side of the patches the labels refer to (must divide the image side).
    jitter: each tile is shifted by a uniform offset in ``[-jitter, jitter]`` pixels (per axis; clipped at the
      border), so a patch can hold parts of two digits.
    empty_prob: probability that a cell holds no digit.
    noise: standard deviation of the Gaussian background noise (clipped to [0, 1]).
    ink_threshold: a digit pixel above this value marks its patch with the digit's class.
    seed: seeds the digit split, the layout and the noise.
    test_fraction: fraction of the digit images reserved for test mosaics.

  Returns:
    A :class:`MosaicDataset` with 10 classes and 1 channel.
  """
  from sklearn.datasets import load_digits

  num_train = _checks.positive_int("num_train", num_train)
  num_test = _checks.positive_int("num_test", num_test)
  grid = _checks.positive_int("grid", grid)
  tile = _checks.positive_int("tile_size", tile_size, minimum=2)
  p = _checks.positive_int("patch_size", patch_size)
  jitter = _checks.positive_int("jitter", jitter, minimum=0)
  empty_prob = _checks.probability("empty_prob", empty_prob)
  side = grid * tile
  if side % p:
    raise ValueError(f"patch_size ({p}) must divide the image side grid * tile_size = {side}.")
  digits = load_digits()
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(digits.target))
  n_test_digits = int(round(test_fraction * len(order)))
  tiles = np.stack([_resize_image(im / 16.0, tile)[..., 0] for im in digits.images]).astype(np.float32)
  labels = digits.target.astype(np.int64)

  def build(pool: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    canvas = np.clip(rng.normal(0.0, noise, (n, side, side)), 0.0, 1.0).astype(np.float32)
    patch = np.zeros((n, (side // p) ** 2, 10), bool)
    rows = np.arange(n)[:, None, None]
    for cell in range(grid * grid):
      pick = pool[rng.integers(0, len(pool), n)]
      present = rng.random(n) >= empty_prob
      top = np.clip((cell // grid) * tile + rng.integers(-jitter, jitter + 1, n), 0, side - tile)
      left = np.clip((cell % grid) * tile + rng.integers(-jitter, jitter + 1, n), 0, side - tile)
      r = top[:, None, None] + np.arange(tile)[None, :, None]
      c = left[:, None, None] + np.arange(tile)[None, None, :]
      digit = tiles[pick] * present[:, None, None]
      canvas[rows, r, c] = np.maximum(canvas[rows, r, c], digit)
      ink = np.zeros((n, side, side), bool)
      ink[rows, r, c] = digit > ink_threshold
      patch[np.arange(n)[:, None], np.arange(patch.shape[1])[None, :], labels[pick][:, None]] |= _patch_any(ink, p)
    return canvas[..., None], patch

  x_train, patch_train = build(order[n_test_digits:], num_train)
  x_test, patch_test = build(order[:n_test_digits], num_test)
  return MosaicDataset(x_train, patch_train.any(1), patch_train, x_test, patch_test.any(1), patch_test, p,
                       tuple(str(d) for d in range(10)))


def from_tfds_segmentation(name: str, *, data_dir: str | os.PathLike | None, num_classes: int, image_size: int = 224,
                           patch_size: int = 16, image_key: str = "image", mask_key: str = "segmentation_mask",
                           train_split: str = "train", test_split: str = "test", max_train: int | None = None,
                           max_test: int | None = None, min_fraction: float = 0.0,
                           ignore_index: int | None = None, class_offset: int = 0) -> MosaicDataset:
  """Reads a TFDS segmentation dataset already on disk into a :class:`MosaicDataset` (patch-grid labels).

  Images are centre-cropped and resized (bilinear, as :func:`xattr.data.images.from_tfds`), masks resized with
  nearest neighbour to ``image_size``, then reduced with :func:`patch_labels_from_segmentation`. Nothing is
  downloaded (TFDS data sources read the prepared files). Values below 0 after ``class_offset`` count for no
  class.

  Args:
    name: TFDS name, e.g. ``"oxford_iiit_pet"`` (mask key ``segmentation_mask``) or a COCO-style panoptic set
      whose per-pixel class map is stored under ``mask_key``.
    data_dir: TFDS data directory holding the prepared dataset.
    num_classes: number of classes in the masks (after ``class_offset``).
    image_size: square side the images and masks are resized to.
    patch_size: patch side of the label grid.
    image_key, mask_key: feature names of the image and the per-pixel class map.
    train_split, test_split: split names; max_train / max_test keep only the first examples.
    min_fraction, ignore_index: see :func:`patch_labels_from_segmentation`.
    class_offset: subtracted from the mask values (e.g. 1 when classes are stored 1-based).
  """
  import tensorflow_datasets as tfds   # deferred: importing TFDS costs seconds
  from PIL import Image

  if data_dir is None or not os.path.isdir(data_dir):
    raise FileNotFoundError(f"data_dir for TFDS dataset {name!r} must be an existing folder holding the prepared "
                            f"dataset (nothing is downloaded), got {data_dir!r}.")
  builder = tfds.builder(name, data_dir=os.fspath(data_dir))

  def read(split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    source = builder.as_data_source(split=split)
    n = len(source) if limit is None else min(len(source), int(limit))
    xs, segs = [], []
    for i in range(n):
      ex = source[i]
      xs.append(_resize_image(ex[image_key], image_size))
      seg = np.asarray(ex[mask_key])
      seg = seg[..., 0] if seg.ndim == 3 else seg
      h, w = seg.shape
      side = min(h, w)                      # the same centre crop as the image
      seg = seg[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
      seg = np.asarray(Image.fromarray(seg.astype(np.int32)).resize((image_size, image_size), Image.NEAREST))
      segs.append(seg.astype(np.int64) - class_offset)
    x = np.stack(xs)
    patch = patch_labels_from_segmentation(np.stack(segs), patch_size, num_classes, min_fraction=min_fraction,
                                           ignore_index=ignore_index)
    return x, patch

  x_train, patch_train = read(train_split, max_train)
  x_test, patch_test = read(test_split, max_test)
  return MosaicDataset(x_train, patch_train.any(1), patch_train, x_test, patch_test.any(1), patch_test,
                       int(patch_size), tuple(str(c) for c in range(num_classes)))


def describe(ds: MosaicDataset) -> dict[str, Any]:
  """Label statistics (for reports): patches with 0, 1, 2+ classes, mean classes per image."""
  counts = ds.patch_test.sum(-1)
  return {"frac_patches_empty": float((counts == 0).mean()), "frac_patches_one": float((counts == 1).mean()),
          "frac_patches_multi": float((counts >= 2).mean()), "classes_per_image": float(ds.y_test.sum(-1).mean())}
