"""Batch attributions over a whole dataset: sharded over devices, streamed chunk by chunk, resumable, with a report.

  python -m experiments.attribute --config=configs/attribute/breast_cancer.py --workdir=runs/attribute

Given a model (the tabular MLP of ``experiments.explain_tabular``, the ViTs of an ``experiments.vit_shapley``
workdir, or a ViT converted with ``python -m xattr.models.convert``), a removal choice, a method (any name of
:func:`xattr.jobs.method_names`: the registered methods of :mod:`xattr.methods` that need a game, gradients or
nothing, plus ``explainer``) and a dataset (embedded, or TFDS read from a user ``data_dir``), the job explains
every example (the code is :mod:`xattr.jobs`):

  1. the examples are split into chunks of ``chunk_size`` rows; a chunk's examples are explained in parallel over
     all devices (:func:`xattr.parallel.explain_batch`: jit(vmap) sharded over a 1-D data mesh; multi-host via
     ``jax.distributed``), each example ``i`` with the key ``fold_in(fold_in(seed key, 1), i)``, so results do not
     depend on the device count, the chunk size or the order chunks run in;
  2. each finished chunk goes to the output store (:mod:`xattr.outputs`: zarr arrays keyed by example index, one
     completion marker per chunk); only the current chunk is in memory, whatever the dataset size;
  3. a killed job restarted with the same command skips the finished chunks and recomputes the rest; the store
     then equals that of an uninterrupted run. A store of another job (different config, model, data or library
     code) is refused unless ``config.overwrite``;
  4. ``report.md`` (summary statistics, insertion/deletion curves, attribution overlays or a beeswarm summary) is
     written from the store, again chunk by chunk.

Stored per example: ``values`` (float[d, classes] with ``target='all'``, float[d] for the explained class with
``target='predicted'``), ``std`` and ``num_evals`` (sampling estimators), ``probs``, ``prediction``, ``label``,
``target`` and, with ``report.curves``, the ``insertion`` / ``deletion`` curves of the target-class probability.
Read them back with ``xattr.outputs.open(path)``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from experiments import cli
from xattr import jobs, outputs, parallel


def run(config: ml_collections.ConfigDict, workdir: str, *, mesh: jax.sharding.Mesh | None = None,
        on_chunk: Callable[[int], None] | None = None) -> dict[str, Any]:
  """Explains every example of the configured dataset into the output store and writes the report.

  Args:
    config: see configs/attribute/*.py.
    workdir: report, plots and (by default) the store ``workdir/attributions`` and the tabular model.
    mesh: device mesh; None: all devices (of every process when multi-host).
    on_chunk: called with the chunk index after each written chunk (e.g. a test's pause before a kill).

  Returns:
    dict with ``paths``, ``summary`` (report statistics), ``timings``, ``computed_chunks``, ``num_examples``,
    ``fingerprint``.
  """
  parallel.initialize_distributed()
  jobs.check_method(config)
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  task = jobs.build_task(config, workdir)
  timings = {"load_s": time.perf_counter() - t0}
  amortized = jobs.load_amortized_explainer(config, task)
  fingerprint, metadata = jobs.job_identity(config, task, config.explainer_path if amortized else None)
  explain_one, specs = jobs.explain_function(config, task, fingerprint, precomputed=amortized is not None)
  path = config.output or os.path.join(workdir, "attributions")
  store = jobs.open_store(path, specs, task.source.num_examples, chunk_size=config.chunk_size,
                          fingerprint=fingerprint, metadata=metadata, overwrite=config.overwrite)
  done = jobs.explain_store(store, task.source, explain_one, mesh=parallel.make_mesh() if mesh is None else mesh,
                            batched_explainer=amortized, progress=config.progress,
                            desc=f"attribute {config.method}", on_chunk=on_chunk)
  timings.update(attribute_s=done["attribute_s"], attributions_per_s=done["attributions_per_s"],
                 nothing_left=done["nothing_left"])
  paths, summary = {"store": path}, {}
  if jax.process_index() == 0:
    t0 = time.perf_counter()
    summary, report_paths = jobs.write_report(config, workdir, outputs.open(path), task.source, timings)
    paths.update(report_paths)
    timings["report_s"] = time.perf_counter() - t0
  return dict(paths=paths, summary=summary, timings=timings, computed_chunks=done["computed_chunks"],
              num_examples=task.source.num_examples, fingerprint=fingerprint)


def _run_and_report(config: ml_collections.ConfigDict, workdir: str) -> None:
  out = run(config, workdir)
  t = out["timings"]
  if t["nothing_left"]:
    done = ("nothing left to do, every chunk was already in the store; the run(s) that computed it: "
            f"{t['attributions_per_s']:.2f} attributions/s")
  else:
    done = f"{out['computed_chunks']} chunks computed now, {t['attributions_per_s']:.2f} attributions/s"
  print(f"{out['num_examples']} examples ({done}); store: {out['paths']['store']}; "
        f"report: {out['paths'].get('report')}")


if __name__ == "__main__":
  cli.main(_run_and_report, config_example="configs/attribute/breast_cancer.py",
           workdir_help="Directory for the output store (attributions/), the report and plots, and the tabular model.")
