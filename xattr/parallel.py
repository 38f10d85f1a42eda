"""Multi-device helpers: a 1-D data mesh, its shardings, padded sharded batches, and batched explanations.

Explaining a dataset is embarrassingly parallel over inputs, so the only layout used here is a 1-D mesh whose
'data' axis splits the batch. :func:`explain_batch` turns a function that explains ONE input into a jitted,
vmapped, sharded computation over many, with per-example keys ``fold_in(key, global_index)``: the result for
input ``i`` is the same whatever the device count or the chunking.

  >>> import jax, jax.numpy as jnp
  >>> from xattr import parallel
  >>> explain = lambda x, k: x * jax.random.uniform(k, x.shape)
  >>> out = parallel.explain_batch(explain, jnp.ones((5, 3)), jax.random.key(0))
  >>> out.shape
  (5, 3)
  >>> bool(jnp.allclose(out[2], explain(jnp.ones(3), jax.random.fold_in(jax.random.key(0), 2))))
  True

Multi-host: call :func:`initialize_distributed` first thing in every process, build the mesh over all
devices with :func:`make_mesh`, and turn each process's slice of the data into one global array with
:func:`host_local_to_global` (or give every process the same full dataset to :func:`explain_batch`).
"""

from __future__ import annotations

import functools
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from xattr import _checks

PyTree = Any

__all__ = ["make_mesh", "axis_size", "data_sharding", "replicated", "pad_to_multiple", "shard_batch", "explain_batch",
           "put", "to_host", "detect_multiprocess", "initialize_distributed", "host_local_to_global"]


# ---------------------------------------------------------------------------------------------------------------
# Meshes and shardings
# ---------------------------------------------------------------------------------------------------------------

def axis_size(mesh: Any, axis_name: str = "data") -> int:
  """The size of ``axis_name`` in ``mesh``, raising if ``mesh`` is not a Mesh with that axis.

  Example:
    >>> axis_size(make_mesh(1)), axis_size(make_mesh(1), "data")
    (1, 1)
  """
  if not isinstance(mesh, Mesh):
    raise ValueError(f"mesh must be a jax.sharding.Mesh (see xattr.parallel.make_mesh), got "
                     f"{type(mesh).__name__}.")
  if axis_name not in mesh.axis_names:
    raise ValueError(f"axis_name must be one of the mesh's axes {tuple(mesh.axis_names)}, got {axis_name!r}.")
  return int(mesh.shape[axis_name])


def make_mesh(num_devices: int | None = None, axis_name: str = "data", *,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh whose single axis splits the batch.

  The axis type is ``Auto``: the partitioner propagates shardings through user code, so explanation
  functions with ``vmap``, ``while_loop`` or ``scan`` inside need no sharding annotations.

  Args:
    num_devices: how many devices to use (the first ones); None: all of them (all of ``devices`` if given).
    axis_name: name of the mesh axis.
    devices: devices to choose from; None: ``jax.devices()`` (every process's devices when multi-host).

  Returns:
    ``jax.sharding.Mesh`` of shape ``{axis_name: num_devices}``.

  Raises:
    ValueError: if ``num_devices`` is not a positive int or exceeds the available devices, or ``axis_name``
      is not a non-empty string.

  Example:
    >>> mesh = make_mesh(1)
    >>> dict(mesh.shape)
    {'data': 1}
  """
  if not isinstance(axis_name, str) or not axis_name:
    raise ValueError(f"axis_name must be a non-empty string, got {axis_name!r}.")
  available = list(jax.devices() if devices is None else devices)
  if not available:
    raise ValueError("devices must hold at least one device, got an empty sequence.")
  n = len(available) if num_devices is None else _checks.positive_int("num_devices", num_devices)
  if n > len(available):
    raise ValueError(f"num_devices={n} exceeds the {len(available)} available device(s) "
                     f"({available[0].platform}). On CPU, more can be simulated with "
                     f"XLA_FLAGS=--xla_force_host_platform_device_count={n} set before JAX starts.")
  return jax.make_mesh((n,), (axis_name,), axis_types=(jax.sharding.AxisType.Auto,), devices=available[:n])


def data_sharding(mesh: Mesh, axis_name: str = "data") -> NamedSharding:
  """Sharding that splits the leading (batch) axis over ``axis_name``; other axes are replicated.

  Example:
    >>> data_sharding(make_mesh(1)).spec
    P('data',)
  """
  axis_size(mesh, axis_name)
  return NamedSharding(mesh, P(axis_name))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy on every device of ``mesh`` (parameters, keys, background data).

  Example:
    >>> replicated(make_mesh(1)).spec
    P()
  """
  if not isinstance(mesh, Mesh):
    raise ValueError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}.")
  return NamedSharding(mesh, P())


# ---------------------------------------------------------------------------------------------------------------
# Placing values on a mesh and bringing them back, on one or many processes
# ---------------------------------------------------------------------------------------------------------------

def _put_leaf(a: Any, sharding: NamedSharding) -> jax.Array:
  if isinstance(a, jax.Array) and not a.is_fully_addressable:
    return jax.device_put(a, sharding)                      # already global: a resharding every process joins
  if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
    return jax.random.wrap_key_data(_put_leaf(jax.random.key_data(a), sharding), impl=jax.random.key_impl(a))
  host = np.asarray(a)
  # From a callback: each process fills only its own devices' pieces (device_put to devices of other
  # processes is refused in a multi-process run).
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def put(tree: PyTree, sharding: NamedSharding) -> PyTree:
  """``jax.device_put(tree, sharding)`` that also works when ``sharding`` spans several processes.

  In a multi-process run every process must pass the same values (the full array, not its own rows: for
  per-process rows use :func:`host_local_to_global`); each one copies only the pieces of its own devices.
  Typed PRNG keys are placed through their key data.

  Example:
    >>> put(np.arange(4.0), data_sharding(make_mesh(1))).sharding.spec
    P('data',)
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda a: _put_leaf(a, sharding), tree)


def to_host(tree: PyTree) -> PyTree:
  """Every leaf as a numpy array on every process (a collective when a leaf spans several processes).

  Arrays that are not fully addressable (sharded over devices of other processes) are gathered with
  ``multihost_utils.process_allgather``; all processes must then call this function in the same order.

  Example:
    >>> to_host({"a": jnp.ones(2)})["a"].tolist()
    [1.0, 1.0]
  """
  from jax.experimental import multihost_utils

  def one(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable and not a.is_fully_replicated:
      return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)

  return jax.tree.map(one, tree)


# ---------------------------------------------------------------------------------------------------------------
# Padding and sharding batches
# ---------------------------------------------------------------------------------------------------------------

def _leading_size(name: str, tree: PyTree) -> int:
  """The shared leading-axis length of every leaf, raising with the offending shapes otherwise."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    raise ValueError(f"{name} must hold at least one array, got an empty pytree {tree!r}.")
  shapes = [np.shape(leaf) for leaf in leaves]
  if any(len(s) == 0 for s in shapes):
    raise ValueError(f"{name} must hold arrays with a leading batch axis, got a leaf of shape () among "
                     f"shapes {shapes}.")
  sizes = {s[0] for s in shapes}
  if len(sizes) != 1:
    raise ValueError(f"{name} leaves must share the leading (batch) axis length, got shapes {shapes}.")
  n = sizes.pop()
  if n == 0:
    raise ValueError(f"{name} must hold at least one example (leading axis >= 1), got shapes {shapes}.")
  return int(n)


def _pad_leaf(leaf: Any, target: int) -> Any:
  """Pads ``leaf`` to ``target`` rows by repeating its last row (numpy stays on the host, jax on device)."""
  pad = target - leaf.shape[0]
  if pad == 0:
    return leaf
  xp = jnp if isinstance(leaf, jax.Array) else np
  return xp.concatenate([leaf, xp.repeat(leaf[-1:], pad, axis=0)], axis=0)


def pad_to_multiple(x: PyTree, multiple: int) -> tuple[PyTree, int]:
  """Pads every leaf's leading axis up to a multiple of ``multiple`` by repeating the last row.

  Padded rows are copies of a real input, so whatever runs on them stays finite (zero rows could hit a log
  or a division and turn into NaN, which then trips NaN checks or debugging tools). numpy leaves stay numpy
  (padding happens on the host), jax.Array leaves stay on their devices.

  Args:
    x: pytree of arrays sharing a leading axis of length n >= 1.
    multiple: positive int.

  Returns:
    (padded pytree, n), where n is the original length: strip with ``leaf[:n]``.

  Raises:
    ValueError: if ``multiple`` is not a positive int, or the leaves have no shared leading axis.

  Example:
    >>> padded, n = pad_to_multiple({'x': np.arange(3.0)}, 4)
    >>> padded['x'].tolist(), n
    ([0.0, 1.0, 2.0, 2.0], 3)
  """
  multiple = _checks.positive_int("multiple", multiple)
  x = jax.tree.map(lambda a: a if isinstance(a, (jax.Array, np.ndarray)) else np.asarray(a), x)
  n = _leading_size("x", x)
  target = -(-n // multiple) * multiple
  return jax.tree.map(lambda a: _pad_leaf(a, target), x), n


def shard_batch(batch: PyTree, mesh: Mesh, axis_name: str = "data") -> tuple[PyTree, int]:
  """Pads ``batch`` to a multiple of the mesh's ``axis_name`` size and splits it over that axis.

  In a multi-process run every process must pass the same ``batch``; for per-process data use
  :func:`host_local_to_global`.

  Args:
    batch: pytree of arrays with a shared leading axis of length n.
    mesh: the device mesh.
    axis_name: mesh axis to split the batch over.

  Returns:
    (sharded pytree of jax.Arrays with ``data_sharding(mesh, axis_name)``, n).

  Example:
    >>> sharded, n = shard_batch(np.ones((3, 2)), make_mesh(1))
    >>> sharded.shape, n
    ((3, 2), 3)
  """
  size = axis_size(mesh, axis_name)
  padded, n = pad_to_multiple(batch, size)
  return put(padded, data_sharding(mesh, axis_name)), n


# ---------------------------------------------------------------------------------------------------------------
# Batched explanations
# ---------------------------------------------------------------------------------------------------------------

def _check_key(key: Any) -> None:
  shape, dtype = np.shape(key), getattr(key, "dtype", None)
  typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)
  if (typed and shape == ()) or (not typed and dtype == np.uint32 and shape == (2,)):
    return
  raise ValueError(f"key must be a single PRNG key (jax.random.key(seed): shape (), or a legacy uint32[2] key); "
                   f"got shape {shape} and dtype {dtype}. explain_batch derives one key per input itself.")


def _batched(explain_fn: Callable[[PyTree, jax.Array], PyTree], mesh: Mesh, axis_name: str) -> Callable:
  """``_build_batched`` through its cache, or uncached for a callable object that cannot be hashed."""
  try:
    hash(explain_fn)
  except TypeError:
    return _build_batched.__wrapped__(explain_fn, mesh, axis_name)
  return _build_batched(explain_fn, mesh, axis_name)


@functools.lru_cache(maxsize=32)
def _build_batched(explain_fn: Callable[[PyTree, jax.Array], PyTree], mesh: Mesh, axis_name: str) -> Callable:
  """The jitted, vmapped, sharded ``explain_fn`` (cached, so repeated calls and chunks reuse the compilation).

  Keys are derived inside the computation from the global example index, so the per-example key never
  depends on how the batch is split into chunks or devices.
  """
  rows = data_sharding(mesh, axis_name)

  def run(key, indices, inputs):
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)
    return jax.vmap(explain_fn)(inputs, keys)

  # One sharding as a pytree prefix covers every input and output leaf: all carry the batch axis first.
  return jax.jit(run, in_shardings=(replicated(mesh), rows, rows), out_shardings=rows)


def explain_batch(explain_fn: Callable[[PyTree, jax.Array], PyTree], inputs: PyTree, key: jax.Array, *,
                  mesh: Mesh | None = None, chunk_size: int | None = None, axis_name: str = "data",
                  progress: bool = True) -> PyTree:
  """Explains every input of a batch in parallel over the devices of ``mesh``.

  Input ``i`` (counting from 0 over the whole of ``inputs``) is explained with key
  ``jax.random.fold_in(key, i)``, so the result equals
  ``[explain_fn(inputs[i], jax.random.fold_in(key, i)) for i in range(n)]`` stacked, whatever the mesh size
  or ``chunk_size``. The batch is padded (by repeating the last input) to a multiple of the mesh size, split
  over ``axis_name``, run through ``jax.jit(jax.vmap(explain_fn))`` and stripped of the padding.

  The compiled function is cached per (explain_fn, mesh, axis_name) and every chunk has the same shape (the
  last one is padded), so a dataset costs one compilation, and so does calling again with the same
  ``explain_fn`` object. The cache keeps references to the last 32 such functions.

  Args:
    explain_fn: ``(x, key) -> pytree`` explaining ONE input ``x`` (one row of every leaf of ``inputs``);
      must be jittable and vmappable, e.g.
      ``lambda x, k: shapley.kernel_shap(games.marginal(f, x, bg), d, k, num_samples=512)``.
    inputs: pytree of arrays with a shared leading axis of n >= 1 inputs. numpy inputs stay on the host
      and only one or two chunks at a time go to the devices.
    key: a single PRNG key.
    mesh: device mesh; None: :func:`make_mesh` over all devices.
    chunk_size: inputs per sequential step, a multiple of the mesh's ``axis_name`` size (bounds memory for
      big datasets); None: all at once.
    axis_name: mesh axis to split inputs over.
    progress: show a progress bar over chunks when there is more than one (on process 0 only).

  Note:
    With fake CPU devices (``--xla_force_host_platform_device_count``) on a small machine, XLA:CPU can
    deadlock in batched LAPACK calls (``jnp.linalg.solve``, Cholesky: KernelSHAP's solve) once a device holds
    more than about 8 rows (seen with 4 fake devices on 2 cores, jax 0.10). Keep ``chunk_size`` at 8 rows per
    device there; real devices are not affected.

  Returns:
    ``explain_fn``'s output pytree with a leading axis of n added to every leaf (jax.Arrays).

  Raises:
    ValueError: if ``explain_fn`` is not callable, ``inputs`` has no shared leading axis, ``key`` is not a
      single key, ``mesh`` lacks ``axis_name``, or ``chunk_size`` is not a positive multiple of the mesh size.

  Example:
    >>> from xattr import games, shapley
    >>> f = lambda b: b @ jnp.array([1.0, 2.0, 3.0])
    >>> explain = lambda x, k: shapley.kernel_shap(games.baseline(f, x, jnp.zeros(3)), 3, k, num_samples=8)
    >>> est = explain_batch(explain, jnp.ones((4, 3)), jax.random.key(0))
    >>> est.values.round(4).tolist()[0], est.num_evals.shape
    ([1.0, 2.0, 3.0], (4,))
  """
  if not callable(explain_fn):
    raise ValueError(f"explain_fn must be callable as explain_fn(x, key), got {type(explain_fn).__name__}.")
  _check_key(key)
  mesh = make_mesh(axis_name=axis_name) if mesh is None else mesh
  size = axis_size(mesh, axis_name)
  inputs = jax.tree.map(lambda a: a if isinstance(a, (jax.Array, np.ndarray)) else np.asarray(a), inputs)
  n = _leading_size("inputs", inputs)
  full = -(-n // size) * size
  if chunk_size is None:
    chunk = full
  else:
    chunk = _checks.positive_int("chunk_size", chunk_size)
    if chunk % size:
      raise ValueError(f"chunk_size must be a multiple of the mesh's '{axis_name}' size {size}, got {chunk}.")
    chunk = min(chunk, full)           # a chunk larger than the data would only add padding
  num_chunks = -(-n // chunk)
  fn = _batched(explain_fn, mesh, axis_name)
  rows = data_sharding(mesh, axis_name)
  key = put(key, replicated(mesh))

  def dispatch(start):
    part = jax.tree.map(lambda a: a[start:start + chunk], inputs)
    part, count = pad_to_multiple(part, chunk)
    # Padded rows get the indices n, n+1, ...: valid keys whose results are dropped below.
    indices = np.arange(start, start + chunk, dtype=np.uint32)
    out = fn(key, put(indices, rows), put(part, rows))
    return out, count

  outputs, pending = [], None
  bar = tqdm(total=num_chunks, desc="explain_batch", unit="chunk",
             disable=not progress or num_chunks == 1 or jax.process_index() != 0)
  with bar:
    for c in range(num_chunks):
      current = dispatch(c * chunk)
      # Wait for the previous chunk only after queueing this one: transfers overlap compute, at most two
      # chunks are in flight, and the bar tracks finished work rather than dispatches.
      if pending is not None:
        jax.block_until_ready(pending[0])
        bar.update(1)
      outputs.append(current)
      pending = current
    jax.block_until_ready(pending[0])
    bar.update(1)

  stripped = [jax.tree.map(lambda a, k=count: a[:k], out) for out, count in outputs]
  if len(stripped) == 1:
    return stripped[0]
  return jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=0), *stripped)


# ---------------------------------------------------------------------------------------------------------------
# Multi-host
# ---------------------------------------------------------------------------------------------------------------

def _env_int(environ: Mapping[str, str], name: str) -> int | None:
  try:
    return int(environ[name])
  except (KeyError, ValueError):
    return None


def detect_multiprocess(environ: Mapping[str, str]) -> str | None:
  """Names the launcher whose environment says this is one of several processes, or None.

  Mirrors the environments ``jax.distributed.initialize`` can auto-configure, but only reports those with more
  than one process: a 1-task Slurm or mpirun job is a single process, and initializing there would only add a
  coordinator to wait on.
  """
  if environ.get("JAX_COORDINATOR_ADDRESS"):
    return "JAX_COORDINATOR_ADDRESS"
  slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
  if all(v in environ for v in slurm) and (_env_int(environ, "SLURM_NTASKS") or 1) > 1:
    return "slurm"
  if "OMPI_MCA_orte_hnp_uri" in environ and (_env_int(environ, "OMPI_COMM_WORLD_SIZE") or 1) > 1:
    return "ompi"
  hosts = environ.get("TPU_PROCESS_ADDRESSES") or environ.get("TPU_WORKER_HOSTNAMES") or ""
  if len([h for h in hosts.split(",") if h.strip()]) > 1:
    return "tpu"
  return None


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, **kwargs: Any) -> bool:
  """Starts JAX's multi-process runtime when this is a multi-process run; a no-op otherwise.

  Call it first thing in every process, before any other JAX call. It initializes when any argument is given,
  or when the environment shows several processes (``JAX_COORDINATOR_ADDRESS`` with ``JAX_NUM_PROCESSES`` and
  ``JAX_PROCESS_ID``, read here when the arguments are not given; a Slurm step or an Open MPI
  job with more than one task, or a multi-host TPU slice listing several workers); JAX then fills in what was
  not given. Elsewhere (a laptop, one GPU box, a 1-task job) it does nothing, so the same script runs
  everywhere. Calling it again is harmless.

  Args:
    coordinator_address: 'host:port' of process 0.
    num_processes: total number of processes.
    process_id: this process's index in [0, num_processes).
    **kwargs: passed on to ``jax.distributed.initialize`` (e.g. ``local_device_ids``, or
      ``cluster_detection_method='mpi4py'`` for launchers not detected from the environment).

  Returns:
    True if the distributed runtime is initialized (now or by an earlier call), False for a single process.

  Raises:
    ValueError: if ``num_processes`` or ``process_id`` is out of range.

  Example:
    >>> initialize_distributed()       # a single process: nothing to do
    False
  """
  # JAX reads the coordinator from JAX_COORDINATOR_ADDRESS but not the process count and index: read those here,
  # so a launcher (or two shells on one machine) can configure every process through the environment alone.
  num_processes = _env_int(os.environ, "JAX_NUM_PROCESSES") if num_processes is None else num_processes
  process_id = _env_int(os.environ, "JAX_PROCESS_ID") if process_id is None else process_id
  if num_processes is not None:
    num_processes = _checks.positive_int("num_processes", num_processes)
  if process_id is not None:
    if isinstance(process_id, bool) or not isinstance(process_id, numbers.Integral) or process_id < 0:
      raise ValueError(f"process_id must be a non-negative int, got {process_id!r}.")
    if num_processes is not None and process_id >= num_processes:
      raise ValueError(f"process_id must be < num_processes={num_processes}, got {process_id}.")
  if jax.distributed.is_initialized():
    return True
  explicit = any(v is not None for v in (coordinator_address, num_processes, process_id)) or bool(kwargs)
  if not explicit and detect_multiprocess(os.environ) is None:
    return False
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id, **kwargs)
  return True


def host_local_to_global(local_batch: PyTree, mesh: Mesh, axis_name: str = "data") -> PyTree:
  """Assembles each process's slice of a batch into global arrays split over ``axis_name``.

  In a multi-host input pipeline every process loads only its own rows; the global batch is the
  concatenation of the processes' rows in process order. In a single process this is a sharded copy.

  Args:
    local_batch: pytree of arrays with a shared leading axis, divisible by the number of this process's
      devices along ``axis_name`` (pad with :func:`pad_to_multiple` first, and keep every process's row count
      equal).
    mesh: the global device mesh.
    axis_name: mesh axis the batch is split over.

  Returns:
    pytree of global jax.Arrays with ``data_sharding(mesh, axis_name)``; leading axis = sum of local rows.

  Raises:
    ValueError: if the local row count does not split evenly over the local devices.

  Example:
    >>> g = host_local_to_global(np.arange(6.0).reshape(3, 2), make_mesh(1))
    >>> g.shape, g.sharding.spec
    ((3, 2), P('data',))
  """
  axis_size(mesh, axis_name)
  local_batch = jax.tree.map(lambda a: a if isinstance(a, (jax.Array, np.ndarray)) else np.asarray(a),
                             local_batch)
  n = _leading_size("local_batch", local_batch)
  local = int(mesh.local_mesh.shape[axis_name])
  if n % local:
    raise ValueError(f"local_batch must have a leading axis divisible by this process's {local} device(s) along "
                     f"'{axis_name}', got {n} rows; pad it with xattr.parallel.pad_to_multiple(batch, {local}).")
  sharding = data_sharding(mesh, axis_name)
  return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), local_batch)
