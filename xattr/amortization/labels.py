"""Labels for the amortization study: noisy per-example estimates (cached per method, budget, split and label
epoch) and ground truth on the held-out inputs, every estimator looked up in :mod:`xattr.methods`.

Example:
  >>> from xattr.amortization import labels
  >>> labels.parse_setting("kernel_shap:64:4"), "lime" in labels.study_methods()
  (('kernel_shap', 64, 4), True)
  >>> labels.truth_method("shapley", 13, max_exact_players=16, samples=512, batch_size=4096)
  ('exact_shapley', {'batch_size': 4096}, 'exact enumeration')
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from xattr import methods, noisy_labels, parallel

__all__ = ["TRUTH", "study_methods", "parse_setting", "Labels", "truth_method", "ground_truth"]

# Target -> (exact method or None, large-budget method, its config.truth sample-count field, report label).
TRUTH = {"shapley": ("exact_shapley", "kernel_shap", "kernel_shap_samples", "KernelSHAP"),
         "banzhaf": ("exact_banzhaf", "banzhaf_msr", "msr_samples", "MSR"),
         "lime": (None, "lime", "lime_samples", "LIME")}


def study_methods() -> tuple[str, ...]:
  """Registered methods that can make noisy labels for the study: a budget rule and a target with ground truth."""
  return tuple(m for m in noisy_labels.label_methods() if methods.get(m).target in TRUTH)


def parse_setting(setting: str) -> tuple[str, int, int]:
  """'method:budget[:label_epochs]' -> (method, budget, label_epochs).

  Example:
    >>> parse_setting("lime:32")
    ('lime', 32, 1)
  """
  parts = setting.split(":")
  if len(parts) not in (2, 3) or parts[0] not in study_methods():
    raise ValueError(f"an amortize setting must be 'method:budget[:label_epochs]' with method in "
                     f"{study_methods()}, got {setting!r}.")
  return parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else 1


class Labels:
  """Noisy labels of one (method, budget), cached per split and label epoch; one compiled program for all.

  Args:
    game_of_x: ``x -> game``.
    num_players: d.
    method, budget: the registered method and its game evaluations per label.
    folder: where the label bundles are saved (``<method>_<budget>_<split>_<epoch>.npz``).
    tag: what the labels depend on besides the inputs and key (model, data, seed), for the fingerprint.
    mesh, chunk_size, batch_size, progress: see :func:`xattr.noisy_labels.generate` and ``labeler``.

  Attributes:
    evals: model evaluations one label costs; target: what the labels estimate.
  """

  def __init__(self, game_of_x: Callable, num_players: int, method: str, budget: int, *, folder: str, tag: Any,
               mesh: jax.sharding.Mesh | None, chunk_size: int, batch_size: int, progress: bool):
    self.method, self.budget, self.folder, self.tag = method, budget, folder, tag
    self.mesh, self.chunk, self.progress = mesh, chunk_size, progress
    self.label = noisy_labels.labeler(game_of_x, method, num_players, budget, batch_size=batch_size)
    self.evals = noisy_labels.evaluations_per_label(method, num_players, budget)
    self.target = methods.get(method).target

  def __call__(self, x: np.ndarray, key: jax.Array, split: str, epoch: int = 0) -> np.ndarray:
    """Labels of the rows of ``x`` (float[n, d, k]); ``epoch`` > 0 draws fresh ones (see ``epoch_key``)."""
    path = os.path.join(self.folder, f"{self.method}_{self.budget}_{split}_{epoch}.npz")
    # Rows repeated up to a multiple of the chunk, so every call has the chunk's shape (one compile).
    padded, n = parallel.pad_to_multiple(x, self.chunk)
    out = noisy_labels.generate_cached(path, self.label, padded, noisy_labels.epoch_key(key, epoch),
                                       tag=[self.tag, n], mesh=self.mesh, chunk_size=self.chunk,
                                       progress=self.progress)
    return out["values"][:n]


def truth_method(target: str, num_players: int, *, max_exact_players: int, samples: int,
                 batch_size: int) -> tuple[str, dict[str, Any], str]:
  """The method, settings and description of ``target``'s ground truth: exact enumeration when the target has
  one and d <= ``max_exact_players``, else the large-budget estimator with ``samples`` coalitions."""
  if target not in TRUTH:
    raise ValueError(f"target must be one of {tuple(TRUTH)}, got {target!r}.")
  exact, sampled, _, label = TRUTH[target]
  if exact is not None and num_players <= max_exact_players:
    return exact, dict(batch_size=batch_size), "exact enumeration"
  return sampled, dict(num_samples=int(samples), batch_size=batch_size), f"{label}, {samples} samples"


def ground_truth(config: ml_collections.ConfigDict, game_of_x: Callable, d: int, x: np.ndarray,
                 mesh: jax.sharding.Mesh | None, folder: str, tag: Any) -> dict[str, dict[str, Any]]:
  """Target values on ``x`` for each of ``config.truth.targets`` and how each was obtained (cached in
  ``folder/truth_<target>.npz``); target ``i`` of :data:`TRUTH` uses key ``config.seed + 100 + i``."""
  t = config.truth
  out = {}
  for i, (target, (exact, _, field, _)) in enumerate(TRUTH.items()):
    if target not in t.targets:
      continue
    # Enumeration and the large-budget Shapley/Banzhaf estimators use truth.exact_batch_size, LIME the game's.
    batch = t.exact_batch_size if exact is not None else config.game_batch_size
    name, settings, how = truth_method(target, d, max_exact_players=t.max_exact_players, samples=t[field],
                                       batch_size=batch)

    def fn(xi, key, name=name, settings=settings):
      problem = methods.Problem(game=game_of_x(xi), num_players=d)
      return {"values": methods.attribute(name, problem, key, **settings).values}

    padded, n = parallel.pad_to_multiple(x, t.chunk_size)
    values = noisy_labels.generate_cached(os.path.join(folder, f"truth_{target}.npz"), fn, padded,
                                          jax.random.key(config.seed + 100 + i), tag=[tag, target, t.to_dict(), n],
                                          mesh=mesh, chunk_size=t.chunk_size, progress=config.progress)["values"]
    out[target] = dict(values=values[:n], how=how)
  return out
