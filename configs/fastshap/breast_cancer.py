"""FastSHAP on breast_cancer: an MLP explainer trained with the FastSHAP loss, checked against Shapley ground truth and
per-example KernelSHAP, saved for ``xattr.amortize.load``.

Run (from the repository root, CPU):

  python -m experiments.fastshap --config=configs/fastshap/breast_cancer.py --workdir=runs/fastshap_breast_cancer

Tiny version for tests: ``--config=configs/fastshap/breast_cancer.py:smoke``.
"""

import ml_collections

from configs.fastshap.base import fastshap_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """FastSHAP on breast_cancer; ``arg='smoke'`` shrinks every budget."""
  return fastshap_config("breast_cancer", arg)
