"""Cheap noisy attribution labels for stochastic amortization, generated once over a dataset and reused.

Stochastic amortization (Covert et al., 2024) trains an explainer by plain regression onto *noisy* per-example
estimates: KernelSHAP with a few coalitions, permutation sampling with a few orderings, MSR Banzhaf, LIME. If a
label is an unbiased estimate of its target (permutation sampling and MSR are; the original KernelSHAP estimator
is only nearly so), the regression optimum is the target itself and label noise only slows SGD down, so a
handful of model evaluations per training input is enough: the explainer averages the noise across inputs.

Each generator explains ONE input with a fixed budget of game evaluations; :func:`generate` runs it over a
dataset with :func:`xattr.parallel.explain_batch` (jitted, vmapped, sharded over the mesh, per-example keys
``fold_in(key, i)``, so the labels do not depend on the device count or chunking). :func:`generate_cached`
saves them to an ``.npz`` once and reloads them on later calls (and resumed runs); :func:`epoch_key` gives fresh,
reproducible labels per epoch for on-the-fly regeneration.

``budget`` is the number of model evaluations per label, and every method's exact count is reported by
:func:`evaluations_per_label`:

  * ``kernel_shap``: ``budget - 2`` coalitions (+ grand and null), paired; the original estimator (A estimated
    from the samples) from 4d coalitions on, the unbiased one (closed-form A) below. Target: Shapley values.
  * ``permutation``: ``(budget - 2) // (d - 1)`` orderings (at least one antithetic pair). Target: Shapley values.
  * ``banzhaf_msr``: ``budget`` Bernoulli(1/2) coalitions, maximum sample reuse. Target: Banzhaf values.
  * ``lime``: ``max(budget, d + 1)`` coalitions, weighted least squares. Target: the LIME regression solution.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from xattr import games, noisy_labels
  >>> f = lambda b: b @ jnp.array([[1.0], [2.0], [3.0]])         # additive model, one output
  >>> label = noisy_labels.labeler(lambda x: games.baseline(f, x, jnp.zeros(3)), "kernel_shap", 3, 8)
  >>> out = noisy_labels.generate(label, jnp.ones((2, 3)), jax.random.key(0), progress=False)
  >>> out["values"].shape, out["values"][0, :, 0].round(4).tolist(), out["num_evals"].tolist()
  ((2, 3, 1), [1.0, 2.0, 3.0], [8, 8])
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from xattr import _checks, banzhaf, lime, parallel, shapley
from xattr.estimate import Estimate

__all__ = ["METHODS", "TARGETS", "estimator_kwargs", "evaluations_per_label", "labeler", "generate",
           "generate_cached", "epoch_key"]

Game = Callable[[jax.Array], jax.Array]
Labeler = Callable[[jax.Array, jax.Array], dict[str, jax.Array]]

METHODS = ("kernel_shap", "permutation", "banzhaf_msr", "lime")
TARGETS = {"kernel_shap": "shapley", "permutation": "shapley", "banzhaf_msr": "banzhaf", "lime": "lime"}


def _check_method(method: str) -> str:
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
  return method


def estimator_kwargs(method: str, num_players: int, budget: int) -> dict[str, Any]:
  """The estimator's sampling arguments that spend (at most) ``budget`` model evaluations per label.

  Example:
    >>> estimator_kwargs("permutation", 5, 34)
    {'num_permutations': 8}
  """
  _check_method(method)
  d = _checks.positive_int("num_players", num_players, minimum=2)
  budget = _checks.positive_int("budget", budget)
  if method == "kernel_shap":
    num_samples = (budget - 2) - (budget - 2) % 2
    if num_samples < 2:
      raise ValueError(f"budget must be >= 4 for kernel_shap (grand, null and one pair), got {budget}.")
    # The original estimator's sampled system is (nearly) singular below a few samples per player (errors of
    # 10^3 and more at 2d-3d samples, d = 13): there the unbiased estimator (closed-form A) is far better.
    return dict(num_samples=num_samples, exact_a=num_samples < 4 * d)
  if method == "permutation":
    orderings = max(2, (budget - 2) // (d - 1))
    return dict(num_permutations=orderings - orderings % 2)
  if method == "banzhaf_msr":
    return dict(num_samples=budget)
  return dict(num_samples=max(budget, d + 1))


def evaluations_per_label(method: str, num_players: int, budget: int) -> int:
  """Model evaluations one label actually costs (grand and null included where the estimator uses them).

  Example:
    >>> evaluations_per_label("permutation", 5, 34), evaluations_per_label("lime", 10, 4)
    (34, 11)
    >>> evaluations_per_label("kernel_shap", 4, 100)      # every one of the 2^4 coalitions, exact
    16
  """
  kw = estimator_kwargs(method, num_players, budget)
  if method == "kernel_shap":
    # A budget that covers every coalition is spent on enumerating them (exact values), no more.
    return min(kw["num_samples"], 2 ** num_players - 2) + 2
  if method == "permutation":
    return kw["num_permutations"] * (num_players - 1) + 2
  return kw["num_samples"]


def _estimate(method: str, game: Game, d: int, key: jax.Array, kw: dict[str, Any], batch_size: int) -> Estimate:
  if method == "kernel_shap":
    return shapley.kernel_shap(game, d, key, batch_size=batch_size, **kw)
  if method == "permutation":
    return shapley.permutation(game, d, key, batch_size=batch_size, **kw)
  if method == "banzhaf_msr":
    return banzhaf.msr(game, d, key, batch_size=batch_size, **kw)
  return lime.lime(game, d, key, batch_size=batch_size, **kw)


def labeler(game_of_x: Callable[[jax.Array], Game], method: str, num_players: int, budget: int, *,
            batch_size: int = 512) -> Labeler:
  """``(x, key) -> {"values": float[d, k], "num_evals": int32}``: one noisy label for ONE input.

  Build it once and pass the same object to :func:`generate` for every epoch: the compiled, sharded program is
  cached per labeler.

  Args:
    game_of_x: ``x -> game`` (e.g. ``lambda x: games.baseline(model_fn, x, reference)``).
    method: one of :data:`METHODS`.
    num_players: d.
    budget: model evaluations per label (see :func:`estimator_kwargs`).
    batch_size: coalitions per game call.
  """
  _check_method(method)
  d = _checks.positive_int("num_players", num_players, minimum=2)
  kw = estimator_kwargs(method, d, budget)
  batch_size = _checks.positive_int("batch_size", batch_size)

  def label(x: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    est = _estimate(method, game_of_x(x), d, key, kw, batch_size)
    values = est.values if est.values.ndim == 2 else est.values[:, None]    # always [d, k]
    return {"values": values, "num_evals": est.num_evals}

  return label


def generate(label: Labeler, inputs: Any, key: jax.Array, *, mesh: Mesh | None = None,
             chunk_size: int | None = None, progress: bool = True) -> dict[str, np.ndarray]:
  """Noisy labels for every input, vmapped and sharded over ``mesh`` (input ``i`` uses ``fold_in(key, i)``).

  Args:
    label: from :func:`labeler`.
    inputs: float[n, d] (or any pytree the labeler's ``game_of_x`` accepts row by row).
    key: one PRNG key.
    mesh: device mesh; None: all devices.
    chunk_size: inputs per step (a multiple of the mesh size); None: all at once.
    progress: progress bar over chunks.

  Returns:
    ``{"values": float32[n, d, k], "num_evals": int32[n]}`` as numpy arrays.
  """
  out = parallel.explain_batch(label, inputs, key, mesh=mesh, chunk_size=chunk_size, progress=progress)
  return {k: np.asarray(v) for k, v in out.items()}


def _tag(parts: Any) -> str:
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def generate_cached(path: str | os.PathLike, label: Labeler, inputs: Any, key: jax.Array, *, tag: Any,
                    mesh: Mesh | None = None, chunk_size: int | None = None,
                    progress: bool = True) -> dict[str, np.ndarray]:
  """:func:`generate`, saved to ``path`` (``.npz``) and reloaded instead of recomputed when ``tag`` matches.

  Args:
    path: the ``.npz`` file (written atomically: temporary file, then rename).
    label, inputs, key, mesh, chunk_size, progress: as for :func:`generate`.
    tag: any JSON-serialisable description of everything the labels depend on (method, budget, model, data,
      seed): saved labels with another tag are regenerated. The key's data is added to it.

  Example:
    >>> import tempfile, jax.numpy as jnp
    >>> from xattr import games
    >>> lab = labeler(lambda x: games.baseline(lambda b: b.sum(-1), x, jnp.zeros(2)), "banzhaf_msr", 2, 16)
    >>> path = os.path.join(tempfile.mkdtemp(), "labels.npz")
    >>> a = generate_cached(path, lab, jnp.ones((3, 2)), jax.random.key(0), tag="v1", progress=False)
    >>> b = generate_cached(path, lab, jnp.ones((3, 2)), jax.random.key(0), tag="v1", progress=False)
    >>> bool((a["values"] == b["values"]).all()), os.path.exists(path)
    (True, True)
  """
  path = os.fspath(path)
  full_tag = _tag([tag, np.asarray(jax.random.key_data(key)).tolist()])
  if os.path.exists(path):
    with np.load(path) as saved:
      if str(saved["tag"]) == full_tag:
        return {k: saved[k] for k in saved.files if k != "tag"}
  out = generate(label, inputs, key, mesh=mesh, chunk_size=chunk_size, progress=progress)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez(tmp, tag=np.array(full_tag), **out)
  os.replace(tmp, path)
  return out


def epoch_key(key: jax.Array, epoch: int) -> jax.Array:
  """The key of epoch ``epoch``'s freshly drawn labels (on-the-fly regeneration); epoch 0 is ``key`` itself.

  Example:
    >>> k = jax.random.key(0)
    >>> bool((jax.random.key_data(epoch_key(k, 0)) == jax.random.key_data(k)).all())
    True
  """
  epoch = _checks.positive_int("epoch", epoch, minimum=0)
  return key if epoch == 0 else jax.random.fold_in(key, epoch)
