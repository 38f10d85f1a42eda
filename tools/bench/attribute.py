"""End-to-end throughput of the batch attribution job (experiments.attribute), printed as attributions per second.

  python -m tools.bench.attribute                       # all three parts below, CPU
  python -m tools.bench.attribute --parts=kernel_shap,devices --examples=114

Parts:
  * ``kernel_shap``: the embedded default data (configs/attribute/breast_cancer.py: MLP on breast cancer), KernelSHAP
    with 512 coalitions on the marginal game over 64 background rows) over the test split. "cold" includes compilation,
    "warm" reruns the same job into a fresh store in the same process (compiled once, as a long job amortizes it).
  * ``shapley``: the same job with the config's default method, ``shapley`` (``xattr.shapley.estimate``:
    odd_kernel_shap at the same 512 coalitions), and its warm rate over kernel_shap's.
  * ``explainer``: a trained amortized explainer against KernelSHAP on the same game: the ViT Shapley explainer of a
    vit_shapley workdir on digits test images (``--vit_shapley_workdir``; if missing, the smoke stages are trained
    there first), and the tabular FastSHAP explainer when ``xattr.amortize.load`` and ``--fastshap_path`` exist.
  * ``memory``: datasets larger than memory. Synthetic breast-cancer-shaped rows written to ``.npy`` files
    (``--rows``, e.g. 10k and 200k), read back through ``xattr.data.from_npy`` chunk by chunk, and explained with
    ``--memory_method`` (cheap, so 200k rows take a minute) into a store, each row count in its own process; prints
    the peak RSS of each (``ru_maxrss``) and their ratio: streaming keeps it flat in the row count.
  * ``devices``: the kernel_shap job in two subprocesses, one with 1 CPU device and one with 4 fake CPU devices
    (``XLA_FLAGS=--xla_force_host_platform_device_count=4``), warm rates and their ratio. Fake devices share the
    host's cores, so the ratio measures the sharding overhead and how well XLA:CPU uses the cores, not 4 chips.
Every rate is examples / wall seconds of the chunk loop (model loading and the report excluded), without the
per-example insertion/deletion curves unless ``--curves`` (the report's curves cost 2 (d + 1) game evaluations per
example, more than the explainers themselves).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("parts", ["kernel_shap", "shapley", "explainer", "devices", "memory"], "Which parts to run.")
flags.DEFINE_string("workdir", "/tmp/xattr_bench_attribute", "Models, stores and reports go here.")
flags.DEFINE_integer("examples", None, "Examples to explain (None: the whole test split).")
flags.DEFINE_integer("chunk_size", 64, "Examples per chunk.")
flags.DEFINE_string("vit_shapley_workdir", None, "A vit_shapley workdir (default: <workdir>/vit_shapley_smoke, "
                    "trained with configs/vit_shapley/digits.py:smoke if missing).")
flags.DEFINE_string("vit_shapley_config", "configs/vit_shapley/digits.py:smoke", "The config that trained it.")
flags.DEFINE_string("fastshap_path", None, "A trained tabular FastSHAP explainer for xattr.amortize.load.")
flags.DEFINE_bool("curves", False, "Also compute the insertion/deletion curves per example (2 (d + 1) more game "
                  "evaluations each; they dominate the explainers' cost).")
flags.DEFINE_integer("device_chunk_size", 16, "Examples per chunk in the 1 vs 4 device runs (on the 2-core dev box, "
                     "4 fake devices with 64-row chunks hung in XLA:CPU; 16 rows ran).")
flags.DEFINE_list("rows", ["10000", "200000"], "Row counts of the memory part.")
flags.DEFINE_string("memory_method", "gradient_x_input", "Method of the memory part.")
flags.DEFINE_integer("memory_chunk_size", 1024, "Examples per chunk in the memory part.")
flags.DEFINE_integer("child_rows", None, "Internal: run the memory part's job on this many rows here, print JSON.")
flags.DEFINE_integer("child_devices", None, "Internal: run the kernel_shap job here on this many devices, print JSON.")


def _tabular_config(method: str = "kernel_shap"):
  from configs.attribute import breast_cancer
  config = breast_cancer.get_config()
  config.method = method
  config.model.workdir = os.path.join(FLAGS.workdir, "mlp")
  config.data.max_examples = FLAGS.examples
  config.chunk_size = FLAGS.chunk_size
  config.progress = False
  config.report.curves = FLAGS.curves
  return config


def _rate(config, name: str, mesh=None) -> dict[str, float]:
  """Runs the job cold, then again into a fresh store (warm); returns both rates."""
  from experiments import attribute
  rates = {}
  for label in ("cold", "warm"):
    workdir = os.path.join(FLAGS.workdir, f"{name}_{label}")
    shutil.rmtree(workdir, ignore_errors=True)
    out = attribute.run(config, workdir, mesh=mesh)
    rates[label] = out["num_examples"] / out["timings"]["attribute_s"]
    rates["num_examples"] = out["num_examples"]
  return rates


def _print(name: str, rates: dict[str, float]) -> None:
  print(f"{name}: {rates['num_examples']} examples, cold {rates['cold']:.2f} attributions/s, "
        f"warm {rates['warm']:.2f} attributions/s", flush=True)


def bench_kernel_shap() -> dict[str, float]:
  rates = _rate(_tabular_config(), "kernel_shap")
  _print("kernel_shap (breast_cancer MLP, 512 coalitions, 64 background rows)", rates)
  return rates


def bench_shapley(kernel_shap_rates: dict[str, float] | None) -> None:
  """The config's default method, ``shapley`` (odd_kernel_shap at the same 512 coalitions): its warm rate, and
  beside it kernel_shap's, the price of its lower error (two host eigendecompositions per example and class)."""
  rates = _rate(_tabular_config("shapley"), "shapley")
  _print("shapley, the default (odd_kernel_shap, breast_cancer MLP, 512 coalitions, 64 background rows)", rates)
  if kernel_shap_rates:
    print(f"shapley_rate_vs_kernel_shap={rates['warm'] / kernel_shap_rates['warm']:.2f}x (warm)", flush=True)


def _vit_shapley_workdir() -> str:
  from xattr import jobs, vit_shapley
  workdir = FLAGS.vit_shapley_workdir or os.path.join(FLAGS.workdir, "vit_shapley_smoke")
  if not os.path.isdir(os.path.join(workdir, "explainer")):
    print(f"training the vit_shapley stages ({FLAGS.vit_shapley_config}) into {workdir} ...", flush=True)
    vs = jobs.load_config_file(FLAGS.vit_shapley_config)
    ds = vit_shapley.load_data(vs)
    cfg = vit_shapley.model_config(vs, ds.image_shape, ds.num_classes)
    classifier = vit_shapley.train_classifier(vs, ds, cfg, workdir)
    surrogate = vit_shapley.train_surrogate(vs, ds, classifier, workdir)
    vit_shapley.train_explainer(vs, ds, surrogate, workdir)
  return workdir


def bench_explainer(kernel_shap_rates: dict[str, float] | None) -> None:
  from configs.attribute import digits
  from xattr import amortize
  workdir = _vit_shapley_workdir()
  results = {}
  for method in ("explainer", "kernel_shap"):
    config = digits.get_config("smoke" if "smoke" in FLAGS.vit_shapley_config else None)
    config.model.update(config=FLAGS.vit_shapley_config, workdir=workdir)
    config.update(method=method, chunk_size=FLAGS.chunk_size, progress=False)
    config.report.curves = FLAGS.curves
    config.data.max_examples = FLAGS.examples
    config.kernel_shap.update(num_samples=512, batch_size=256)
    results[method] = _rate(config, f"vit_{method}")
    _print(f"vit_shapley digits {method}" + (" (512 coalitions, surrogate game)" if method == "kernel_shap" else
                                             " (one forward pass + normalization)"), results[method])
  print(f"explainer_speedup_vs_kernel_shap={results['explainer']['warm'] / results['kernel_shap']['warm']:.1f}x "
        "(digits ViT, warm)", flush=True)
  if not hasattr(amortize, "load"):
    print("fastshap: skipped (this xattr has no xattr.amortize.load)")
    return
  path, label = FLAGS.fastshap_path, "trained"
  if not path:
    # The FastSHAP explainer architecture of configs/amortize (MLP 128x128); untrained weights cost the same.
    spec = {"kind": "mlp_explainer", "num_features": 30, "hidden_sizes": [128, 128], "num_classes": 2}
    path = amortize.save(os.path.join(FLAGS.workdir, "fastshap_architecture"), amortize.build_module(spec), spec)
    label = "FastSHAP architecture, untrained weights (pass --fastshap_path for a trained one)"
  config = _tabular_config("explainer")
  config.explainer_path = path
  rates = _rate(config, "fastshap")
  _print(f"fastshap breast_cancer explainer ({label})", rates)
  if kernel_shap_rates:
    print(f"fastshap_speedup_vs_kernel_shap={rates['warm'] / kernel_shap_rates['warm']:.1f}x (breast_cancer, warm)")


def bench_devices() -> None:
  rates = {}
  for n in (1, 4):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}").strip())
    args = [sys.executable, "-m", "tools.bench.attribute", f"--child_devices={n}", f"--workdir={FLAGS.workdir}",
            f"--chunk_size={FLAGS.device_chunk_size}", f"--curves={FLAGS.curves}"]
    args += [f"--examples={FLAGS.examples}"] if FLAGS.examples else []
    result = subprocess.run(args, env=env, capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    if result.returncode:
      raise RuntimeError(f"the {n}-device run failed:\n{result.stderr[-3000:]}")
    rates[n] = json.loads(result.stdout.strip().splitlines()[-1])
    _print(f"kernel_shap on {n} CPU device(s), chunks of {FLAGS.device_chunk_size}", rates[n])
  print(f"scaling_4_vs_1_devices={rates[4]['warm'] / rates[1]['warm']:.2f}x (warm; fake devices share "
        f"{os.cpu_count()} cores)", flush=True)


def _synthetic_npy(rows: int) -> tuple[str, str]:
  """``rows`` standardized Gaussian 30-feature rows and random labels in .npy files (written block by block)."""
  import numpy as np
  folder = os.path.join(FLAGS.workdir, f"npy_{rows}")
  x_path, y_path = os.path.join(folder, "x.npy"), os.path.join(folder, "y.npy")
  if not os.path.exists(y_path):
    os.makedirs(folder, exist_ok=True)
    x = np.lib.format.open_memmap(x_path, mode="w+", dtype=np.float32, shape=(rows, 30))
    rng = np.random.default_rng(0)
    for start in range(0, rows, 65536):
      x[start:start + 65536] = rng.normal(size=(min(65536, rows - start), 30))
    x.flush()
    del x
    np.save(y_path, rng.integers(0, 2, rows).astype(np.int32))
  return x_path, y_path


def _memory_child(rows: int) -> dict[str, float]:
  """The attribution job over ``rows`` on-disk rows (no report); peak RSS in MiB before and after."""
  import dataclasses
  import resource
  from xattr import data, jobs, parallel
  config = _tabular_config(FLAGS.memory_method)
  config.update(chunk_size=FLAGS.memory_chunk_size, target="predicted")
  config.data.max_examples = None
  workdir = os.path.join(FLAGS.workdir, f"memory_{rows}")
  shutil.rmtree(os.path.join(workdir, "attributions"), ignore_errors=True)
  task = jobs.build_task(config, os.path.join(FLAGS.workdir, "memory_model"))
  task = dataclasses.replace(task, source=data.from_npy(*_synthetic_npy(rows), name="synthetic"))
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  fingerprint, metadata = jobs.job_identity(config, task)
  explain_one, specs = jobs.explain_function(config, task, fingerprint)
  store = jobs.open_store(os.path.join(workdir, "attributions"), specs, rows, chunk_size=config.chunk_size,
                          fingerprint=fingerprint, metadata=metadata, overwrite=True)
  done = jobs.explain_store(store, task.source, explain_one, mesh=parallel.make_mesh(), progress=False)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return dict(rows=rows, peak_rss_mib=peak, rss_before_job_mib=before, attributions_per_s=done["attributions_per_s"])


def bench_memory() -> None:
  results = []
  for rows in map(int, FLAGS.rows):
    _synthetic_npy(rows)
    args = [sys.executable, "-m", "tools.bench.attribute", f"--child_rows={rows}", f"--workdir={FLAGS.workdir}",
            f"--memory_method={FLAGS.memory_method}", f"--memory_chunk_size={FLAGS.memory_chunk_size}"]
    result = subprocess.run(args, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    if result.returncode:
      raise RuntimeError(f"the {rows}-row run failed:\n{result.stderr[-3000:]}")
    results.append(json.loads(result.stdout.strip().splitlines()[-1]))
    r = results[-1]
    print(f"memory: {rows} on-disk rows, {FLAGS.memory_method}, chunks of {FLAGS.memory_chunk_size}: peak RSS "
          f"{r['peak_rss_mib']:.0f} MiB ({r['rss_before_job_mib']:.0f} MiB before the job), "
          f"{r['attributions_per_s']:.0f} attributions/s", flush=True)
  first, last = results[0], results[-1]
  print(f"peak_rss_ratio_{last['rows']}_vs_{first['rows']}_rows={last['peak_rss_mib'] / first['peak_rss_mib']:.3f} "
        f"(flat memory: about 1)", flush=True)


def main(argv: list[str]) -> None:
  del argv
  import jax
  if FLAGS.child_rows:
    print(json.dumps(_memory_child(FLAGS.child_rows)))
    return
  if FLAGS.child_devices:
    from xattr import parallel
    assert jax.device_count() == FLAGS.child_devices, jax.devices()
    rates = _rate(_tabular_config(), f"devices_{FLAGS.child_devices}", mesh=parallel.make_mesh())
    print(json.dumps(rates))
    return
  print(f"jax {jax.__version__}, devices {jax.devices()}, {os.cpu_count()} CPU cores", flush=True)
  start = time.perf_counter()
  kernel = bench_kernel_shap() if "kernel_shap" in FLAGS.parts else None
  if "shapley" in FLAGS.parts:
    bench_shapley(kernel)
  if "explainer" in FLAGS.parts:
    bench_explainer(kernel)
  if "devices" in FLAGS.parts:
    bench_devices()
  if "memory" in FLAGS.parts:
    bench_memory()
  print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  app.run(main)
