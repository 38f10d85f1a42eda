"""Settings shared by the configs/cfs/*.py configs (each config file starts from :func:`base` and adjusts it).

Defaults are the paper's public code's: hidden layers 512x512, background code k' = 20, Adam lr 1e-3, batch 128,
stochastic gates with sigma = 0.5.
"""

import ml_collections


def base() -> ml_collections.ConfigDict:
  """Defaults of a CFS benchmark (every method, five seeds)."""
  config = ml_collections.ConfigDict()
  config.dataset = "linear"              # "linear" | "grassy_digits" | "files"
  config.data = ml_collections.ConfigDict()   # arguments of the dataset's generator / loader
  config.seeds = (0, 1, 2, 3, 4)
  config.budgets = (5, 10, 20, 40)       # k: features selected
  config.methods = ("cfs", "cfs_concrete", "cfs_joint", "no_background", "stg", "cae", "laplacian", "variance",
                    "pca")
  config.progress = True
  config.compilation_cache = True        # persistent XLA cache in workdir/jax_cache (seeds share programs)

  config.model = ml_collections.ConfigDict()
  config.model.hidden_sizes = (512, 512)  # encoder, decoder, reconstruction network, STG classifier
  config.model.code_size = 20             # k': background representation

  config.train = ml_collections.ConfigDict()
  config.train.learning_rate = 1e-3
  config.train.batch_size = 128
  config.train.background_steps = 1500    # background autoencoder
  config.train.selector_steps = 1500      # gates + reconstruction network (joint variant: everything)

  config.gates = ml_collections.ConfigDict()
  config.gates.sigma = 0.5
  config.gates.penalty = 0.1              # lambda of CFS's gates (top-k by mu afterwards)
  config.gates.stg_penalty = 0.1          # lambda of the supervised STG baseline

  config.concrete = ml_collections.ConfigDict()
  config.concrete.num_steps = 1000        # per budget (cfs_concrete and cae train one model per k)
  config.concrete.start_temperature = 10.0
  config.concrete.end_temperature = 0.01

  config.classifier = ml_collections.ConfigDict()   # downstream accuracy from the selected features
  config.classifier.hidden_sizes = (128,)
  config.classifier.num_steps = 500
  config.classifier.batch_size = 128
  config.classifier.learning_rate = 1e-3

  config.plots = ml_collections.ConfigDict()
  config.plots.map_budgets = (10, 20)     # budgets drawn in the selected-pixel maps (image data)
  return config


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks every budget so a run takes seconds (the tests' variant): one seed, small networks, few steps."""
  config.seeds = (0,)
  config.progress = False
  config.model.hidden_sizes = (128, 128)
  config.train.learning_rate = 2e-3
  config.train.background_steps = 400
  config.train.selector_steps = 500
  config.concrete.num_steps = 500
  config.classifier.hidden_sizes = (32,)
  config.classifier.num_steps = 200
  config.classifier.learning_rate = 1e-2
  return config
