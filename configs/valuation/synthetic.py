"""Individualized scaling laws on a synthetic pool where they are known to differ (xattr.data.scaling_pool).

Run (from the repository root; a few minutes on 2 CPU cores):

  python -m experiments.valuation --config=configs/valuation/synthetic.py --workdir=runs/valuation_synthetic

Seconds-long version (tests): ``--config=configs/valuation/synthetic.py:smoke``.

400 training points, no flipped labels: prototypes near the two class centres of a 4-feature main mode (large
value at small k, fast decay), other main-mode points, and a rare subgroup (15%) in 4 other, small-scale features
with its own label direction (small value at small k, slow decay under the L2 penalty). U = validation neg.
cross-entropy of logistic regression (L2 = 3) on 2000 validation rows from the same mixture. Sizes span 10x,
k in [20, 200), log-uniform (32 samples per point); the ground truth samples every point 192 times at sizes
spread evenly in log k; size-aware selection adds 10 points at k* = 20, 60 and 200.
"""

import ml_collections

from configs.valuation import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Default config; ``arg='smoke'`` shrinks every budget."""
  base.check_arg(arg)
  config = base.base_config("synthetic")
  config.source = "synthetic"
  config.label_noise = 0.0
  config.model.l2 = 3.0
  config.sampling.k_min = 20
  config.sampling.k_max = 200
  config.sampling.samples_per_point = 32
  # Over a 10x range k ~ U[20, 200) leaves 6% of the samples below k = 30, where the small-size ranking is made;
  # log-uniform sizes put as many samples in each octave (k ~ U[20, 200) gave a weaker k = 20 ranking).
  config.sampling.size_distribution = "log-uniform"
  config.sampling.budgets = (4, 8, 16, 32)
  config.sampling.chunk_size = 2048
  config.truth.num_points = config.synthetic.num_train      # every point
  config.truth.samples_per_point = 192
  config.truth.spacing = "geometric"
  config.addition.sizes = (20, 60, 200)
  config.addition.num_added = 10
  if arg == "smoke":
    config = base.smoke(config)
    config.max_pool = None                                  # the synthetic pool is drawn to size
    config.synthetic.num_train = 120
    config.synthetic.num_val = 400
    config.truth.num_points = 24
    config.addition.sizes = (20, 40, 59)
  return config
