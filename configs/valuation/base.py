"""Settings shared by the data-valuation configs (configs/valuation/<dataset>.py build on :func:`base_config`).

Every field is documented where it is set; dataset configs override sizes and budgets.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder


def base_config(dataset: str) -> ml_collections.ConfigDict:
  """Defaults for a bundled classification dataset: logistic-regression utility, budgets for a 2-core CPU."""
  config = ml_collections.ConfigDict()
  config.dataset = dataset                  # xattr.data.EMBEDDED_DATASETS name (source='embedded')
  config.source = "embedded"                # 'embedded' | 'npz' (precomputed embeddings) | 'tfds' | 'synthetic'
  config.npz_path = placeholder(str)        # source='npz': file with x_train, y_train, x_val, y_val
  config.tfds = ml_collections.ConfigDict()  # source='tfds': xattr.data.from_tfds (prepared data_dir, no TF)
  config.tfds.name = placeholder(str)
  config.tfds.data_dir = placeholder(str)   # the folder holding the prepared dataset (never downloaded)
  config.tfds.train_split = "train"
  config.tfds.val_split = "test"
  config.tfds.feature_key = "image"         # flattened to a vector (use embeddings for real images)
  config.tfds.label_key = "label"
  config.tfds.max_train = 1000
  config.tfds.max_val = 500
  # source='synthetic': xattr.data.scaling_pool.make's arguments (points whose scaling laws differ by design).
  config.synthetic = ml_collections.ConfigDict()
  config.synthetic.num_train = 400
  config.synthetic.num_val = 2000
  config.synthetic.subgroup_fraction = 0.15
  config.synthetic.main_dims = 4
  config.synthetic.subgroup_dims = 4
  config.synthetic.separation = 1.2
  config.synthetic.subgroup_separation = 2.5
  config.synthetic.subgroup_scale = 0.2
  config.seed = 0                           # split, label noise, point choices, sampling keys, networks
  config.test_fraction = 0.2                # embedded: the held-out split is the utility's validation set
  config.pca_dims = placeholder(int)        # project features to this many principal components (train fit)
  config.max_pool = placeholder(int)        # use at most this many training points (stratified)
  config.label_noise = 0.15                 # fraction of pool labels flipped to another class (0 = clean)

  config.model = ml_collections.ConfigDict()
  config.model.kind = "logistic"            # 'logistic' (Newton, sklearn's objective) | 'mlp' (Adam in lax.scan)
  config.model.l2 = 1.0                     # = 1 / sklearn's C; the intercept is unpenalised
  config.model.path_steps = 5               # logistic: damped steps with the size path's Hessian (no factorisation)
  config.model.newton_steps = 2             # logistic: then damped Newton steps per fit
  config.model.chord_steps = 1              # logistic: extra steps reusing the last Hessian factor
  config.model.add_newton_steps = 1         # logistic: steps from the fit of D to the fit of D u {z}
  config.model.add_chord_steps = 1
  config.model.refine_steps = 4             # logistic: more Newton steps for the slowest solves (see utility.py)
  config.model.hidden_sizes = (16,)         # mlp
  config.model.learning_rate = 0.05         # mlp
  config.model.num_steps = 100              # mlp: full-batch Adam steps
  config.solver_check = 1024                # logistic: re-solve this many samples with 40 Newton steps (0: skip)
  config.metric = "neg_ce"                  # utility: validation neg. cross-entropy ('accuracy' also recorded)

  # Distributional samples: for every pool point, samples_per_point subsets D (k ~ U[k_min, k_max), stratified
  # by class, without the point) and Delta = U(D u {z}) - U(D). Budget b uses each point's first b samples.
  config.sampling = ml_collections.ConfigDict()
  config.sampling.k_min = 100
  config.sampling.k_max = 400
  config.sampling.balance = "proportional"  # 'proportional' | 'equal'
  config.sampling.size_distribution = "uniform"   # k ~ U[k_min, k_max) | 'log-uniform' (wide size ranges)
  config.sampling.samples_per_point = 64
  config.sampling.budgets = (4, 8, 16, 32, 64)
  config.sampling.chunk_size = 1024         # samples per jitted, sharded call
  config.sampling.block_size = 8192         # samples per saved block (resume granularity)

  # Ground truth: many samples (sizes spread evenly over [k_min, k_max)) for a random subset of points.
  config.truth = ml_collections.ConfigDict()
  config.truth.num_points = 64
  config.truth.samples_per_point = 600
  config.truth.spacing = "linear"           # sizes spread evenly in k ('linear') or in log k ('geometric')

  # TMC Data Shapley (no truncation): orderings of the whole pool, every prefix trained (0 disables).
  config.tmc = ml_collections.ConfigDict()
  config.tmc.num_permutations = 16
  config.tmc.newton_steps = 16              # small prefixes start far from the warm start

  config.banzhaf_samples = 2048             # Data Banzhaf (MSR): Bernoulli(1/2) subsets, one fit each (0 disables)

  config.mle = ml_collections.ConfigDict()
  config.mle.alpha_range = (0.0, 3.0)
  config.mle.beta_range = (0.0, 6.0)
  config.mle.grid = (61, 61)
  config.mle.levels = 2

  # Amortized models (xattr.training.train, resumable): the scaling-law network (Gaussian NLL) and the
  # stochastic-amortization value network (MSE onto single samples). Inputs: features + one-hot (noisy) label.
  config.amortized = ml_collections.ConfigDict()
  config.amortized.hidden_sizes = (64, 64)
  config.amortized.num_steps = 1500
  config.amortized.batch_size = 256
  config.amortized.learning_rate = 2e-3
  config.amortized.weight_decay = 1e-4
  config.amortized.variance_weighting = 0.5   # beta-NLL power for the scaling network (0 = plain NLL)
  config.amortized.holdout_fraction = 0.1     # samples held out for early stopping
  config.amortized.eval_every = 50

  # Point addition (size-aware selection): add the top num_added points ranked by the fitted law at a target
  # size k* to random base datasets of size k*, compared with the ranking made at the other end of the sizes, the
  # distributional value, TMC Data Shapley, Data Banzhaf and a random choice.
  config.addition = ml_collections.ConfigDict()
  config.addition.small = 100
  config.addition.large = 300             # base size + every rule's added points must fit in the pool
  config.addition.sizes = ()                # target sizes k* (ascending); () = (small, large)
  config.addition.num_added = 20
  config.addition.repeats = 64
  config.addition.law = "mle"               # whose (c, alpha) rank the points: 'mle' or 'amortized'

  config.num_example_points = 6             # scaling curves drawn for this many ground-truth points
  return config


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks every budget so that the whole pipeline runs in seconds (tests)."""
  config.max_pool = 80
  config.sampling.k_min = 20
  config.sampling.k_max = 60
  config.sampling.samples_per_point = 8
  config.sampling.budgets = (8,)            # one budget: every estimator runs once
  config.sampling.chunk_size = 128          # every call then has 128 rows: one compilation per function
  config.sampling.block_size = 384
  config.truth.num_points = 8
  config.truth.samples_per_point = 64
  config.tmc.num_permutations = 2
  config.tmc.newton_steps = config.model.newton_steps
  config.banzhaf_samples = 0
  config.solver_check = 0
  config.mle.grid = (21, 21)
  config.mle.levels = 1
  config.amortized.hidden_sizes = (16,)
  config.amortized.num_steps = 30
  config.amortized.batch_size = 64
  config.amortized.eval_every = 10
  config.addition.small = 20
  config.addition.large = 59
  config.addition.num_added = 4
  config.addition.repeats = 32
  config.num_example_points = 2
  return config


def check_arg(arg: str | None) -> None:
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'smoke'.")
