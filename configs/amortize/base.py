"""Settings shared by the amortization configs (configs/amortize/<name>.py build on :func:`base_config`).

Every field is documented where it is set; the dataset configs choose the datasets and may shrink budgets.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder


def base_config(datasets: tuple[str, ...], arg: str | None = None) -> ml_collections.ConfigDict:
  """Defaults for the error-vs-evaluations study on bundled tabular datasets; ``arg='smoke'`` shrinks everything."""
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'smoke'.")
  config = ml_collections.ConfigDict()
  config.datasets = tuple(datasets)         # xattr.data.EMBEDDED_DATASETS names (source='embedded')
  config.source = "embedded"                # 'embedded' | 'tfds' (config.tfds; then datasets is ignored but one run)
  config.tfds = ml_collections.ConfigDict()  # a TFDS dataset with a vector feature and a class label, no download
  config.tfds.name = placeholder(str)       # e.g. 'penguins/processed'
  config.tfds.data_dir = placeholder(str)
  config.tfds.split = "train"               # split into train/test here with test_fraction
  config.tfds.feature_key = "features"
  config.tfds.label_key = "species"
  config.tfds.max_examples = 5000
  config.seed = 0                           # split, initializations, data order and every sampling key
  config.test_fraction = 0.2
  config.num_test = placeholder(int)        # held-out inputs evaluated (None: the whole test split)
  config.progress = True                    # tqdm bars
  config.chunk_size = 64                    # inputs per sharded labeling call (train and test share the program)
  config.game_batch_size = 512              # coalitions per game call inside an estimator

  config.model = ml_collections.ConfigDict()  # the MLP being explained
  config.model.hidden_sizes = (32,)        # small and regularized: the 64x64 default overfits diabetes (R^2 0.09)
  config.model.activation = "relu"
  config.model.num_steps = 300
  config.model.batch_size = 64
  config.model.learning_rate = 1e-3
  config.model.weight_decay = 1e-2

  config.removal = "baseline"               # 'baseline' (held out = training mean) | 'surrogate' (masked MLP)
  config.surrogate = ml_collections.ConfigDict()   # removal='surrogate': masked MLP on [x * m, m], KL to the model
  config.surrogate.hidden_sizes = (128, 128)
  config.surrogate.num_masks = 8            # uniform-cardinality masks per input and step
  config.surrogate.num_steps = 2000
  config.surrogate.batch_size = 64
  config.surrogate.learning_rate = 1e-3

  config.truth = ml_collections.ConfigDict()  # ground truth on the held-out inputs
  config.truth.targets = ("shapley", "banzhaf", "lime")   # which ground truths to compute
  config.truth.max_exact_players = 16       # enumerate 2^d coalitions up to this d; above: large-budget estimators
  config.truth.kernel_shap_samples = 2 ** 15
  config.truth.msr_samples = 2 ** 15
  config.truth.lime_samples = 2 ** 14
  config.truth.exact_batch_size = 4096
  config.truth.chunk_size = 16

  # Per-example estimators on the held-out inputs: method -> budgets (model evaluations per explanation).
  config.per_example = ml_collections.ConfigDict()
  # Every (method, budget) is one compiled program shared by the held-out and the training inputs: the
  # amortization settings below reuse these budgets, so they cost no extra compilation.
  config.per_example.kernel_shap = (32, 64, 128, 512, 2048)
  config.per_example.permutation = (64, 512, 2048)
  config.per_example.banzhaf_msr = (32, 128, 512)
  config.per_example.lime = (32, 128, 512)

  # Stochastic amortization: 'method:budget[:label_epochs]' (label_epochs > 1: fresh labels per stage).
  config.amortize = ("kernel_shap:32", "kernel_shap:128", "permutation:64", "kernel_shap:32:4", "banzhaf_msr:32",
                     "banzhaf_msr:128", "lime:32", "lime:128")

  config.exact_floor = True                 # also regress onto exact labels of the training inputs (d <= 16)
  config.explainer = ml_collections.ConfigDict()   # MLP explainer x -> [d, outputs] (FastSHAP's tabular default)
  config.explainer.hidden_sizes = (128, 128)
  config.explainer.activation = "relu"
  config.explainer.num_steps = 1500
  config.explainer.batch_size = 32
  config.explainer.learning_rate = 1e-3
  config.explainer.weight_decay = 1e-2

  config.fastshap = ml_collections.ConfigDict()
  config.fastshap.num_samples = 32          # paired Shapley-kernel masks per input and step
  config.fastshap.num_steps = 1500          # 0 skips FastSHAP
  config.fastshap.batch_size = 32
  config.fastshap.eval_every = 300          # one point of the error-vs-evaluations curve per evaluation
  config.fastshap.learning_rate = 1e-3
  config.fastshap.weight_decay = 1e-4

  if arg == "smoke":
    config.progress = False
    config.num_test = 8
    config.chunk_size = 8
    config.model.hidden_sizes = (16,)
    config.model.num_steps = 50
    config.surrogate.hidden_sizes = (16,)
    config.surrogate.num_steps = 20
    config.truth.kernel_shap_samples = 512
    config.truth.msr_samples = 512
    config.truth.lime_samples = 256
    config.truth.chunk_size = 8
    # One compiled labeling program per (method, budget): the amortization settings reuse these budgets.
    config.per_example.kernel_shap = (32, 128)
    config.per_example.permutation = (64,)
    config.per_example.banzhaf_msr = (32,)
    config.per_example.lime = (32,)
    config.amortize = ("kernel_shap:32", "permutation:64:2", "banzhaf_msr:32", "lime:32")
    config.explainer.hidden_sizes = (32,)
    config.explainer.num_steps = 40
    config.fastshap.num_samples = 8
    config.fastshap.num_steps = 40
    config.fastshap.eval_every = 20
  return config
