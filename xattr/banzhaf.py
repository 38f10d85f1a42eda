"""Banzhaf values: exact enumeration, Kernel Banzhaf regression and the maximum-sample-reuse (MSR) estimator.

phi_i = E_{S ⊆ N \\ i uniformly}[v(S ∪ i) - v(S)] = E[v(z) | z_i = 1] - E[v(z) | z_i = 0] for z ~ Bernoulli(1/2)^d.
MSR (Wang & Jia, 2023) estimates both conditional means from the *same* samples, so every sample informs
every player. :func:`kernel_banzhaf` regresses the game on the coalitions instead (Kernel Banzhaf, Liu, Witter &
Musco 2024: the Banzhaf values are the first-order coefficients of the least-squares fit under the uniform
distribution), with paired samples drawn without replacement and third-order interactions as covariates: several
times lower error than MSR at the same evaluations.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from xattr import banzhaf
  >>> v = lambda m: jnp.all(m, axis=1).astype(jnp.float32)       # unanimity of 3 players
  >>> banzhaf.exact(v, 3).tolist()
  [0.25, 0.25, 0.25]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from xattr import _checks, _enumerate, _loop, walsh
from xattr import masks as masks_lib
from xattr.estimate import Estimate

Game = Callable[[jax.Array], jax.Array]

__all__ = ["MAX_FIT_SAMPLES", "estimate", "estimator_for", "exact", "kernel_banzhaf", "msr"]

# Pairs are drawn without replacement up to this many players (a permutation of 2^(d - 1) pair indices).
MAX_DISTINCT_PLAYERS = 20


def exact(game: Game, num_players: int, *, batch_size: int = 4096) -> jax.Array:
  """Exact Banzhaf values by enumerating all 2^d coalitions (d <= 20); float64 when ``jax_enable_x64`` is on.

  Args:
    game: bool[n, d] -> float[n] or float[n, k].
    num_players: d (static).
    batch_size: coalitions per game call.

  Returns:
    float[d] or float[d, k].

  Example:
    >>> exact(lambda m: m.astype(jnp.float32) @ jnp.array([1.0, -2.0]), 2).tolist()
    [1.0, -2.0]
  """
  d = _enumerate.check_size(num_players)
  batch_size = _checks.positive_int("batch_size", batch_size)
  phi, game_ok = _loop.dispatch(_enumerate.exact_semivalue, game, num_players=d,
                                weights=tuple(np.full(d, 0.5 ** (d - 1)).tolist()), batch_size=batch_size)
  _loop.check_result("banzhaf.exact", phi, game_ok)
  return phi


def kernel_banzhaf(game: Game, num_players: int, key: jax.Array, *, num_samples: int, batch_size: int = 512,
                   interactions: bool = True, ridge: float | None = None, prior: str = "heredity",
                   threshold: float = 0.01) -> Estimate:
  """Kernel Banzhaf: paired coalitions, odd Walsh regression, first-order coefficients as Banzhaf values.

  Under the uniform distribution over coalitions the Banzhaf value of i is twice the coefficient of x_i = 2 z_i - 1
  in the least-squares fit of the game on x, and a pair (z, 1 - z) observes the game's odd part exactly (the even
  part, including the constant, cancels). The pairs are drawn uniformly *without* replacement (d <= 20; with
  replacement beyond, where repeats are rare), so the estimate becomes exact as the pairs exhaust the 2^(d-1)
  possible ones. With ``interactions`` (default) every third- and fifth-order Walsh function joins the fit as a
  Gaussian-process part (:class:`xattr.walsh.OddFit`, heredity prior by default; ridge by closed-form
  leave-one-out): it takes up variance that the first-order fit would otherwise see as noise, and does not bias
  the first-order coefficients.

  Args:
    game: bool[n, d] -> float[n] or float[n, k]; called on at most ``batch_size`` coalitions at a time.
    num_players: d >= 3 (static).
    key: PRNG key (``jax.random.key``); same key -> same estimate.
    num_samples: coalitions evaluated, even, >= 2 (d + 2); >= 2^d gives the exact values (:func:`exact`).
    batch_size: coalitions per game call; only a memory knob.
    interactions: include the higher-order part (False: plain weighted least squares, no eigendecomposition).
    ridge: a fixed ridge strength instead of the leave-one-out choice (with ``interactions``).
    prior: "heredity" (third and fifth order, heredity scales, with and without single-index regressors, chosen
      against "flat" by leave-one-out) or "flat" (third order, all terms alike); see :func:`xattr.walsh.fit`.
    threshold: sets ``Estimate.converged`` (max std / range of the values < threshold).

  Returns:
    :class:`Estimate` with values float[d] (or [d, k]); std from the delete-one jackknife over the pairs (with the
    finite-population correction of sampling without replacement; 0 when exact); num_evals = coalitions evaluated.

  Raises:
    ValueError: d < 3, an odd or too small ``num_samples``, a non-positive ``ridge``, an unknown ``prior``.
    FloatingPointError: (outside jit) non-finite game values.

  With ``interactions`` the fit's n x n eigendecompositions (n = num_samples / 2; two under the heredity prior, one
  per kernel, one under "flat") run on the host in numpy (float64), one input at a time under ``vmap``:
  about 0.1 s each at n = 1,000.

  Example:
    >>> w = jnp.arange(8.0)
    >>> v = lambda m: (m.astype(jnp.float32) @ w) + 4.0 * (m[:, 0] & m[:, 1] & m[:, 2])   # a 3-way interaction
    >>> est = kernel_banzhaf(v, 8, jax.random.key(0), num_samples=128)
    >>> mc = msr(v, 8, jax.random.key(0), num_samples=128)
    >>> err = lambda e: float(jnp.abs(e.values - exact(v, 8)).max())
    >>> err(est) < 0.05 < 1.0 < err(mc), int(est.num_evals)
    (True, 128)
  """
  d = _checks.positive_int("num_players", num_players, minimum=3)
  _checks.prng_key("key", key)
  batch_size = _checks.positive_int("batch_size", batch_size)
  _checks.positive_int("num_samples", num_samples)
  if num_samples % 2:
    raise ValueError(f"num_samples must be even (kernel_banzhaf evaluates coalitions in complementary pairs), got "
                     f"{num_samples}.")
  ridge = walsh.check_ridge(ridge)
  prior = walsh.check_prior(prior)
  if d <= _enumerate.MAX_EXACT_PLAYERS and num_samples >= 2 ** d:
    values = exact(game, d, batch_size=batch_size)
    return Estimate(values, jnp.zeros_like(values), jnp.asarray(2 ** d, jnp.int32), jnp.asarray(True))
  if num_samples < 2 * (d + 2):
    raise ValueError(f"num_samples={num_samples} is too few for kernel_banzhaf with num_players={d}: it needs "
                     f"num_samples >= {2 * (d + 2)} (d + 2 pairs), or >= {2 ** d} for the exact result.")
  opts = dict(num_players=d, num_samples=int(num_samples), batch_size=batch_size, interactions=bool(interactions),
              ridge=ridge, prior=prior, threshold=float(threshold))
  est, game_ok = _loop.dispatch(_kernel_banzhaf, game, key, **opts)
  _loop.check_result("banzhaf.kernel_banzhaf", est, game_ok)
  return est


def _pairs(key: jax.Array, d: int, n_pairs: int) -> tuple[jax.Array, float]:
  """(bool[n_pairs, d] one coalition per pair, the finite-population fraction sampled): uniform pairs without
  replacement for d <= MAX_DISTINCT_PLAYERS (coalitions without player d - 1 index the 2^(d-1) pairs)."""
  if d > MAX_DISTINCT_PLAYERS:
    return masks_lib.bernoulli(key, d, n_pairs), 0.0
  total = 2 ** (d - 1)
  index = jax.random.choice(key, total, (n_pairs,), replace=False)
  z = ((index[:, None] >> jnp.arange(d - 1)) & 1).astype(bool)
  return jnp.concatenate([z, jnp.zeros((n_pairs, 1), bool)], axis=1), n_pairs / total


def _kernel_banzhaf(game, key, *, num_players, num_samples, batch_size, interactions, ridge, prior, threshold):
  """Traced body of :func:`kernel_banzhaf`: returns (estimate, game_ok)."""
  d, n_pairs = num_players, num_samples // 2
  _, scalar = _loop.output_shape(game, d)
  squeeze = (lambda x: x[:, 0]) if scalar else (lambda x: x)
  z, fraction = _pairs(key, d, n_pairs)
  vals = _loop.evaluate_chunked(game, jnp.concatenate([z, ~z]), batch_size)
  ok = jnp.all(jnp.isfinite(vals))
  x = 2.0 * z.astype(jnp.float32) - 1.0
  y = (vals[:n_pairs] - vals[n_pairs:]) / 2.0
  fit = walsh.fit(x, y, jnp.full((n_pairs,), 1.0 / n_pairs, jnp.float32), d, prior, interactions)
  lam = fit.ridge(n_pairs, ridge)
  values, std = fit.banzhaf(lam, jnp.ones((n_pairs,), bool), n_pairs)
  # Sampling without replacement: the jackknife's variance shrinks by the finite-population correction.
  std = _loop.std_or_inf(std * np.sqrt(max(0.0, 1.0 - fraction)), jnp.asarray(n_pairs >= 2))
  est = Estimate(squeeze(values), squeeze(std), jnp.asarray(num_samples, jnp.int32),
                 _loop.converged_flag(values, std, threshold))
  return est, ok


MAX_FIT_SAMPLES = 4096
"""Largest budget :func:`estimate` spends through :func:`kernel_banzhaf` (unless it enumerates every coalition):
beyond it the n x n host eigendecompositions cost more than the model rows they save on most games."""


def estimator_for(num_players: int, num_samples: int | None) -> str:
  """The estimator :func:`estimate` runs: "kernel_banzhaf" or "msr".

  kernel_banzhaf (the most accurate per game evaluation, see the README's Banzhaf table) for an even fixed budget
  of at least 2 (d + 2) coalitions and at most :data:`MAX_FIT_SAMPLES` (or one that enumerates all 2^d) with
  d >= 3; msr otherwise: its convergence mode (``num_samples=None``), odd or small budgets, d < 3.

  Example:
    >>> estimator_for(10, 512), estimator_for(10, None), estimator_for(10, 16)
    ('kernel_banzhaf', 'msr', 'msr')
  """
  d = _checks.positive_int("num_players", num_players)
  if num_samples is None or d < 3 or num_samples % 2 or num_samples < 2 * (d + 2):
    return "msr"
  exhaustive = d <= _enumerate.MAX_EXACT_PLAYERS and num_samples >= 2 ** d
  return "kernel_banzhaf" if num_samples <= MAX_FIT_SAMPLES or exhaustive else "msr"


def estimate(game: Game, num_players: int, key: jax.Array, *, num_samples: int | None = None,
             batch_size: int = 512, threshold: float = 0.01, max_samples: int = 2 ** 17) -> Estimate:
  """Banzhaf values by the most accurate estimator xattr has for the call: the recommended default.

  :func:`kernel_banzhaf` at a fixed budget (0.10-0.38x the error of the best shapiq approximator at 128-2048 rows
  on the README's benchmark, where :func:`msr` is 5-8x), :func:`msr` in convergence mode and where
  kernel_banzhaf cannot run; :func:`estimator_for` names the choice (static: one compiled program per call
  signature, under ``jit`` / ``vmap`` / sharding as either estimator).

  Args:
    game: bool[n, d] -> float[n] or float[n, k].
    num_players: d (static).
    key: PRNG key; same key -> same estimate.
    num_samples: coalitions to evaluate; None: msr until ``max(std) / range(values) < threshold``.
    batch_size: coalitions per game call; only a memory knob.
    threshold: convergence threshold (also sets ``Estimate.converged``).
    max_samples: cap in convergence mode.

  Returns:
    :class:`Estimate` of the estimator named by :func:`estimator_for`.

  Example:
    >>> v = lambda m: m.astype(jnp.float32) @ jnp.arange(8.0) + 4.0 * (m[:, 0] & m[:, 1] & m[:, 2])
    >>> est = estimate(v, 8, jax.random.key(0), num_samples=128)                 # kernel_banzhaf
    >>> bool(jnp.abs(est.values - exact(v, 8)).max() < 0.05)
    True
  """
  if estimator_for(num_players, num_samples) == "kernel_banzhaf":
    return kernel_banzhaf(game, num_players, key, num_samples=num_samples, batch_size=batch_size,
                          threshold=threshold)
  return msr(game, num_players, key, num_samples=num_samples, batch_size=batch_size, threshold=threshold,
             max_samples=max_samples)


def msr(game: Game, num_players: int, key: jax.Array, *, num_samples: int | None = None, batch_size: int = 512,
        threshold: float = 0.01, max_samples: int = 2 ** 17) -> Estimate:
  """Maximum-sample-reuse Banzhaf estimate from Bernoulli(1/2) coalitions.

  Eager calls with the same game structure and sizes reuse one compiled program.

  Args:
    game: bool[n, d] -> float[n] or float[n, k].
    num_players: d (static).
    key: PRNG key.
    num_samples: fixed number of coalitions; None: until max(std)/range(values) < threshold (or max_samples).
    batch_size: coalitions per game call.
    threshold: convergence threshold.
    max_samples: cap in convergence mode.

  Returns:
    :class:`Estimate`; std = sqrt(Var(v | z_i=1)/n_i1 + Var(v | z_i=0)/n_i0), inf (and converged False) while a
    player has fewer than 2 samples on either side; num_evals = samples (no grand/null).

  Example:
    >>> v = lambda m: m.astype(jnp.float32) @ jnp.array([1.0, 2.0, 0.0])
    >>> est = msr(v, 3, jax.random.key(0), num_samples=4096)
    >>> bool((jnp.abs(est.values - jnp.array([1.0, 2.0, 0.0])) < 4 * est.std).all())
    True
  """
  d = _checks.positive_int("num_players", num_players)
  _checks.prng_key("key", key)
  _loop.batch_plan(num_samples, batch_size, max_samples, 1, threshold)
  est, ok = _loop.dispatch(_msr, game, key, num_players=d, num_samples=num_samples,
                           batch_size=batch_size, threshold=float(threshold), max_samples=max_samples)
  _loop.check_result("banzhaf.msr", est, ok)
  return est


def _msr(game, key, *, num_players, num_samples, batch_size, threshold, max_samples):
  d = num_players
  _, _, spec = _loop.batch_plan(num_samples, batch_size, max_samples, 1, threshold)
  k, scalar = _loop.output_shape(game, d)
  state = dict(inside=_player_moments(d, k), outside=_player_moments(d, k), ok=jnp.array(True))

  def update(st, i, rows):
    z = masks_lib.bernoulli(jax.random.fold_in(key, i), d, rows)
    y = _loop.call_game(game, z)                                         # [rows, k]
    zf = z.astype(jnp.float32)
    # Per-player moments over the rows with z_i = 1 (resp. 0): vmap the shared update over players.
    upd = jax.vmap(lambda s, wp: _loop.moments_update(s, y, wp), in_axes=(0, 1))
    return dict(inside=upd(st["inside"], zf), outside=upd(st["outside"], 1 - zf),
                ok=st["ok"] & jnp.all(jnp.isfinite(y)))

  def finish(st):
    values = st["inside"].mean - st["outside"].mean
    var = _per_row_var(st["inside"]) + _per_row_var(st["outside"])
    estimable = (jnp.minimum(st["inside"].count, st["outside"].count) >= 2)[:, None]
    return values, _loop.std_or_inf(jnp.sqrt(var), estimable)

  state, values, std, converged = _loop.run_batches(update, finish, state, spec, threshold)
  num_evals = (state["inside"].count[0] + state["outside"].count[0]).astype(jnp.int32)
  squeeze = (lambda x: x[:, 0]) if scalar else (lambda x: x)
  return Estimate(squeeze(values), squeeze(std), num_evals, converged), state["ok"]


def _player_moments(d: int, k: int) -> _loop.Moments:
  """Per-player moments of a [k] statistic: count [d], mean [d, k], m2 [d, k]."""
  return _loop.Moments(jnp.zeros(d), jnp.zeros((d, k)), jnp.zeros((d, k)))


def _per_row_var(m: _loop.Moments) -> jax.Array:
  n = m.count[:, None]
  return m.m2 / jnp.maximum((n - 1.0) * n, 1.0)
