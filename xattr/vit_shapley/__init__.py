"""ViT Shapley (Covert et al., 2023): a masked-ViT surrogate and a FastSHAP-trained ViT explainer in patch space.

Modules: :mod:`~xattr.vit_shapley.method` (losses, explainer construction, trainable filters, the three training
stages), :mod:`~xattr.vit_shapley.evaluate` (ground truth, baselines through :mod:`xattr.methods`, metrics),
:mod:`~xattr.vit_shapley.report` (``report.md`` and figures), :mod:`~xattr.vit_shapley.cost` (when amortization
pays off against KernelSHAP) and :mod:`~xattr.vit_shapley.pipeline`
(:func:`run_pipeline`, what ``python -m experiments.vit_shapley`` runs).

Example:
  >>> from xattr import vit_shapley
  >>> vit_shapley.STAGES
  ('classifier', 'surrogate', 'explainer', 'evaluate')
"""

from xattr.vit_shapley import cost, evaluate, method, pipeline, report
from xattr.vit_shapley.evaluate import BASELINES, ground_truth_method
from xattr.vit_shapley.method import (EXPLAINER_TRAINABLE, STAGES, ExplainerTraining, WithMaskRngs, build_explainer,
                                      explainer_loss, load_data, model_config, surrogate_loss, train_classifier,
                                      train_explainer, train_surrogate)
from xattr.vit_shapley.pipeline import run_pipeline

__all__ = ["BASELINES", "EXPLAINER_TRAINABLE", "STAGES", "ExplainerTraining", "WithMaskRngs", "build_explainer", "cost",
           "evaluate", "explainer_loss", "ground_truth_method", "load_data", "method", "model_config", "pipeline",
           "report", "run_pipeline", "surrogate_loss", "train_classifier", "train_explainer", "train_surrogate"]
