"""Amortization at scale: explaining N = 1k, 10k, 100k inputs of a synthetic task with a known generative model.

16 correlated Gaussian features (AR(1), rho = 0.5), a nonlinear Bernoulli label (:mod:`xattr.data.synthetic`),
200k rows generated on the fly (no files); an MLP (64, 64) is the model explained, with baseline removal.
Ground truth: exact Shapley values (2^16 coalitions) of 256 held-out inputs. Per-example KernelSHAP at budgets
32..4096; stochastic amortization (KernelSHAP labels, 32 and 128 coalitions each) and FastSHAP trained on the first
1k / 10k / 100k training inputs, priced by their total compute at each N (:mod:`xattr.amortization.scale`).

Run (from the repository root; offline, CPU):

  python -m experiments.amortize --config=configs/amortize/synthetic.py --workdir=runs/amortize_synthetic

Prints ``amortized_speedup_at_equal_error=<x> at N=<n>`` per N and writes report.md with the table and one
error-vs-total-compute plot per N. Tiny version for tests: ``--config=configs/amortize/synthetic.py:smoke``.
"""

import ml_collections

from configs.amortize.base import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The synthetic at-scale study; ``arg='smoke'`` shrinks every size and budget."""
  config = base_config(("synthetic",), arg)
  config.source = "synthetic"
  config.synthetic = ml_collections.ConfigDict(dict(num_rows=200_000, num_features=16, rho=0.5))
  config.test_fraction = 0.1                 # 180k training rows, 20k held out (num_test of them evaluated)
  config.num_test = 256
  config.chunk_size = 256                    # inputs per labelling call: many inputs, small model
  config.model.hidden_sizes = (64, 64)
  config.model.num_steps = 3000
  config.model.batch_size = 256
  config.truth.targets = ("shapley",)
  config.per_example = ml_collections.ConfigDict(dict(kernel_shap=(32, 64, 128, 256, 512, 1024, 2048, 4096)))
  config.amortize = ()                       # the amortized explainers are trained per training-set size below
  config.exact_floor = False
  config.fastshap.num_steps = 0
  config.explainer.num_steps = 4000
  config.explainer.batch_size = 256

  config.scale = ml_collections.ConfigDict()
  config.scale.explain_sizes = (1000, 10_000, 100_000)     # N: inputs to explain
  config.scale.train_sizes = (1000, 10_000, 100_000)       # n_train: the first n training inputs
  config.scale.amortize = ("kernel_shap:32", "kernel_shap:128")
  config.scale.fastshap_steps = 4000

  if arg == "smoke":
    config.synthetic.num_rows = 1500
    config.num_test = 16
    config.chunk_size = 16
    config.truth.chunk_size = 8
    config.per_example.kernel_shap = (32, 128)
    config.synthetic.num_features = 6
    config.explainer.num_steps = 30
    config.explainer.batch_size = 32
    config.scale.explain_sizes = (100, 1000)
    config.scale.train_sizes = (100, 400)
    config.scale.amortize = ("kernel_shap:32",)
    config.scale.fastshap_steps = 20
  return config
