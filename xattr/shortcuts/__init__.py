"""Adversarial shortcuts: modify a released image dataset so that models trained on it fail on clean data.

Library (pure, jittable cores): budgets and :func:`apply` (:mod:`~xattr.shortcuts.budget`), generators
(:mod:`~xattr.shortcuts.generators`, :mod:`~xattr.shortcuts.minmin`), defences (:mod:`~xattr.shortcuts.defences`),
victims trained with the shared loop (:mod:`~xattr.shortcuts.victims`), and the experiment
(:mod:`~xattr.shortcuts.study`, :mod:`~xattr.shortcuts.report`) that ``experiments/shortcuts.py`` runs.

Example:
  >>> import jax, numpy as np
  >>> from xattr import shortcuts
  >>> x, y = np.full((4, 8, 8, 1), 0.5, np.float32), np.array([0, 1, 2, 0])
  >>> sc = shortcuts.fixed_patterns(jax.random.key(0), 3, (8, 8, 1), linf=8 / 255, block=2)
  >>> out = shortcuts.apply(x, y, sc)
  >>> round(float(abs(out - x).max()) * 255, 3), bool((out[0] == out[3]).all())
  (8.0, True)
"""

from xattr.shortcuts.budget import TOLERANCE, Budget, Shortcut, apply, check_budget, measure, modify
from xattr.shortcuts.defences import Defence, augment, pgd
from xattr.shortcuts.generators import fixed_patterns, patches, project
from xattr.shortcuts.minmin import error_minimizing
from xattr.shortcuts.victims import CNN, MLPNet, Victim

__all__ = ["TOLERANCE", "Budget", "Shortcut", "apply", "check_budget", "measure", "modify", "Defence", "augment",
           "pgd", "fixed_patterns", "patches", "project", "error_minimizing", "CNN", "MLPNet", "Victim"]
