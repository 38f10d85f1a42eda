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
import tqdm
from absl import logging
from flax import nnx

from xattr import parallel

__all__ = ["TrainState", "TrainResult", "train", "restore", "latest_step", "optimizer", "batch_indices",
           "checkpoint_manager", "data_mesh"]

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


def checkpoint_manager(directory: str | os.PathLike, *, keep: int = 2) -> Any:
  """An async ``orbax.checkpoint.CheckpointManager`` keeping the ``keep`` latest checkpoints. Close it when done."""
  import orbax.checkpoint as ocp   # deferred: orbax and tensorstore cost seconds that `import xattr` need not pay

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


def _restore(manager: Any, step: int, template: TrainState) -> TrainState:
  import orbax.checkpoint as ocp

  saveable = _to_saveable(template)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, saveable)
  restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  if jax.tree.structure(restored) != jax.tree.structure(saveable):
    raise ValueError(f"checkpoint {step} in {manager.directory} does not match this model/optimizer: saved "
                     f"structure {jax.tree.structure(restored)}, expected {jax.tree.structure(saveable)}.")
  return _from_saveable(restored, template)


def _save_args(state: TrainState) -> Any:
  import orbax.checkpoint as ocp

  return ocp.args.StandardSave(_to_saveable(state))


def latest_step(workdir: str | os.PathLike) -> int | None:
  """The step of the latest checkpoint :func:`train` saved under ``workdir``, or None if there is none.

  Example:
    >>> import tempfile
    >>> latest_step(tempfile.mkdtemp()) is None
    True
  """
  directory = os.path.join(os.fspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    return None
  manager = checkpoint_manager(directory)
  try:
    step = manager.latest_step()
  finally:
    manager.close()
  return None if step is None else int(step)


def restore(model: nnx.Module, workdir: str | os.PathLike, *, optimizer: optax.GradientTransformation,
            trainable: Any = nnx.Param, min_step: int | None = None) -> int:
  """Loads the latest checkpoint :func:`train` saved under ``workdir`` into ``model`` (in place), without training.

  Args:
    model: a module of the structure that was trained (its values are overwritten; build it with
      ``nnx.eval_shape`` + zeros to skip running initializers).
    workdir: the ``workdir`` given to :func:`train`.
    optimizer: an optimizer of the same structure as the one that trained it (its state is part of the
      checkpoint, so it fixes the saved tree's layout; hyperparameters do not matter).
    trainable: the filter that was passed to :func:`train`.
    min_step: raise unless the checkpoint has at least this many steps (a finished run, not a killed one).

  Returns:
    The restored step.

  Raises:
    FileNotFoundError: no checkpoint in ``workdir`` (or one before ``min_step``).
    ValueError: the checkpoint does not fit ``model``/``optimizer``.

  Example:
    >>> import tempfile, numpy as np, optax
    >>> from flax import nnx
    >>> d = tempfile.mkdtemp()
    >>> m = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
    >>> loss = lambda m, b: (((m(b["x"]) - 2 * b["x"]) ** 2).mean(), {})
    >>> _ = train(m, loss, {"x": np.ones((8, 1), np.float32)}, optimizer=optax.adam(0.1), num_steps=5,
    ...           batch_size=8, workdir=d, progress=False)
    >>> fresh = nnx.Linear(1, 1, rngs=nnx.Rngs(1))
    >>> restore(fresh, d, optimizer=optax.adam(0.1)), bool((fresh.kernel[...] == m.kernel[...]).all())
    (5, True)
  """
  step = latest_step(workdir)
  if step is None or (min_step is not None and step < min_step):
    raise FileNotFoundError(f"workdir {os.fspath(workdir)!r} holds no finished training run: latest checkpoint "
                            f"step {step}, expected >= {min_step if min_step is not None else 1}.")
  graphdef, params, rest = nnx.split(model, trainable, ...)
  template = TrainState(jnp.zeros((), jnp.int32), params, rest, optimizer.init(params),
                        jax.random.key_data(jax.random.key(0)).astype(jnp.uint32))
  manager = checkpoint_manager(os.path.join(os.fspath(workdir), "checkpoints"))
  try:
    state = _restore(manager, step, template)
  except (KeyError, TypeError) as err:
    raise ValueError(f"the checkpoint at step {step} in {os.fspath(workdir)!r} does not fit this model/optimizer "
                     f"({type(err).__name__}: {err}).") from err
  finally:
    manager.close()
  nnx.update(model, state.params, state.rest)
  return step


def _section_value(section: Any, name: str, default: Any) -> Any:
  value = section.get(name, default) if hasattr(section, "get") else getattr(section, name, default)
  return default if value is None else value


def optimizer(section: Any, *, num_steps: int | None = None, schedule: str | None = None
              ) -> optax.GradientTransformation:
  """The one optimizer factory: AdamW with an optional schedule, gradient clipping and accumulation, built from a
  config section (a ``ConfigDict``, dict or any object with these attributes).

  Fields (all optional but ``learning_rate``):
    learning_rate: peak learning rate.
    weight_decay: AdamW's decoupled weight decay (default 0).
    b1, b2: Adam's moment decays (defaults 0.9, 0.999).
    schedule: ``'constant'``, ``'cosine'`` (decay from the peak to ``lr * final_lr_fraction``) or
      ``'warmup_cosine'`` (linear warmup over ``warmup_steps``, then cosine); default: ``'warmup_cosine'`` when
      the section has ``warmup_steps``, else ``'constant'``. The ``schedule`` argument overrides the default
      but not the section's own field.
    warmup_steps, final_lr_fraction: schedule shape (defaults 0, 0).
    grad_clip: clip gradients to this global norm first (default: no clipping).
    accumulate: average this many micro-batch gradients per update (``optax.MultiSteps``; default 1).
    num_steps: the schedule's length in updates (the ``num_steps`` argument wins over the field).

  The same settings return the same object, so :func:`train` reuses its compiled step across calls.

  Example:
    >>> tx = optimizer({"learning_rate": 1e-3, "warmup_steps": 10, "grad_clip": 1.0, "num_steps": 100})
    >>> tx is optimizer({"learning_rate": 1e-3, "warmup_steps": 10, "grad_clip": 1.0, "num_steps": 100})
    True
  """
  lr = _section_value(section, "learning_rate", None)
  if lr is None:
    raise ValueError(f"the optimizer section must set learning_rate, got {dict(section) if hasattr(section, 'keys') else section!r}.")
  has_warmup = _section_value(section, "warmup_steps", None) is not None
  kind = _section_value(section, "schedule", schedule or ("warmup_cosine" if has_warmup else "constant"))
  steps = num_steps if num_steps is not None else _section_value(section, "num_steps", None)
  if kind != "constant" and steps is None:
    raise ValueError(f"schedule {kind!r} needs num_steps (the argument or the section's field), got None.")
  clip = _section_value(section, "grad_clip", None)
  return _optimizer(str(kind), float(lr), None if steps is None else int(steps),
                    int(_section_value(section, "warmup_steps", 0)), float(_section_value(section, "final_lr_fraction", 0.0)),
                    None if clip is None else float(clip), float(_section_value(section, "b1", 0.9)),
                    float(_section_value(section, "b2", 0.999)), float(_section_value(section, "weight_decay", 0.0)),
                    int(_section_value(section, "accumulate", 1)))


@functools.lru_cache(maxsize=64)
def _optimizer(kind: str, lr: float, num_steps: int | None, warmup: int, final_fraction: float, clip: float | None,
               b1: float, b2: float, weight_decay: float, accumulate: int) -> optax.GradientTransformation:
  if kind == "constant":
    rate: Any = lr
  elif kind == "cosine":
    rate = optax.cosine_decay_schedule(lr, max(num_steps, 1), alpha=final_fraction)
  elif kind == "warmup_cosine":
    warmup = min(warmup, max(num_steps - 1, 0))
    rate = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(num_steps, warmup + 1), end_value=lr * final_fraction)
  else:
    raise ValueError(f"schedule must be 'constant', 'cosine' or 'warmup_cosine', got {kind!r}.")
  tx = optax.adamw(rate, b1=b1, b2=b2, weight_decay=weight_decay)
  if clip is not None:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return optax.MultiSteps(tx, every_k_schedule=accumulate) if accumulate > 1 else tx


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
  n = parallel.axis_size(mesh, "data")
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
          manager.save(done, args=_save_args(state))
  finally:
    if manager is not None:
      manager.wait_until_finished()
      manager.close()
  nnx.update(model, state.params, state.rest)
  return TrainResult(model, state, history, resumed_from, stopped_early)
