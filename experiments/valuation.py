"""Data valuation with individualized scaling laws: samples, estimators, ground truth and three applications.

  python -m experiments.valuation --config=configs/valuation/breast_cancer.py --workdir=runs/valuation

Steps (each saves its output in ``workdir`` and is skipped when that output exists with the same settings and
library code, so a killed run resumes; networks resume from Orbax checkpoints). The stages are
``xattr.valuation.study``'s; point addition is ``xattr.valuation.addition``, the outputs ``xattr.valuation.report``:
  1. data: a pool of training points (embedded scikit-learn data, precomputed embeddings from an .npz, or a
     TFDS dataset), a fraction of their labels flipped, and a validation set; U(D) = validation neg.
     cross-entropy of a model trained on D (logistic regression by Newton steps, or a small MLP);
  2. distributional samples: for every pool point, ``samples_per_point`` marginal contributions
     Delta = U(D u {z}) - U(D) with |D| = k ~ U[k_min, k_max) and D stratified by class (vmapped training,
     sharded over devices, saved in blocks);
  3. ground truth: many samples with sizes spread evenly over [k_min, k_max) for a random subset of points;
     their mean is the distributional value psi(z) = E_k E_D Delta;
  4. estimators at each budget b (each point's first b samples): per-point Monte Carlo mean, maximum likelihood
     scaling law (psi from c k^-alpha averaged over k), the amortized scaling-law network (Gaussian NLL) and the
     stochastic-amortization value network (MSE onto single samples);
  5. baselines on the whole pool: TMC Data Shapley (no truncation) with its stochastic-amortization network,
     Data Banzhaf (MSR) and leave-one-out;
  6. applications: valuation accuracy vs ground truth per budget; mislabeled-point detection AUROC; size-aware
     selection (top points by the fitted law at each target size k*, against the other end's ranking, the
     distributional value, Data Shapley, Data Banzhaf and random); crossing curves and the recovery of each
     point's (c, alpha) by MLE, log-log regression and the amortized network;
  7. outputs: points.csv (per-point c, alpha, sigma, beta and values), accuracy.png, mislabeled.png,
     addition.png, selection.png, crossings.png, scaling_curves.png, params.png, metrics.json and report.md.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
from absl import logging

from experiments import cli
from xattr import artifacts
from xattr.valuation import addition, recovery, report, study as study_lib


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the whole job; returns output paths, metrics, estimates, the ground truth and timings."""
  os.makedirs(workdir, exist_ok=True)
  clock = study_lib.Timings()
  study = study_lib.Study.create(config, workdir)
  pool = study.pool
  logging.info("pool: %d points (%d flipped), %d features, %d classes; validation: %d rows", len(pool.y),
               pool.flipped.sum(), pool.x.shape[1], pool.num_classes, len(pool.y_val))
  samples = clock.time("samples", study_lib.main_samples, study)
  solver_check = study_lib.solver_check(study, samples)
  truth = clock.time("ground_truth", study_lib.ground_truth, study)
  estimates = clock.time("estimators", study_lib.fit_estimators, study, samples)
  pool_values = clock.time("baselines", study_lib.pool_baselines, study)
  baselines = study_lib.baseline_aurocs(pool_values, pool.flipped, config)
  scores, added, laws = clock.time("applications", _applications, study, estimates, truth, pool_values)
  paths = clock.time("outputs", report.write_outputs, study, truth, estimates, pool_values, scores, baselines,
                     added, laws)
  timings = clock.total()
  summary = report.summarize(study, samples, truth, solver_check, scores, baselines, added, timings, laws)
  artifacts.save_json(paths["metrics.json"], summary)
  report.write_report(paths["report.md"], config, pool, summary, scores, baselines, added,
                      list(config.sampling.budgets), len(truth.points))
  logging.info("wrote %s", ", ".join(paths.values()))
  return dict(paths=paths, metrics=summary, estimates=estimates, truth_points=truth.points, psi_true=truth.values,
              pool=pool, timings=timings)


def _applications(study: study_lib.Study, estimates: dict, truth: study_lib.Samples, pool_values: dict
                  ) -> tuple[study_lib.Scores, addition.Addition, recovery.Laws]:
  scores = study_lib.score(estimates, truth, study.pool.flipped)
  best = estimates[list(estimates)[-1]]
  added = addition.point_addition(study, best, truth, pool_values)
  return scores, added, recovery.analyse(study.config, study.pool, truth, estimates, added.chosen)


def _run_and_report(config: ml_collections.ConfigDict, workdir: str) -> None:
  out = run(config, workdir)
  m = out["metrics"]
  b = str(max(config.sampling.budgets))
  print(f"AUROC (amortized, b={b}) {m['auroc']['amortized'][b]:.3f}; report: {out['paths']['report.md']}")


if __name__ == "__main__":
  cli.main(_run_and_report, config_example="configs/valuation/breast_cancer.py",
           workdir_help="Directory for samples, checkpoints, plots and the report.")
