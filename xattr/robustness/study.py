"""A robustness study on one dataset: train the models, estimate their Lipschitz constants, perturb inputs and
models, and compare every measured attribution change with its bound.

Stages (:func:`xattr.robustness.pipeline.run`; results saved as one array bundle under a fingerprint of the config, the data and the
library code, so a rerun reuses them; trainings resume from their checkpoints):

  1. models: a classifier per kind of :data:`xattr.robustness.models.KINDS` (plain, weight decay, spectral
     normalisation), a plain one retrained on another seed and data subset, and masked surrogates;
  2. Lipschitz constants of the explained output: certified upper bound (SVD), power-iteration estimate,
     gradient-norm lower bound over test points;
  3. input perturbation (:mod:`xattr.robustness.perturb`) for each kind, removal and technique, over the radii
     ``config.eps``, through :func:`xattr.parallel.explain_batch` (per-input keys: any device count gives the same);
  4. model perturbation: Gaussian weight noise of growing relative scale and the retrained model;
  5. an on-data-agreeing / off-data-differing pair g = f + c relu(|x_i - s x_j| - tau) on the most correlated
     features (tau = the largest |x_i - s x_j| in the training data, so g = f on every training point).

Removals: baseline (reference 0 = the training mean), marginal (a seeded background sample), conditional (exact
Gaussian conditionals by Monte Carlo with common noise; synthetic data only) and surrogate (masked MLP fitted to the
model on the data). Games are scalar: the explained class's probability (``output='probability'``) or logit.

Example:
  >>> from xattr.robustness import study
  >>> study.REMOVALS
  ('baseline', 'marginal', 'conditional', 'surrogate')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xattr import games, parallel
from xattr.robustness import bounds, lipschitz, models, operators, perturb
from xattr.robustness import problem as problem_lib

__all__ = ["REMOVALS", "NOT_RESULTS", "output_fn", "output_lipschitz", "Removals", "removals", "technique_stack",
           "input_study", "perturbed", "perturbed_state", "model_changes", "changes", "masks_expand", "pair_model"]

REMOVALS = ("baseline", "marginal", "conditional", "surrogate")
NOT_RESULTS = ("progress", "report")
MODULES = ("xattr.robustness", "xattr.games", "xattr.training", "xattr.models", "xattr.selection.predictor",
           "xattr.parallel", "xattr.data", "xattr.masks")


def output_fn(model: nnx.Module, output: str, cls: int) -> Callable[[jax.Array], jax.Array]:
  """The explained scalar output float[b] of a classifier: class ``cls``'s probability or logit."""
  if output not in ("probability", "logit"):
    raise ValueError(f"output must be 'probability' or 'logit', got {output!r}.")
  if output == "probability":
    return lambda xb: jax.nn.softmax(model(xb), -1)[..., cls]
  return lambda xb: model(xb)[..., cls]


def output_lipschitz(model: nnx.Module, output: str, cls: int, activation: str, method: str = "svd") -> jax.Array:
  """Upper bound on the Lipschitz constant of :func:`output_fn` (:mod:`xattr.robustness.lipschitz`)."""
  kernels, _ = models.layers(model)
  if output == "probability":
    return lipschitz.PROBABILITY_FACTOR * lipschitz.mlp_upper(kernels, activation=activation, method=method)
  return lipschitz.mlp_upper(kernels, activation=activation, output=cls, method=method)


class Removals:
  """Table functions ``x -> u_x float[2^d]`` of every removal available for a scalar output function."""

  def __init__(self, prob: problem_lib.Problem, reference: np.ndarray, background: np.ndarray,
               cond: bounds.GaussianConditional | None, noise: np.ndarray | None):
    self.groups = jnp.asarray(prob.groups)
    self.d = prob.groups.shape[0]
    self.reference, self.background = jnp.asarray(reference), jnp.asarray(background)
    self.cond, self.noise = cond, None if noise is None else jnp.asarray(noise)

  def tables(self, out: Callable, surrogate: Callable | None = None) -> dict[str, Callable]:
    d, g = self.d, self.groups
    fns = {"baseline": lambda x: bounds.game_table(games.grouped(games.baseline(out, x, self.reference), g), d),
           "marginal": lambda x: bounds.game_table(games.grouped(games.marginal(out, x, self.background), g), d)}
    if self.cond is not None:
      fns["conditional"] = lambda x: bounds.game_table(bounds.conditional_game(out, x, self.cond, self.noise), d)
    if surrogate is not None:
      fns["surrogate"] = lambda x: bounds.game_table(games.surrogate(surrogate, x), d)
    return fns


def removals(config: Any, prob: problem_lib.Problem) -> Removals:
  """The reference (0), background sample and (Gaussian data) conditionals of ``config``."""
  rng = np.random.default_rng(config.seed + 7)
  background = prob.x_train[np.sort(rng.choice(len(prob.x_train), config.background_size, replace=False))]
  cond = noise = None
  if prob.cov is not None:
    cond = bounds.gaussian_conditional(prob.mean, prob.cov, prob.groups)
    noise = rng.normal(size=(config.conditional_samples, prob.x_train.shape[1])).astype(np.float32)
  return Removals(prob, np.zeros(prob.x_train.shape[1], np.float32), background, cond, noise)


def technique_stack(techniques: tuple[str, ...], num_players: int) -> tuple[jax.Array, np.ndarray]:
  """(W float32[t, d, 2^d], constants float[t]) of the techniques (:func:`operators.constant`)."""
  w = jnp.asarray(np.stack([operators.matrix(t, num_players) for t in techniques]), jnp.float32)
  return w, np.array([operators.constant(t, num_players).value for t in techniques])


def input_study(tables: dict[str, Callable], w: jax.Array, inputs: np.ndarray, key: jax.Array, eps: np.ndarray, *,
                num_steps: int, mesh: Any = None, chunk_size: int | None = None) -> dict[str, np.ndarray]:
  """Per removal ``<removal>/gaussian`` and ``<removal>/pgd`` float[n, E, t]: :func:`perturb.input_changes` of every
  input, run with :func:`xattr.parallel.explain_batch` (input i's key: ``fold_in(key, i)``)."""
  eps = jnp.asarray(eps, jnp.float32)

  def explain(x, k):
    return {name: perturb.input_changes(fn, w, x, jax.random.fold_in(k, j), eps, num_steps=num_steps)
            for j, (name, fn) in enumerate(sorted(tables.items()))}

  out = parallel.explain_batch(explain, inputs, key, mesh=mesh, chunk_size=chunk_size, progress=False)
  return {f"{name}/{kind}": np.asarray(v) for name, parts in out.items() for kind, v in parts.items()}


def perturbed(model: nnx.Module, scale: float, key: jax.Array) -> nnx.Module:
  """A copy of ``model`` with N(0, (scale * rms(W))^2) noise added to every kernel and bias (rms per array)."""
  graphdef, state = nnx.split(model)
  return nnx.merge(graphdef, perturbed_state(state, scale, key))


def perturbed_state(state: Any, scale: float, key: jax.Array) -> Any:
  """:func:`perturbed` on an ``nnx.split`` state (a pytree of arrays)."""
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(key, len(leaves))
  noisy = [leaf + scale * jnp.sqrt(jnp.mean(leaf ** 2) + 1e-12) * jax.random.normal(k, leaf.shape)
           if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf for leaf, k in zip(leaves, keys)]
  return jax.tree.unflatten(treedef, noisy)


def _conditional_points(rem: Removals, x: jax.Array) -> jax.Array:
  cond = rem.cond
  mean = jnp.einsum("tfg,g->tf", cond.a, x) + cond.c
  return (mean[:, None] + jnp.einsum("tfg,mg->tmf", cond.chol, rem.noise)).reshape(-1, x.shape[0])


def model_changes(rem: Removals, w: jax.Array, out_f: Callable, out_g: Callable, inputs: np.ndarray
                  ) -> dict[str, np.ndarray]:
  """For two output functions f, g: per removal ``<r>/change`` float[n, t] = ||W (u^g_x - u^f_x)||, ``<r>/delta``
  float[n] = max_S |u^g_x(S) - u^f_x(S)|, and ``<r>/sup_points`` float[n]: the max of |f - g| over the points the
  removal evaluates (hybrids with the reference / background rows; the conditional draws)."""
  return {k: np.asarray(v) for k, v in jax.jit(lambda x: changes(rem, w, out_f, out_g, x))(
      jnp.asarray(inputs)).items()}


def changes(rem: Removals, w: jax.Array, out_f: Callable, out_g: Callable, x: jax.Array) -> dict[str, jax.Array]:
  """The traceable body of :func:`model_changes` (inputs x float[n, f]; jit it with g's parameters as arguments
  to compile once for many perturbed models)."""
  tf, tg = rem.tables(out_f), rem.tables(out_g)
  out = {}
  for name in tf:
    diff = jax.vmap(lambda xi: tg[name](xi) - tf[name](xi))(x)
    out[f"{name}/change"] = jnp.linalg.norm(jnp.einsum("tdn,bn->btd", w, diff), axis=-1)
    out[f"{name}/delta"] = jnp.abs(diff).max(-1)
  feature_masks = masks_expand(rem)
  for name, others in (("baseline", rem.reference[None]), ("marginal", rem.background)):
    points = lambda xi: jnp.where(feature_masks[:, None], xi, others[None]).reshape(-1, xi.shape[0])
    out[f"{name}/sup_points"] = jax.vmap(lambda xi: jnp.abs(out_f(points(xi)) - out_g(points(xi))).max())(x)
  if rem.cond is not None:
    diff = lambda xi: jnp.abs(out_f(_conditional_points(rem, xi)) - out_g(_conditional_points(rem, xi))).max()
    out["conditional/sup_points"] = jax.lax.map(diff, x)
  return out


def masks_expand(rem: Removals) -> jax.Array:
  """Feature masks bool[2^d, f] of every player coalition."""
  return (jnp.asarray(operators.coalitions(rem.d), jnp.float32) @ rem.groups.astype(jnp.float32)) > 0


def pair_model(out_f: Callable, x_train: np.ndarray, amplitude: float) -> tuple[Callable, dict[str, float]]:
  """g = f + amplitude relu(|x_i - s x_j| - tau) on the most correlated pair (i, j) (s: the correlation's sign,
  tau: the largest |x_i - s x_j| over ``x_train``): equal to f on every training point, different off them."""
  i, j, r = problem_lib.correlated_pair(x_train)
  s = float(np.sign(r))
  tau = float(np.abs(x_train[:, i] - s * x_train[:, j]).max())
  h = lambda xb: amplitude * jax.nn.relu(jnp.abs(xb[..., i] - s * xb[..., j]) - tau)
  return (lambda xb: out_f(xb) + h(xb)), dict(i=i, j=j, correlation=r, tau=tau)
