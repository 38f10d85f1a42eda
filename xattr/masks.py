"""Coalition samplers, group matrices and patch-to-pixel upsampling.

A coalition (mask) is a row of ``bool[num_players]`` with True = player kept. Every sampler is pure, key-first,
jittable (with ``num_players``/``num_samples`` static) and vmappable over keys; the same key always gives the
same masks. Subsets of a given size are drawn in vectorised form: rank uniform noise per row and keep the
players whose rank is below the sampled size, so the size distribution is exactly the requested one.

Example:
  >>> import jax
  >>> from xattr import masks
  >>> z = masks.shapley_kernel(jax.random.key(0), num_players=6, num_samples=8)
  >>> z.shape, bool((z[0] == ~z[1]).all())
  ((8, 6), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from xattr import _checks

__all__ = [
    "shapley_kernel", "shapley_kernel_size_probs", "uniform_cardinality", "bernoulli", "permutations",
    "subsets_of_size", "with_size_probs", "pair", "group_matrix", "patch_groups", "expand_groups", "upsample_patches",
]


def shapley_kernel_size_probs(num_players: int) -> np.ndarray:
  """p(k) proportional to 1 / (k (d - k)) for k = 0..d (zero at k = 0 and k = d).

  Example:
    >>> shapley_kernel_size_probs(4).round(3).tolist()
    [0.0, 0.364, 0.273, 0.364, 0.0]
  """
  d = _checks.positive_int("num_players", num_players, minimum=2)
  k = np.arange(1, d)
  probs = np.zeros(d + 1)
  probs[1:d] = 1.0 / (k * (d - k))
  return probs / probs.sum()


def subsets_of_size(key: jax.Array, sizes: jax.Array, num_players: int) -> jax.Array:
  """One uniformly random subset per row with the given sizes.

  Args:
    key: PRNG key.
    sizes: int[n], each in [0, num_players].
    num_players: d (static).

  Returns:
    bool[n, d] with row i holding exactly ``sizes[i]`` True entries.

  Example:
    >>> z = subsets_of_size(jax.random.key(1), jnp.array([0, 2, 5]), 5)
    >>> z.sum(axis=1).tolist()
    [0, 2, 5]
  """
  _checks.prng_key("key", key)
  n, d = sizes.shape[0], num_players
  # Unique integer keys: random high bits, the column index in the low bits (so no two keys tie). Keeping the
  # k largest keys of a row is a uniform k-subset (a tie in the high bits, chance ~d^2 / 2^(33 - low), only
  # favours the higher column). One sort per row, no argsort: sampling stays cheap next to the game.
  low = max(1, int(np.ceil(np.log2(d))))
  bits = jax.random.bits(key, (n, d), jnp.uint32)
  keys = (bits >> low << low) | jnp.arange(d, dtype=jnp.uint32)
  ordered = jnp.sort(keys, axis=1)
  cutoff = jnp.take_along_axis(ordered, jnp.clip(d - sizes, 0, d - 1)[:, None].astype(jnp.int32), axis=1)
  return (keys >= cutoff) & (sizes[:, None] > 0)


def pair(masks: jax.Array) -> jax.Array:
  """Interleaves each mask with its complement: rows (z_0, ~z_0, z_1, ~z_1, ...).

  Example:
    >>> pair(jnp.array([[True, False, False]])).astype(int).tolist()
    [[1, 0, 0], [0, 1, 1]]
  """
  return jnp.stack([masks, ~masks], axis=1).reshape(-1, masks.shape[-1])


def with_size_probs(key: jax.Array, num_players: int, num_samples: int, size_probs: np.ndarray, *,
                    paired: bool = False) -> jax.Array:
  """Samples |z| = k with probability size_probs[k] (k = 0..d), then a uniform subset of that size.

  The building block of the other samplers; also used for a kernel restricted to some sizes. With
  ``paired=True`` the size distribution should be symmetric (p(k) = p(d - k)) to be preserved by the pairs.

  Example:
    >>> z = with_size_probs(jax.random.key(0), 4, 6, np.array([0, 0, 1.0, 0, 0]), paired=True)
    >>> z.sum(1).tolist()
    [2, 2, 2, 2, 2, 2]
  """
  _checks.prng_key("key", key)
  d = _checks.positive_int("num_players", num_players)
  _checks.positive_int("num_samples", num_samples)
  size_probs = np.asarray(size_probs, np.float64)
  if size_probs.shape != (d + 1,) or size_probs.min() < 0 or not size_probs.sum() > 0:
    raise ValueError(f"size_probs must be non-negative weights over sizes 0..{d} (shape ({d + 1},)), got shape "
                     f"{size_probs.shape}.")
  with np.errstate(divide="ignore"):
    logits = np.log(size_probs / size_probs.sum())
  return _sample_with_sizes(key, d, num_samples, paired, logits)


def _sample_with_sizes(key, num_players, num_samples, paired, size_logits):
  _checks.even_if_paired(num_samples, paired)
  num_draws = num_samples // 2 if paired else num_samples
  size_key, subset_key = jax.random.split(key)
  sizes = jax.random.categorical(size_key, jnp.asarray(size_logits, jnp.float32), shape=(num_draws,))
  z = subsets_of_size(subset_key, sizes, num_players)
  return pair(z) if paired else z


@partial(jax.jit, static_argnames=("num_players", "num_samples", "paired"))
def shapley_kernel(key: jax.Array, num_players: int, num_samples: int, *, paired: bool = True) -> jax.Array:
  """Samples coalitions from the Shapley kernel: |z| = k with p(k) ∝ 1/(k(d-k)), then a uniform subset.

  Never returns the empty or the full coalition. With ``paired=True`` each sample is followed by its complement
  (the size distribution is symmetric, so pairs keep it exact).

  Args:
    key: PRNG key.
    num_players: d >= 2 (static).
    num_samples: number of rows (static; even when paired).
    paired: interleave complements.

  Returns:
    bool[num_samples, num_players].

  Example:
    >>> z = shapley_kernel(jax.random.key(0), 10, 1000)
    >>> bool(((z.sum(1) > 0) & (z.sum(1) < 10)).all())
    True
  """
  _checks.prng_key("key", key)
  d = _checks.positive_int("num_players", num_players, minimum=2)
  _checks.positive_int("num_samples", num_samples)
  with np.errstate(divide="ignore"):
    logits = np.log(shapley_kernel_size_probs(d))
  return _sample_with_sizes(key, d, num_samples, paired, logits)


@partial(jax.jit, static_argnames=("num_players", "num_samples", "paired"))
def uniform_cardinality(key: jax.Array, num_players: int, num_samples: int, *,
                        paired: bool = False) -> jax.Array:
  """Samples |z| = k uniformly from {0, ..., d}, then a uniform subset of that size.

  Used to train surrogates, MaskEmbed and masked predictors for feature selection.

  Example:
    >>> uniform_cardinality(jax.random.key(0), 5, 4).shape
    (4, 5)
  """
  _checks.prng_key("key", key)
  d = _checks.positive_int("num_players", num_players)
  _checks.positive_int("num_samples", num_samples)
  return _sample_with_sizes(key, d, num_samples, paired, np.zeros(d + 1))


@partial(jax.jit, static_argnames=("num_players", "num_samples", "p", "paired"))
def bernoulli(key: jax.Array, num_players: int, num_samples: int, *, p: float = 0.5,
              paired: bool = False) -> jax.Array:
  """Keeps each player independently with probability ``p`` (MSR Banzhaf uses p = 1/2).

  Example:
    >>> bernoulli(jax.random.key(0), 5, 4, p=0.3).shape
    (4, 5)
  """
  _checks.prng_key("key", key)
  d = _checks.positive_int("num_players", num_players)
  _checks.positive_int("num_samples", num_samples)
  p = _checks.probability("p", p)
  _checks.even_if_paired(num_samples, paired)
  num_draws = num_samples // 2 if paired else num_samples
  z = jax.random.bernoulli(key, p, (num_draws, d))
  return pair(z) if paired else z


@partial(jax.jit, static_argnames=("num_players", "num_samples", "antithetic"))
def permutations(key: jax.Array, num_players: int, num_samples: int, *, antithetic: bool = False) -> jax.Array:
  """Uniformly random orderings of the players.

  Args:
    key: PRNG key.
    num_players: d (static).
    num_samples: number of orderings (static; even when antithetic).
    antithetic: follow each ordering by its reverse.

  Returns:
    int32[num_samples, num_players]; row i lists player indices in order of arrival.

  Example:
    >>> perms = permutations(jax.random.key(0), 4, 2, antithetic=True)
    >>> perms[1].tolist() == perms[0][::-1].tolist()
    True
  """
  _checks.prng_key("key", key)
  d = _checks.positive_int("num_players", num_players)
  _checks.positive_int("num_samples", num_samples)
  _checks.even_if_paired(num_samples, antithetic)
  num_draws = num_samples // 2 if antithetic else num_samples
  noise = jax.random.uniform(key, (num_draws, d))
  perms = jnp.argsort(noise, axis=1).astype(jnp.int32)
  if antithetic:
    perms = jnp.stack([perms, perms[:, ::-1]], axis=1).reshape(-1, d)
  return perms


def group_matrix(groups: Sequence[Sequence[int]], num_features: int) -> np.ndarray:
  """0/1 matrix mapping players (groups) to the features they hold: G[i, j] = 1 iff feature j in group i.

  Args:
    groups: one list of feature indices per player.
    num_features: total number of features.

  Returns:
    bool[num_players, num_features].

  Example:
    >>> group_matrix([[0, 1], [2]], 4).astype(int).tolist()
    [[1, 1, 0, 0], [0, 0, 1, 0]]
  """
  nf = _checks.positive_int("num_features", num_features)
  g = np.zeros((len(groups), nf), dtype=bool)
  for i, members in enumerate(groups):
    members = np.asarray(list(members), dtype=np.int64)
    if members.size and (members.min() < 0 or members.max() >= nf):
      raise ValueError(f"groups[{i}] holds feature indices outside [0, {nf}): {members.tolist()}.")
    g[i, members] = True
  return g


def patch_groups(image_size: int | tuple[int, int], patch_size: int) -> np.ndarray:
  """Group matrix from a row-major grid of square patches to flattened pixels (H * W).

  Example:
    >>> patch_groups(4, 2).shape
    (4, 16)
  """
  h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
  if h % patch_size or w % patch_size:
    raise ValueError(f"image_size {(h, w)} must be divisible by patch_size {patch_size}.")
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  patch_index = (rows // patch_size) * (w // patch_size) + cols // patch_size
  num_patches = (h // patch_size) * (w // patch_size)
  return patch_index.reshape(1, -1) == np.arange(num_patches)[:, None]


def expand_groups(masks: jax.Array, groups: jax.Array | np.ndarray) -> jax.Array:
  """Maps player masks bool[n, d] to feature masks bool[n, f]: a feature is kept iff its group is kept.

  Features in no group are never kept; features in several groups are kept if any of them is.

  Example:
    >>> g = group_matrix([[0, 1], [2]], 3)
    >>> expand_groups(jnp.array([[True, False]]), g).tolist()
    [[True, True, False]]
  """
  groups = jnp.asarray(groups)
  if groups.ndim != 2 or masks.shape[-1] != groups.shape[0]:
    raise ValueError(f"groups must be [num_players, num_features] with num_players = masks.shape[-1] = "
                     f"{masks.shape[-1]}, got groups of shape {tuple(groups.shape)}.")
  return (masks.astype(jnp.float32) @ groups.astype(jnp.float32)) > 0


def upsample_patches(masks: jax.Array, grid: tuple[int, int], patch_size: int) -> jax.Array:
  """Patch masks bool[..., gh * gw] (row-major) -> pixel masks bool[..., gh * p, gw * p].

  Example:
    >>> m = upsample_patches(jnp.array([True, False, False, True]), (2, 2), 2)
    >>> m.astype(int).tolist()
    [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
  """
  gh, gw = grid
  if masks.shape[-1] != gh * gw:
    raise ValueError(f"masks must have grid[0] * grid[1] = {gh * gw} patches in the last axis, "
                     f"got shape {tuple(masks.shape)}.")
  m = masks.reshape(*masks.shape[:-1], gh, 1, gw, 1)
  m = jnp.broadcast_to(m, (*masks.shape[:-1], gh, patch_size, gw, patch_size))
  return m.reshape(*masks.shape[:-1], gh * patch_size, gw * patch_size)
