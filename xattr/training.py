"""The one shared training loop: jit-compiled steps over ``nnx.split`` state, optax, Orbax checkpoints.

Every method that trains a network (classifiers to explain, surrogates, FastSHAP explainers, selection
policies) calls :func:`train` with its own ``loss_fn(model, batch) -> (loss, metrics)``. The loop

  * splits the NNX module once into (graphdef, params, rest) and jit-compiles a pure step over a
    :class:`TrainState` (the functional pattern of Flax's performance guide: no graph traversal per step);
  * draws minibatches from in-memory arrays in an order fixed by a seeded per-epoch shuffle, so batch ``t``
    depends only on (seed, t): a resumed run sees exactly the batches an uninterrupted one would;
  * saves the whole state (params, optimizer state, step, data-order key, and any other model variables such as
    ``nnx.Rngs`` counters) with an ``orbax.checkpoint.CheckpointManager`` and resumes from the latest
    checkpoint in ``workdir``; a run killed at any point and restarted ends with bitwise the same parameters;
  * shows a tqdm progress bar and calls an optional evaluation hook every ``eval_every`` steps.

Stochastic losses (dropout, sampled masks) should draw from an ``nnx.Rngs`` held by the model: its state is part
of ``rest``, so it is checkpointed and restored with everything else.

Example:
  >>> import numpy as np, optax, jax.numpy as jnp
  >>> from flax import nnx
  >>> from xattr import training
  >>> model = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
  >>> data = {"x": np.linspace(-1, 1, 64, dtype=np.float32)[:, None]}
  >>> data["y"] = 3 * data["x"]
  >>> def loss_fn(m, b):
  ...   loss = jnp.mean((m(b["x"]) - b["y"]) ** 2)
  ...   return loss, {"mse": loss}
  >>> result = training.train(model, loss_fn, data, optimizer=optax.adam(0.1), num_steps=200, batch_size=16,
  ...                         progress=False)
  >>> round(float(model.kernel[...][0, 0]), 1)
  3.0
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm
from absl import logging
from flax import nnx

from xattr import parallel

__all__ = ["TrainState", "TrainResult", "train", "batch_indices", "checkpoint_manager", "data_mesh"]

LossFn = Callable[[nnx.Module, Any], tuple[jax.Array, Mapping[str, jax.Array]]]
EvalFn = Callable[[nnx.Module, int], Mapping[str, Any]]


class TrainState(NamedTuple):
  """Everything a resumed run needs; a pytree of arrays (what the checkpoints hold).

  Attributes:
    step: int32 scalar, optimizer steps taken.
    params: the model's trainable variables (``nnx.Param`` unless ``train(trainable=...)`` says otherwise).
    rest: the model's other variables (e.g. ``nnx.Rngs`` state, batch statistics); may be empty.
    opt_state: optax state.
    data_key: uint32[2], seeds the per-epoch shuffles that fix the data order.
  """

  step: jax.Array
  params: nnx.State
  rest: nnx.State
  opt_state: Any
  data_key: jax.Array


@dataclasses.dataclass
class TrainResult:
  """What :func:`train` returns. ``model`` is the caller's module, updated in place to the final state."""

  model: nnx.Module
  state: TrainState
  history: list[dict[str, float]]
  resumed_from: int | None
  stopped_early: bool


def batch_indices(data_key: np.ndarray, step: int, num_examples: int, batch_size: int) -> np.ndarray:
  """Row indices of minibatch ``step``: epoch ``step // steps_per_epoch`` of a seeded shuffle, last partial batch
  dropped (static shapes, a single compile).

  Example:
    >>> key = np.array([0, 7], np.uint32)
    >>> idx = [batch_indices(key, t, 10, 5) for t in range(2)]
    >>> sorted(np.concatenate(idx).tolist()) == list(range(10))
    True
  """
  steps_per_epoch = num_examples // batch_size
  epoch, pos = divmod(int(step), steps_per_epoch)
  rng = np.random.default_rng([*np.asarray(data_key, np.uint32).tolist(), epoch])
  return rng.permutation(num_examples)[pos * batch_size:(pos + 1) * batch_size]


def checkpoint_manager(directory: str | os.PathLike, *, keep: int = 2) -> ocp.CheckpointManager:
  """An async ``CheckpointManager`` keeping the ``keep`` latest checkpoints. Close it when done."""
  options: dict[str, Any] = dict(enable_async_checkpointing=True, create=True)
  policies = getattr(ocp, "checkpoint_managers", None)
  if policies is not None and hasattr(policies, "LatestN"):
    options["preservation_policy"] = policies.LatestN(n=keep)
  else:                                    # older Orbax: no preservation policies
    options["max_to_keep"] = keep
  return ocp.CheckpointManager(os.path.abspath(directory), options=ocp.CheckpointManagerOptions(**options))


def _is_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_saveable(state: TrainState) -> TrainState:
  """Typed PRNG keys (e.g. in nnx.Rngs) are saved as their raw uint32 data."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)


def _from_saveable(restored: TrainState, template: TrainState) -> TrainState:
  def back(x, t):
    return jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x
  return jax.tree.map(back, restored, template)


def _restore(manager: ocp.CheckpointManager, step: int, template: TrainState) -> TrainState:
  saveable = _to_saveable(template)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, saveable)
  restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  if jax.tree.structure(restored) != jax.tree.structure(saveable):
    raise ValueError(f"checkpoint {step} in {manager.directory} does not match this model/optimizer: saved "
                     f"structure {jax.tree.structure(restored)}, expected {jax.tree.structure(saveable)}.")
  return _from_saveable(restored, template)


@functools.lru_cache(maxsize=64)
def _make_step(graphdef: nnx.GraphDef, loss_fn: LossFn, optimizer: optax.GradientTransformation,
               trainable: Any):
  """The jitted step; cached, so successive ``train`` calls with the same model structure, loss function and
  optimizer object (temperature stages, epsilon blocks, resumed runs in one process) compile once."""
  @functools.partial(jax.jit, donate_argnums=0)
  def step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
    model = nnx.merge(graphdef, state.params, state.rest)

    def objective(model):
      loss, metrics = loss_fn(model, batch)
      return loss, dict(metrics)

    # nnx.value_and_grad (not jax's) so that variables such as RNG counts may be updated inside the loss.
    grad_fn = nnx.value_and_grad(objective, argnums=nnx.DiffState(0, trainable), has_aux=True)
    (loss, metrics), grads = grad_fn(model)
    _, _, rest = nnx.split(model, trainable, ...)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = TrainState(state.step + 1, params, rest, opt_state, state.data_key)
    return new, {"loss": loss, **metrics}

  return step


def _auto_mesh(batch_size: int, desc: str) -> jax.sharding.Mesh | None:
  try:
    return data_mesh(batch_size)
  except ValueError:
    logging.warning("%s: batch_size %d does not split over %d devices; training on one device.", desc, batch_size,
                    jax.device_count())
    return None


def _placement(mesh: jax.sharding.Mesh | None, batch_size: int) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
  """(put_batch, put_state): where batches and the state live; identity functions without a mesh."""
  if mesh is None:
    return (lambda batch: batch), (lambda state: state)
  n = parallel._check_mesh(mesh, "data")
  if batch_size % n:
    raise ValueError(f"batch_size must be a multiple of the mesh's 'data' axis size {n} to split every batch "
                     f"evenly, got {batch_size}.")
  rows, copies = parallel.data_sharding(mesh), parallel.replicated(mesh)

  def put_batch(batch):
    # From a callback, so that on several hosts each one fills only its own devices' rows.
    return jax.tree.map(lambda a: jax.make_array_from_callback(a.shape, rows, lambda i: a[i]), batch)

  return put_batch, lambda state: jax.device_put(state, copies)


def data_mesh(batch_size: int) -> jax.sharding.Mesh | None:
  """The mesh drivers pass to :func:`train`: every device on a ``'data'`` axis, or None on a single device.

  Raises:
    ValueError: if ``batch_size`` does not split evenly over the devices.

  Example:
    >>> data_mesh(16) is None or dict(data_mesh(16).shape)["data"] == jax.device_count()
    True
  """
  n = jax.device_count()
  if n == 1:
    return None
  if batch_size % n:
    raise ValueError(f"batch_size must be a multiple of the {n} devices to train data-parallel, got {batch_size}.")
  return parallel.make_mesh()


def _mean_metrics(buffer: list[dict[str, jax.Array]]) -> dict[str, float]:
  host = jax.device_get(buffer)
  return {k: float(np.mean([m[k] for m in host])) for k in host[0]}


def train(model: nnx.Module, loss_fn: LossFn, train_data: Any, *, optimizer: optax.GradientTransformation,
          num_steps: int, batch_size: int, seed: int = 0, workdir: str | os.PathLike | None = None,
          checkpoint_every: int | None = None, keep_checkpoints: int = 2, eval_fn: EvalFn | None = None,
          eval_every: int | None = None, log_every: int = 100, stop_at: int | None = None,
          progress: bool = True, desc: str = "train", trainable: Any = nnx.Param,
          mesh: jax.sharding.Mesh | str | None = "auto") -> TrainResult:
  """Trains ``model`` in place with minibatch ``optimizer`` steps, resuming from ``workdir`` if it holds a checkpoint.

  Args:
    model: an NNX module; updated in place to the final state (also returned in the result).
    loss_fn: ``(model, batch) -> (scalar loss, dict of scalar metrics)``, traced under ``jit``.
    train_data: a pytree of arrays sharing the leading (example) axis, e.g. ``{"x": ..., "y": ...}``; a batch
      is the same pytree with ``batch_size`` rows.
    optimizer: an optax transformation.
    num_steps: total optimizer steps (counting those of earlier runs that are resumed).
    batch_size: rows per step; must not exceed the number of examples.
    seed: seeds the data order (stored in the checkpoint, so a resumed run keeps its order).
    workdir: checkpoints go to ``workdir/checkpoints``; None trains without checkpoints.
    checkpoint_every: save every this many steps (and always at ``num_steps``); None saves only at the end.
    keep_checkpoints: how many of the latest checkpoints to keep.
    eval_fn: ``(model, step) -> dict of metrics``, called every ``eval_every`` steps and at the end.
    eval_every: None evaluates only at the end.
    log_every: steps between progress-bar / log updates of the running training metrics.
    stop_at: stop right after this step without a final checkpoint, as if the job were killed (for tests and
      preemption drills); the result has ``stopped_early=True``.
    progress: show a tqdm progress bar.
    desc: progress-bar label.
    trainable: an NNX filter selecting the variables to optimize (default: every ``nnx.Param``). Anything else,
      e.g. a frozen teacher or surrogate held by the model (``nnx.All(nnx.Param, nnx.Not(nnx.PathContains(
      "teacher")))``), is carried and checkpointed in ``rest`` but gets no gradient and no optimizer update.
    mesh: data parallelism. Each batch is split over the mesh's ``'data'`` axis and the state replicated; the
      partitioner then runs the step as one SPMD program whose gradient is the whole batch's, so the result
      does not depend on the number of devices (up to float reduction order). ``batch_size`` must be a
      multiple of that axis's size. Every host passes the same ``train_data`` (each one copies its devices'
      rows). ``"auto"`` (default): every device when ``batch_size`` splits evenly over them (else the default
      device, with a warning); None: the default device.

  Returns:
    :class:`TrainResult` with the model, the final :class:`TrainState`, a history of logged/evaluated metrics,
    the step resumed from (None for a fresh run) and whether the run stopped early.
  """
  num_steps = int(num_steps)
  leaves = jax.tree.leaves(train_data)
  if not leaves:
    raise ValueError("train_data must be a non-empty pytree of arrays sharing their leading axis.")
  num_examples = int(np.shape(leaves[0])[0])
  if any(np.shape(leaf)[0] != num_examples for leaf in leaves):
    raise ValueError(f"train_data arrays must share their leading axis; got shapes "
                     f"{[tuple(np.shape(leaf)) for leaf in leaves]}.")
  if not 1 <= batch_size <= num_examples:
    raise ValueError(f"batch_size must lie in [1, {num_examples}] (the number of examples), got {batch_size}.")
  if num_steps < 0:
    raise ValueError(f"num_steps must be >= 0, got {num_steps}.")
  train_data = jax.tree.map(np.asarray, train_data)
  if isinstance(mesh, str):
    if mesh != "auto":
      raise ValueError(f"mesh must be a jax.sharding.Mesh, 'auto' or None, got {mesh!r}.")
    mesh = _auto_mesh(batch_size, desc)
  put_batch, put_state = _placement(mesh, batch_size)

  graphdef, params, rest = nnx.split(model, trainable, ...)
  data_key = jax.random.key_data(jax.random.key(seed)).astype(jnp.uint32)
  # Copies: the jitted step donates its input state, which must not invalidate the caller's module.
  params, rest = jax.tree.map(jnp.copy, (params, rest))
  state = put_state(TrainState(jnp.zeros((), jnp.int32), params, rest, optimizer.init(params), data_key))

  manager = checkpoint_manager(os.path.join(workdir, "checkpoints"), keep=keep_checkpoints) if workdir else None
  resumed_from, stopped_early, history = None, False, []
  try:
    if manager is not None and manager.latest_step() is not None:
      resumed_from = int(manager.latest_step())
      state = put_state(_restore(manager, resumed_from, state))
      logging.info("%s: resumed from checkpoint at step %d", desc, resumed_from)
    try:
      step_fn = _make_step(graphdef, loss_fn, optimizer, trainable)
    except TypeError:                      # an unhashable filter or loss: build the step without the cache
      step_fn = _make_step.__wrapped__(graphdef, loss_fn, optimizer, trainable)
    key_host = np.asarray(state.data_key)
    start = int(state.step)
    buffer: list[dict[str, jax.Array]] = []
    with tqdm.tqdm(total=num_steps, initial=min(start, num_steps), desc=desc, disable=not progress,
                   dynamic_ncols=True) as bar:
      for t in range(start, num_steps):
        idx = batch_indices(key_host, t, num_examples, batch_size)
        state, metrics = step_fn(state, put_batch(jax.tree.map(lambda a: a[idx], train_data)))
        buffer.append(metrics)
        done = t + 1
        bar.update(1)
        record: dict[str, float] = {}
        if done % log_every == 0 or done == num_steps:
          record.update({f"train_{k}": v for k, v in _mean_metrics(buffer).items()})
          buffer = []
          bar.set_postfix(loss=f"{record['train_loss']:.4g}")
        if eval_fn is not None and ((eval_every and done % eval_every == 0) or done == num_steps):
          record.update(eval_fn(nnx.merge(graphdef, state.params, state.rest), done))
        if record:
          history.append({"step": done, **record})
          logging.info("%s step %d: %s", desc, done, ", ".join(f"{k}={v:.4g}" for k, v in record.items()
                                                                  if isinstance(v, (int, float))))
        if stop_at is not None and done >= stop_at and done < num_steps:
          logging.warning("%s: stopping at step %d (stop_at) without a final checkpoint", desc, done)
          stopped_early = True
          break
        if manager is not None and ((checkpoint_every and done % checkpoint_every == 0) or done == num_steps):
          manager.save(done, args=ocp.args.StandardSave(_to_saveable(state)))
  finally:
    if manager is not None:
      manager.wait_until_finished()
      manager.close()
  nnx.update(model, state.params, state.rest)
  return TrainResult(model, state, history, resumed_from, stopped_early)
