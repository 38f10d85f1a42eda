"""Samplers of marginal contributions of training points, batched over subsets and sharded over devices.

* **Distributional** (the samples behind individualized scaling laws and distributional values): for a point z
  and a size k ~ U[k_min, k_max), draw a class-balanced subset D of the pool without z, |D| = k, and return
  Delta = U(D u {z}) - U(D). "Class-balanced" means stratified: D holds each class in proportion to the pool
  (``balance='proportional'``, largest-remainder rounding) or equally often (``balance='equal'``), so subsets
  never miss a class and their class mix does not vary from sample to sample (that variation would only add
  noise to Delta).
* **TMC permutations without truncation** (Data Shapley): for a random ordering of the pool, the marginal
  contribution of each point to the prefix before it; the mean over orderings is the Data Shapley value and
  each ordering alone is an unbiased noisy label for it.
* **Data Banzhaf** (MSR estimator on Bernoulli(1/2) subsets) and **leave-one-out**: xattr's game estimators
  applied to :func:`xattr.valuation.utility.game`.

The distributional and TMC samplers return the raw samples (one row per subset pair or per ordering), which the
scaling-law estimators and the amortized models consume. Work is a flat batch of samples: each sample's subset
is drawn inside the computation from ``fold_in(key, sample_id)``, trained with ``vmap`` and the batch split over
the ``'data'`` axis of a mesh in fixed-size chunks — so results depend only on (key, sample ids), never on the
number of devices or the chunk size.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from xattr.valuation import samplers
  >>> labels = jnp.array([0, 0, 0, 0, 1, 1, 1, 1])
  >>> d = samplers.class_balanced_subset(jax.random.key(0), labels, 2, exclude=0, size=4)
  >>> int(d.sum()), bool(d[0]), jnp.bincount(labels, weights=d.astype(float), length=2).tolist()
  (4, False, [2.0, 2.0])
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from xattr import _checks, banzhaf, parallel
from xattr.estimate import Estimate
from xattr.valuation import utility as utility_lib

__all__ = ["BALANCE", "class_quotas", "class_balanced_subset", "sample_sizes", "evaluate", "distributional", "tmc",
           "tmc_values", "permutation_order", "data_banzhaf", "leave_one_out", "point_means", "sharded_map"]

BALANCE = ("proportional", "equal", "none")


# ---------------------------------------------------------------------------------------------------------------
# Class-balanced subsets
# ---------------------------------------------------------------------------------------------------------------

def class_quotas(key: jax.Array, counts: jax.Array, size: jax.Array, balance: str = "proportional") -> jax.Array:
  """How many points of each class a subset of ``size`` takes: int32[C] summing to ``size``.

  'proportional': size * counts / sum(counts), rounded by largest remainder; 'equal': size / C each; ties in
  the remainders are broken at random (``key``) so no class is favoured on average.

  Example:
    >>> class_quotas(jax.random.key(0), jnp.array([30, 70]), 10).tolist()
    [3, 7]
  """
  counts = counts.astype(jnp.float32)
  c = counts.shape[0]
  share = counts / jnp.maximum(counts.sum(), 1.0) if balance == "proportional" else jnp.full(c, 1.0 / c)
  exact = share * size
  base = jnp.floor(exact)
  # Largest remainder; uniform noise far below any real remainder gap breaks exact ties at random.
  frac = exact - base + 1e-4 * jax.random.uniform(key, (c,))
  rank = jnp.argsort(jnp.argsort(-frac))
  extra = rank < (size - base.sum())
  return (base + extra).astype(jnp.int32)


def class_balanced_subset(key: jax.Array, labels: jax.Array, num_classes: int, *, exclude: jax.Array | int,
                          size: jax.Array | int, balance: str = "proportional") -> jax.Array:
  """A random subset of the pool without ``exclude``, of exactly ``size`` points, stratified by class.

  Within each class the points are a uniform random subset of the quota from :func:`class_quotas` (computed
  on the pool without ``exclude``). Vmappable over (key, exclude, size); ``exclude=-1`` excludes nothing.

  Args:
    key: PRNG key.
    labels: int[n] class of every pool point (all zeros with ``num_classes=1`` for unstratified subsets).
    num_classes: C (static).
    exclude: index of the point to leave out (the point being valued), or -1.
    size: |D|; must not exceed what the quotas allow (checked by the public samplers, not here).
    balance: 'proportional', 'equal' or 'none' (uniform subsets of the pool, ignoring classes).

  Returns:
    bool[n] mask of D.
  """
  if balance not in BALANCE:
    raise ValueError(f"balance must be one of {BALANCE}, got {balance!r}.")
  n = labels.shape[0]
  labels = jnp.zeros(n, jnp.int32) if balance == "none" else labels.astype(jnp.int32)
  c = 1 if balance == "none" else num_classes
  quota_key, order_key = jax.random.split(key)
  is_excluded = jnp.arange(n) == exclude
  counts = jnp.zeros(c, jnp.int32).at[labels].add(jnp.where(is_excluded, 0, 1))
  quotas = class_quotas(quota_key, counts, size, "proportional" if balance == "none" else balance)
  # Unique uint32 keys (class | excluded flag | random bits | index): within each class the points come in random
  # order with the excluded one last, so keeping the keys up to each class's quota-th draws a uniform subset of
  # that class (exact ties in the random bits, chance ~n^2 / 2^(bits + 1), only favour the lower index). The
  # quota-th key of each class is found by bisection over the class's key range (31 counting passes, no sort:
  # XLA:CPU's sort made subset drawing ~15% of a valuation run).
  class_bits = max(1, int(np.ceil(np.log2(max(c, 2)))))
  index_bits = max(1, int(np.ceil(np.log2(n))))
  random_bits = 31 - class_bits - index_bits
  if random_bits < 8:
    raise ValueError(f"labels: {n} points in {c} classes leave {random_bits} random bits in a 32-bit sort key "
                     f"(need >= 8); use fewer points or classes.")
  rand = jax.random.bits(order_key, (n,), jnp.uint32) >> (32 - random_bits)
  keys = ((labels.astype(jnp.uint32) << (32 - class_bits)) | (is_excluded.astype(jnp.uint32) << (31 - class_bits))
          | (rand << index_bits) | jnp.arange(n, dtype=jnp.uint32))
  cutoff = _kth_key_per_class(keys, labels, quotas, c, class_bits)
  return (keys <= cutoff[labels]) & (quotas[labels] > 0) & ~is_excluded


def _kth_key_per_class(keys: jax.Array, labels: jax.Array, quotas: jax.Array, c: int, class_bits: int) -> jax.Array:
  """uint32[C]: for each class, its quotas[c]-th smallest key (keys unique, the class in their top bits)."""
  lo = jnp.arange(c, dtype=jnp.uint32) << (32 - class_bits)
  hi = lo + jnp.uint32((1 << (32 - class_bits)) - 1)
  in_class = labels[:, None] == jnp.arange(c)[None, :]

  def halve(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    enough = jnp.sum((keys[:, None] <= mid[None, :]) & in_class, 0) >= quotas
    return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

  return jax.lax.fori_loop(0, 32 - class_bits, halve, (lo, hi))[0]


def sample_sizes(key: jax.Array, num_samples: int, k_min: int, k_max: int) -> jax.Array:
  """Subset sizes k ~ U{k_min, ..., k_max - 1}: int32[num_samples].

  Example:
    >>> k = sample_sizes(jax.random.key(0), 1000, 100, 1000)
    >>> bool((k >= 100).all() and (k < 1000).all())
    True
  """
  _checks.positive_int("num_samples", num_samples)
  _check_size_range(k_min, k_max)
  return jax.random.randint(key, (num_samples,), k_min, k_max, dtype=jnp.int32)


def _check_size_range(k_min: int, k_max: int, pool: int | None = None) -> None:
  _checks.positive_int("k_min", k_min)
  _checks.positive_int("k_max", k_max)
  if k_max <= k_min:
    raise ValueError(f"k_max must be > k_min (sizes are drawn from [k_min, k_max)), got k_min={k_min}, "
                     f"k_max={k_max}.")
  if pool is not None and k_max - 1 > pool:
    raise ValueError(f"k_max - 1 = {k_max - 1} exceeds the {pool} pool points available to D (the pool minus "
                     f"the valued point).")


def _max_size(labels: np.ndarray, num_classes: int, balance: str) -> int:
  """Largest |D| the stratification allows for every excluded point."""
  n = len(labels)
  if balance != "equal":
    return n - 1
  counts = np.bincount(labels, minlength=num_classes)
  return int(num_classes * (counts.min() - 1))


# ---------------------------------------------------------------------------------------------------------------
# Sharded batches
# ---------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _compiled(fn: Callable, mesh: jax.sharding.Mesh, axis_name: str, batched: bool = False) -> Callable:
  rows, rep = parallel.data_sharding(mesh, axis_name), parallel.replicated(mesh)
  run = fn if batched else (lambda shared, batch: jax.vmap(fn, in_axes=(None, 0))(shared, batch))
  return jax.jit(run, in_shardings=(rep, rows), out_shardings=rows)


def sharded_map(fn: Callable[[Any, Any], Any], shared: Any, batch: Any, *, mesh: jax.sharding.Mesh | None = None,
                chunk_size: int = 1024, axis_name: str = "data", progress: bool = True,
                desc: str = "valuation", batched: bool = False) -> dict[str, np.ndarray]:
  """``jit(vmap(fn, in_axes=(None, 0)))(shared, batch)`` in fixed-size chunks split over a mesh axis.

  With ``batched=True``, ``fn(shared, chunk)`` receives the whole chunk (a leading axis on every leaf) instead
  of one row: for work that looks across the rows of a chunk (e.g. refining only its slowest solves).

  ``shared`` (e.g. a utility pytree) is replicated; ``batch`` (a pytree of arrays with a common leading axis)
  is cut into chunks of ``chunk_size`` rows (a smaller batch: the next power of two; rounded up to a multiple of
  the mesh size; the last chunk padded by repeating its last row), so every chunk has one shape and the whole
  batch costs one compilation. ``fn`` must
  be hashable and stable (a module-level function, or one returned by a cached factory) for the compilation to
  be reused across calls.

  Returns:
    ``fn``'s output pytree (a dict) with a leading axis over the batch, as numpy arrays.

  Example:
    >>> out = sharded_map(lambda s, b: {"y": s * b}, 2.0, np.arange(5.0), chunk_size=2, progress=False)
    >>> out["y"].tolist()
    [0.0, 2.0, 4.0, 6.0, 8.0]
  """
  mesh = parallel.make_mesh(axis_name=axis_name) if mesh is None else mesh
  devices = int(mesh.shape[axis_name])
  batch = jax.tree.map(np.asarray, batch)
  n = int(jax.tree.leaves(batch)[0].shape[0])
  # Chunks of chunk_size rows, or the next power of two for smaller batches: few distinct shapes, few compiles.
  chunk = min(_checks.positive_int("chunk_size", chunk_size), 1 << max(n - 1, 0).bit_length())
  chunk = -(-chunk // devices) * devices
  run = _compiled(fn, mesh, axis_name, batched)
  rows = parallel.data_sharding(mesh, axis_name)
  shared = parallel.put(shared, parallel.replicated(mesh))
  parts = []
  num_chunks = -(-n // chunk)
  with tqdm.tqdm(total=n, desc=desc, unit="sample", disable=not progress or num_chunks < 2,
                 dynamic_ncols=True) as bar:
    for start in range(0, n, chunk):
      idx = np.minimum(np.arange(start, start + chunk), n - 1)
      out = run(shared, parallel.put(jax.tree.map(lambda a: a[idx], batch), rows))
      # to_host gathers the rows of other processes' devices in a multi-process run.
      parts.append(jax.tree.map(lambda a, m=min(chunk, n - start): a[:m], parallel.to_host(out)))
      bar.update(min(chunk, n - start))
  return jax.tree.map(lambda *p: np.concatenate(p), *parts)


def _metric(utility: utility_lib.Utility, metric: str | None) -> str:
  metric = metric or utility_lib.METRICS[utility.task][0]
  if metric not in utility_lib.METRICS[utility.task]:
    raise ValueError(f"metric must be one of {utility_lib.METRICS[utility.task]} for a {utility.task} utility, "
                     f"got {metric!r}.")
  return metric


def _value_one(utility, mask):
  return utility_lib.value(utility, mask.astype(jnp.float32))


def evaluate(utility: utility_lib.Utility, masks: Any, *, mesh: jax.sharding.Mesh | None = None,
             chunk_size: int = 1024, progress: bool = True) -> dict[str, np.ndarray]:
  """U(D) for every row of ``masks`` (bool[B, n]): one training per row, vmapped and sharded.

  Example:
    >>> from xattr.valuation import utility
    >>> x = np.eye(3, dtype=np.float32); y = np.array([1.0, 2.0, 3.0], np.float32)
    >>> out = evaluate(utility.RidgeRegression.create(x, y, x, y), np.eye(3, dtype=bool), progress=False)
    >>> out["neg_mse"].shape
    (3,)
  """
  masks = np.asarray(masks)
  if masks.ndim != 2 or masks.shape[1] != utility.num_points:
    raise ValueError(f"masks must be bool[num_subsets, {utility.num_points}] (one column per pool point), got "
                     f"shape {masks.shape}.")
  return sharded_map(_value_one, utility, masks.astype(bool), mesh=mesh, chunk_size=chunk_size, progress=progress,
                     desc="utilities")


# ---------------------------------------------------------------------------------------------------------------
# Distributional marginal contributions
# ---------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _distributional_fn(num_classes: int, balance: str) -> Callable:
  def chunk(shared, samples):
    utility, key = shared
    labels = utility.y if utility.task == "classification" else jnp.zeros(utility.num_points, jnp.int32)
    masks = jax.vmap(lambda i, z, size: class_balanced_subset(jax.random.fold_in(key, i), labels, num_classes,
                                                              exclude=z, size=size, balance=balance))(
        samples["id"], samples["point"], samples["size"])
    return utility_lib.contributions(utility, masks.astype(jnp.float32), samples["point"])
  return chunk


def distributional(utility: utility_lib.Utility, key: jax.Array, points: Any, sizes: Any, *,
                   ids: Any | None = None, balance: str = "proportional", mesh: jax.sharding.Mesh | None = None,
                   chunk_size: int = 1024, progress: bool = True) -> dict[str, np.ndarray]:
  """Marginal contributions Delta = U(D u {z}) - U(D) of points z to random class-balanced subsets D of size k.

  Sample i values ``points[i]`` against a subset of ``sizes[i]`` pool points drawn (without the point) from
  ``fold_in(key, ids[i])``; pass the same ids to get the same subsets back (e.g. when a long run is split into
  pieces).

  Args:
    utility: a utility from :mod:`xattr.valuation.utility`.
    key: PRNG key.
    points: int[m] indices into the pool.
    sizes: int[m] subset sizes |D| (see :func:`sample_sizes`).
    ids: int[m] sample ids seeding each subset; default ``arange(m)``.
    balance: 'proportional' (default; classification), 'equal', or 'none' (uniform subsets; regression).
    mesh: device mesh (default: all devices on a 'data' axis).
    chunk_size: samples per jitted call.
    progress: show a progress bar over chunks.

  Returns:
    dict of numpy arrays [m]: per metric its contribution (e.g. 'neg_ce', 'accuracy') and 'base_<metric>' =
    U(D), plus 'point' and 'size'.

  Example:
    >>> import numpy as np
    >>> from xattr.valuation import utility
    >>> rng = np.random.default_rng(0); x = rng.normal(size=(30, 2)).astype(np.float32)
    >>> u = utility.RidgeRegression.create(x[:20], x[:20, 0], x[20:], x[20:, 0])
    >>> out = distributional(u, jax.random.key(0), np.arange(4), np.full(4, 10), balance="none", progress=False)
    >>> sorted(out), out["neg_mse"].shape
    (['base_neg_mse', 'neg_mse', 'point', 'size'], (4,))
  """
  points, sizes = np.asarray(points), np.asarray(sizes)
  m = points.shape[0]
  if points.ndim != 1 or sizes.shape != (m,) or m == 0:
    raise ValueError(f"points and sizes must be 1-D of the same non-zero length, got shapes {points.shape} and "
                     f"{sizes.shape}.")
  ids = np.arange(m) if ids is None else np.asarray(ids)
  if ids.shape != (m,):
    raise ValueError(f"ids must have shape ({m},) like points, got {ids.shape}.")
  n = utility.num_points
  if points.min() < 0 or points.max() >= n:
    raise ValueError(f"points must index the pool [0, {n}), got values in [{points.min()}, {points.max()}].")
  if balance not in BALANCE:
    raise ValueError(f"balance must be one of {BALANCE}, got {balance!r}.")
  classification = utility.task == "classification"
  if not classification and balance != "none":
    raise ValueError(f"balance must be 'none' for a {utility.task} utility (no classes), got {balance!r}.")
  num_classes = utility.num_classes if classification else 1
  largest = _max_size(np.asarray(utility.y), num_classes, balance) if classification else n - 1
  if sizes.min() < 1 or sizes.max() > largest:
    raise ValueError(f"sizes must lie in [1, {largest}] (the largest subset the pool allows without the valued "
                     f"point{' with equal class counts' if balance == 'equal' else ''}), got values in "
                     f"[{sizes.min()}, {sizes.max()}].")
  batch = {"point": points.astype(np.int32), "size": sizes.astype(np.int32), "id": ids.astype(np.uint32)}
  out = sharded_map(_distributional_fn(num_classes, balance), (utility, key), batch, mesh=mesh,
                    chunk_size=chunk_size, progress=progress, desc="marginal contributions", batched=True)
  return {**out, "point": batch["point"], "size": batch["size"]}


# ---------------------------------------------------------------------------------------------------------------
# TMC permutations (Data Shapley) without truncation
# ---------------------------------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames="num_points")
def _orders(key: jax.Array, perm_ids: jax.Array, num_points: int) -> jax.Array:
  noise = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), (num_points,)))(perm_ids)
  return jnp.argsort(noise, axis=1)


def permutation_order(key: jax.Array, perm_ids: Any, num_points: int) -> np.ndarray:
  """The orderings (int[len(perm_ids), n], points in order of arrival) that :func:`tmc` uses for ``perm_ids``.

  Example:
    >>> permutation_order(jax.random.key(0), [0, 1], 4).shape
    (2, 4)
  """
  return np.asarray(_orders(key, jnp.asarray(perm_ids, jnp.uint32), num_points))


def tmc(utility: utility_lib.Utility, key: jax.Array, num_permutations: int, *, first_permutation: int = 0,
        metric: str | None = None, mesh: jax.sharding.Mesh | None = None, chunk_size: int = 1024,
        progress: bool = True) -> np.ndarray:
  """Marginal contributions along random orderings of the whole pool (TMC Data Shapley, no truncation).

  Ordering p (p = first_permutation, ...) comes from ``fold_in(key, p)``; U is evaluated on all its n + 1
  prefixes (as independent vmapped trainings, sharded over the mesh) and each point gets U(prefix with it) -
  U(prefix before it). Their mean over orderings is the Data Shapley value; every row is an unbiased noisy
  label of it (the stochastic-amortization training signal).

  Args:
    utility: a utility; tiny prefixes that miss a class score as the untrained model (see
      :mod:`xattr.valuation.utility`), and a :class:`~xattr.valuation.utility.LogisticRegression` fitted on a
      small prefix is further from its warm start, so give it more ``newton_steps`` for exact prefix values.
    key: PRNG key.
    num_permutations: orderings to draw.
    first_permutation: id of the first ordering (to continue a run in pieces).
    metric: utility metric (default the task's first: 'neg_ce' or 'neg_mse').
    mesh, chunk_size, progress: as in :func:`distributional` (chunks count prefixes).

  Returns:
    float32[num_permutations, n]: entry [p, i] is point i's marginal contribution in ordering p.

  Example:
    >>> import numpy as np
    >>> from xattr.valuation import utility
    >>> x = np.eye(3, dtype=np.float32); y = np.array([1.0, 2.0, 3.0], np.float32)
    >>> u = utility.RidgeRegression.create(x, y, x, y)
    >>> deltas = tmc(u, jax.random.key(0), 4, progress=False)
    >>> v = utility.game(u)
    >>> bool(np.allclose(deltas.sum(1), v(jnp.ones((1, 3), bool)) - v(jnp.zeros((1, 3), bool)), atol=1e-5))
    True
  """
  p = _checks.positive_int("num_permutations", num_permutations)
  metric = _metric(utility, metric)
  n = utility.num_points
  deltas = np.zeros((p, n), np.float32)
  # Prefix masks for a few orderings at a time (n + 1 rows of n each), so memory stays O(chunk x n).
  per_block = max(1, chunk_size // (n + 1))
  blocks = range(0, p, per_block)
  for start in tqdm.tqdm(blocks, desc="TMC orderings", unit="block", disable=not progress or len(blocks) < 2,
                         dynamic_ncols=True):
    ids = np.arange(first_permutation + start, first_permutation + min(start + per_block, p))
    orders = permutation_order(key, ids, n)
    ranks = np.argsort(orders, axis=1)
    masks = ranks[:, None, :] < np.arange(n + 1)[None, :, None]                    # [orderings, n + 1, n]
    values = evaluate(utility, masks.reshape(-1, n), mesh=mesh, chunk_size=chunk_size,
                      progress=False)[metric].reshape(len(ids), n + 1)
    np.put_along_axis(deltas[start:start + len(ids)], orders, np.diff(values, axis=1), axis=1)
  return deltas


def tmc_values(deltas: np.ndarray) -> Estimate:
  """Data Shapley estimate from :func:`tmc` rows: mean over orderings and its standard error.

  Example:
    >>> est = tmc_values(np.array([[1.0, 0.0], [0.0, 1.0]]))
    >>> est.values.tolist(), est.num_evals.tolist()
    ([0.5, 0.5], 2)
  """
  deltas = np.asarray(deltas, np.float64)
  p = deltas.shape[0]
  std = deltas.std(0, ddof=1) / np.sqrt(p) if p > 1 else np.full(deltas.shape[1], np.inf)
  return Estimate(jnp.asarray(deltas.mean(0), jnp.float32), jnp.asarray(std, jnp.float32),
                  jnp.asarray(p, jnp.int32), jnp.asarray(False))


# ---------------------------------------------------------------------------------------------------------------
# Banzhaf and leave-one-out through xattr's game estimators
# ---------------------------------------------------------------------------------------------------------------

def data_banzhaf(utility: utility_lib.Utility, key: jax.Array, num_samples: int, *, metric: str | None = None,
                 batch_size: int = 256) -> Estimate:
  """Data Banzhaf values by maximum sample reuse (``xattr.banzhaf.msr`` on the utility game).

  Every Bernoulli(1/2) subset is one training run; each point's value is the mean utility of the subsets with
  it minus the mean of those without it.

  Example:
    >>> import numpy as np
    >>> from xattr.valuation import utility
    >>> x = np.eye(3, dtype=np.float32); y = np.array([1.0, 2.0, 3.0], np.float32)
    >>> est = data_banzhaf(utility.RidgeRegression.create(x, y, x, y), jax.random.key(0), 64)
    >>> est.values.shape
    (3,)
  """
  return banzhaf.msr(utility_lib.game(utility, metric), utility.num_points, key, num_samples=num_samples,
                     batch_size=batch_size)


def leave_one_out(utility: utility_lib.Utility, *, metric: str | None = None,
                  mesh: jax.sharding.Mesh | None = None, chunk_size: int = 1024) -> np.ndarray:
  """U(pool) - U(pool without i) for every point: n + 1 vmapped, sharded trainings.

  The same values as ``xattr.loo.leave_one_out(utility.game(u), n)``, with the trainings split into chunks and
  over devices.

  Example:
    >>> from xattr.valuation import utility
    >>> x = np.eye(3, dtype=np.float32); y = np.array([1.0, 2.0, 3.0], np.float32)
    >>> leave_one_out(utility.RidgeRegression.create(x, y, x, y)).shape
    (3,)
  """
  metric = _metric(utility, metric)
  n = utility.num_points
  masks = np.concatenate([np.ones((1, n), bool), ~np.eye(n, dtype=bool)])
  values = evaluate(utility, masks, mesh=mesh, chunk_size=chunk_size, progress=False)[metric]
  return (values[0] - values[1:]).astype(np.float64)


def point_means(points: np.ndarray, values: np.ndarray, num_points: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-point Monte Carlo mean of samples and its standard error (NaN without samples, resp. with < 2).

  Example:
    >>> mean, se = point_means(np.array([0, 0, 1]), np.array([1.0, 3.0, 5.0]), 3)
    >>> mean.tolist()[:2], bool(np.isnan(mean[2]))
    ([2.0, 5.0], True)
  """
  points, values = np.asarray(points), np.asarray(values, np.float64)
  count = np.bincount(points, minlength=num_points).astype(np.float64)
  total = np.bincount(points, values, minlength=num_points)
  sq = np.bincount(points, values ** 2, minlength=num_points)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = np.where(count > 0, total / count, np.nan)
    var = (sq - count * mean ** 2) / (count - 1)
    se = np.where(count > 1, np.sqrt(np.maximum(var, 0) / count), np.nan)
  return mean, se
