"""Settings shared by the configs/dfs/*.py configs (each config file starts from :func:`base` and adjusts it)."""

import ml_collections
from ml_collections.config_dict import placeholder


def base() -> ml_collections.ConfigDict:
  """Defaults for a tabular problem of a few dozen features on CPU."""
  config = ml_collections.ConfigDict()
  config.dataset = "digits"              # embedded name | "oracle" | "tfds:<name>" (reads config.data_dir)
  config.data_dir = placeholder(str)     # TFDS data directory (never downloaded)
  config.tfds_limit = placeholder(int)   # read only the first rows of each TFDS split
  config.patch_size = 0                  # > 0: players are patch_size x patch_size pixel groups (images only)
  config.seeds = (0, 1, 2, 3, 4)         # each: its own split, initialization and training randomness
  config.test_fraction = 0.2
  config.val_fraction = 0.15             # of the training split, for model selection
  config.num_test = placeholder(int)     # evaluate on the first rows of the test split only
  config.max_features = 20               # K: selections per rollout (and per GDFS/DIME training sample)
  config.methods = ("gdfs", "dime", "random", "static", "cae")
  config.metric = ""                     # "" = AUROC for binary labels, accuracy otherwise
  config.costs = "uniform"               # or "random": fixed per-feature costs in [0.5, 2]
  config.progress = True
  config.compilation_cache = True        # persistent XLA cache in workdir/jax_cache (stages share programs)

  config.model = ml_collections.ConfigDict()
  config.model.kind = "mlp"               # "mlp" (on [x * m, m]) or "vit" (masked ViT on images, patches = players)
  config.model.vit = "mu/2"               # ViT size/patch for kind="vit" (patch = config.patch_size)
  config.model.hidden_sizes = (128, 128)  # MLP predictor, policy and value networks alike
  config.model.activation = "relu"

  config.pretrain = ml_collections.ConfigDict()
  config.pretrain.num_steps = 2000
  config.pretrain.batch_size = 128
  config.pretrain.learning_rate = 1e-3
  config.pretrain.weight_decay = 1e-4

  config.gdfs = ml_collections.ConfigDict()
  config.gdfs.temperatures = (1.0, 0.5623, 0.3162, 0.1778, 0.1)   # geomspace(1.0, 0.1, 5)
  config.gdfs.steps_per_stage = 400
  config.gdfs.batch_size = 128
  config.gdfs.learning_rate = 1e-3

  config.dime = ml_collections.ConfigDict()
  config.dime.steps_per_block = 300
  config.dime.batch_size = 128
  config.dime.epsilon = 0.2
  config.dime.decay = 0.2
  config.dime.min_epsilon = 0.01
  config.dime.patience = 1
  config.dime.max_blocks = 8
  config.dime.scaling = "bounded"
  config.dime.learning_rate = 1e-3

  config.cae = ml_collections.ConfigDict()
  config.cae.budgets = (1, 2, 3, 5, 10, 15, 20)
  config.cae.num_steps = 600
  config.cae.batch_size = 128
  config.cae.learning_rate = 1e-3
  config.cae.start_temperature = 10.0
  config.cae.end_temperature = 0.01

  config.sweeps = ml_collections.ConfigDict()
  config.sweeps.penalties = (0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005)  # DIME lambda (nats per unit cost)
  config.sweeps.confidences = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)

  config.report_budgets = (1, 2, 3, 4, 5, 7, 10, 15, 20)
  config.small_budgets = (1, 2, 3, 4, 5)  # where GDFS/DIME must beat the baselines

  config.plots = ml_collections.ConfigDict()
  config.plots.num_images = 6
  config.plots.order_steps = 10

  config.oracle = ml_collections.ConfigDict()
  config.oracle.flips_a = (0.05, 0.15, 0.25, 0.35)
  config.oracle.flips_b = (0.25, 0.05, 0.35, 0.15)
  config.oracle.num_distractors = 3
  config.oracle.num_train = 4096
  config.oracle.num_test = 1000
  return config


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks every budget so a run takes seconds (the tests' variant): 2 seeds, one temperature stage, one
  exploration block, one CAE budget. With the persistent compilation cache the second seed reuses the first
  seed's programs."""
  config.seeds = (0, 1)
  config.num_test = 64
  config.progress = False
  config.model.hidden_sizes = (32,)
  config.pretrain.num_steps = 60
  config.pretrain.batch_size = 64
  config.gdfs.temperatures = (0.5,)
  config.gdfs.steps_per_stage = 30
  config.gdfs.batch_size = 64
  config.dime.steps_per_block = 30
  config.dime.batch_size = 64
  config.dime.max_blocks = 1
  config.cae.budgets = (2,)
  config.cae.num_steps = 30
  config.cae.batch_size = 64
  config.sweeps.penalties = (0.1, 0.01)
  config.sweeps.confidences = (0.6, 0.9)
  config.plots.num_images = 3
  config.plots.order_steps = 3
  return config
