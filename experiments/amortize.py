"""Amortized feature attribution on tabular data: error vs model evaluations for per-example estimators, FastSHAP
and stochastic amortization (regression onto cheap noisy labels).

  python -m experiments.amortize --config=configs/amortize/headline.py --workdir=runs/amortize

For every dataset of the config (embedded scikit-learn data, or a TFDS dataset read with ``xattr.data.from_tfds``),
in ``workdir/<dataset>/`` (every stage resumable: checkpoints and saved arrays are reused while their fingerprints
match), :func:`xattr.amortization.run` runs:
  1. ``model``: an MLP classifier (regressor for diabetes) trained with :func:`xattr.training.train`;
  2. the game v_x(z): the model's class probabilities (regression output) with held-out features at the training
     mean (``removal='baseline'``), or a masked-MLP surrogate on [x * m, m] trained with KL (MSE) to the model
     under uniform-cardinality masks (``removal='surrogate'``);
  3. ground truth on the held-out inputs, for each target: Shapley values (exact enumeration when d <= 16, else
     KernelSHAP with a large budget), Banzhaf values (exact, else MSR with a large budget), the LIME solution
     (LIME with a large budget), every estimator from :mod:`xattr.methods`;
  4. per-example estimators on the held-out inputs at several budgets (KernelSHAP, permutation sampling, MSR
     Banzhaf, LIME) with :mod:`xattr.noisy_labels` (jit(vmap), sharded);
  5. stochastic amortization: noisy labels of the TRAINING inputs (each label type, several budgets; saved once and
     reused, or regenerated per label epoch), regression of an MLP explainer onto them, error on held-out inputs;
  6. FastSHAP: an MLP explainer trained with the FastSHAP loss (paired Shapley-kernel masks), evaluated along
     training;
  7. ``report.md``, ``results.json``, ``error_vs_evaluations.png`` (Shapley targets) and ``other_targets.png``.

Cost accounting (x axis, "model evaluations per explained input"): a per-example estimator pays its budget for
every input; an amortized explainer pays its training evaluations divided by the number of training inputs (the
inputs it explains at that price; new inputs then cost one evaluation, the grand value for the efficient
normalization). The speedup of an amortized explainer is the KernelSHAP (resp. MSR, LIME) cost that reaches the
same held-out error, interpolated on the per-example curve, divided by the explainer's cost
(:mod:`xattr.amortization.costs`).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from experiments import cli
from xattr import amortization


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every dataset of ``config.datasets``; writes report.md and results.json; returns the summaries."""
  return amortization.run(config, workdir)


def _run_and_report(config: ml_collections.ConfigDict, workdir: str) -> None:
  out = run(config, workdir)
  for name, s in out["summaries"].items():
    if s["best_sa"] is not None:
      print(amortization.headline_line(name, s["best_sa"]))
    for n, best in (s.get("scale") or {}).get("best", {}).items():
      print(f"{name}: {amortization.report.scale_line(n, best)}")
  print(f"runtime {out['runtime_s']:.0f} s; report: {out['paths']['report']}")


if __name__ == "__main__":
  cli.main(_run_and_report, config_example="configs/amortize/headline.py",
           workdir_help="Directory for models, labels, explainers, plots and the report.")
