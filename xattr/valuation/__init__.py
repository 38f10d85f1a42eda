"""Data valuation at scale: players are training points.

* :mod:`~xattr.valuation.utility` — U(D) for subsets D of one training pool given as 0/1 weights: logistic
  regression (Newton in ``lax.scan``), a small MLP (Adam in ``lax.scan``), ridge regression; ``vmap`` trains
  many models at once.
* :mod:`~xattr.valuation.samplers` — marginal contributions: distributional (class-balanced subsets of random
  size), TMC permutations (Data Shapley), Data Banzhaf, leave-one-out; sharded over devices.
* :mod:`~xattr.valuation.scaling` — individualized scaling laws c k^-alpha: maximum likelihood, log-log fits.
* :mod:`~xattr.valuation.amortized` — the amortized scaling-law network (Gaussian NLL) and stochastic
  amortization (regression onto noisy labels).

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

from xattr.valuation import amortized, samplers, scaling, utility
from xattr.valuation.amortized import fit_scaling_network, fit_value_network
from xattr.valuation.samplers import (class_balanced_subset, data_banzhaf, distributional, evaluate, leave_one_out,
                                      point_means, sample_sizes, tmc, tmc_values)
from xattr.valuation.scaling import ScalingFit, distributional_value, law, loglog_fit, mle_fit
from xattr.valuation.utility import LogisticRegression, MLPClassifier, RidgeRegression, contribution, game, value

__all__ = ["amortized", "samplers", "scaling", "utility", "fit_scaling_network", "fit_value_network",
           "class_balanced_subset", "data_banzhaf", "distributional", "evaluate", "leave_one_out", "point_means",
           "sample_sizes", "tmc", "tmc_values", "ScalingFit", "distributional_value", "law", "loglog_fit", "mle_fit",
           "LogisticRegression", "MLPClassifier", "RidgeRegression", "contribution", "game", "value"]
