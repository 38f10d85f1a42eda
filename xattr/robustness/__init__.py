"""Robustness of removal-based feature attributions: the bounds as code, and the experiments that test them.

* :mod:`~xattr.robustness.operators`: summary techniques (Shapley, Banzhaf, leave-one-out, mean when included) as
  linear maps from the 2^d game values to attributions; their (inf -> 2) operator norms, exact and bounded.
* :mod:`~xattr.robustness.bounds`: game tables, and the game-perturbation bounds of each removal (baseline,
  marginal, exact Gaussian conditional, surrogate) under input and model perturbations.
* :mod:`~xattr.robustness.lipschitz`: exact (linear, logistic), upper (spectral product) and lower (gradient norm)
  Lipschitz constants.
* :mod:`~xattr.robustness.models`: plain / weight-decay / spectrally normalised MLPs and masked surrogates.
* :mod:`~xattr.robustness.perturb`: measured changes under Gaussian and PGD input perturbations.
* :mod:`~xattr.robustness.problem`, :mod:`~xattr.robustness.study`, :mod:`~xattr.robustness.pipeline`,
  :mod:`~xattr.robustness.report`: the study behind ``experiments/robustness.py``.

Example:
  >>> from xattr import robustness
  >>> robustness.operators.constant("banzhaf", 6).value
  2.0
"""

from xattr.robustness import bounds, lipschitz, operators, perturb

__all__ = ["bounds", "lipschitz", "operators", "perturb"]
