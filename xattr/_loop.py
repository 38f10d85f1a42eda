"""Machinery shared by the sampling estimators: game calls, running moments, and the batch loop.

Every sampling estimator is "draw a batch of coalitions, evaluate the game once on the batch, fold the batch
into running statistics, re-derive (values, std)". :func:`run_batches` owns the loop: a fixed number of batches,
or — for convergence detection — a ``lax.while_loop`` that stops once max(std) / range(values) < threshold.
Running moments are merged per batch with Chan's parallel update, which keeps float32 variances accurate
for long runs (a naive sum of squares loses them to cancellation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from xattr import _checks
from xattr.estimate import Estimate


def _as_2d(out: Any, num_masks: int) -> jax.Array:
  out = jnp.asarray(out)
  if out.ndim not in (1, 2) or out.shape[0] != num_masks:
    raise ValueError(f"game must map bool[n, num_players] to float[n] or float[n, k]; for n = {num_masks} "
                     f"masks it returned shape {tuple(out.shape)}.")
  out = out.astype(jnp.float32)
  return out[:, None] if out.ndim == 1 else out


def call_game(game: Callable[[jax.Array], jax.Array], masks: jax.Array) -> jax.Array:
  """Evaluates ``game`` on bool[n, d] and returns float32[n, k] (k = 1 for scalar games)."""
  return _as_2d(game(masks), masks.shape[0])


def grand_and_null(game: Callable[[jax.Array], jax.Array], num_players: int) -> tuple[jax.Array, jax.Array, bool]:
  """v(1), v(0) as float32[k], and whether the game is scalar-valued (its outputs get squeezed back)."""
  raw = game(jnp.stack([jnp.ones(num_players, bool), jnp.zeros(num_players, bool)]))
  values = _as_2d(raw, 2)
  return values[0], values[1], jnp.ndim(raw) == 1


def evaluate_chunked(game: Callable[[jax.Array], jax.Array], masks: jax.Array, batch_size: int) -> jax.Array:
  """float32[n, k] game values, evaluating at most ``batch_size`` masks per call (``lax.map`` over chunks)."""
  n, d = masks.shape
  if n <= batch_size:
    return call_game(game, masks)
  num_chunks = -(-n // batch_size)
  padded = jnp.zeros((num_chunks * batch_size, d), bool).at[:n].set(masks)
  out = jax.lax.map(lambda m: call_game(game, m), padded.reshape(num_chunks, batch_size, d))
  return out.reshape(num_chunks * batch_size, -1)[:n]


class Moments(NamedTuple):
  """Running count, mean and centred second moment of per-unit statistics (leading axis = units)."""

  count: jax.Array
  mean: jax.Array
  m2: jax.Array


def moments_init(shape: tuple[int, ...], m2_shape: tuple[int, ...] | None = None) -> Moments:
  return Moments(jnp.zeros((), jnp.float32), jnp.zeros(shape, jnp.float32),
                 jnp.zeros(m2_shape or shape, jnp.float32))


def moments_update(state: Moments, units: jax.Array, weights: jax.Array, *, outer: bool = False) -> Moments:
  """Merges a batch of units (float[u, ...], weights 0/1 float[u]) into ``state`` (Chan et al.).

  With ``outer=True`` the second moment is the full covariance over the second-to-last axis, per entry of the
  last axis: units [u, d, k] -> m2 [k, d, d]; otherwise it is elementwise.
  """
  wshape = (-1,) + (1,) * (units.ndim - 1)
  count_b = weights.sum()
  mean_b = (units * weights.reshape(wshape)).sum(0) / jnp.maximum(count_b, 1.0)
  centred = (units - mean_b) * weights.reshape(wshape)
  if outer:
    m2_b = jnp.einsum("udk,uek->kde", centred, units - mean_b)
  else:
    m2_b = (centred * (units - mean_b)).sum(0)
  total = state.count + count_b
  frac = jnp.where(total > 0, count_b / jnp.maximum(total, 1.0), 0.0)
  delta = mean_b - state.mean
  mean = state.mean + delta * frac
  cross = state.count * frac
  if outer:
    m2 = state.m2 + m2_b + jnp.einsum("dk,ek->kde", delta, delta) * cross
  else:
    m2 = state.m2 + m2_b + delta * delta * cross
  return Moments(total, mean, m2)


def variance_of_mean(state: Moments) -> jax.Array:
  """Unbiased variance of the running mean: m2 / ((n - 1) n)."""
  n = state.count
  return state.m2 / jnp.maximum((n - 1.0) * n, 1.0)


def relative_std(values: jax.Array, std: jax.Array) -> jax.Array:
  """max_i std_i / (max phi - min phi), per output column, then max over columns (0 for a flat zero-std game)."""
  span = values.max(0) - values.min(0)
  top = std.max(0)
  ratio = jnp.where(span > 0, top / jnp.where(span > 0, span, 1.0), jnp.where(top > 0, jnp.inf, 0.0))
  return ratio.max()


class LoopSpec(NamedTuple):
  """How many batches to run: exactly ``max_batches`` when ``threshold`` is None, else until convergence."""

  max_batches: int
  threshold: float | None
  min_batches: int = 2


def run_batches(update: Callable[[Any, jax.Array], Any], finish: Callable[[Any], tuple[jax.Array, jax.Array]],
                state: Any, spec: LoopSpec, threshold_for_flag: float) -> tuple[Any, jax.Array, jax.Array, jax.Array]:
  """Runs ``update(state, batch_index)`` in a loop; returns (state, values, std, converged)."""

  def with_estimate(carry):
    i, st = carry
    values, std = finish(st)
    return i, st, values, std

  def cond(carry):
    i, _, values, std = carry
    done = (i >= spec.min_batches) & (relative_std(values, std) < spec.threshold)
    return (i < spec.max_batches) & ~done

  def body(carry):
    i, st, _, _ = carry
    return with_estimate((i + 1, update(st, i)))

  if spec.threshold is None:
    def scan_body(st, i):
      return update(st, i), None
    state, _ = jax.lax.scan(scan_body, state, jnp.arange(spec.max_batches))
    values, std = finish(state)
  else:
    init = with_estimate((jnp.zeros((), jnp.int32), state))
    _, state, values, std = jax.lax.while_loop(cond, body, init)
  converged = relative_std(values, std) < threshold_for_flag
  return state, values, std, converged


def batch_plan(num_samples: int | None, batch_size: int, max_samples: int, unit: int,
               threshold: float) -> tuple[int, int, LoopSpec]:
  """Static (batch_size, sample budget, loop spec) from the user's sampling arguments.

  ``unit`` is 2 for paired samplers (batches hold whole pairs). A fixed ``num_samples`` is split into
  ceil(num_samples / batch_size) batches of equal size, so at most a few rows of the last batch overshoot
  (they are zero-weighted); the convergence cap is rounded down to whole batches, so nothing overshoots.
  """
  batch_size = _checks.positive_int("batch_size", batch_size, minimum=unit)
  batch_size -= batch_size % unit
  if num_samples is not None:
    budget = _checks.positive_int("num_samples", num_samples, minimum=unit)
    _checks.even_if_paired(budget, unit == 2)
    num_batches = -(-budget // batch_size)
    per_batch = -(-budget // num_batches)
    per_batch += -per_batch % unit
    return per_batch, budget, LoopSpec(num_batches, None)
  if not threshold > 0:
    raise ValueError(f"threshold must be > 0 when num_samples is None (run until converged), got {threshold}.")
  budget = _checks.positive_int("max_samples", max_samples, minimum=2 * batch_size)
  budget -= budget % batch_size
  return batch_size, budget, LoopSpec(budget // batch_size, float(threshold))


def valid_rows(batch_index: jax.Array, batch_size: int, budget: int) -> jax.Array:
  """float32[batch_size]: 1 for rows inside the sample budget, 0 for the last batch's overshoot."""
  return ((batch_index * batch_size + jnp.arange(batch_size)) < budget).astype(jnp.float32)


def check_result(name: str, estimate: Estimate | jax.Array, game_ok: jax.Array | bool = True) -> None:
  """Raises on concrete non-finite game values or results (skipped under jit)."""
  if _checks.is_concrete(game_ok) and not bool(game_ok):
    raise FloatingPointError(f"game returned non-finite values (NaN or inf) for some coalitions in {name}; check "
                             f"the model, the link function (e.g. 'logit' of probabilities at 0 or 1) and the input.")
  values = estimate.values if isinstance(estimate, Estimate) else estimate
  _checks.finite(f"{name} values", values,
                 "The regression system may be singular: increase num_samples (or use exact_a=True).")
