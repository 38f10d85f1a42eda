"""Explain an MLP classifier of breast-cancer diagnoses with KernelSHAP, and check it against exact values.

Run (from the repository root; CPU is enough, a few minutes on 2 cores):

  python -m experiments.explain_tabular --config=configs/explain_tabular/breast_cancer.py \
      --workdir=runs/explain_tabular

Tiny version for tests / a laptop (under a minute):

  python -m experiments.explain_tabular --config=configs/explain_tabular/breast_cancer.py:smoke \
      --workdir=/tmp/explain_smoke

Override any field, e.g. ``--config.explain.num_samples=4096`` (a misspelled field fails: the config is locked).
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Default config; ``arg='smoke'`` shrinks every budget."""
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'smoke'.")
  config = ml_collections.ConfigDict()
  config.dataset = "breast_cancer"          # any name in xattr.data.EMBEDDED_DATASETS with task 'classification'
  config.seed = 0                           # split, init, data order, background sample and sampling keys
  config.test_fraction = 0.2

  config.model = ml_collections.ConfigDict()
  config.model.hidden_sizes = (64, 64)
  config.model.activation = "relu"

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 1500
  config.train.batch_size = 64
  config.train.learning_rate = 1e-3
  config.train.weight_decay = 1e-4
  config.train.eval_every = 500
  config.train.log_every = 100
  config.train.checkpoint_every = 500
  config.train.keep_checkpoints = 2

  # Main explanation: KernelSHAP on the marginal (interventional) game of the class probabilities.
  config.explain = ml_collections.ConfigDict()
  config.explain.background_size = 64       # training rows sampled (seeded) to integrate out removed features
  config.explain.num_inputs = placeholder(int)  # test inputs to explain; None = the whole test split
  config.explain.chunk_size = 16            # inputs per jitted call; each finished chunk is saved
  config.explain.vmap_size = 2              # inputs vmapped together inside a chunk (= chunk_size on a GPU)
  config.explain.num_samples = placeholder(int)  # coalitions per input; None = sample until converged
  config.explain.threshold = 0.01           # convergence: max std / range of values < threshold
  config.explain.max_samples = 2 ** 15      # cap when sampling until converged
  config.explain.batch_size = 512           # coalitions per game call
  config.explain.paired = True
  config.explain.exact_a = False
  config.explain.enumerate_sizes = placeholder(int)  # None: chosen by KernelSHAP (sizes 1 and 29 here)
  config.explain.plot_class = 1             # which class the plots show (1 = 'benign' for breast_cancer)

  # Error vs exact Shapley values on a subset problem small enough to enumerate.
  config.exact = ml_collections.ConfigDict()
  config.exact.num_inputs = 16              # the first test inputs
  config.exact.players = tuple(range(12))   # features that become players; the others are always kept
  config.exact.chunk_size = 8
  config.exact.batch_size = 512             # coalitions per game call in the enumeration
  config.exact.enumerate_sizes = 1          # KernelSHAP on the subset samples all but sizes 1 and d-1

  if arg == "smoke":
    config.train.num_steps = 60
    config.train.eval_every = 30
    config.train.log_every = 20
    config.train.checkpoint_every = 30
    config.model.hidden_sizes = (16,)
    config.explain.background_size = 16
    config.explain.num_inputs = 6
    config.explain.chunk_size = 4
    config.explain.vmap_size = 4
    config.explain.num_samples = 256
    config.explain.batch_size = 128
    config.exact.num_inputs = 4
    config.exact.players = tuple(range(10))
    config.exact.chunk_size = 4
  return config
