"""Budgets of shortcut perturbations, the :class:`Shortcut` they bound, and :func:`apply` (clipped, checked).

A shortcut is one of two kinds of pixel edits, chosen per class (``per_sample=False``: row ``k`` of the arrays is
the edit of every image labelled ``k``) or per image (``per_sample=True``: row ``i`` edits image ``i``):

  * additive: ``x + delta``;
  * replacing (patches, one-pixel shortcuts): where ``mask`` is set, the pixel becomes ``value``.

Both at once: ``x' = clip(where(mask, value, x + delta), 0, 1)``. The :class:`Budget` bounds the *applied* change
``x' - x`` per image in l_inf, l_2 and/or l_0 (pixels changed); :func:`apply` measures it after clipping and raises
if any image exceeds a set bound, so a generator bug can never release an over-budget dataset.

Example:
  >>> import numpy as np
  >>> from xattr import shortcuts
  >>> budget = shortcuts.Budget(linf=8 / 255)
  >>> delta = np.full((2, 4, 4, 1), 8 / 255, np.float32) * np.array([1, -1], np.float32)[:, None, None, None]
  >>> sc = shortcuts.Shortcut.additive("demo", delta, budget)
  >>> x = np.full((3, 4, 4, 1), 0.5, np.float32)
  >>> out = shortcuts.apply(x, np.array([0, 1, 0]), sc)
  >>> np.round((out - x)[:, 0, 0, 0] * 255).tolist()
  [8.0, -8.0, 8.0]
  >>> import dataclasses
  >>> tight = dataclasses.replace(sc, budget=shortcuts.Budget(linf=1 / 255))
  >>> shortcuts.apply(x, np.array([0, 1, 0]), tight)  # doctest: +ELLIPSIS
  Traceback (most recent call last):
  ...
  ValueError: shortcut 'demo' exceeds its budget: l_inf of the applied change must be <= 0.00392 (budget), ...
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Budget", "Shortcut", "apply", "modify", "measure", "check_budget", "TOLERANCE"]

TOLERANCE = 1e-5        # float32 round-off allowed above a bound


@dataclasses.dataclass(frozen=True)
class Budget:
  """Per-image bounds on the applied change ``x' - x``; None leaves a norm unbounded.

  Attributes:
    linf: largest absolute change of any pixel value (e.g. 8/255).
    l2: Euclidean norm of the change over all pixels and channels.
    l0: number of pixel positions (H x W) that change in any channel.
  """

  linf: float | None = None
  l2: float | None = None
  l0: int | None = None

  def __post_init__(self):
    for name in ("linf", "l2", "l0"):
      value = getattr(self, name)
      if value is not None and not (np.isfinite(value) and value >= 0):
        raise ValueError(f"Budget.{name} must be None or a finite number >= 0, got {value!r}.")

  def describe(self) -> str:
    """A short label, e.g. ``'l_inf 8/255'`` or ``'l_0 1 px'``.

    Example:
      >>> Budget(linf=8 / 255, l0=4).describe()
      'l_inf 8/255, l_0 4 px'
    """
    parts = []
    if self.linf is not None:
      parts.append(f"l_inf {round(self.linf * 255)}/255" if abs(self.linf * 255 - round(self.linf * 255)) < 1e-6
                   else f"l_inf {self.linf:.3g}")
    if self.l2 is not None:
      parts.append(f"l_2 {self.l2:.3g}")
    if self.l0 is not None:
      parts.append(f"l_0 {self.l0} px")
    return ", ".join(parts) or "unbounded"


@functools.partial(jax.tree_util.register_dataclass, data_fields=["delta", "mask", "value"],
                   meta_fields=["name", "per_sample", "budget"])
@dataclasses.dataclass(frozen=True)
class Shortcut:
  """A shortcut: per-class (or per-sample) additive and replacing edits, with the budget they must respect.

  A pytree (arrays are leaves; ``name``, ``per_sample`` and ``budget`` static), so it can enter ``jit``.

  Attributes:
    name: the generator's name (for reports).
    delta: float32 ``[K, H, W, C]`` added to the image (K = classes, or images when ``per_sample``).
    mask: bool ``[K, H, W, C]``: pixels replaced by ``value`` (after which nothing is added there).
    value: float32 ``[K, H, W, C]`` replacement values.
    per_sample: rows index images (by position) instead of classes (by label).
    budget: the :class:`Budget` every modified image must respect.
  """

  name: str
  delta: Any
  mask: Any
  value: Any
  per_sample: bool
  budget: Budget

  @classmethod
  def additive(cls, name: str, delta: Any, budget: Budget, *, per_sample: bool = False) -> Shortcut:
    """A purely additive shortcut (no replaced pixels)."""
    delta = jnp.asarray(delta, jnp.float32)
    return cls(name, delta, jnp.zeros(delta.shape, bool), jnp.zeros(delta.shape, jnp.float32), per_sample, budget)

  @property
  def num_rows(self) -> int:
    return int(self.delta.shape[0])

  def arrays(self) -> dict[str, np.ndarray]:
    """The arrays as numpy (to save with :mod:`xattr.artifacts`)."""
    return {"delta": np.asarray(self.delta), "mask": np.asarray(self.mask), "value": np.asarray(self.value)}


def modify(images: jax.Array, rows: jax.Array, shortcut: Shortcut) -> jax.Array:
  """The jittable core of :func:`apply`: edits ``images[i]`` with row ``rows[i]`` of the shortcut, clipped to
  [0, 1]; no budget check.

  Example:
    >>> sc = Shortcut.additive("d", jnp.full((1, 2, 2, 1), 0.75), Budget())
    >>> jax.jit(modify)(jnp.full((1, 2, 2, 1), 0.5), jnp.array([0]), sc)[0, 0, 0, 0].item()
    1.0
  """
  delta, mask, value = shortcut.delta[rows], shortcut.mask[rows], shortcut.value[rows]
  return jnp.clip(jnp.where(mask, value, images + delta), 0.0, 1.0)


def measure(clean: Any, modified: Any) -> dict[str, np.ndarray]:
  """Per-image norms of the change: ``{'linf': [N], 'l2': [N], 'l0': [N]}`` (l_0 counts pixel positions).

  Example:
    >>> m = measure(np.zeros((1, 2, 2, 1)), np.array([[[[0.1], [0.0]], [[0.0], [0.0]]]]))
    >>> [round(float(m[k][0]), 3) for k in ("linf", "l2", "l0")]
    [0.1, 0.1, 1.0]
  """
  diff = np.asarray(modified, np.float64) - np.asarray(clean, np.float64)
  flat = diff.reshape(len(diff), -1)
  changed = np.abs(diff).reshape(*diff.shape[:3], -1).max(-1) > TOLERANCE
  return {"linf": np.abs(flat).max(1) if flat.size else np.zeros(len(diff)), "l2": np.sqrt((flat ** 2).sum(1)),
          "l0": changed.reshape(len(diff), -1).sum(1).astype(np.float64)}


def check_budget(clean: Any, modified: Any, budget: Budget, name: str = "shortcut") -> dict[str, float]:
  """Raises ValueError if any image's change exceeds a bound of ``budget``; returns the largest of each norm.

  Example:
    >>> check_budget(np.zeros((2, 2, 2, 1)), np.full((2, 2, 2, 1), 0.01), Budget(linf=0.02))["linf"]
    0.01
  """
  norms = measure(clean, modified)
  bounds = {"linf": budget.linf, "l2": budget.l2, "l0": budget.l0}
  labels = {"linf": "l_inf", "l2": "l_2", "l0": "l_0 (pixels changed)"}
  for key, bound in bounds.items():
    if bound is None or not len(norms[key]):
      continue
    worst = int(np.argmax(norms[key]))
    if norms[key][worst] > bound + (0.5 if key == "l0" else TOLERANCE):
      raise ValueError(f"shortcut {name!r} exceeds its budget: {labels[key]} of the applied change must be <= "
                       f"{bound:.3g} (budget), got {norms[key][worst]:.3g} (image {worst}).")
  return {k: float(v.max()) if len(v) else 0.0 for k, v in norms.items()}


def _rows(labels: Any, indices: Any, shortcut: Shortcut, n: int) -> np.ndarray:
  if shortcut.per_sample:
    rows = np.arange(n) if indices is None else np.asarray(indices)
    what = "indices (per-sample shortcut rows)"
  else:
    rows = np.asarray(labels)
    what = "labels"
  if rows.shape != (n,):
    raise ValueError(f"{what} must have shape ({n},) (one per image), got {rows.shape}.")
  if n and (rows.min() < 0 or rows.max() >= shortcut.num_rows):
    raise ValueError(f"{what} must lie in [0, {shortcut.num_rows}) (rows of shortcut {shortcut.name!r}), got "
                     f"values in [{rows.min()}, {rows.max()}].")
  return rows.astype(np.int32)


def apply(images: Any, labels: Any, shortcut: Shortcut, *, indices: Any = None, check: bool = True) -> np.ndarray:
  """Adds the shortcut of each image's class (or, per sample, of its row), clips to [0, 1] and checks the budget.

  Args:
    images: float ``[N, H, W, C]`` in [0, 1].
    labels: int ``[N]`` class labels (select the rows of a per-class shortcut).
    shortcut: a :class:`Shortcut` whose rows have the images' shape.
    indices: for a per-sample shortcut, the row of each image (default ``0..N-1``).
    check: measure the applied change and raise if it exceeds ``shortcut.budget`` (see :func:`check_budget`).

  Returns:
    float32 ``[N, H, W, C]``, the modified images.

  Raises:
    ValueError: shapes that do not fit, pixel values outside [0, 1], or a budget violated.
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shortcut.delta.shape[1:]):
    raise ValueError(f"images must have shape [N, {', '.join(map(str, shortcut.delta.shape[1:]))}] (the shortcut's "
                     f"image shape), got {images.shape}.")
  if images.size and (images.min() < -TOLERANCE or images.max() > 1 + TOLERANCE):
    raise ValueError(f"images must lie in [0, 1], got values in [{images.min():.3g}, {images.max():.3g}].")
  rows = _rows(labels, indices, shortcut, len(images))
  # The same arithmetic as :func:`modify`, on the host: no compile per image shape.
  delta, mask, value = (np.asarray(a)[rows] for a in (shortcut.delta, shortcut.mask, shortcut.value))
  out = np.clip(np.where(mask, value, images + delta), 0.0, 1.0).astype(np.float32)
  if check:
    check_budget(images, out, shortcut.budget, shortcut.name)
  return out

