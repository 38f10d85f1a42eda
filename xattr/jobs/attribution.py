"""The batch attribution job's core: the per-example function, the store's layout and identity, the chunk loop.

Every example ``i`` of a :class:`~xattr.jobs.tasks.Task` is explained by :func:`make_explain_one` with the key
``fold_in(fold_in(key(config.seed), 1), i)``, so results do not depend on the device count, the chunk size or the
order chunks run in. Methods come from the registry (:func:`xattr.methods.attribute`, settings from the config
section named after the method, e.g. ``config.kernel_shap``); ``method='explainer'`` runs an amortized explainer
instead (the ViT Shapley explainer of the task, or a tabular FastSHAP explainer loaded with
:func:`xattr.amortize.load`, applied per chunk).

:func:`explain_store` computes the store's missing chunks over a device mesh
(:func:`xattr.parallel.explain_batch`) and writes each one to the :mod:`xattr.outputs` store as soon as it is
done, so a killed job rerun with the same settings recomputes only what is missing. The store's fingerprint
(:func:`job_identity`) is an :func:`xattr.artifacts.fingerprint` of the settings the arrays depend on, the model's
parameters, the data's identity and the library's source: a store of another job, or of older core code, is
refused rather than mixed.

Example:
  >>> import ml_collections
  >>> config = ml_collections.ConfigDict(dict(method="banzhaf_msr", target="all",
  ...                                         banzhaf_msr=dict(num_samples=64, batch_size=32)))
  >>> check_method(config)
  >>> method_settings(config)
  {'batch_size': 32, 'num_samples': 64}
  >>> "explainer" in method_names() and "kernel_shap" in method_names()
  True
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import logging

from xattr import amortize, artifacts, evaluation, games, methods, outputs, parallel
from xattr.jobs.tasks import Task

__all__ = ["EXPLAINER", "method_names", "check_method", "method_settings", "make_explain_one", "row_spec",
           "output_specs", "explain_function", "job_config", "files_fingerprint", "job_identity", "versions",
           "load_amortized_explainer", "open_store", "explain_store"]

EXPLAINER = "explainer"      # the amortized explainer: special-cased, it is a model rather than a registered method
_NEEDS = ("game", "gradient", "vit", "none")    # what a Task provides (attention weights it does not)
_THROUGHPUT = os.path.join("done", "throughput.json")   # inside the store: removed with it, not a chunk marker


def method_names() -> tuple[str, ...]:
  """Methods the job runs: every registered method that needs a game, gradients, the ViT itself (GradCAM, LRP,
  ...) or nothing, and ``'explainer'``."""
  return tuple(n for n in methods.names() if methods.get(n).needs in _NEEDS) + (EXPLAINER,)


def check_method(config: ml_collections.ConfigDict) -> None:
  """Checks ``config.method`` and ``config.target`` before anything is loaded.

  Raises:
    ValueError: an unknown method, one the job cannot run, or a target it does not support.
  """
  if config.method not in method_names():
    raise ValueError(f"config.method must be one of {method_names()}, got {config.method!r}.")
  if config.target not in ("all", "predicted"):
    raise ValueError(f"config.target must be 'all' (every class) or 'predicted', got {config.target!r}.")
  if config.method != EXPLAINER and methods.get(config.method).needs != "game" and config.target != "predicted":
    raise ValueError(f"config.method={config.method!r} explains one class: set config.target='predicted'.")


def method_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The method's settings: the config section named after it (``config.kernel_shap``, ...), or none."""
  section = config.get(config.method) if config.method != EXPLAINER else None
  return dict(sorted(section.to_dict().items())) if section is not None else {}


def _target_values(values: jax.Array, target: jax.Array) -> jax.Array:
  """float[d, k] -> the target class's float[d] (float[d] passes through)."""
  return values if values.ndim == 1 else jnp.take(values, target, axis=-1)


def _values(config: ml_collections.ConfigDict, task: Task, row: Mapping[str, jax.Array], game: games.Game,
            prediction: jax.Array, key: jax.Array, settings: Mapping[str, Any]) -> dict[str, jax.Array]:
  if config.method == EXPLAINER:      # the task's explainer, or values precomputed per chunk (see explain_store)
    values = task.explainer_fn(row["x"]) if task.explainer_fn is not None else row["values"]
    return {"values": values if config.target == "all" else values[:, prediction]}
  problem = methods.Problem(game=game if config.target == "all" else games.select(game, prediction),
                            num_players=task.num_players, logit_fn=task.logit_fn, x=row["x"], target=prediction,
                            players=task.players, model=task.model)
  est = methods.attribute(config.method, problem, key, **settings)
  out = {"values": est.values}
  if est.std is not None:                 # sampling estimators: their uncertainty and cost
    out.update(std=est.std, num_evals=jnp.asarray(est.num_evals).astype(jnp.int32))
  return out


def make_explain_one(config: ml_collections.ConfigDict, task: Task) -> Callable[[dict, jax.Array], dict]:
  """``(row, key) -> outputs`` for ONE example ``row = {'x', 'index', 'label'[, 'values']}``.

  The ``key`` argument is ignored: the example's key comes from its global index, whatever the chunking.
  Outputs: ``values`` (``[d, k]`` with ``target='all'``, ``[d]`` with ``'predicted'``), ``std`` and
  ``num_evals`` (sampling estimators), ``probs``, ``prediction``, ``label``, ``target`` and, with
  ``config.report.curves``, the ``insertion``/``deletion`` curves of the predicted class.
  """
  root = jax.random.fold_in(jax.random.key(config.seed), 1)
  settings = method_settings(config)
  if config.method != EXPLAINER and methods.get(config.method).needs == "vit" and task.model is None:
    raise ValueError(f"config.method={config.method!r} reads a ViT's internals; this task's model "
                     f"({task.description}) is not a ViT. Use model.kind='vit_shapley' or 'vit', or another method.")

  def explain_one(row: dict[str, jax.Array], key: jax.Array) -> dict[str, jax.Array]:
    del key
    key = jax.random.fold_in(root, row["index"])
    probs = task.probs_fn(row["x"][None])[0]
    prediction = jnp.argmax(probs).astype(jnp.int32)
    game = task.game_fn(row["x"])
    out = _values(config, task, row, game, prediction, key, settings)
    out.update(probs=probs, prediction=prediction, label=row["label"].astype(jnp.int32), target=prediction)
    if config.report.curves:
      ins, dele = evaluation.insertion_deletion_curves(games.select(game, prediction),
                                                       _target_values(out["values"], prediction),
                                                       num_steps=config.report.curve_steps)
      out.update(insertion=ins.values, deletion=dele.values)
    return out

  return explain_one


def row_spec(task: Task, *, precomputed: bool = False) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of one input row (``precomputed``: with the ``values`` of a batched amortized explainer)."""
  spec = {"x": jax.ShapeDtypeStruct(task.source.example_shape, jnp.float32),
          "index": jax.ShapeDtypeStruct((), jnp.uint32), "label": jax.ShapeDtypeStruct((), jnp.int32)}
  if precomputed:
    spec["values"] = jax.ShapeDtypeStruct((task.num_players, task.source.num_classes), jnp.float32)
  return spec


def _stored_dtype(dtype: Any) -> str:
  kind = np.dtype(dtype).kind
  return "float32" if kind == "f" else ("bool" if kind == "b" else "int32")


def output_specs(explain_one: Callable, row: Mapping[str, jax.ShapeDtypeStruct]) -> dict[str, outputs.ArraySpec]:
  """The store's arrays: the per-example outputs of ``explain_one`` (traced with :func:`jax.eval_shape`)."""
  shapes = jax.eval_shape(explain_one, dict(row), jax.random.key(0))
  return {name: outputs.ArraySpec(tuple(s.shape), _stored_dtype(s.dtype)) for name, s in shapes.items()}


_EXPLAIN_CACHE: dict[str, tuple[Callable, dict[str, outputs.ArraySpec]]] = {}


def explain_function(config: ml_collections.ConfigDict, task: Task, fingerprint: str, *,
                     precomputed: bool = False) -> tuple[Callable, dict[str, outputs.ArraySpec]]:
  """``(explain_one, specs)`` of a job, one pair per fingerprint in a process.

  :func:`xattr.parallel.explain_batch` caches its compilation on the function object, so rerunning the same job
  in a process (a notebook, a resumed run, the tests) compiles once.
  """
  if fingerprint not in _EXPLAIN_CACHE:
    explain_one = make_explain_one(config, task)
    _EXPLAIN_CACHE[fingerprint] = (explain_one, output_specs(explain_one, row_spec(task, precomputed=precomputed)))
    while len(_EXPLAIN_CACHE) > 8:
      _EXPLAIN_CACHE.pop(next(iter(_EXPLAIN_CACHE)))
  return _EXPLAIN_CACHE[fingerprint]


def job_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The settings the stored arrays depend on (not where they go, nor how the report looks)."""
  d = config.to_dict()
  for key in ("output", "overwrite", "progress", "chunk_size"):
    d.pop(key, None)
  d["report"] = {k: d["report"][k] for k in ("curves", "curve_steps")}
  return d


def files_fingerprint(path: str) -> str:
  """Fingerprint of the files at ``path`` (a file or a folder): names and bytes, not locations."""
  files = [path] if os.path.isfile(path) else sorted(
      os.path.join(d, f) for d, _, names in os.walk(path) for f in names)
  return artifacts.fingerprint([os.path.relpath(f, path) for f in files],
                               data=[np.fromfile(f, np.uint8) for f in files], library=False)


def versions() -> dict[str, str]:
  """Python and package versions, recorded in the store's metadata and the report."""
  import platform
  from importlib import metadata

  found = {"python": platform.python_version()}
  for package in ("xattr", "jax", "jaxlib", "flax", "numpy", "tensorstore"):
    try:
      found[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      found[package] = "unknown"
  return found


def job_identity(config: ml_collections.ConfigDict, task: Task,
                 explainer_path: str | None = None) -> tuple[str, dict[str, Any]]:
  """``(fingerprint, metadata)`` of the job's store.

  The fingerprint covers the job's settings (:func:`job_config`), the model's parameters (and the files of an
  amortized explainer at ``explainer_path``), the data's identity and the library's source. Locations are left
  out (a moved model or data folder is the same job); what they hold is in the model hash and the data identity.
  """
  model_hash = task.model_hash + (f"+{files_fingerprint(explainer_path)}" if explainer_path else "")
  job = job_config(config)
  located = {k: v for k, v in job.items() if k != "explainer_path"}
  located["model"] = {k: v for k, v in job["model"].items() if k not in ("workdir", "path")}
  located["data"] = {k: v for k, v in job["data"].items() if k != "data_dir"}
  source = task.source
  data_identity = [p for p in source.identity if not (isinstance(p, str) and os.path.isabs(p))]
  fingerprint = artifacts.fingerprint(located, model_hash, source.name, source.num_examples, data_identity)
  metadata = {"config": job, "versions": versions(), "seed": config.seed, "method": config.method,
              "model": task.description, "model_hash": model_hash, "dataset": source.name,
              "split": config.data.split, "class_names": list(source.class_names),
              "feature_names": list(source.feature_names) if source.feature_names else None,
              "grid": list(task.grid) if task.grid else None}
  return fingerprint, metadata


def load_amortized_explainer(config: ml_collections.ConfigDict, task: Task) -> amortize.Explainer | None:
  """The tabular FastSHAP explainer at ``config.explainer_path`` when the job needs one (else None).

  Raises:
    FileNotFoundError: no explainer at the path.
    ValueError: it explains another number of features or classes than the task's model.
  """
  if config.method != EXPLAINER or task.explainer_fn is not None:
    return None
  path = config.explainer_path
  if not path or not os.path.exists(path):
    raise FileNotFoundError(f"config.explainer_path must point at a trained FastSHAP explainer, got {path!r}.")
  explainer = amortize.load(path)
  shape = (getattr(explainer, "num_features", None), getattr(explainer, "num_classes", None))
  if shape != (task.num_players, task.source.num_classes):
    raise ValueError(f"checkpoint/model mismatch: the explainer at {path} explains (num_features, num_classes) = "
                     f"{shape}, the model and data have {(task.num_players, task.source.num_classes)}.")
  return explainer


def open_store(path: str, specs: Mapping[str, outputs.ArraySpec], num_examples: int, *, chunk_size: int,
               fingerprint: str, metadata: Mapping[str, Any], overwrite: bool = False) -> outputs.Store:
  """Process 0 creates or resumes the store; the others (multi-host, shared filesystem) open it after a barrier."""
  kwargs = dict(num_examples=num_examples, chunk_size=chunk_size, fingerprint=fingerprint, metadata=metadata)
  if jax.process_count() == 1:
    return outputs.create_or_resume(path, specs, overwrite=overwrite, **kwargs)
  from jax.experimental import multihost_utils
  store = outputs.create_or_resume(path, specs, overwrite=overwrite, **kwargs) if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices("attribute: store ready")
  return store or outputs.create_or_resume(path, specs, **kwargs)


def _local_mesh(mesh: jax.sharding.Mesh) -> jax.sharding.Mesh:
  """The devices of ``mesh`` that belong to this process, as a 1-D data mesh of their own."""
  if jax.process_count() == 1:
    return mesh
  mine = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  return parallel.make_mesh(devices=mine, axis_name=mesh.axis_names[0])


def _write(store: outputs.Store, chunk: int, out: Mapping[str, np.ndarray]) -> None:
  try:
    store.write_chunk(chunk, out)
  except OSError as err:
    start, end = store.chunk_rows(chunk)
    raise OSError(f"Writing chunk {chunk} (rows {start}-{end - 1}) to the store {store.path} failed: {err}. The "
                  f"{len(store.done_chunks())} chunk(s) finished before are intact; free space or fix the folder, "
                  "then rerun the same command to resume.") from err


def explain_store(store: outputs.Store, source: Any, explain_one: Callable, *, mesh: jax.sharding.Mesh,
                  batched_explainer: Callable[[np.ndarray], Any] | None = None, progress: bool = True,
                  desc: str = "attribute", on_chunk: Callable[[int], None] | None = None) -> dict[str, float]:
  """Computes and writes every missing chunk of ``store`` (resumable: finished chunks are skipped).

  Args:
    store: the job's store (its chunk size is the unit of work).
    source: the examples (``read(start, end) -> (x, labels)``).
    explain_one: the per-example function of :func:`make_explain_one`.
    mesh: devices the chunk's examples are split over. In a multi-process run each process explains its own
      share of the missing chunks (chunk c of the missing list goes to process c mod N) on its own devices of
      ``mesh`` and writes them itself: no collective runs per chunk, and a process never waits on another's data.
    batched_explainer: an amortized explainer run on each whole chunk first (its values go in the rows).
    progress: show a progress bar (process 0).
    desc: its label.
    on_chunk: called with the chunk index after each chunk is written (e.g. a pause, in tests).

  Returns:
    dict with ``computed_chunks`` (by this process), ``attribute_s`` (seconds for them), ``attributions_per_s`` and
    ``nothing_left`` (True when every chunk was already done: the timings are then those of the runs that
    computed the store, kept in it, or NaN for a store written before they were kept).
  """
  missing = store.missing_chunks()
  if not missing:
    logging.info("store %s: all %d chunks are done, nothing left to compute", store.path, store.num_chunks)
    return dict(computed_chunks=0, nothing_left=True, **_previous_throughput(store.path))
  logging.info("store %s: %d of %d chunks left", store.path, len(missing), store.num_chunks)
  size = store.chunk_size
  todo = sum(end - start for start, end in map(store.chunk_rows, missing))
  mine = missing[jax.process_index()::jax.process_count()]
  local = _local_mesh(mesh)
  t0 = time.perf_counter()
  with tqdm.tqdm(total=store.num_examples, initial=store.num_examples - todo, unit="example", desc=desc,
                 dynamic_ncols=True, disable=not progress or jax.process_index() != 0) as bar:
    for chunk in mine:
      start, end = store.chunk_rows(chunk)
      x, labels = source.read(start, end)
      # The last chunk is padded to the chunk size (repeating its last row), so one program serves every chunk.
      rows, _ = parallel.pad_to_multiple({"x": np.asarray(x, np.float32), "label": np.asarray(labels, np.int32)},
                                         size)
      rows["index"] = np.arange(start, start + size, dtype=np.uint32)
      if batched_explainer is not None:
        rows["values"] = np.asarray(batched_explainer(rows["x"]), np.float32)      # [chunk, d, k]
      out = parallel.explain_batch(explain_one, rows, jax.random.key(0), mesh=local, progress=False)
      _write(store, chunk, {k: v[:end - start] for k, v in parallel.to_host(out).items()})
      # Process 0's bar counts its own chunks as the share of the whole (the others progress alike).
      bar.update((end - start) * jax.process_count() if jax.process_count() > 1 else end - start)
      if on_chunk is not None:
        on_chunk(chunk)
  seconds = time.perf_counter() - t0
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("attribute: store written")
  out = dict(computed_chunks=len(mine), nothing_left=False, attribute_s=seconds,
             attributions_per_s=todo / seconds if todo else float("nan"))
  if jax.process_index() == 0:
    _record_throughput(store.path, todo, seconds)
  return out


def _previous_throughput(path: str) -> dict[str, float]:
  try:
    with open(os.path.join(path, _THROUGHPUT)) as f:
      kept = json.load(f)
    return dict(attribute_s=float(kept["attribute_s"]), attributions_per_s=float(kept["attributions_per_s"]))
  except (OSError, ValueError, KeyError):
    return dict(attribute_s=float("nan"), attributions_per_s=float("nan"))


def _record_throughput(path: str, examples: int, seconds: float) -> None:
  """Adds this run's examples and seconds to those kept in the store (resumed jobs: the sum over their runs)."""
  try:
    with open(os.path.join(path, _THROUGHPUT)) as f:
      kept = json.load(f)
  except (OSError, ValueError):
    kept = {}
  examples += int(kept.get("examples", 0))
  seconds += float(kept.get("attribute_s", 0.0))
  rate = examples / seconds if seconds else 0.0
  artifacts.save_json(os.path.join(path, _THROUGHPUT), dict(examples=examples, attribute_s=seconds,
                                                              attributions_per_s=rate))
