"""Attribution check: do a shortcut-trained victim's Shapley values concentrate on the shortcut's location?

For a patch-type shortcut (a class-specific location), each modified image is explained with a registered
Shapley estimator (:func:`xattr.methods.attribute`, default ``kernel_shap``) over a grid of square patches
(players), with held-out patches set to zero (:func:`xattr.games.baseline`, grouped by
:func:`xattr.masks.patch_groups`), for the logit of the image's label. The score is the share of the absolute
attribution mass on the players that contain the pixels the shortcut changed; a model that ignores the
shortcut puts about ``players covering it / num_players`` there.

Example:
  >>> import jax, jax.numpy as jnp, numpy as np
  >>> from xattr.shortcuts import attribution
  >>> f = lambda x: jnp.stack([x[:, 0, 0, 0] * 5, -x[:, 0, 0, 0]], -1)   # only the top-left pixel matters
  >>> changed = np.zeros((1, 8, 8), bool); changed[0, 0, 0] = True
  >>> frac = attribution.mass_on_shortcut(f, np.ones((1, 8, 8, 1), np.float32), np.array([0]), changed,
  ...                                     patch_size=4, key=jax.random.key(0), method="exact_shapley")
  >>> round(float(frac[0]), 3)
  1.0
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from xattr import games, masks, methods

__all__ = ["mass_on_shortcut", "changed_pixels"]


def changed_pixels(clean: np.ndarray, modified: np.ndarray) -> np.ndarray:
  """bool ``[N, H, W]``: pixel positions where any channel changed."""
  return np.abs(np.asarray(modified) - np.asarray(clean)).max(-1) > 1e-6


def mass_on_shortcut(logit_fn: Callable[[jax.Array], jax.Array], images: np.ndarray, labels: np.ndarray,
                     changed: np.ndarray, *, patch_size: int, key: jax.Array, method: str = "kernel_shap",
                     budget: int | None = 1024) -> np.ndarray:
  """Per image, the share of absolute Shapley mass on the patches that hold the shortcut.

  Args:
    logit_fn: ``float[b, H, W, C] -> float[b, classes]``.
    images: float ``[N, H, W, C]``, the modified images to explain.
    labels: int ``[N]``: the class whose logit is explained (the shortcut's class).
    changed: bool ``[N, H, W]``: where the shortcut changed each image (:func:`changed_pixels`).
    patch_size: side of the square patches that are the players.
    key: PRNG key (one per image is folded from it).
    method: a registered Shapley method.
    budget: game evaluations per image (ignored by exact methods).

  Returns:
    float ``[N]`` in [0, 1] (NaN where every attribution is 0).
  """
  images = np.asarray(images, np.float32)
  n, h, w, _ = images.shape
  groups = masks.patch_groups((h, w), int(patch_size))
  on_shortcut = (groups.astype(np.float32) @ np.asarray(changed).reshape(n, -1).T.astype(np.float32)).T > 0
  settings = {} if methods.get(method).budget_rule is None else {"budget": budget}
  out = np.zeros(n)
  for i in range(n):
    # Every class's logit at once: the same game structure for every image, so the estimator compiles once.
    game = games.grouped(games.baseline(logit_fn, jnp.asarray(images[i]), jnp.zeros_like(images[i])), groups)
    est = methods.attribute(method, methods.Problem(game=game, num_players=groups.shape[0]),
                            jax.random.fold_in(key, i), **settings)
    mass = np.abs(np.asarray(est.values)[:, int(labels[i])])
    out[i] = mass[on_shortcut[i]].sum() / mass.sum() if mass.sum() > 0 else np.nan
  return out
