"""Data valuation at scale: players are training points.

* :mod:`~xattr.valuation.utility` — U(D) for subsets D of one training pool given as 0/1 weights: logistic
  regression (Newton in ``lax.scan``), a small MLP (Adam in ``lax.scan``), ridge regression; ``vmap`` trains
  many models at once.
* :mod:`~xattr.valuation.samplers` — marginal contributions: distributional (class-balanced subsets of random
  size), TMC permutations (Data Shapley), Data Banzhaf, leave-one-out; sharded over devices.
* :mod:`~xattr.valuation.scaling` — individualized scaling laws c k^-alpha: maximum likelihood, log-log fits.
* :mod:`~xattr.valuation.amortized` — the amortized scaling-law network (Gaussian NLL) and stochastic
  amortization (regression onto noisy labels).
* :mod:`~xattr.valuation.pool` — the pool a job values (embedded, ``.npz``, TFDS or synthetic data from
  :mod:`xattr.data.scaling_pool`; label noise) and its utility from a config; :mod:`~xattr.valuation.blocks` —
  block-wise resumable sampling.
* :mod:`~xattr.valuation.study`, :mod:`~xattr.valuation.addition`, :mod:`~xattr.valuation.recovery`,
  :mod:`~xattr.valuation.report` (with :mod:`~xattr.valuation.law_report`) — the stages of the scaling-law study
  (``experiments/valuation.py``), size-aware selection by point addition, crossing curves and the recovery of
  each point's law, and the outputs (imported on their own: ``from xattr.valuation import study``).

Example:
  >>> import jax, numpy as np
  >>> from xattr import valuation
  >>> rng = np.random.default_rng(0); x = rng.normal(size=(80, 3)).astype(np.float32)
  >>> y = (x[:, 0] + 0.3 * rng.normal(size=80) > 0).astype(np.int32)
  >>> u = valuation.LogisticRegression.create(x[:60], y[:60], x[60:], y[60:], num_classes=2)
  >>> k = valuation.sample_sizes(jax.random.key(1), 40, 10, 40)
  >>> out = valuation.distributional(u, jax.random.key(2), np.repeat(np.arange(4), 10), k, progress=False)
  >>> out["neg_ce"].shape
  (40,)
"""

from xattr.valuation import amortized, blocks, pool, samplers, scaling, utility
from xattr.valuation.amortized import fit_scaling_network, fit_value_network
from xattr.valuation.blocks import even_sizes, sample_in_blocks
from xattr.valuation.pool import Pool, load_pool, make_pool, make_utility
from xattr.valuation.samplers import (class_balanced_subset, data_banzhaf, distributional, evaluate, leave_one_out,
                                      point_means, sample_sizes, tmc, tmc_values)
from xattr.valuation.scaling import ScalingFit, distributional_value, law, loglog_fit, mle_fit
from xattr.valuation.utility import LogisticRegression, MLPClassifier, RidgeRegression, contribution, game, value

__all__ = ["amortized", "blocks", "pool", "samplers", "scaling", "utility", "fit_scaling_network", "fit_value_network",
           "even_sizes", "sample_in_blocks", "Pool", "load_pool", "make_pool", "make_utility",
           "class_balanced_subset", "data_banzhaf", "distributional", "evaluate", "leave_one_out", "point_means",
           "sample_sizes", "tmc", "tmc_values", "ScalingFit", "distributional_value", "law", "loglog_fit", "mle_fit",
           "LogisticRegression", "MLPClassifier", "RidgeRegression", "contribution", "game", "value"]
