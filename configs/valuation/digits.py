"""Data valuation on digits (10 classes, multinomial logistic regression on 16 principal components).

Run (from the repository root; about 8 minutes on 2 CPU cores — the multinomial Hessian is 170 x 170):

  python -m experiments.valuation --config=configs/valuation/digits.py --workdir=runs/valuation_digits

Seconds-long version: ``--config=configs/valuation/digits.py:smoke``.

A stratified pool of 600 of the 1437 training images (15% of labels flipped), pixels projected to 16 principal
components (fitted on the pool); 360 validation images; sizes k ~ U[100, 500).
"""

import ml_collections

from configs.valuation import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Default config; ``arg='smoke'`` shrinks every budget."""
  base.check_arg(arg)
  config = base.base_config("digits")
  config.pca_dims = 16
  config.max_pool = 600
  # Ten classes and flipped labels start some subsets far from the full-pool warm start: 10 + 6 Newton steps
  # alone left errors of 4e-3 in Delta (std 5e-3) on 5 of 512 samples, 18 + 10 reach float32 round-off (against
  # 80). With 10 more Newton steps for the slowest 1/16 of each batch, 10 + 4 agree with 18 + 10 to 2e-7 on 256
  # samples at 2.1x the speed (100 vs 48 contributions/s on the 2-core CPU). Starting each fit on the size path
  # with 8 steps of its Hessian, 4 + 1 Newton steps agree with 40 + 40 as well (2.9e-7 on 512 samples) at 1.6-1.9x
  # the speed again (156 vs 82-100 contributions/s).
  config.model.path_steps = 8
  config.model.newton_steps = 4
  config.model.chord_steps = 1
  config.model.add_newton_steps = 4
  config.model.add_chord_steps = 1
  config.model.refine_steps = 10
  config.tmc.newton_steps = 22
  config.sampling.k_min = 100
  config.sampling.k_max = 500
  config.sampling.samples_per_point = 16
  config.sampling.budgets = (4, 8, 16)
  config.sampling.chunk_size = 256
  config.truth.num_points = 16
  config.truth.samples_per_point = 300
  config.tmc.num_permutations = 2
  config.solver_check = 512
  config.banzhaf_samples = 1024
  config.addition.large = 400
  config.addition.repeats = 32
  if arg == "smoke":
    config = base.smoke(config)
    config.max_pool = 120
  return config
