"""Shortcut generators: per-class patterns, patches / one-pixel shortcuts, and error-minimising perturbations.

Every generator takes an explicit ``key`` and an explicit budget and returns a :class:`~xattr.shortcuts.Shortcut`
(same key -> same shortcut):

  * :func:`fixed_patterns`: one random l_inf-bounded sign pattern per class (constant over ``block`` x ``block``
    cells, so it is low-frequency enough for convolutions and patch embeddings), optionally scaled to an l_2 ball;
  * :func:`patches`: a class-specific location and value (``size=1``: the one-pixel shortcut); replacing pixels
    (l_0 budget) or, with ``linf``, adding a class-specific sign there;
  * :func:`xattr.shortcuts.error_minimizing` (in :mod:`xattr.shortcuts.minmin`): perturbations that make a small
    surrogate network's training loss small (the bi-level
    min-min of "unlearnable examples"): alternately train the surrogate on the perturbed data and take projected
    signed-gradient steps that *decrease* its loss. ``per_sample=False`` gives class-wise universal perturbations
    (one per class), ``per_sample=True`` one perturbation per image.

Example:
  >>> import jax, numpy as np
  >>> from xattr import shortcuts
  >>> sc = shortcuts.fixed_patterns(jax.random.key(0), 3, (8, 8, 1), linf=8 / 255, block=2)
  >>> sc.delta.shape, float(abs(sc.delta).max() * 255)
  ((3, 8, 8, 1), 8.0)
  >>> px = shortcuts.patches(jax.random.key(0), 3, (8, 8, 1), size=1)
  >>> px.mask.reshape(3, -1).sum(1).tolist(), px.budget.l0
  ([1, 1, 1], 1)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xattr import _checks
from xattr.shortcuts.budget import Budget, Shortcut

__all__ = ["fixed_patterns", "patches", "project"]


def _image_shape(image_shape: Any) -> tuple[int, int, int]:
  shape = tuple(int(s) for s in image_shape)
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(f"image_shape must be (H, W, C) with positive sides, got {tuple(image_shape)}.")
  return shape  # type: ignore[return-value]


def _linf(name: str, value: Any) -> float:
  value = float(value)
  if not 0.0 < value <= 1.0:
    raise ValueError(f"{name} must lie in (0, 1] (pixel values are in [0, 1]), got {value}.")
  return value


def _rng(key: jax.Array) -> np.random.Generator:
  """A numpy generator seeded by the key's bits: the generators' arrays are built on the host (no compile per
  image shape), still fixed by the key."""
  return np.random.default_rng(np.asarray(jax.random.key_data(key), np.uint32).ravel().tolist())


def project(delta: Any, *, linf: float | None = None, l2: float | None = None) -> Any:
  """Projects each row of ``delta`` ``[K, ...]`` onto the l_inf box and then into the l_2 ball (jittable; numpy
  arrays stay numpy).

  Example:
    >>> np.round(project(np.array([[3.0, 4.0]]), l2=1.0), 3).tolist(), project(np.array([[3.0, -4.0]]), linf=1.0).tolist()
    ([[0.6, 0.8]], [[1.0, -1.0]])
  """
  xp = np if isinstance(delta, np.ndarray) else jnp
  if linf is not None:
    delta = xp.clip(delta, -linf, linf)
  if l2 is not None:
    norms = xp.sqrt(xp.sum(delta.reshape(delta.shape[0], -1) ** 2, axis=1))
    scale = xp.minimum(1.0, l2 / xp.maximum(norms, 1e-12))
    delta = delta * scale.reshape((-1,) + (1,) * (delta.ndim - 1))
  return delta


def fixed_patterns(key: jax.Array, num_classes: int, image_shape: Any, *, linf: float = 8 / 255,
                   l2: float | None = None, block: int = 4) -> Shortcut:
  """One random sign pattern per class with amplitude ``linf`` (then scaled into the l_2 ball if ``l2`` is given).

  Args:
    key: PRNG key.
    num_classes: K.
    image_shape: ``(H, W, C)``.
    linf: amplitude (the l_inf budget), in (0, 1].
    l2: optional l_2 budget per image.
    block: the pattern is constant over ``block x block`` pixel cells (1: independent pixels).

  Returns:
    An additive, per-class :class:`Shortcut` with ``Budget(linf=linf, l2=l2)``.
  """
  k = _checks.positive_int("num_classes", num_classes)
  h, w, c = _image_shape(image_shape)
  block = _checks.positive_int("block", block)
  linf = _linf("linf", linf)
  gh, gw = -(-h // block), -(-w // block)
  signs = _rng(key).choice(np.array([-1.0, 1.0], np.float32), size=(k, gh, gw, c))
  pattern = np.repeat(np.repeat(signs, block, 1), block, 2)[:, :h, :w] * np.float32(linf)
  return Shortcut.additive(f"fixed_patterns(block={block})", project(pattern, l2=l2), Budget(linf=linf, l2=l2))


def _patch_locations(rng: np.random.Generator, k: int, h: int, w: int, size: int) -> np.ndarray:
  """K distinct top-left corners on the grid of non-overlapping size x size cells (wrapping if K exceeds it)."""
  gh, gw = h // size, w // size
  if gh * gw < 1:
    raise ValueError(f"size must be at most the image side min(H, W) = {min(h, w)}, got {size}.")
  cells = rng.permutation(gh * gw)[np.arange(k) % (gh * gw)]
  return np.stack([(cells // gw) * size, (cells % gw) * size], -1)


def patches(key: jax.Array, num_classes: int, image_shape: Any, *, size: int = 1, linf: float | None = None,
            mean_image: Any = None) -> Shortcut:
  """A class-specific square patch: its location and value depend on the class (``size=1``: one pixel).

  Args:
    key: PRNG key (locations, values, signs).
    num_classes: K.
    image_shape: ``(H, W, C)``.
    size: patch side in pixels.
    linf: None replaces the patch's pixels by a class-specific extreme value (0 or 1 per channel; budget
      ``l_0 = size**2``); a number instead *adds* a class-specific sign pattern of that amplitude there (budget
      ``l_inf = linf`` and ``l_0 = size**2``).
    mean_image: optional ``[H, W, C]`` mean of the data: replacement values (and added signs) are then chosen
      *against* it (1 where the mean is below 1/2, else 0), so the patch stands out from typical images (the
      one-pixel shortcut's choice of a value far from the data); None draws them at random.

  Returns:
    A per-class :class:`Shortcut`.
  """
  k = _checks.positive_int("num_classes", num_classes)
  h, w, c = _image_shape(image_shape)
  size = _checks.positive_int("size", size)
  rng = _rng(key)
  corners = _patch_locations(rng, k, h, w, size)
  mask = np.zeros((k, h, w, c), bool)
  for i, (top, left) in enumerate(corners):
    mask[i, top:top + size, left:left + size] = True
  if mean_image is None:
    values = np.broadcast_to(rng.integers(0, 2, (k, 1, 1, c)).astype(np.float32), mask.shape)
  else:
    mean_image = np.asarray(mean_image, np.float32)
    if mean_image.shape != (h, w, c):
      raise ValueError(f"mean_image must have shape {(h, w, c)} (the image shape), got {mean_image.shape}.")
    values = np.broadcast_to((mean_image < 0.5).astype(np.float32), mask.shape)
  name = "one_pixel" if size == 1 else f"patch({size}x{size})"
  if linf is None:
    value = values * mask
    return Shortcut(name, jnp.zeros(mask.shape, jnp.float32), jnp.asarray(mask), jnp.asarray(value, jnp.float32),
                    False, Budget(l0=size * size))
  linf = _linf("linf", linf)
  delta = (2 * values - 1) * linf * mask
  return Shortcut.additive(f"{name}+-", delta, Budget(linf=linf, l0=size * size))
