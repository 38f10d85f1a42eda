"""The headline study: error vs model evaluations on wine, diabetes (regression) and breast cancer, for per-example
KernelSHAP / permutation / MSR / LIME, FastSHAP and stochastic amortization with every noisy label type.

Run (from the repository root; offline, CPU, a few minutes on 2 cores):

  python -m experiments.amortize --config=configs/amortize/headline.py --workdir=runs/amortize

Writes runs/amortize/report.md (headline table: does amortization reach KernelSHAP's error with >= 10x fewer
evaluations?), results.json and per-dataset plots runs/amortize/<dataset>/error_vs_evaluations.png. Ground truth:
exact enumeration for wine (13 features) and diabetes (10); KernelSHAP with 2^15 coalitions for breast cancer (30).
Tiny version for tests: ``--config=configs/amortize/headline.py:smoke``.
"""

import ml_collections

from configs.amortize.base import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """All three embedded datasets; ``arg='smoke'`` shrinks every budget."""
  return base_config(("wine", "diabetes", "breast_cancer"), arg)
