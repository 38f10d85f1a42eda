"""Metrics for attributions: insertion/deletion curves, sensitivity-n, error against ground truth.

Every metric scores an attribution through a game (see :mod:`xattr.games`; for images the players are patches
and the game is typically a masked-ViT surrogate's target-class probability), so it works for any removal and
any model. Attributions are float[d], one value per player.

* **Insertion / deletion** (Petsiuk et al., 2018): add (remove) players in descending attribution order and
  record the game value after each step. A good attribution makes the insertion curve rise early (high area
  under the curve) and the deletion curve fall early (low area). All prefixes are evaluated in one batched game
  call, and the area is the trapezoid rule over the fraction of players in [0, 1]. Published reference (ViT-Tiny
  on ImageNette, target-class probability through the surrogate): ViT Shapley 0.981 / 0.457, RISE 0.970 / 0.602,
  random 0.908 / 0.907 (insertion / deletion).
* **Sensitivity-n** (Ancona et al., 2018): for random subsets S of n players, the Pearson correlation between
  sum_{i in S} phi_i and the drop v(1) - v(1 \\ S). Shapley values of an additive game score exactly 1.
* **Error metrics**: MAE, RMSE, relative L2 error, Pearson and Spearman correlation, sign agreement and top-k
  overlap of an estimate against reference values (e.g. exact Shapley values or converged KernelSHAP).
* :func:`aggregate_to_players` sums pixel-level maps (gradient methods) into patch-level players.

Ties in an attribution are broken towards the lower player index, so every ranking here is deterministic.
Everything is pure and jittable (integer sizes static) and vmappable over inputs.

Example:
  >>> import jax.numpy as jnp
  >>> from xattr import evaluation
  >>> v = lambda m: m.astype(jnp.float32) @ jnp.array([0.5, 0.0, 0.5])      # additive game
  >>> evaluation.insertion_curve(v, jnp.array([3.0, 1.0, 2.0])).values.tolist()
  [0.0, 0.5, 1.0, 1.0]
  >>> round(float(evaluation.insertion_auc(v, jnp.array([3.0, 1.0, 2.0]))), 4)
  0.6667
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from xattr import _checks, games
from xattr import masks as masks_lib

Game = Callable[[jax.Array], jax.Array]

__all__ = ["Curve", "ErrorMetrics", "ranking", "curve_sizes", "curve_masks", "auc", "insertion_curve",
           "deletion_curve", "insertion_deletion_curves", "insertion_auc", "deletion_auc", "insertion_deletion_auc",
           "sensitivity_n", "error_metrics", "aggregate_to_players"]


class Curve(NamedTuple):
  """An insertion or deletion curve.

  Attributes:
    fractions: float[s], fraction of players inserted (deleted) at each point, from 0 to 1.
    values: float[s] or float[s, k], the game value at each point.
  """

  fractions: jax.Array
  values: jax.Array


def _check_attribution(attribution: jax.Array, name: str = "attribution") -> jax.Array:
  attribution = jnp.asarray(attribution)
  if attribution.ndim != 1 or attribution.shape[0] < 1:
    raise ValueError(f"{name} must be float[num_players] (one value per player; for a vector-valued game pick one "
                     f"output, e.g. games.select(game, c) with {name}[:, c]), got shape {tuple(attribution.shape)}.")
  _checks.finite(name, attribution)
  return attribution


def ranking(attribution: jax.Array) -> jax.Array:
  """Players in descending attribution order; ties go to the lower index first.

  Args:
    attribution: float[d].

  Returns:
    int32[d], ``ranking[0]`` is the most important player.

  Example:
    >>> ranking(jnp.array([0.1, 0.5, 0.1, 0.9])).tolist()
    [3, 1, 0, 2]
  """
  return _descending(_check_attribution(attribution))


def _descending(x: jax.Array) -> jax.Array:
  """Indices sorting the last axis in descending order, ties to the lower index."""
  # + 0.0 turns -0.0 into 0.0, so the two tie instead of being ordered by the sort's total order.
  return jnp.argsort(x + 0.0, axis=-1, descending=True, stable=True).astype(jnp.int32)


def curve_sizes(num_players: int, num_steps: int | None = None) -> np.ndarray:
  """Numbers of inserted (deleted) players at each curve point: 0..d, or ``num_steps + 1`` evenly spaced sizes.

  Example:
    >>> curve_sizes(10, 4).tolist()
    [0, 2, 5, 8, 10]
  """
  d = _checks.positive_int("num_players", num_players)
  if num_steps is None:
    return np.arange(d + 1)
  steps = _checks.positive_int("num_steps", num_steps)
  if steps > d:
    raise ValueError(f"num_steps must be <= num_players = {d} (at most one player per step), got {steps}.")
  return np.rint(np.linspace(0, d, steps + 1)).astype(np.int64)


def curve_masks(attribution: jax.Array, *, num_steps: int | None = None, deletion: bool = False) -> jax.Array:
  """The coalitions an insertion (deletion) curve evaluates: the top-k players kept (removed), one row per k.

  Args:
    attribution: float[d].
    num_steps: None for all d + 1 sizes, else ``num_steps + 1`` evenly spaced sizes (static).
    deletion: remove the top-k players from the full coalition instead of inserting them into the empty one.

  Returns:
    bool[s, d] with s = d + 1 (or num_steps + 1).

  Example:
    >>> curve_masks(jnp.array([0.2, 0.9, 0.5])).astype(int).tolist()
    [[0, 0, 0], [0, 1, 0], [0, 1, 1], [1, 1, 1]]
  """
  attribution = _check_attribution(attribution)
  return _curve_masks(attribution, tuple(curve_sizes(attribution.shape[0], num_steps).tolist()), deletion)


@partial(jax.jit, static_argnums=(1, 2))
def _curve_masks(attribution: jax.Array, sizes: tuple[int, ...], deletion: bool) -> jax.Array:
  rank = jnp.argsort(_descending(attribution))                                     # position of each player
  top = rank[None, :] < jnp.asarray(sizes, jnp.int32)[:, None]
  return ~top if deletion else top


def auc(fractions: jax.Array, values: jax.Array) -> jax.Array:
  """Area under a curve by the trapezoid rule (along the first axis of ``values``).

  Example:
    >>> float(auc(jnp.array([0.0, 0.5, 1.0]), jnp.array([0.0, 1.0, 1.0])))
    0.75
  """
  return jnp.trapezoid(values, jnp.asarray(fractions), axis=0)


def _curve(game: Game, attribution: jax.Array, num_steps: int | None, deletion: bool,
           batch_size: int | None) -> Curve:
  masks = curve_masks(attribution, num_steps=num_steps, deletion=deletion)
  fractions = jnp.asarray(curve_sizes(masks.shape[1], num_steps) / masks.shape[1], jnp.float32)
  return Curve(fractions, games.evaluate(game, masks, batch_size=batch_size))


def insertion_curve(game: Game, attribution: jax.Array, *, num_steps: int | None = None,
                    batch_size: int | None = None) -> Curve:
  """Game value as players are inserted into the empty coalition in descending attribution order.

  Args:
    game: bool[n, d] -> float[n] (e.g. the target-class probability) or float[n, k].
    attribution: float[d].
    num_steps: None evaluates all d + 1 prefixes; an int evaluates ``num_steps + 1`` evenly spaced prefix sizes
      (static), for large d.
    batch_size: None evaluates every prefix in one game call; an int bounds the masks per call.

  Returns:
    :class:`Curve` starting at v(0) and ending at v(1).

  Example:
    >>> v = lambda m: m.astype(jnp.float32) @ jnp.array([1.0, 2.0])
    >>> insertion_curve(v, jnp.array([0.0, 1.0])).values.tolist()
    [0.0, 2.0, 3.0]
  """
  return _curve(game, attribution, num_steps, False, batch_size)


def deletion_curve(game: Game, attribution: jax.Array, *, num_steps: int | None = None,
                   batch_size: int | None = None) -> Curve:
  """Game value as players are removed from the full coalition in descending attribution order.

  Arguments as in :func:`insertion_curve`; the curve starts at v(1) and ends at v(0).

  Example:
    >>> v = lambda m: m.astype(jnp.float32) @ jnp.array([1.0, 2.0])
    >>> deletion_curve(v, jnp.array([0.0, 1.0])).values.tolist()
    [3.0, 1.0, 0.0]
  """
  return _curve(game, attribution, num_steps, True, batch_size)


def insertion_auc(game: Game, attribution: jax.Array, *, num_steps: int | None = None,
                  batch_size: int | None = None) -> jax.Array:
  """Area under the insertion curve over the fraction of players in [0, 1] (higher is better).

  Example:
    >>> v = lambda m: m.astype(jnp.float32) @ jnp.array([1.0, 0.0])
    >>> float(insertion_auc(v, jnp.array([1.0, 0.0]))), float(insertion_auc(v, jnp.array([0.0, 1.0])))
    (0.75, 0.25)
  """
  return auc(*insertion_curve(game, attribution, num_steps=num_steps, batch_size=batch_size))


def deletion_auc(game: Game, attribution: jax.Array, *, num_steps: int | None = None,
                 batch_size: int | None = None) -> jax.Array:
  """Area under the deletion curve over the fraction of players in [0, 1] (lower is better).

  Example:
    >>> v = lambda m: m.astype(jnp.float32) @ jnp.array([1.0, 0.0])
    >>> float(deletion_auc(v, jnp.array([1.0, 0.0]))), float(deletion_auc(v, jnp.array([0.0, 1.0])))
    (0.25, 0.75)
  """
  return auc(*deletion_curve(game, attribution, num_steps=num_steps, batch_size=batch_size))


def insertion_deletion_curves(game: Game, attribution: jax.Array, *, num_steps: int | None = None,
                              batch_size: int | None = None) -> tuple[Curve, Curve]:
  """(insertion curve, deletion curve) from a single game call on both curves' coalitions.

  Example:
    >>> v = lambda m: m.astype(jnp.float32) @ jnp.array([1.0, 2.0])
    >>> ins, dele = insertion_deletion_curves(v, jnp.array([0.0, 1.0]))
    >>> ins.values.tolist(), dele.values.tolist()
    ([0.0, 2.0, 3.0], [3.0, 1.0, 0.0])
  """
  ins = curve_masks(attribution, num_steps=num_steps)
  dele = curve_masks(attribution, num_steps=num_steps, deletion=True)
  s, d = ins.shape
  fractions = jnp.asarray(curve_sizes(d, num_steps) / d, jnp.float32)
  values = games.evaluate(game, jnp.concatenate([ins, dele]), batch_size=batch_size)
  return Curve(fractions, values[:s]), Curve(fractions, values[s:])


def insertion_deletion_auc(game: Game, attribution: jax.Array, *, num_steps: int | None = None,
                           batch_size: int | None = None) -> tuple[jax.Array, jax.Array]:
  """(insertion AUC, deletion AUC) from a single game call on both curves' coalitions.

  Example:
    >>> v = lambda m: m.astype(jnp.float32) @ jnp.array([1.0, 0.0])
    >>> [float(a) for a in insertion_deletion_auc(v, jnp.array([1.0, 0.0]))]
    [0.75, 0.25]
  """
  ins, dele = insertion_deletion_curves(game, attribution, num_steps=num_steps, batch_size=batch_size)
  return auc(*ins), auc(*dele)


def _pearson(x: jax.Array, y: jax.Array, axis: int) -> jax.Array:
  """Pearson correlation along ``axis``; NaN where either side is constant."""
  xc = x - x.mean(axis, keepdims=True)
  yc = y - y.mean(axis, keepdims=True)
  denom = jnp.sqrt((xc ** 2).sum(axis) * (yc ** 2).sum(axis))
  return jnp.where(denom > 0, (xc * yc).sum(axis) / jnp.where(denom > 0, denom, 1.0), jnp.nan)


def sensitivity_n(game: Game, attribution: jax.Array, key: jax.Array, *, sizes: Sequence[int], num_samples: int,
                  batch_size: int | None = None) -> jax.Array:
  """Sensitivity-n: correlation of sum_{i in S} phi_i with v(1) - v(1 \\ S) over random subsets with |S| = n.

  Args:
    game: bool[n, d] -> float[n] or float[n, k].
    attribution: float[d] (for a vector-valued game, float[d, k] correlates each output with its own column).
    key: PRNG key; same key -> same subsets.
    sizes: the subset sizes n, each in [1, d - 1] (static).
    num_samples: random subsets per size (static, >= 2).
    batch_size: None evaluates all len(sizes) * num_samples + 1 coalitions in one game call.

  Returns:
    float[len(sizes)] (or [len(sizes), k]) Pearson correlations; NaN where the subsets' attribution sums or
    value drops do not vary.

  Example:
    >>> import jax
    >>> w = jnp.array([1.0, -2.0, 3.0, 0.5])
    >>> v = lambda m: 1.0 + m.astype(jnp.float32) @ w                  # additive: Shapley values are w
    >>> sensitivity_n(v, w, jax.random.key(0), sizes=[1, 2], num_samples=16).round(4).tolist()
    [1.0, 1.0]
  """
  attribution = jnp.asarray(attribution)
  if attribution.ndim not in (1, 2):
    raise ValueError(f"attribution must be float[num_players] or float[num_players, k], got shape "
                     f"{tuple(attribution.shape)}.")
  _checks.finite("attribution", attribution)
  d = attribution.shape[0]
  sizes = [_checks.positive_int(f"sizes[{i}]", n) for i, n in enumerate(sizes)]
  if not sizes or max(sizes) >= d:
    raise ValueError(f"sizes must be a non-empty list of subset sizes in [1, num_players - 1] = [1, {d - 1}], "
                     f"got {sizes}.")
  m = _checks.positive_int("num_samples", num_samples, minimum=2)
  removed = _removed_subsets(key, tuple(sizes), m, d)
  values = games.evaluate(game, jnp.concatenate([jnp.ones((1, d), bool), ~removed]), batch_size=batch_size)
  if attribution.ndim == 2 and (values.ndim == 1 or values.shape[1] != attribution.shape[1]):
    raise ValueError(f"attribution has shape {tuple(attribution.shape)} (one column per game output) but the game "
                     f"returns shape {tuple(values.shape)}; pass float[num_players] or match the outputs.")
  return _sensitivity_correlations(removed, values, attribution, len(sizes))


@partial(jax.jit, static_argnums=(1, 2, 3))
def _removed_subsets(key: jax.Array, sizes: tuple[int, ...], num_samples: int, num_players: int) -> jax.Array:
  return masks_lib.subsets_of_size(key, jnp.repeat(jnp.asarray(sizes, jnp.int32), num_samples), num_players)


@partial(jax.jit, static_argnums=3)
def _sensitivity_correlations(removed: jax.Array, values: jax.Array, attribution: jax.Array,
                              num_sizes: int) -> jax.Array:
  attr_sum = removed.astype(jnp.float32) @ attribution.astype(jnp.float32)          # [S * m] or [S * m, k]
  drop = values[0] - values[1:]
  if drop.ndim == 2 and attr_sum.ndim == 1:  # one attribution scored against every output
    attr_sum = attr_sum[:, None]
  shape = (num_sizes, removed.shape[0] // num_sizes, *drop.shape[1:])
  return _pearson(attr_sum.reshape(shape), drop.reshape(shape), axis=1)


class ErrorMetrics(NamedTuple):
  """Agreement of estimated attributions with reference values (per example, or averaged over examples).

  Attributes:
    mae: mean absolute error over players.
    rmse: root mean squared error over players.
    relative: ||estimate - reference||_2 / ||reference||_2 (NaN for a zero reference).
    correlation: Pearson correlation over players (NaN if either side is constant).
    spearman: Spearman rank correlation over players (ties get average ranks; NaN if either is constant).
    sign_agreement: fraction of players whose signs agree (zero counts as its own sign).
    top_k_overlap: |top-k(estimate) ∩ top-k(reference)| / k, by descending value.
  """

  mae: jax.Array
  rmse: jax.Array
  relative: jax.Array
  correlation: jax.Array
  spearman: jax.Array
  sign_agreement: jax.Array
  top_k_overlap: jax.Array


def _average_ranks(x: jax.Array) -> jax.Array:
  """Ranks 0..d-1 along the last axis with ties sharing their average rank (O(d^2), fine for d in the 100s)."""
  less = (x[..., None, :] < x[..., :, None]).sum(-1)
  equal = (x[..., None, :] == x[..., :, None]).sum(-1)
  return less + (equal - 1) / 2.0


def _top_k_sets(x: jax.Array, k: int) -> jax.Array:
  """bool[..., d]: the k largest entries along the last axis, ties to the lower index."""
  return jnp.argsort(_descending(x), axis=-1) < k


def error_metrics(estimate: jax.Array, reference: jax.Array, *, top_k: int | None = None,
                  reduce: bool = True) -> ErrorMetrics:
  """Error of estimated attributions against reference values, batched over examples.

  Args:
    estimate: float[d], float[b, d] or float[b, d, k] (players on axis 1; each (example, output) is one case).
    reference: same shape.
    top_k: k for :attr:`ErrorMetrics.top_k_overlap` (static); None uses max(1, d // 4).
    reduce: average each metric over examples (and outputs), skipping NaN cases; False keeps per-case values of
      shape [b] (or [b, k]; [1] for a single float[d]).

  Returns:
    :class:`ErrorMetrics`.

  Example:
    >>> ref = jnp.array([[1.0, -2.0, 3.0, 0.0]])
    >>> err = error_metrics(2 * ref, ref, top_k=2)
    >>> float(err.mae), float(err.relative), float(err.correlation), float(err.top_k_overlap)
    (1.5, 1.0, 1.0, 1.0)
  """
  estimate, reference = jnp.asarray(estimate, jnp.float32), jnp.asarray(reference, jnp.float32)
  if estimate.shape != reference.shape or estimate.ndim not in (1, 2, 3) or 0 in estimate.shape:
    raise ValueError(f"estimate and reference must have the same non-empty shape, float[d], float[b, d] or "
                     f"float[b, d, k]; got {tuple(estimate.shape)} and {tuple(reference.shape)}.")
  _checks.finite("estimate", estimate)
  _checks.finite("reference", reference)
  if estimate.ndim == 1:
    estimate, reference = estimate[None], reference[None]
  if estimate.ndim == 3:                     # players last: [b, k, d]
    estimate, reference = estimate.swapaxes(1, 2), reference.swapaxes(1, 2)
  d = estimate.shape[-1]
  k = max(1, d // 4) if top_k is None else _checks.positive_int("top_k", top_k)
  if k > d:
    raise ValueError(f"top_k must be <= num_players = {d}, got {k}.")
  return _error_metrics(estimate, reference, k, reduce)


@partial(jax.jit, static_argnums=(2, 3))
def _error_metrics(estimate: jax.Array, reference: jax.Array, k: int, reduce: bool) -> ErrorMetrics:
  diff = estimate - reference
  ref_norm = jnp.sqrt((reference ** 2).sum(-1))
  per_case = ErrorMetrics(
      mae=jnp.abs(diff).mean(-1),
      rmse=jnp.sqrt((diff ** 2).mean(-1)),
      relative=jnp.where(ref_norm > 0, jnp.sqrt((diff ** 2).sum(-1)) / jnp.where(ref_norm > 0, ref_norm, 1.0),
                         jnp.nan),
      correlation=_pearson(estimate, reference, axis=-1),
      spearman=_pearson(_average_ranks(estimate), _average_ranks(reference), axis=-1),
      sign_agreement=(jnp.sign(estimate) == jnp.sign(reference)).mean(-1),
      top_k_overlap=(_top_k_sets(estimate, k) & _top_k_sets(reference, k)).sum(-1) / k,
  )
  if reduce:
    return ErrorMetrics(*(jnp.nanmean(m) for m in per_case))
  return per_case


def aggregate_to_players(pixel_attr: jax.Array, players: int | jax.Array | np.ndarray) -> jax.Array:
  """Sums a pixel-level map into player (patch) attributions, e.g. for gradient-based methods.

  Args:
    pixel_attr: float[H, W] or float[H, W, C] (channels are summed), or float[F] with a group matrix.
    players: the patch size p (int; patches in row-major order, as :func:`xattr.masks.patch_groups`), or a group
      matrix bool[d, H * W] (channels summed first), bool[d, H * W * C] or bool[d, F].

  Returns:
    float[d].

  Example:
    >>> aggregate_to_players(jnp.arange(16.0).reshape(4, 4), 2).tolist()
    [10.0, 18.0, 42.0, 50.0]
  """
  pixel_attr = jnp.asarray(pixel_attr)
  if isinstance(players, (int, np.integer)) and not isinstance(players, bool):
    p = _checks.positive_int("players (patch size)", int(players))
    if pixel_attr.ndim not in (2, 3):
      raise ValueError(f"pixel_attr must be float[H, W] or float[H, W, C] with a patch size, got shape "
                       f"{tuple(pixel_attr.shape)}.")
    h, w = pixel_attr.shape[:2]
    if h % p or w % p:
      raise ValueError(f"pixel_attr's height and width {(h, w)} must be divisible by the patch size {p}.")
    per_pixel = pixel_attr.sum(2) if pixel_attr.ndim == 3 else pixel_attr
    return per_pixel.reshape(h // p, p, w // p, p).sum((1, 3)).reshape(-1)
  groups = jnp.asarray(players)
  if groups.ndim != 2:
    raise ValueError(f"players must be a patch size (int) or a group matrix bool[num_players, num_features], got "
                     f"shape {tuple(groups.shape)}.")
  f = groups.shape[1]
  if pixel_attr.size == f:
    flat = pixel_attr.reshape(-1)
  elif pixel_attr.ndim == 3 and pixel_attr.shape[0] * pixel_attr.shape[1] == f:
    flat = pixel_attr.sum(2).reshape(-1)
  else:
    raise ValueError(f"players (group matrix) has {f} feature columns, which matches neither pixel_attr's size "
                     f"nor its H * W; pixel_attr has shape {tuple(pixel_attr.shape)}.")
  return groups.astype(flat.dtype) @ flat
