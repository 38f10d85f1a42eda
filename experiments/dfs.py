"""Dynamic feature selection: GDFS and DIME against random, static-ranking and CAE-style baselines.

  python -m experiments.dfs --config=configs/dfs/digits.py --workdir=runs/dfs_digits

For every seed (each its own train/validation/test split and initialization), resumable from ``workdir``
(:mod:`xattr.selection.study`): pretrain a masked predictor, train ``gdfs``, ``dime``, ``random``, ``static`` and
``cae``, select features for the test set with the jit-compiled greedy rollout, and score accuracy (AUROC for
binary labels) after 0..K selections and the (average cost, metric) points of the per-sample stopping rules.
Results go to ``workdir/seed_<s>/results.npz`` (reused while the config, data and library code are unchanged).
Then the seeds are summarized (:mod:`xattr.selection.report`: mean and standard deviation) into
``metric_vs_features.png``, ``metric_vs_cost.png``, ``selection_order.png``, ``report.md`` and ``summary.json``.

Data (:mod:`xattr.selection.problem`): ``config.dataset`` names an embedded scikit-learn dataset ('digits',
'breast_cancer', ...), 'oracle' (the synthetic problem with a closed-form greedy order; the report then also gives
how often each method's first selections match it), or 'tfds:<name>' for an image dataset read from
``config.data_dir`` (nothing is downloaded; pixels become features).
"""

from __future__ import annotations

import os
import time
from typing import Any

import ml_collections
import numpy as np

from experiments import cli
from xattr import artifacts
from xattr.selection import problem, report, study


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every seed (resumably) and writes the summary; returns ``{"paths": ..., "summary": ...}``."""
  os.makedirs(workdir, exist_ok=True)
  if config.compilation_cache:
    artifacts.use_compilation_cache(workdir)
  per_seed = study.run_seeds(config, workdir)
  return report.write(config, per_seed, workdir, problem.load(config, int(config.seeds[0])))


def _run_and_report(config: ml_collections.ConfigDict, workdir: str) -> None:
  t0 = time.perf_counter()
  out = run(config, workdir)
  print(f"done in {time.perf_counter() - t0:.0f} s; report: {out['paths']['report.md']}")
  for m, v in out["summary"].get("small_budget_check", {}).items():
    print(f"{m}: beats baselines at budgets {v['budgets']}: {v['beats_baselines']} "
          f"(margins {np.round(v['margin_over_best_baseline'], 3).tolist()})")


if __name__ == "__main__":
  cli.main(_run_and_report, config_example="configs/dfs/digits.py",
           workdir_help="Directory for checkpoints, per-seed results, plots and report.")
