"""Shapley values: exact enumeration, KernelSHAP regression, permutation sampling, efficient normalization.

All functions take a game ``bool[n, d] -> float[n] | float[n, k]`` (see :mod:`xattr.games`), treat ``num_players``
and the sampling sizes as static, and are jittable and vmappable over inputs:

  >>> import jax, jax.numpy as jnp
  >>> from xattr import games, shapley
  >>> w = jnp.array([1.0, 2.0, 3.0, 4.0])
  >>> f = lambda x: x @ w
  >>> X = jnp.ones((5, 4))
  >>> explain = lambda x: shapley.kernel_shap(games.baseline(f, x, jnp.zeros(4)), 4, jax.random.key(0),
  ...                                         num_samples=64, batch_size=32).values
  >>> jax.jit(jax.vmap(explain))(X).round(4)[0].tolist()
  [1.0, 2.0, 3.0, 4.0]

KernelSHAP solves the constrained weighted least squares problem
min_b E_{z~p}[(v(z) - v(0) - z^T b)^2] s.t. 1^T b = v(1) - v(0), whose solution is
b = A^-1 c - A^-1 1 (1^T A^-1 c - (v(1) - v(0))) / (1^T A^-1 1) with A = E[z z^T], c = E[z (v(z) - v(0))] and z drawn
from the Shapley kernel. ``exact_a=False`` (the original KernelSHAP) estimates A from the same samples;
``exact_a=True`` (unbiased KernelSHAP) uses A in closed form. References: Lundberg & Lee (2017); Covert & Lee,
"Improving KernelSHAP" (AISTATS 2021).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from math import comb
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from xattr import _checks, _enumerate, _loop
from xattr import masks as masks_lib
from xattr._enumerate import MAX_EXACT_PLAYERS
from xattr.estimate import Estimate

Game = Callable[[jax.Array], jax.Array]

__all__ = ["Estimate", "MAX_EXACT_PLAYERS", "exact", "kernel_shap", "permutation", "normalize_efficient",
           "exact_a_matrix", "samples_to_converge"]


def normalize_efficient(phi: jax.Array, grand: jax.Array, null: jax.Array) -> jax.Array:
  """Additive efficient normalization: phi + (grand - null - sum phi) / d, so values sum to grand - null.

  Args:
    phi: float[d] or float[d, k] (also batched: [..., d] / [..., d, k] with matching grand/null).
    grand: v(1), float[] or float[k].
    null: v(0), same shape as grand.

  Example:
    >>> normalize_efficient(jnp.array([1.0, 1.0]), jnp.array(4.0), jnp.array(0.0)).tolist()
    [2.0, 2.0]
  """
  phi = jnp.asarray(phi)
  gap = jnp.asarray(grand) - jnp.asarray(null)
  player_axis = -2 if gap.ndim and phi.ndim >= 2 and phi.shape[-1] == gap.shape[-1] else -1
  d = phi.shape[player_axis]
  return phi + jnp.expand_dims(gap - phi.sum(player_axis), player_axis) / d


def exact(game: Game, num_players: int, *, batch_size: int = 4096) -> jax.Array:
  """Exact Shapley values by enumerating all 2^d coalitions (d <= ``MAX_EXACT_PLAYERS`` = 20).

  Args:
    game: bool[n, d] -> float[n] or float[n, k].
    num_players: d (static).
    batch_size: coalitions per game call (rounded down to a power of two).

  Returns:
    float[d] (or float[d, k] for vector-valued games).

  Raises:
    ValueError: if num_players exceeds the enumeration limit.

  Example:
    >>> v = lambda m: jnp.all(m, axis=1).astype(jnp.float32)       # unanimity game
    >>> exact(v, 4).tolist()
    [0.25, 0.25, 0.25, 0.25]
  """
  d = _enumerate.check_size(num_players)
  batch_size = _checks.positive_int("batch_size", batch_size)
  weights = np.array([1.0 / (d * comb(d - 1, s)) for s in range(d)])
  phi, game_ok = _enumerate.semivalue(game, d, weights, batch_size)
  _, _, scalar = _loop.grand_and_null(game, d)
  _loop.check_result("shapley.exact", phi, game_ok)
  return phi[:, 0] if scalar else phi


def exact_a_matrix(num_players: int) -> np.ndarray:
  """A = E[z z^T] under the Shapley kernel, in closed form (float64[d, d]).

  A_ii = 1/2 and A_ij = [sum_{k=2}^{d-1} (k-1)/(d-k)] / [d (d-1) sum_{k=1}^{d-1} 1/(k (d-k))].

  Example:
    >>> exact_a_matrix(3).round(3).tolist()
    [[0.5, 0.167, 0.167], [0.167, 0.5, 0.167], [0.167, 0.167, 0.5]]
  """
  d = _checks.positive_int("num_players", num_players, minimum=2)
  k = np.arange(1, d)
  off = np.sum((k[1:] - 1) / (d - k[1:])) / (d * (d - 1) * np.sum(1.0 / (k * (d - k))))
  return np.full((d, d), off) + np.eye(d) * (0.5 - off)


def _solve_constrained(a: jax.Array, c: jax.Array, gap: jax.Array) -> jax.Array:
  """argmin of the KernelSHAP objective given A [d, d], c [d, k] and the efficiency gap [k]."""
  d = a.shape[0]
  sol = jnp.linalg.solve(a, jnp.concatenate([jnp.ones((d, 1), a.dtype), c], axis=1))
  a_inv_one, a_inv_c = sol[:, :1], sol[:, 1:]
  return a_inv_c - a_inv_one * (a_inv_c.sum(0) - gap) / a_inv_one.sum()


def _projection(a: jax.Array) -> jax.Array:
  """M = A^-1 - u u^T / (1^T u), u = A^-1 1: the estimate is M c + const, so Cov(b) = M Cov(c) M^T."""
  a_inv = jnp.linalg.inv(a)
  u = a_inv.sum(1)
  return a_inv - jnp.outer(u, u) / u.sum()


def _cov_std(m: jax.Array, cov_c: jax.Array) -> jax.Array:
  """sqrt(diag(M Cov_k M^T)) for every output k: cov_c [k, d, d] -> std [d, k]."""
  var = jnp.einsum("id,kde,ie->ik", m, cov_c, m)
  return jnp.sqrt(jnp.maximum(var, 0.0))


class _Enumerated(NamedTuple):
  """The coalition sizes KernelSHAP enumerates exactly instead of sampling (static, numpy)."""

  masks: np.ndarray            # bool[count, d]
  weights: np.ndarray          # kernel probability of each enumerated coalition
  mass: float                  # total kernel probability p_E of the enumerated sizes
  rest_probs: np.ndarray       # size distribution of the sampled remainder (zero on enumerated sizes)


def _extreme_sizes(d: int, k: int) -> list[int]:
  """The coalition sizes {1..k} ∪ {d-k..d-1}, sorted, within 1..d-1."""
  return sorted({s for j in range(1, k + 1) for s in (j, d - j) if 1 <= s <= d - 1})


def _enumeration_plan(d: int, budget: int, requested: int | None) -> int:
  """K minimising the sampled part's variance proxy (1 - p_E)^2 / (budget - count_E) over affordable K.

  Enumerating sizes {1..K, d-K..d-1} removes their share p_E of the kernel from the sampling variance but spends
  count_E of the budget; the variance of the rest scales as its mass squared over its sample count. Every
  size enumerated gives zero variance, so it wins whenever it fits.
  """
  if requested is not None:
    return _checks.positive_int("enumerate_sizes", requested, minimum=0)
  probs = masks_lib.shapley_kernel_size_probs(d)
  best, best_cost = 0, 1.0 / budget
  for k in range(1, d // 2 + 1):
    sizes = _extreme_sizes(d, k)
    count = sum(comb(d, s) for s in sizes)
    left = budget - count
    mass = 1.0 - probs[sizes].sum()
    if left < 0:
      break
    cost = 0.0 if mass < 1e-12 else (mass ** 2 / left if left > 0 else np.inf)
    if cost < best_cost:
      best, best_cost = k, cost
  return best


def _enumerate_sizes(d: int, k: int) -> _Enumerated:
  probs = masks_lib.shapley_kernel_size_probs(d)
  sizes = _extreme_sizes(d, k)
  rows = [np.isin(np.arange(d), c) for s in sizes for c in combinations(range(d), s)]
  masks = np.array(rows, bool).reshape(-1, d)
  sz = masks.sum(1)
  weights = np.array([probs[s] / comb(d, s) for s in sz])
  rest = probs.copy()
  rest[sizes] = 0.0
  return _Enumerated(masks, weights, float(probs[sizes].sum()), rest)


def kernel_shap(game: Game, num_players: int, key: jax.Array, *, num_samples: int | None = None,
                batch_size: int = 512, paired: bool = True, exact_a: bool = False, threshold: float = 0.01,
                max_samples: int = 2 ** 17, enumerate_sizes: int | None = None) -> Estimate:
  """KernelSHAP as constrained weighted least squares, with uncertainty and convergence detection.

  The expectation over the Shapley kernel is split in two: the smallest and largest coalition sizes
  (1..K and d-K..d-1, which carry most of the kernel's mass in few coalitions) are enumerated exactly, and the
  rest is sampled. The enumerated part has no variance, so the reported std only reflects the sampled part.
  With all sizes enumerated the result is exact.

  Args:
    game: bool[n, d] -> float[n] or float[n, k]; called on ``batch_size`` coalitions at a time.
    num_players: d >= 2 (static).
    key: PRNG key; same key -> same estimate.
    num_samples: total coalitions evaluated (enumerated + sampled; grand and null come on top; fewer when the
      enumeration covers every size, since the result is then exact). None: sample
      batches until ``max(std) / (max(values) - min(values)) < threshold`` (checked inside a ``lax.while_loop``,
      from the second batch on) or ``max_samples`` is reached.
    batch_size: coalitions per game call (even when paired).
    paired: sample each coalition together with its complement (large variance reduction).
    exact_a: use the closed-form A (unbiased KernelSHAP) instead of estimating it from the samples.
    threshold: convergence threshold on the relative std; also sets ``Estimate.converged`` for fixed budgets.
    max_samples: cap on coalitions (enumerated + sampled) in convergence mode.
    enumerate_sizes: K; None picks the K that minimises the sampled part's variance (1 - p_E)^2 / (samples
      left), with ``num_samples`` as the budget (``batch_size`` in convergence mode, where every size is
      enumerated, exactly, if 2^d - 2 <= max_samples / 8); 0 samples every size.

  Returns:
    :class:`Estimate` with values float[d] (or [d, k]) summing to v(1) - v(0), their std, num_evals (coalitions
    + 2) and the converged flag. std comes from the covariance of c propagated through M (``exact_a=True``), and
    from the spread of per-batch solutions (``exact_a=False``; fixed budgets are split into >= 4 batches of
    >= 2d samples for it). With fewer sampled coalitions than that the exact-A formula stands in; it is an
    upper bound that can be many times the real error on nearly additive games.

  Raises:
    ValueError: bad sizes, e.g. fewer than d (unpaired) or 2(d - 1) (paired) samples for the original
      estimator without enumeration, whose sampled A is then singular.
    FloatingPointError: (outside jit) non-finite game values or a singular system.

  Example:
    >>> v = lambda m: m.astype(jnp.float32) @ jnp.arange(8.0)        # additive game
    >>> est = kernel_shap(v, 8, jax.random.key(0), num_samples=64, batch_size=16)
    >>> est.values.round(4).tolist(), int(est.num_evals)
    ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 66)
  """
  d = _checks.positive_int("num_players", num_players, minimum=2)
  unit = 2 if paired else 1
  plan_budget = num_samples if num_samples is not None else batch_size
  _checks.positive_int("num_samples" if num_samples is not None else "batch_size", plan_budget)
  if num_samples is not None:
    _checks.even_if_paired(num_samples, paired)
  elif not threshold > 0:
    raise ValueError(f"threshold must be > 0 when num_samples is None (run until converged), got {threshold}.")
  if num_samples is None and enumerate_sizes is None and 2 ** d - 2 <= max_samples // 8:
    # Enumerating every coalition is cheaper than a typical converged run would be: do that, exactly.
    enumerate_sizes = d // 2
  enum = _enumerate_sizes(d, _enumeration_plan(d, plan_budget, enumerate_sizes))
  n_enum = len(enum.masks)
  sampled = num_samples - n_enum if num_samples is not None else None
  if sampled is not None and sampled < 0:
    raise ValueError(f"enumerate_sizes={enumerate_sizes} needs {n_enum} coalitions, more than num_samples="
                     f"{num_samples}.")
  if sampled is not None and not exact_a and n_enum == 0:
    # The sampled A must be invertible: d independent rows, and a pair (z, 1 - z) spans only z and 1.
    minimum = 2 * (d - 1) if paired else d
    if num_samples < minimum:
      raise ValueError(f"num_samples={num_samples} is too few for a solvable system: the original KernelSHAP "
                       f"estimator (exact_a=False) with paired={paired} needs num_samples >= {minimum} for "
                       f"num_players={d}, preferably many more. Use more samples or exact_a=True.")
  grand, null, scalar = _loop.grand_and_null(game, d)
  gap = grand - null
  k = gap.shape[0]
  a_exact = jnp.asarray(exact_a_matrix(d), jnp.float32)
  a_enum = jnp.asarray(enum.masks.T @ (enum.masks * enum.weights[:, None]), jnp.float32)
  c_enum, enum_ok = jnp.zeros((d, k), jnp.float32), jnp.array(True)
  if n_enum:
    y_enum = _loop.evaluate_chunked(game, jnp.asarray(enum.masks), batch_size) - null
    c_enum = jnp.asarray(enum.masks.T * enum.weights, jnp.float32) @ y_enum
    enum_ok = jnp.all(jnp.isfinite(y_enum))
  rest = 1.0 - enum.mass                                   # kernel mass of the sampled sizes

  if rest < 1e-9 or sampled == 0:                          # everything enumerated: exact, no sampling
    a = a_exact if exact_a else a_enum / enum.mass
    values = normalize_efficient(_solve_constrained(a, c_enum / enum.mass, gap), grand, null)
    zeros = jnp.zeros_like(values)
    est = Estimate(values[:, 0] if scalar else values, zeros[:, 0] if scalar else zeros,
                   jnp.asarray(n_enum + 2, jnp.int32), jnp.asarray(True))
    _loop.check_result("kernel_shap", est, enum_ok & jnp.all(jnp.isfinite(gap)))
    return est

  cap = _checks.positive_int("max_samples", max_samples) - n_enum          # the cap counts enumerated ones too
  if sampled is not None and not exact_a:
    # The original estimator's std comes from the spread of batch solutions: aim for >= 4 batches of >= 2d.
    quarter = -(-sampled // 4)
    batch_size = min(batch_size, max(quarter + quarter % unit, 2 * d + (2 * d) % unit))
  bs, budget, spec = _loop.batch_plan(sampled, batch_size, cap, unit, threshold)
  use_spread = not exact_a and spec.max_batches >= 2 and bs >= 2 * d

  state = dict(
      a_sum=jnp.zeros((d, d), jnp.float32),
      g=_loop.moments_init((d, k), (k, d, d)),            # per-unit c contributions, full covariance
      b=_spread_init((d, k)),                             # per-batch solutions (original estimator)
      ok=jnp.all(jnp.isfinite(gap)) & enum_ok,
  )

  def combine(a_sampled, c_sampled):
    """Kernel expectation = enumerated part + (mass of the rest) x sampled mean."""
    a = a_exact if exact_a else a_enum + rest * a_sampled
    return a, c_enum + rest * c_sampled

  def update(st, i):
    z = masks_lib.with_size_probs(jax.random.fold_in(key, i), d, bs, enum.rest_probs, paired=paired)
    y = _loop.call_game(game, z) - null
    w = _loop.valid_rows(i, bs, budget).reshape(-1, unit)[:, 0]          # one weight per unit (pair)
    zu = z.astype(jnp.float32).reshape(-1, unit, d)
    g_units = jnp.einsum("utd,utk->udk", zu, y.reshape(-1, unit, k)) / unit
    a_batch = jnp.einsum("utd,ute,u->de", zu, zu, w) / unit
    new = dict(a_sum=st["a_sum"] + a_batch, g=_loop.moments_update(st["g"], g_units, w, outer=True), b=st["b"],
               ok=st["ok"] & jnp.all(jnp.isfinite(y)))
    if use_spread:
      n_b = jnp.maximum(w.sum(), 1.0)
      b_batch = _solve_constrained(*combine(a_batch / n_b, (g_units * w[:, None, None]).sum(0) / n_b), gap)
      new["b"] = _spread_update(st["b"], b_batch, w.sum())
    return new

  def finish(st):
    n = jnp.maximum(st["g"].count, 1.0)
    a, c = combine(st["a_sum"] / n, st["g"].mean)
    values = _solve_constrained(a, c, gap)
    cov_c = rest ** 2 * st["g"].m2 / jnp.maximum((n - 1.0) * n, 1.0)
    std = _cov_std(_projection(a), cov_c)
    if use_spread:
      spread = st["b"]
      # m2 = sum_j n_j (b_j - mean)^2, so m2 / (batches - 1) estimates the per-unit variance, and dividing by
      # the n pooled units gives the variance of the pooled solution (batch means).
      var = spread.m2 / jnp.maximum(spread.batches - 1.0, 1.0) / n
      std = jnp.where(spread.batches >= 2, jnp.sqrt(jnp.maximum(var, 0.0)), std)
    return values, std

  state, values, std, converged = _loop.run_batches(update, finish, state, spec, threshold)
  values = normalize_efficient(values, grand, null)
  num_evals = (state["g"].count * unit + n_enum + 2).astype(jnp.int32)
  est = Estimate(values[:, 0] if scalar else values, std[:, 0] if scalar else std, num_evals, converged)
  _loop.check_result("kernel_shap", est, state["ok"])
  return est


class _Spread(NamedTuple):
  """Weighted running mean and M2 of per-batch solutions (West's algorithm), and how many batches."""

  batches: jax.Array
  weight: jax.Array
  mean: jax.Array
  m2: jax.Array


def _spread_init(shape: tuple[int, ...]) -> _Spread:
  zero = jnp.zeros((), jnp.float32)
  return _Spread(zero, zero, jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32))


def _spread_update(state: _Spread, x: jax.Array, weight: jax.Array) -> _Spread:
  total = state.weight + weight
  delta = x - state.mean
  mean = state.mean + delta * jnp.where(total > 0, weight / jnp.maximum(total, 1e-12), 0.0)
  m2 = state.m2 + weight * delta * (x - mean)
  return _Spread(state.batches + (weight > 0), total, mean, m2)


def permutation(game: Game, num_players: int, key: jax.Array, *, num_permutations: int | None = None,
                antithetic: bool = True, batch_size: int = 512, threshold: float = 0.01,
                max_permutations: int = 2 ** 12) -> Estimate:
  """Permutation-sampling Shapley values: marginal contributions along random player orderings.

  Each ordering costs d - 1 game evaluations (v(0) and v(1) are shared). Efficiency holds exactly for any
  number of orderings (contributions telescope). Mean and variance are accumulated with a parallel Welford
  update over orderings, or over antithetic pairs (an ordering and its reverse) when ``antithetic=True``.

  Args:
    game: bool[n, d] -> float[n] or float[n, k].
    num_players: d >= 2 (static).
    key: PRNG key.
    num_permutations: fixed number of orderings (even when antithetic); None: until converged (see
      :func:`kernel_shap`), at most ``max_permutations``.
    antithetic: pair each ordering with its reverse.
    batch_size: coalitions per game call; a batch holds max(unit, batch_size // (d - 1)) orderings.
    threshold: convergence threshold on max(std) / range(values).
    max_permutations: cap in convergence mode.

  Returns:
    :class:`Estimate`; num_evals = orderings * (d - 1) + 2.

  Example:
    >>> v = lambda m: jnp.all(m[:, :2], axis=1).astype(jnp.float32)   # players 0 and 1 must cooperate
    >>> est = permutation(v, 3, jax.random.key(0), num_permutations=64)
    >>> est.values.round(3).tolist()
    [0.5, 0.5, 0.0]
  """
  d = _checks.positive_int("num_players", num_players, minimum=2)
  unit = 2 if antithetic else 1
  per_batch = max(unit, _checks.positive_int("batch_size", batch_size) // (d - 1))
  per_batch -= per_batch % unit
  max_perm = max(_checks.positive_int("max_permutations", max_permutations), 2 * per_batch)
  pb, budget, spec = _loop.batch_plan(num_permutations, per_batch, max_perm, unit, threshold)
  grand, null, scalar = _loop.grand_and_null(game, d)
  k = grand.shape[0]
  state = dict(m=_loop.moments_init((d, k)), ok=jnp.all(jnp.isfinite(grand - null)))

  def update(st, i):
    perms = masks_lib.permutations(jax.random.fold_in(key, i), d, pb, antithetic=antithetic)
    ranks = jnp.argsort(perms, axis=1)                                   # position of each player
    prefixes = ranks[:, None, :] < jnp.arange(1, d)[None, :, None]       # [pb, d-1, d]
    inner = _loop.call_game(game, prefixes.reshape(-1, d)).reshape(pb, d - 1, k)
    chain = jnp.concatenate([jnp.broadcast_to(null, (pb, 1, k)), inner, jnp.broadcast_to(grand, (pb, 1, k))], 1)
    after = jnp.take_along_axis(chain, (ranks + 1)[:, :, None], axis=1)
    before = jnp.take_along_axis(chain, ranks[:, :, None], axis=1)
    units = (after - before).reshape(-1, unit, d, k).mean(1)
    w = _loop.valid_rows(i, pb, budget).reshape(-1, unit)[:, 0]
    return dict(m=_loop.moments_update(st["m"], units, w), ok=st["ok"] & jnp.all(jnp.isfinite(inner)))

  def finish(st):
    return st["m"].mean, jnp.sqrt(_loop.variance_of_mean(st["m"]))

  state, values, std, converged = _loop.run_batches(update, finish, state, spec, threshold)
  num_evals = (state["m"].count * unit * (d - 1) + 2).astype(jnp.int32)
  est = Estimate(values[:, 0] if scalar else values, std[:, 0] if scalar else std, num_evals, converged)
  _loop.check_result("permutation", est, state["ok"])
  return est


def samples_to_converge(estimate: Estimate, threshold: float = 0.01) -> jax.Array:
  """Forecast of the total samples needed to reach ``threshold``: n (ratio / threshold)^2 (std ∝ 1/sqrt(n)).

  Example:
    >>> est = Estimate(jnp.array([0.0, 1.0]), jnp.array([0.02, 0.02]), jnp.array(1002), jnp.array(False))
    >>> int(samples_to_converge(est, 0.01))
    4000
  """
  values = estimate.values if estimate.values.ndim == 2 else estimate.values[:, None]
  std = estimate.std if estimate.std.ndim == 2 else estimate.std[:, None]
  ratio = _loop.relative_std(values, std)
  return jnp.ceil((estimate.num_evals - 2) * (ratio / threshold) ** 2)
