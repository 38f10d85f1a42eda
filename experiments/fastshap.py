"""FastSHAP: train an amortized Shapley-value explainer, check it against ground truth and save it for
``xattr.amortize.load``.

  python -m experiments.fastshap --config=configs/fastshap/breast_cancer.py --workdir=runs/fastshap
  python -m experiments.fastshap --config=configs/fastshap/digits.py --workdir=runs/fastshap_digits     # images

Tabular data (``config.modality='tabular'``) runs the amortization study (:func:`xattr.amortization.run`)
restricted to FastSHAP: the MLP to explain (and optionally a masked-MLP surrogate), Shapley ground truth on held-out
inputs (exact enumeration when d <= 16, else KernelSHAP with a large budget), per-example KernelSHAP at several
budgets for comparison, then an MLP explainer trained with the FastSHAP loss (paired Shapley-kernel masks, additive
efficient normalization, every class at once), evaluated along training. The trained explainer is saved in
``workdir/<dataset>/explainers/fastshap`` (Orbax + ``architecture.json``): ``xattr.amortize.load(path)(x)``
explains new inputs in one forward pass.

Images (``config.modality='images'``) run the masked-ViT FastSHAP pipeline :func:`xattr.vit_shapley.run_pipeline`
(classifier -> surrogate -> ViT explainer -> evaluation; digits by default, TFDS as an option) with ``config.vit``
as its config.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from experiments import cli
from xattr import amortization


def explainer_path(workdir: str, dataset: str) -> str:
  """Where the tabular driver saves the trained FastSHAP explainer."""
  return os.path.join(workdir, dataset, "explainers", "fastshap")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Tabular: FastSHAP on every dataset of the config (returns the summaries and explainer paths); images: the
  ViT Shapley pipeline's metrics."""
  if config.modality == "images":
    from xattr import vit_shapley       # heavy (ViT) imports only on this path
    return vit_shapley.run_pipeline(config.vit, workdir)
  if config.modality != "tabular":
    raise ValueError(f"config.modality must be 'tabular' or 'images', got {config.modality!r}.")
  if not config.fastshap.num_steps:
    raise ValueError(f"config.fastshap.num_steps must be > 0 for the FastSHAP driver, got {config.fastshap.num_steps}.")
  out = amortization.run(config, workdir)
  out["explainers"] = {name: explainer_path(workdir, name) for name in out["summaries"]}
  return out


def _run_and_report(config: ml_collections.ConfigDict, workdir: str) -> None:
  out = run(config, workdir)
  if config.modality == "images":
    print(f"report: {os.path.join(workdir, 'report.md')}")
    return
  for name, s in out["summaries"].items():
    fs = [r for r in s["rows"] if r["kind"] == "FastSHAP"][-1]
    print(f"{name}: FastSHAP mae={fs['mae']:.4g} at {fs['evals']:.0f} evals/input, "
          f"speedup_vs_kernel_shap={amortization.bound_text(fs['bound'])}{fs['speedup']:.2f}x; explainer: "
          f"{out['explainers'][name]}")
  print(f"report: {out['paths']['report']}")


if __name__ == "__main__":
  cli.main(_run_and_report, config_example="configs/fastshap/breast_cancer.py",
           workdir_help="Directory for the model, ground truth, the saved explainer, plots and the report.")
