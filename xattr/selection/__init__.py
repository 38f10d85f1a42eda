"""Dynamic feature selection: masked predictors, GDFS and DIME CMI estimators, and a jit-compiled greedy rollout.

Modules:
  * :mod:`~xattr.selection.predictor` – masked MLP f(x_S) on ``[x * m, m]`` with feature groups, pretraining on
    uniform-cardinality masks;
  * :mod:`~xattr.selection.gdfs` – policy network trained through a Concrete relaxation (GDFS);
  * :mod:`~xattr.selection.dime` – value network regressing CMI onto loss drops (DIME);
  * :mod:`~xattr.selection.rollout` – the greedy selection kernel (one ``lax.scan``) with stopping rules;
  * :mod:`~xattr.selection.baselines` – random order, static greedy ranking, CAE-style static selection;
  * :mod:`~xattr.selection.oracle` – a synthetic problem with a closed-form greedy CMI order;
  * :mod:`~xattr.selection.evaluation` – accuracy/AUROC against the number of features and the cost spent.

A whole study (import these explicitly; they pull in data loading and plotting):
  * :mod:`~xattr.selection.problem` – a seed's splits, groups and costs from a config;
  * :mod:`~xattr.selection.study` – per seed: pretrain, run every method, score, cache the results;
  * :mod:`~xattr.selection.report` – aggregation over seeds, figures, ``report.md`` and ``summary.json``.

Example:
  >>> import jax.numpy as jnp
  >>> from xattr import selection
  >>> predict = lambda p, x, m: (x * m) @ jnp.ones((3, 2))
  >>> score = lambda p, x, m, logits: x
  >>> selection.greedy(predict, score, None, jnp.array([[0.1, 0.7, 0.3]]), num_players=3, num_steps=2).order.tolist()
  [[1, 2]]
"""

from xattr.selection import baselines, dime, gdfs, oracle, predictor, rollout
from xattr.selection.predictor import MaskedFn, MaskedMLP, masked_fn
from xattr.selection.rollout import Rollout, greedy, greedy_sharded

__all__ = ["MaskedFn", "MaskedMLP", "Rollout", "baselines", "dime", "gdfs", "greedy", "greedy_sharded",
           "masked_fn", "oracle", "predictor", "rollout"]
