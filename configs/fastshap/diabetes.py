"""FastSHAP on diabetes: an MLP explainer trained with the FastSHAP loss, checked against Shapley ground truth and
per-example KernelSHAP, saved for ``xattr.amortize.load``.

Run (from the repository root, CPU):

  python -m experiments.fastshap --config=configs/fastshap/diabetes.py --workdir=runs/fastshap_diabetes

Tiny version for tests: ``--config=configs/fastshap/diabetes.py:smoke``.
"""

import ml_collections

from configs.fastshap.base import fastshap_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """FastSHAP on diabetes; ``arg='smoke'`` shrinks every budget."""
  return fastshap_config("diabetes", arg)
