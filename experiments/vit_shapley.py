"""ViT Shapley end to end: classifier -> surrogate -> explainer -> evaluation, each stage resumable.

  python -m experiments.vit_shapley --config=configs/vit_shapley/digits.py --workdir=runs/vit_shapley

Stages (``workdir/<stage>/`` holds each one's Orbax checkpoints; a finished stage is restored, not retrained):
  1. ``classifier``: a masked ViT trained with cross-entropy (AdamW, warmup + cosine, gradient clipping).
  2. ``surrogate``: a copy of the classifier fine-tuned to match the classifier's class probabilities when
     patches are held out (uniform-cardinality masks, ``num_masks`` per image, KL to the classifier on the full
     image). Held-out patches are removed by attention masking, so the surrogate defines the game
     v_x(z) = p_surrogate(y | x_z) that every method below explains.
  3. ``explainer``: :class:`xattr.models.heads.ViTExplainer` (backbone initialised from the surrogate, one extra
     block, per-patch MLP head, tanh) trained with the FastSHAP loss on ``num_samples`` paired Shapley-kernel
     masks per image, the surrogate frozen inside the same model (``training.train(trainable=...)``).
  4. ``evaluate``: on test images, the explainer's values for the classifier's predicted class vs exact Shapley
     values of the surrogate game (enumeration when the patch count allows, else converged KernelSHAP), and
     insertion/deletion AUC and sensitivity-n of the explainer vs the baselines. Writes ``report.md``,
     ``metrics.json``, ``values.npz``, ``curves.png``, ``budget.png`` and ``heatmaps.png``.

The method lives in :mod:`xattr.vit_shapley` (:func:`xattr.vit_shapley.run_pipeline` runs all of the above).
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from experiments import cli
from xattr import vit_shapley


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every stage (finished ones are restored from ``workdir``) and returns the evaluation metrics."""
  metrics = vit_shapley.run_pipeline(config, workdir)
  print(f"report: {os.path.join(workdir, 'report.md')}")
  return metrics


if __name__ == "__main__":
  cli.main(run, config_example="configs/vit_shapley/digits.py",
           workdir_help="Directory for checkpoints, results, plots and the report.")
