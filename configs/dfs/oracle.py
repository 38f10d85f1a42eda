"""Dynamic feature selection on the synthetic oracle problem, whose greedy CMI order is known in closed form.

The report gives, for each method, the fraction of test samples whose first selections equal the closed-form
order (x_0, then the relevant block by increasing noise; see xattr/selection/oracle.py).

Run (from the repository root; CPU, about 1.5 minutes on 2 cores):

  python -m experiments.dfs --config=configs/dfs/oracle.py --workdir=runs/dfs_oracle

Tiny version: ``--config=configs/dfs/oracle.py:smoke``.
"""

import ml_collections

from configs.dfs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Oracle problem (12 binary features, 4 classes), K = 5; ``arg='smoke'`` shrinks everything."""
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'smoke'.")
  config = common.base()
  config.dataset = "oracle"
  config.max_features = 5
  config.model.hidden_sizes = (64, 64)
  config.cae.budgets = (1, 2, 3, 5)
  config.report_budgets = (1, 2, 3, 4, 5)
  config.small_budgets = (2,)                 # after x_0, the best feature of the relevant block
  config.sweeps.penalties = (0.3, 0.1, 0.05, 0.02, 0.01)
  if arg == "smoke":
    # Small, but trained enough to recover the oracle's first selections (the tests assert it).
    config = common.smoke(config)
    config.seeds = (0,)
    config.methods = ("gdfs", "dime", "random", "static")
    config.max_features = 3
    config.num_test = None
    config.model.hidden_sizes = (32, 32)
    config.oracle.num_train = 2048
    config.oracle.num_test = 500
    config.pretrain.num_steps = 300
    config.pretrain.batch_size = 128
    config.pretrain.learning_rate = 3e-3
    config.gdfs.temperatures = (1.0, 0.2)
    config.gdfs.steps_per_stage = 150
    config.gdfs.batch_size = 128
    config.gdfs.learning_rate = 3e-3
    config.dime.steps_per_block = 150
    config.dime.batch_size = 128
    config.dime.epsilon = 0.5
    config.dime.max_blocks = 2
    config.dime.learning_rate = 3e-3
    config.report_budgets = (1, 2, 3)
  return config
