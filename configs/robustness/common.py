"""Settings shared by the configs/robustness/*.py configs (each starts from :func:`base` and adjusts it)."""

import ml_collections


def base() -> ml_collections.ConfigDict:
  """Defaults for a tabular problem of <= 10 players on CPU (exact enumeration of every coalition)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = "gaussian"            # "gaussian" (exact conditionals) | embedded name
  config.players = "features"            # "features" | "split:<k>" | "breast_cancer" | "blocks:<r>,<c>"
  config.gaussian = ml_collections.ConfigDict(dict(num_features=6, rho=0.3, pair_rho=0.95, num_train=2000,
                                                   num_test=200))
  config.kinds = ("plain", "weight_decay", "spectral")
  config.techniques = ("shapley", "banzhaf", "leave_one_out", "mean_when_included")
  config.output = "probability"          # the explained scalar: class probability or "logit"
  config.explain_class = 1
  config.model = ml_collections.ConfigDict(dict(
      hidden_sizes=(64, 64), activation="relu", spectral_cap=1.0, num_steps=1500, batch_size=128,
      learning_rate=3e-3, weight_decay=3.0, surrogate_steps=1500))
  config.retrain_fraction = 0.8          # the retrained model: seed + 1 on this share of the training rows
  config.background_size = 32            # marginal removal
  config.conditional_samples = 64        # Monte Carlo draws of the exact Gaussian conditionals
  config.num_inputs = 16                 # explained test inputs
  config.eps = (0.03, 0.1, 0.3, 1.0)     # input perturbation radii (2-norm, standardized features)
  config.pgd_steps = 10
  config.chunk_size = 8                  # inputs per explain_batch step (a multiple of the device count)
  config.noise_scales = (0.01, 0.03, 0.1, 0.3)
  config.noise_draws = 2
  config.pair_amplitude = 1.0
  config.lipschitz_points = 64
  config.lipschitz_steps = 10
  config.progress = False
  config.report = ml_collections.ConfigDict()
  return config


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks everything so a run takes seconds (the tests' variant): two model kinds (plain, spectral)."""
  config.kinds = ("plain", "spectral")
  config.gaussian.num_train = 256
  config.gaussian.num_test = 32
  config.model.hidden_sizes = (16,)
  config.model.num_steps = 60
  config.model.surrogate_steps = 60
  config.model.batch_size = 64
  config.background_size = 8
  config.conditional_samples = 8
  config.num_inputs = 4
  config.eps = (0.1, 0.5)
  config.pgd_steps = 3
  config.chunk_size = 4
  config.noise_scales = (0.05, 0.2)
  config.noise_draws = 1
  config.lipschitz_points = 8
  config.lipschitz_steps = 2
  return config


def check_arg(arg: str | None) -> None:
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'smoke'.")
