"""Contrastive feature selection (CFS): select the features that carry the variation enriched in a target
dataset relative to a background dataset (nuisance variation only).

Modules:
  * :mod:`~xattr.cfs.model` - background autoencoder, stochastic gates, Concrete top-k layer, objectives;
  * :mod:`~xattr.cfs.core` - :func:`select` (the API for users' own code) and the two training phases;
  * :mod:`~xattr.cfs.baselines` - supervised STG, concrete autoencoder (CAE), Laplacian score, variance and
    PCA-loading rankings, and the no-background ablation;
  * :mod:`~xattr.cfs.benchmark` - one seed of a benchmark from a config (linear-Gaussian, grassy digits, files);
  * :mod:`~xattr.cfs.report` - aggregation over seeds, figures, ``report.md`` and ``summary.json``.

Data: :mod:`xattr.data.contrastive`.

Example:
  >>> from xattr import cfs
  >>> cfs.top_k([0.2, 0.9, 0.1], 1).tolist()
  [1]
"""

from xattr.cfs import baselines, model
from xattr.cfs.core import SELECTORS, Selection, select, top_k

__all__ = ["SELECTORS", "Selection", "baselines", "model", "select", "top_k"]
