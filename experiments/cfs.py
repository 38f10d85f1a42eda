"""Contrastive feature selection (CFS): the features that carry the variation enriched in a target dataset.

  python -m experiments.cfs --config=configs/cfs/grassy_digits.py --workdir=runs/cfs_grassy
  python -m experiments.cfs --config=configs/cfs/linear.py --workdir=runs/cfs_linear

For every seed (resumable from ``workdir``; :mod:`xattr.cfs.benchmark`): build the data (linear-Gaussian, grassy
digits, or the user's target/background files, ``configs/cfs/files.py``), run CFS (background autoencoder +
stochastic gates; the Concrete top-k and joint variants) and the baselines (supervised STG, concrete
autoencoder, Laplacian score, variance and PCA-loading rankings, CFS without the background) for every budget
k, and score the selections: classifier accuracy on the selected features, overlap with the digit-ink region,
recovery of the known salient features. Results go to ``workdir/seed_<s>/results.npz`` (reused while the
config, data and library code are unchanged; training checkpoints beside them). Then the seeds are summarized
(:mod:`xattr.cfs.report`) into ``report.md`` (tables and verdicts), ``summary.json``, ``accuracy_vs_k.png`` or
``recovery_vs_k.png`` and, for images, ``selected_pixels.png``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import ml_collections

from experiments import cli
from xattr import artifacts
from xattr.cfs import benchmark, report


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every seed (resumably) and writes the report; returns ``{"paths": ..., "summary": ...}``."""
  os.makedirs(workdir, exist_ok=True)
  if config.compilation_cache:
    artifacts.use_compilation_cache(workdir)
  per_seed = benchmark.run_seeds(config, workdir)
  return report.write(config, per_seed, workdir, benchmark.load_data(config, int(config.seeds[0])))


def _run_and_report(config: ml_collections.ConfigDict, workdir: str) -> None:
  t0 = time.perf_counter()
  out = run(config, workdir)
  print(f"done in {time.perf_counter() - t0:.0f} s; report: {out['paths']['report.md']}")
  for variant, check in out["summary"].get("verdicts", {}).items():
    print(f"{variant}: beats the unsupervised baselines and the ablation at every k: {check['beats']} "
          f"(margins {[round(m, 3) for m in check['margins']]})")


if __name__ == "__main__":
  cli.main(_run_and_report, config_example="configs/cfs/grassy_digits.py",
           workdir_help="Directory for checkpoints, per-seed results, plots and report.")
