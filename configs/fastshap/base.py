"""FastSHAP configs: the amortization study's settings restricted to FastSHAP and a per-example KernelSHAP
comparison (configs/fastshap/<dataset>.py build on :func:`fastshap_config`)."""

from __future__ import annotations

import ml_collections

from configs.amortize.base import base_config


def fastshap_config(dataset: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """Tabular FastSHAP on one bundled dataset; ``arg='smoke'`` shrinks everything."""
  config = base_config((dataset,), arg)
  config.modality = "tabular"               # 'tabular' | 'images' (runs xattr.vit_shapley.run_pipeline)
  config.vit = ml_collections.ConfigDict()  # images only: a configs/vit_shapley config
  config.truth.targets = ("shapley",)
  budgets = config.per_example.kernel_shap
  config.per_example = ml_collections.ConfigDict()
  config.per_example.kernel_shap = budgets  # per-example KernelSHAP, the comparison
  config.amortize = ()                      # no noisy-label explainers here (see configs/amortize)
  config.exact_floor = False
  if arg != "smoke":
    config.fastshap.num_steps = 3000
    config.fastshap.eval_every = 300
  return config
