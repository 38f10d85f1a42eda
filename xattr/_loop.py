"""Machinery shared by the sampling estimators: game calls, running moments, and the batch loop.

Every sampling estimator is "draw a batch of coalitions, evaluate the game once on the batch, fold the batch
into running statistics, re-derive (values, std)". :func:`run_batches` owns the loop: a fixed number of batches,
or — for convergence detection — a ``lax.while_loop`` that stops once max(std) / range(values) < threshold.
Running moments are merged per batch with Chan's parallel update, which keeps float32 variances accurate
for long runs (a naive sum of squares loses them to cancellation).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from xattr import _checks
from xattr.estimate import Estimate


def _as_2d(out: Any, num_masks: int, dtype: Any = jnp.float32) -> jax.Array:
  out = jnp.asarray(out)
  if out.ndim not in (1, 2) or out.shape[0] != num_masks:
    raise ValueError(f"game must map bool[n, num_players] to float[n] or float[n, k]; for n = {num_masks} "
                     f"masks it returned shape {tuple(out.shape)}.")
  out = out.astype(dtype)
  return out[:, None] if out.ndim == 1 else out


def call_game(game: Callable[[jax.Array], jax.Array], masks: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
  """Evaluates ``game`` on bool[n, d] and returns float32[n, k] (k = 1 for scalar games)."""
  return _as_2d(game(masks), masks.shape[0], dtype)


def grand_and_null(game: Callable[[jax.Array], jax.Array], num_players: int,
                   dtype: Any = jnp.float32) -> tuple[jax.Array, jax.Array, bool]:
  """v(1), v(0) as float32[k], and whether the game is scalar-valued (its outputs get squeezed back).

  This is the estimators' first game call, so a game that rejects bool[2, num_players] masks (a wrong
  ``num_players``) is reported here, naming num_players.
  """
  raw = _first_call(game, num_players, lambda m: game(m))
  values = _as_2d(raw, 2, dtype)
  return values[0], values[1], jnp.ndim(raw) == 1


def output_shape(game: Callable[[jax.Array], jax.Array], num_players: int) -> tuple[int, bool]:
  """(k, scalar) of the game's output, from its shapes alone (no evaluation)."""
  shape = _first_call(game, num_players, lambda m: jax.eval_shape(game, m)).shape
  if len(shape) not in (1, 2) or shape[0] != 2:
    raise ValueError(f"game must map bool[n, num_players] to float[n] or float[n, k]; for n = 2 masks it "
                     f"returned shape {tuple(shape)}.")
  return (1, True) if len(shape) == 1 else (shape[1], False)


def _first_call(game, num_players, call):
  try:
    return call(jnp.stack([jnp.ones(num_players, bool), jnp.zeros(num_players, bool)]))
  except (ValueError, TypeError, IndexError) as err:
    raise ValueError(f"the game failed on its first call, the grand and empty coalitions as bool[2, "
                     f"num_players={num_players}]: {err} If the game has a different number of players (features "
                     f"or groups), pass that as num_players.") from err


def evaluate_chunked(game: Callable[[jax.Array], jax.Array], masks: jax.Array, batch_size: int) -> jax.Array:
  """float32[n, k] game values, evaluating at most ``batch_size`` masks per call (``lax.map`` over chunks)."""
  from xattr import games   # deferred: games imports the samplers, which need nothing from here

  return _as_2d(games.evaluate(game, masks, batch_size=batch_size, check_finite=False), masks.shape[0])


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
  # The state keeps its dtypes (float32): under jax_enable_x64 the batch's float64 would otherwise change the
  # carry's type and break the lax.scan / while_loop around this update.
  units, weights = units.astype(state.mean.dtype), weights.astype(state.count.dtype)
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
  """Batches to run: ``num_full`` of ``batch`` rows then one of ``remainder`` (fixed budget, ``threshold`` None),
  or batches of ``batch`` rows until convergence, at most ``num_full``."""

  batch: int
  num_full: int
  remainder: int
  threshold: float | None
  min_batches: int = 2


def run_batches(update: Callable[[Any, jax.Array, int], Any],
                finish: Callable[[Any], tuple[jax.Array, jax.Array]], state: Any, spec: LoopSpec,
                threshold_for_flag: float) -> tuple[Any, jax.Array, jax.Array, jax.Array]:
  """Runs ``update(state, batch_index, rows)`` (``rows`` static) in a loop; returns (state, values, std, converged).

  No batch is padded: a fixed budget runs its whole batches in a ``lax.scan`` and the remainder as one smaller
  batch, so the game is evaluated on exactly the budgeted rows.
  """

  def with_estimate(carry):
    i, st = carry
    values, std = finish(st)
    return i, st, values, std

  def cond(carry):
    i, _, values, std = carry
    done = (i >= spec.min_batches) & (relative_std(values, std) < spec.threshold)
    return (i < spec.num_full) & ~done

  def body(carry):
    i, st, _, _ = carry
    return with_estimate((i + 1, update(st, i, spec.batch)))

  if spec.threshold is None:
    if spec.num_full:
      state, _ = jax.lax.scan(lambda st, i: (update(st, i, spec.batch), None), state, jnp.arange(spec.num_full))
    if spec.remainder:
      state = update(state, jnp.asarray(spec.num_full), spec.remainder)
    values, std = finish(state)
  else:
    init = with_estimate((jnp.zeros((), jnp.int32), state))
    _, state, values, std = jax.lax.while_loop(cond, body, init)
    values, std = _no_grad_through_loop(values), _no_grad_through_loop(std)
  return state, values, std, converged_flag(values, std, threshold_for_flag)


@jax.custom_jvp
def _no_grad_through_loop(x: jax.Array) -> jax.Array:
  """Identity whose derivative is a clear error: a data-dependent while_loop has no reverse-mode gradient."""
  return x


@_no_grad_through_loop.defjvp
def _no_grad_through_loop_jvp(primals, tangents):
  raise ValueError("The estimate cannot be differentiated in convergence mode: num_samples=None (or "
                   "num_permutations=None) runs a lax.while_loop of data-dependent length, which JAX cannot "
                   "differentiate in reverse mode. Pass a fixed num_samples (num_permutations for "
                   "shapley.permutation) to take gradients through the estimate.")


def converged_flag(values: jax.Array, std: jax.Array, threshold: float) -> jax.Array:
  """relative std < threshold, and never for non-finite values or std (NaN under jit, or std not estimable)."""
  finite = jnp.all(jnp.isfinite(values)) & jnp.all(jnp.isfinite(std))
  return finite & (relative_std(values, std) < threshold)


def batch_plan(num_samples: int | None, batch_size: int, max_samples: int, unit: int, threshold: float, *,
               names: tuple[str, str, str] = ("num_samples", "batch_size", "max_samples"),
               unit_flag: str = "paired") -> tuple[int, int, LoopSpec]:
  """Static (batch_size, sample budget, loop spec) from the user's sampling arguments.

  ``unit`` is 2 for paired samplers (batches hold whole pairs). A fixed ``num_samples`` runs
  num_samples // batch_size whole batches and one remainder batch; the convergence cap is rounded down to whole
  batches. ``names`` are the caller's argument names (for errors), ``unit_flag`` the argument that sets ``unit``.
  """
  n_name, b_name, m_name = names
  batch_size = _checks.positive_int(b_name, batch_size)
  if batch_size < unit:
    raise ValueError(f"{b_name} must be >= {unit} when {unit_flag}=True, got {batch_size}.")
  batch_size -= batch_size % unit
  if num_samples is not None:
    budget = _checks.positive_int(n_name, num_samples)
    if budget % unit:
      raise ValueError(f"{n_name} must be even when {unit_flag}=True (they come in complementary pairs), "
                       f"got {budget}.")
    return batch_size, budget, LoopSpec(batch_size, budget // batch_size, budget % batch_size, None)
  if not threshold > 0:
    raise ValueError(f"threshold must be > 0 when {n_name} is None (run until converged), got {threshold}.")
  budget = _checks.positive_int(m_name, max_samples)
  if budget < 2 * batch_size:
    raise ValueError(f"{m_name} must be >= 2 * {b_name} = {2 * batch_size} in convergence mode, got {budget}.")
  budget -= budget % batch_size
  return batch_size, budget, LoopSpec(batch_size, budget // batch_size, 0, float(threshold))


def std_or_inf(std: jax.Array, estimable: jax.Array) -> jax.Array:
  """std where it can be estimated (e.g. >= 2 independent units), +inf elsewhere: never certainty by default."""
  return jnp.where(estimable, std, jnp.inf)


# ------------------------------------------------------------------------------------------------ compiled dispatch
class _Slot:
  """Marks where a dynamic (array) leaf goes back when a split pytree is rebuilt."""

  def __eq__(self, other):
    return isinstance(other, _Slot)

  def __hash__(self):
    return 0


_ARRAYS = (jax.Array, np.ndarray, np.generic)


def _split(tree: Any) -> tuple[list[Any], tuple[Any, tuple[Any, ...]]]:
  leaves, treedef = jax.tree.flatten(tree)
  dynamic = [leaf for leaf in leaves if isinstance(leaf, _ARRAYS)]
  static = tuple(_Slot() if isinstance(leaf, _ARRAYS) else leaf for leaf in leaves)
  return dynamic, (treedef, static)


def _join(dynamic: list[Any], structure: tuple[Any, tuple[Any, ...]]) -> Any:
  treedef, static = structure
  arrays = iter(dynamic)
  return jax.tree.unflatten(treedef, [next(arrays) if isinstance(s, _Slot) else s for s in static])


@partial(jax.jit, static_argnames=("impl", "structure", "options"))
def _compiled(dynamic, *, impl, structure, options):
  game, args = _join(dynamic, structure)
  return impl(game, *args, **dict(options))


def dispatch(impl: Callable[..., Any], game: Any, *args: Any, **options: Any) -> Any:
  """``impl(game, *args, **options)`` through one module-level ``jax.jit`` cached on the game's structure.

  The game's array leaves (a pytree game from :mod:`xattr.games`: input, reference, background) and ``args``
  (keys) are traced arguments; everything else (model functions, a plain function game, ``options``) is static.
  So eager loops over new inputs reuse one compiled program per estimator signature instead of compiling (and
  mapping new code) on every call. Unhashable static parts fall back to a direct call.
  """
  dynamic, structure = _split((game, args))
  opts = tuple(sorted(options.items()))
  try:
    hash((structure, opts))
  except TypeError:
    return impl(game, *args, **options)
  return _compiled(dynamic, impl=impl, structure=structure, options=opts)


def check_result(name: str, estimate: Estimate | jax.Array, game_ok: jax.Array | bool = True) -> None:
  """Raises on concrete non-finite game values or results (skipped under jit)."""
  if _checks.is_concrete(game_ok) and not bool(game_ok):
    raise FloatingPointError(f"game returned non-finite values (NaN or inf) for some coalitions in {name}; check "
                             f"the model, the link function (e.g. 'logit' of probabilities at 0 or 1) and the input.")
  values = estimate.values if isinstance(estimate, Estimate) else estimate
  _checks.finite(f"{name} values", values,
                 "The regression system may be singular: increase num_samples (or use exact_a=True).")
