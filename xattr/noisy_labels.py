"""Cheap noisy attribution labels for stochastic amortization, generated once over a dataset and reused.

Stochastic amortization (Covert et al., 2024) trains an explainer by plain regression onto *noisy* per-example
estimates: KernelSHAP with a few coalitions, permutation sampling with a few orderings, MSR Banzhaf, LIME. If a
label is an unbiased estimate of its target (permutation sampling and MSR are; the original KernelSHAP estimator
is only nearly so), the regression optimum is the target itself and label noise only slows SGD down, so a
handful of model evaluations per training input is enough: the explainer averages the noise across inputs.

Each generator explains ONE input with a fixed budget of game evaluations; :func:`generate` runs it over a
dataset with :func:`xattr.parallel.explain_batch` (jitted, vmapped, sharded over the mesh, per-example keys
``fold_in(key, i)``, so the labels do not depend on the device count or chunking). :func:`generate_cached`
saves them once with :func:`xattr.artifacts.compute_or_load` (fingerprinted by the tag, inputs, key and library
source) and reloads them on later calls (and resumed runs); :func:`epoch_key` gives fresh,
reproducible labels per epoch for on-the-fly regeneration.

Every method comes from :mod:`xattr.methods`: any registered method that explains a game and has a budget rule
can make labels (:func:`label_methods`), with the settings of its budget rule. ``budget`` is the number of model
evaluations per label, and every method's exact count is reported by :func:`evaluations_per_label`; the
built-in rules:

  * ``kernel_shap``: ``budget - 2`` coalitions (+ grand and null), paired; the original estimator (A estimated
    from the samples) from 4d coalitions on, the unbiased one (closed-form A) below. Target: Shapley values.
  * ``permutation``: ``(budget - 2) // (d - 1)`` orderings (at least one antithetic pair). Target: Shapley values.
  * ``banzhaf_msr``: ``budget`` Bernoulli(1/2) coalitions, maximum sample reuse. Target: Banzhaf values.
  * ``kernel_banzhaf``: ``budget`` coalitions in distinct complementary pairs (at least 2 (d + 2)), odd Walsh
    regression with third-order covariates. Target: Banzhaf values.
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

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from xattr import _checks, artifacts, methods, parallel

__all__ = ["label_methods", "estimator_kwargs", "evaluations_per_label", "labeler", "generate", "generate_cached",
           "epoch_key"]

Game = Callable[[jax.Array], jax.Array]
Labeler = Callable[[jax.Array, jax.Array], dict[str, jax.Array]]


def label_methods() -> tuple[str, ...]:
  """The registered methods that can make labels: they explain a game and have a budget rule.

  Example:
    >>> label_methods()[:8]
    ('kernel_shap', 'shapley', 'odd_kernel_shap', 'permutation', 'banzhaf_msr', 'kernel_banzhaf', 'banzhaf', 'lime')
  """
  return tuple(n for n in methods.names(needs="game") if methods.get(n).budget_rule is not None)


def _check_method(method: str) -> str:
  if method not in label_methods():
    raise ValueError(f"method must be one of {label_methods()} (registered game methods with a budget rule, see "
                     f"xattr.methods.register), got {method!r}.")
  return method


def estimator_kwargs(method: str, num_players: int, budget: int) -> dict[str, Any]:
  """The estimator's sampling arguments that spend (at most) ``budget`` model evaluations per label: the method's
  budget rule (:func:`xattr.methods.settings_for`).

  Example:
    >>> estimator_kwargs("permutation", 5, 34)
    {'num_permutations': 8}
  """
  _check_method(method)
  d = _checks.positive_int("num_players", num_players, minimum=2)
  return methods.settings_for(method, d, _checks.positive_int("budget", budget))


def evaluations_per_label(method: str, num_players: int, budget: int) -> int:
  """Model evaluations one label actually costs (grand and null included where the estimator uses them); the
  budget itself for a method that does not count its evaluations.

  Example:
    >>> evaluations_per_label("permutation", 5, 34), evaluations_per_label("lime", 10, 4)
    (34, 11)
    >>> evaluations_per_label("kernel_shap", 4, 100)      # every one of the 2^4 coalitions, exact
    16
  """
  count = methods.evaluations(method, num_players, estimator_kwargs(method, num_players, budget))
  return int(budget) if count is None else count


def labeler(game_of_x: Callable[[jax.Array], Game], method: str, num_players: int, budget: int, *,
            batch_size: int = 512) -> Labeler:
  """``(x, key) -> {"values": float[d, k], "num_evals": int32}``: one noisy label for ONE input.

  Build it once and pass the same object to :func:`generate` for every epoch: the compiled, sharded program is
  cached per labeler.

  Args:
    game_of_x: ``x -> game`` (e.g. ``lambda x: games.baseline(model_fn, x, reference)``).
    method: one of :func:`label_methods`.
    num_players: d.
    budget: model evaluations per label (see :func:`estimator_kwargs`).
    batch_size: coalitions per game call (for methods that take a ``batch_size``).
  """
  _check_method(method)
  d = _checks.positive_int("num_players", num_players, minimum=2)
  kw = estimator_kwargs(method, d, budget)
  batch_size = _checks.positive_int("batch_size", batch_size)
  if "batch_size" in methods.get(method).settings:
    kw["batch_size"] = batch_size
  evals = evaluations_per_label(method, d, budget)

  def label(x: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    est = methods.attribute(method, methods.Problem(game=game_of_x(x), num_players=d), key, **kw)
    values = est.values if est.values.ndim == 2 else est.values[:, None]    # always [d, k]
    num_evals = jnp.asarray(evals, jnp.int32) if est.num_evals is None else est.num_evals
    return {"values": values, "num_evals": num_evals}

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


def generate_cached(path: str | os.PathLike, label: Labeler, inputs: Any, key: jax.Array, *, tag: Any,
                    mesh: Mesh | None = None, chunk_size: int | None = None,
                    progress: bool = True) -> dict[str, np.ndarray]:
  """:func:`generate`, saved to ``path`` (``.npz``) and reloaded instead of recomputed when ``tag`` matches.

  Args:
    path: the ``.npz`` file (written atomically by :func:`xattr.artifacts.save`).
    label, inputs, key, mesh, chunk_size, progress: as for :func:`generate`.
    tag: any JSON-serialisable description of everything else the labels depend on (method, budget, model,
      seed). The fingerprint (:func:`xattr.artifacts.fingerprint`) adds the inputs, the key and the xattr
      source: saved labels with another fingerprint are regenerated.

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
  fp = artifacts.fingerprint(tag, data={"inputs": inputs, "key": key})
  return artifacts.compute_or_load(
      path, fp, lambda: generate(label, inputs, key, mesh=mesh, chunk_size=chunk_size, progress=progress))


def epoch_key(key: jax.Array, epoch: int) -> jax.Array:
  """The key of epoch ``epoch``'s freshly drawn labels (on-the-fly regeneration); epoch 0 is ``key`` itself.

  Example:
    >>> k = jax.random.key(0)
    >>> bool((jax.random.key_data(epoch_key(k, 0)) == jax.random.key_data(k)).all())
    True
  """
  epoch = _checks.positive_int("epoch", epoch, minimum=0)
  return key if epoch == 0 else jax.random.fold_in(key, epoch)
