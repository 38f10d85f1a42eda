"""Data-valuation utilities U(D): train a small model on a subset D of one fixed training pool, score it.

In data valuation the players are training points and the game is U(D) = validation performance of a model
trained on D. Estimating values takes thousands to millions of such trainings, so here a subset is a 0/1
weight vector over ONE training pool (static shapes whatever |D|) and a training run is a pure function of
those weights: ``jax.vmap`` trains B models on B subsets in one program, and :mod:`xattr.valuation.samplers`
shards that over devices. This is the speed lever over fitting scikit-learn models in a Python loop.

Three learners, all deterministic functions of the subset:

* :class:`LogisticRegression` — L2-regularised logistic regression (binary: sigmoid; multiclass: softmax), the
  objective of scikit-learn's ``LogisticRegression(C=1/l2)`` (sum of losses, intercept unpenalised by default).
  Solved to its unique optimum by damped Newton steps in ``lax.scan``, started from the optimum on the full
  pool: a few Newton steps with a fresh Hessian, then cheaper "chord" steps that reuse the last Cholesky factor
  (each costs a gradient, ~d times less than a Hessian). U(D u {z}) is solved warm-started from the fit of D
  (:meth:`LogisticRegression.add`), which needs fewer steps than a cold start. The Hessian is
  ``weights @ outer`` with the pool's per-row outer products precomputed: under ``vmap`` one large matmul.
* :class:`MLPClassifier` — a small Flax NNX MLP trained by full-batch Adam for a fixed number of steps inside
  ``lax.scan`` from one fixed initialisation (so U is a function of the set alone).
* :class:`RidgeRegression` — closed-form ridge regression, utility = minus validation MSE.

A subset that misses a class (possible only for tiny D, e.g. early prefixes of a permutation) has no
finite-loss classifier optimum; such subsets get the score of the untrained model (all logits 0: uniform
probabilities, neg. cross-entropy = -log C), the convention of data-valuation libraries that assign a default
score when a fit fails.

Example:
  >>> import jax, jax.numpy as jnp, numpy as np
  >>> from xattr.valuation import utility
  >>> rng = np.random.default_rng(0)
  >>> x = rng.normal(size=(60, 3)).astype(np.float32); y = (x[:, 0] > 0).astype(np.int32)
  >>> u = utility.LogisticRegression.create(x[:40], y[:40], x[40:], y[40:], num_classes=2)
  >>> weights = jnp.ones((4, 40)).at[:, :10].set(0.0)          # 4 subsets as 0/1 weights over the pool
  >>> jax.vmap(lambda w: utility.value(u, w)["accuracy"])(weights).shape
  (4,)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from xattr import _checks
from xattr.models import mlp as mlp_lib

__all__ = ["Utility", "LogisticRegression", "LogisticFit", "MLPClassifier", "RidgeRegression", "value",
           "contribution", "game", "METRICS"]

# Metric names each task's score() returns; the first is the default utility.
METRICS = {"classification": ("neg_ce", "accuracy"), "regression": ("neg_mse",)}

Utility = Any  # LogisticRegression | MLPClassifier | RidgeRegression: fit(weights), add(fit, weights, i), score(fit)


def _register(cls, data: Sequence[str]):
  """Registers a frozen dataclass as a pytree: array fields are leaves, the rest (hyperparameters) static."""
  meta = [f.name for f in dataclasses.fields(cls) if f.name not in data]
  return jax.tree_util.register_dataclass(cls, data_fields=list(data), meta_fields=meta)


def _check_pool(x_train, y_train, x_val, y_val, task: str, num_classes: int | None):
  x_train, x_val = np.asarray(x_train, np.float32), np.asarray(x_val, np.float32)
  if x_train.ndim != 2 or x_val.ndim != 2 or x_train.shape[1] != x_val.shape[1]:
    raise ValueError(f"x_train and x_val must be float[n, d] with the same d, got shapes {x_train.shape} and "
                     f"{x_val.shape}.")
  y_train, y_val = np.asarray(y_train), np.asarray(y_val)
  if y_train.shape != (x_train.shape[0],) or y_val.shape != (x_val.shape[0],):
    raise ValueError(f"y_train and y_val must be 1-D with one label per row of x_train / x_val, got shapes "
                     f"{y_train.shape} and {y_val.shape} for {x_train.shape[0]} and {x_val.shape[0]} rows.")
  for name, a in (("x_train", x_train), ("x_val", x_val)):
    _checks.finite(name, a)
  if task == "classification":
    c = _checks.positive_int("num_classes", num_classes, minimum=2)
    for name, a in (("y_train", y_train), ("y_val", y_val)):
      if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= c):
        raise ValueError(f"{name} must hold integer class indices in [0, {c}) (num_classes={c}), got values in "
                         f"[{a.min()}, {a.max()}] of dtype {a.dtype}.")
    return x_train, y_train.astype(np.int32), x_val, y_val.astype(np.int32)
  _checks.finite("y_train", y_train.astype(np.float32))
  return x_train, y_train.astype(np.float32), x_val, y_val.astype(np.float32)


def _augment(x: jax.Array) -> jax.Array:
  """Appends a constant-1 column (the intercept's feature)."""
  return jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)


def _upper_outer(x_aug: np.ndarray) -> np.ndarray:
  """Per-row upper-triangular outer products float32[n, T], T = d1 (d1 + 1) / 2 (a Hessian is then a matmul)."""
  iu, ju = np.triu_indices(x_aug.shape[1])
  return (x_aug[:, iu] * x_aug[:, ju]).astype(np.float32)


def _symmetric_from_upper(tri: jax.Array, dim: int) -> jax.Array:
  """[..., T] upper-triangle entries -> symmetric [..., dim, dim]."""
  iu, ju = np.triu_indices(dim)
  full = jnp.zeros(tri.shape[:-1] + (dim, dim), tri.dtype).at[..., iu, ju].set(tri)
  return full + jnp.swapaxes(full, -1, -2) - full * jnp.eye(dim, dtype=tri.dtype)


def _has_all_classes(weights: jax.Array, y: jax.Array, num_classes: int) -> jax.Array:
  counts = jnp.zeros(num_classes, weights.dtype).at[y].add(weights)
  return jnp.all(counts > 0)


def _classification_scores(logits: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
  """neg_ce: minus mean cross-entropy; accuracy: argmax accuracy. logits [n, C] (C >= 2)."""
  ce = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], 1)[:, 0]
  return {"neg_ce": -ce.mean(), "accuracy": jnp.mean(jnp.argmax(logits, -1) == y).astype(jnp.float32)}


# ---------------------------------------------------------------------------------------------------------------
# Logistic regression: damped Newton + chord steps in lax.scan
# ---------------------------------------------------------------------------------------------------------------

class LogisticFit(NamedTuple):
  """A fitted logistic regression. params: float[d + 1, c] (last row = intercept; c = 1 for binary, else C);
  chol: lower Cholesky factor of the (damped) Hessian at the last Newton step, reused by :meth:`add`;
  weights: the subset it was fitted on."""

  params: jax.Array
  chol: jax.Array
  weights: jax.Array


# The line search evaluates the objective at these step sizes (the current point and Newton's full step).
_STEPS = (0.0, 1.0)


@functools.partial(_register, data=("x", "y", "x_val", "y_val", "outer", "init"))
@dataclasses.dataclass(frozen=True)
class LogisticRegression:
  """L2-regularised logistic regression on subsets of a training pool; utility = validation neg. CE / accuracy.

  Minimises ``sum_i w_i CE_i + l2/2 ||W||^2 + l2_intercept/2 ||b||^2`` over the rows with weight 1 — scikit-learn's
  ``LogisticRegression(C=1/l2)`` objective when ``l2_intercept=0``. Build with :meth:`create`.

  Attributes:
    x, y: the training pool, float32[n, d] and int32[n].
    x_val, y_val: the validation set the utility scores on.
    outer: float32[n, T] per-row upper-triangular outer products of [x, 1].
    init: float32[d + 1, c] warm start (the optimum on the whole pool).
    num_classes: C >= 2.
    l2, l2_intercept: penalties.
    newton_steps: Newton steps with a fresh Hessian; chord_steps: further steps reusing its factor.
    add_newton_steps, add_chord_steps: the same for :meth:`add`, from the fit of D to the fit of D u {z}.
  """

  x: jax.Array
  y: jax.Array
  x_val: jax.Array
  y_val: jax.Array
  outer: jax.Array
  init: jax.Array
  num_classes: int = 2
  l2: float = 1.0
  l2_intercept: float = 0.0
  newton_steps: int = 8
  chord_steps: int = 2
  add_newton_steps: int = 5
  add_chord_steps: int = 2

  task = "classification"

  @classmethod
  def create(cls, x_train, y_train, x_val, y_val, *, num_classes: int, l2: float = 1.0, l2_intercept: float = 0.0,
             newton_steps: int = 8, chord_steps: int = 2, add_newton_steps: int = 5, add_chord_steps: int = 2,
             init_steps: int = 30) -> LogisticRegression:
    """Validates the data, precomputes outer products and fits the full-pool optimum used as warm start.

    Args:
      x_train, y_train: the pool (float[n, d], int class indices in [0, num_classes)).
      x_val, y_val: validation data the utility is measured on.
      num_classes: C >= 2 (binary problems use one sigmoid output).
      l2: penalty on the weights (= 1 / scikit-learn's C); must be > 0.
      l2_intercept: penalty on the intercept (0 = unpenalised, as scikit-learn's lbfgs/newton solvers).
      newton_steps, chord_steps: damped Newton steps (fresh Hessian each) and chord steps (last Hessian factor
        reused) of :meth:`fit`.
      add_newton_steps, add_chord_steps: the same for :meth:`add` (warm start from the fit of D).
        The defaults reach the optimum to float32 round-off (against 80 Newton steps) on 4096 subsets of 100-400
        of breast cancer's 455 training rows with 15% of the labels flipped; 5 + 3 and 4 + 2 steps left errors
        of up to 6e-3 in Delta on 4 of them (flipped labels put some subsets far from the warm start). More
        classes need more: wine (3 classes, noisy) 12 + 8, digits (10 classes, noisy) 18 + 10 — check against a long
        solve when changing data (the driver's ``solver_check`` does).
      init_steps: Newton steps for the full-pool warm start (from zero).

    Returns:
      A :class:`LogisticRegression` (a pytree: pass it as an argument to jitted functions).
    """
    x, y, xv, yv = _check_pool(x_train, y_train, x_val, y_val, "classification", num_classes)
    if not l2 > 0 or l2_intercept < 0:
      raise ValueError(f"l2 must be > 0 and l2_intercept >= 0, got l2={l2}, l2_intercept={l2_intercept}.")
    for name, v in (("newton_steps", newton_steps), ("init_steps", init_steps), ("add_newton_steps", add_newton_steps)):
      _checks.positive_int(name, v)
    for name, v in (("chord_steps", chord_steps), ("add_chord_steps", add_chord_steps)):
      _checks.positive_int(name, v, minimum=0)
    c = 1 if num_classes == 2 else num_classes
    outer = _upper_outer(np.concatenate([x, np.ones((len(x), 1), np.float32)], 1))
    u = cls(jnp.asarray(x), jnp.asarray(y), jnp.asarray(xv), jnp.asarray(yv), jnp.asarray(outer),
            jnp.zeros((x.shape[1] + 1, c), jnp.float32), int(num_classes), float(l2), float(l2_intercept),
            int(newton_steps), int(chord_steps), int(add_newton_steps), int(add_chord_steps))
    start = dataclasses.replace(u, newton_steps=int(init_steps), chord_steps=0)
    init = jax.jit(lambda v: v.fit(jnp.ones(len(x), jnp.float32)).params)(start)
    return dataclasses.replace(u, init=init)

  # -- pieces of the objective ----------------------------------------------------------------------------------

  @property
  def _penalty(self) -> jax.Array:
    d = self.x.shape[1]
    return jnp.concatenate([jnp.full(d, self.l2, jnp.float32), jnp.full(1, self.l2_intercept, jnp.float32)])

  def _losses(self, logits: jax.Array, y: jax.Array) -> jax.Array:
    """Per-row cross-entropy; logits [..., n, c]."""
    if self.num_classes == 2:
      z = logits[..., 0]
      return jax.nn.softplus(z) - y * z
    return jax.nn.logsumexp(logits, -1) - jnp.sum(logits * jax.nn.one_hot(y, self.num_classes), -1)

  def _objective_along(self, params, direction, logits, dlogits, weights) -> jax.Array:
    """Objective at params - t * direction for every t in _STEPS (float[len(_STEPS)])."""
    t = jnp.asarray(_STEPS, jnp.float32)
    cand_logits = logits[None] - t[:, None, None] * dlogits[None]
    data = jnp.einsum("tn,n->t", self._losses(cand_logits, self.y), weights)
    cand = params[None] - t[:, None, None] * direction[None]
    return data + 0.5 * jnp.einsum("tjc,j->t", cand ** 2, self._penalty)

  def _gradient(self, params, logits, weights) -> jax.Array:
    if self.num_classes == 2:
      resid = (jax.nn.sigmoid(logits[:, 0]) - self.y)[:, None]
    else:
      resid = jax.nn.softmax(logits, -1) - jax.nn.one_hot(self.y, self.num_classes)
    return _augment(self.x).T @ (weights[:, None] * resid) + self._penalty[:, None] * params

  def _hessian(self, logits, weights) -> jax.Array:
    d1 = self.x.shape[1] + 1
    if self.num_classes == 2:
      p = jax.nn.sigmoid(logits[:, 0])
      h = _symmetric_from_upper((weights * p * (1 - p)) @ self.outer, d1)
      return h + jnp.diag(self._penalty)
    c = self.num_classes
    p = jax.nn.softmax(logits, -1)
    curv = weights[:, None, None] * (jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :])      # [n, C, C]
    blocks = _symmetric_from_upper((curv.reshape(-1, c * c).T @ self.outer).reshape(c, c, -1), d1)
    h = blocks.transpose(0, 2, 1, 3).reshape(c * d1, c * d1) + jnp.diag(jnp.tile(self._penalty, c))
    if self.l2_intercept == 0:
      # Softmax is invariant to shifting every class's intercept: the Hessian is singular along that direction
      # and the gradient is orthogonal to it. Adding curvature there fixes the solve and changes no step.
      u = jnp.zeros((c, d1)).at[:, -1].set(1.0 / np.sqrt(c)).reshape(-1)
      h = h + jnp.outer(u, u)
    return h

  def _factor(self, logits, weights) -> jax.Array:
    h = self._hessian(logits, weights)
    # A relative jitter keeps float32 Cholesky away from breakdown when a class is (nearly) separable.
    jitter = 1e-6 * (jnp.trace(h) / h.shape[0]) + 1e-6
    return jnp.linalg.cholesky(h + jitter * jnp.eye(h.shape[0], dtype=h.dtype))

  def _direction(self, chol: jax.Array, g: jax.Array) -> jax.Array:
    """H^-1 g for g of shape [d + 1, c] (vectorised class-major, the Hessian's ordering)."""
    c = g.shape[1]
    return jax.scipy.linalg.cho_solve((chol, True), g.T.reshape(-1)).reshape(c, -1).T

  def _step(self, params, direction_fn, weights, line_search: bool):
    """params - t H^-1 g. With ``line_search`` (Newton steps from a far warm start need damping), t = 1 if that
    does not increase the objective, else the minimiser of the quadratic through f(0), f'(0) and f(1), kept in
    [0.1, 0.5] (one backtracking step: two loss evaluations instead of one per candidate step size). Chord
    steps near the optimum take t = 1."""
    x_aug = _augment(self.x)
    logits = x_aug @ params
    g = self._gradient(params, logits, weights)
    direction = direction_fn(g, logits)
    if not line_search:
      return params - direction
    f0, f1 = self._objective_along(params, direction, logits, x_aug @ direction, weights)
    slope = -jnp.sum(g * direction)                                  # d/dt f(params - t direction) at t = 0
    curvature = f1 - f0 - slope
    t_quad = jnp.clip(-slope / jnp.maximum(2 * curvature, 1e-30), 0.1, 0.5)
    # Near the optimum f(1) and f(0) tie to float32 round-off; the full Newton step is then the right one.
    t = jnp.where(f1 <= f0 + 1e-6 * jnp.abs(f0) + 1e-6, 1.0, t_quad)
    return params - t * direction

  # -- public ---------------------------------------------------------------------------------------------------

  def _solve(self, weights: jax.Array, params: jax.Array, newton_steps: int, chord_steps: int) -> LogisticFit:
    # Every Newton step is damped: even from the fit of D, undamped steps to D u {z} diverge for a few
    # influential points (measured on breast cancer).
    def newton(p, _):
      chol = self._factor(_augment(self.x) @ p, weights)
      return self._step(p, lambda g, _: self._direction(chol, g), weights, True), chol

    params, chols = jax.lax.scan(newton, params, None, length=newton_steps)
    chol = chols[-1]
    chord = lambda p, _: (self._step(p, lambda g, _: self._direction(chol, g), weights, False), None)
    params, _ = jax.lax.scan(chord, params, None, length=chord_steps)
    return LogisticFit(params, chol, weights)

  def fit(self, weights: jax.Array, init: jax.Array | None = None) -> LogisticFit:
    """Fits the model on the rows with weight 1 (``weights``: float[n] of 0/1). Pure; vmap over ``weights``.

    Starts from ``init`` (default: the full-pool optimum) and takes ``newton_steps`` damped Newton steps and
    ``chord_steps`` chord steps.
    """
    weights = weights.astype(jnp.float32)
    return self._solve(weights, self.init if init is None else init, self.newton_steps, self.chord_steps)

  def add(self, fitted: LogisticFit, index: jax.Array) -> LogisticFit:
    """The fit on D u {index}, warm-started from the fit on D (``add_newton_steps`` + ``add_chord_steps``).

    One point rarely moves the optimum far, but a few influential points (large loss, little curvature along
    their direction) move it by as much as a cold start would: each step therefore refreshes the Hessian
    (measured on breast cancer, cheaper rank-c updates of D's factor leave errors of ~1e-3 in U for those).
    Solving from D's optimum still saves a Newton step over a cold start.
    """
    weights = fitted.weights.at[index].set(1.0)
    return self._solve(weights, fitted.params, self.add_newton_steps, self.add_chord_steps)

  def logits(self, params: jax.Array, x: jax.Array) -> jax.Array:
    """Class logits [n, C] of a parameter set (binary: [0, z])."""
    z = _augment(x) @ params
    return jnp.concatenate([jnp.zeros_like(z), z], -1) if self.num_classes == 2 else z

  def score(self, fitted: LogisticFit) -> dict[str, jax.Array]:
    """Validation metrics {'neg_ce', 'accuracy'}; the untrained model's if the subset misses a class."""
    ok = _has_all_classes(fitted.weights, self.y, self.num_classes)
    params = jnp.where(ok, fitted.params, jnp.zeros_like(fitted.params))
    return _classification_scores(self.logits(params, self.x_val), self.y_val)

  @property
  def num_points(self) -> int:
    return self.x.shape[0]


# ---------------------------------------------------------------------------------------------------------------
# Small MLP: full-batch Adam in lax.scan from a fixed initialisation
# ---------------------------------------------------------------------------------------------------------------

class MLPFit(NamedTuple):
  """A trained MLP: params (the NNX state pytree) and the subset weights it was trained on."""

  params: Any
  weights: jax.Array


@functools.partial(_register, data=("x", "y", "x_val", "y_val", "init"))
@dataclasses.dataclass(frozen=True)
class MLPClassifier:
  """A small MLP trained by ``num_steps`` full-batch Adam steps on the weighted mean cross-entropy.

  Every subset starts from the same initialisation ``init`` and takes the same steps, so U(D) is a deterministic
  function of D. Build with :meth:`create`.
  """

  x: jax.Array
  y: jax.Array
  x_val: jax.Array
  y_val: jax.Array
  init: Any
  graphdef: Any = None
  num_classes: int = 2
  learning_rate: float = 0.05
  num_steps: int = 100
  weight_decay: float = 1e-3

  task = "classification"

  @classmethod
  def create(cls, x_train, y_train, x_val, y_val, *, num_classes: int, hidden_sizes: Sequence[int] = (16,),
             learning_rate: float = 0.05, num_steps: int = 100, weight_decay: float = 1e-3,
             seed: int = 0) -> MLPClassifier:
    """Validates the data and initialises the network (xattr.models.MLP, seeded)."""
    x, y, xv, yv = _check_pool(x_train, y_train, x_val, y_val, "classification", num_classes)
    _checks.positive_int("num_steps", num_steps)
    net = mlp_lib.MLP(x.shape[1], tuple(hidden_sizes), num_classes, rngs=nnx.Rngs(seed))
    graphdef, state = nnx.split(net)
    return cls(jnp.asarray(x), jnp.asarray(y), jnp.asarray(xv), jnp.asarray(yv), state, graphdef,
               int(num_classes), float(learning_rate), int(num_steps), float(weight_decay))

  def _apply(self, params, x):
    return nnx.merge(self.graphdef, params)(x)

  def fit(self, weights: jax.Array) -> MLPFit:
    weights = weights.astype(jnp.float32)
    opt = optax.adam(self.learning_rate)

    def loss(params):
      ce = optax.softmax_cross_entropy_with_integer_labels(self._apply(params, self.x), self.y)
      decay = sum(jnp.sum(p ** 2) for p in jax.tree.leaves(params))
      return jnp.sum(weights * ce) / jnp.maximum(weights.sum(), 1.0) + 0.5 * self.weight_decay * decay

    def step(carry, _):
      params, opt_state = carry
      grads = jax.grad(loss)(params)
      updates, opt_state = opt.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (self.init, opt.init(self.init)), None, length=self.num_steps)
    return MLPFit(params, weights)

  def add(self, fitted: MLPFit, index: jax.Array) -> MLPFit:
    """Retrains from the shared initialisation on D u {index} (a warm start would make U depend on the path)."""
    return self.fit(fitted.weights.at[index].set(1.0))

  def score(self, fitted: MLPFit) -> dict[str, jax.Array]:
    ok = _has_all_classes(fitted.weights, self.y, self.num_classes)
    logits = self._apply(fitted.params, self.x_val)
    return _classification_scores(jnp.where(ok, logits, jnp.zeros_like(logits)), self.y_val)

  @property
  def num_points(self) -> int:
    return self.x.shape[0]


# ---------------------------------------------------------------------------------------------------------------
# Ridge regression: closed form
# ---------------------------------------------------------------------------------------------------------------

class RidgeFit(NamedTuple):
  params: jax.Array
  weights: jax.Array


@functools.partial(_register, data=("x", "y", "x_val", "y_val", "outer"))
@dataclasses.dataclass(frozen=True)
class RidgeRegression:
  """Weighted ridge regression ``min sum_i w_i (y_i - x_i.w - b)^2 + l2 ||w||^2``; utility = minus validation MSE."""

  x: jax.Array
  y: jax.Array
  x_val: jax.Array
  y_val: jax.Array
  outer: jax.Array
  l2: float = 1.0

  task = "regression"

  @classmethod
  def create(cls, x_train, y_train, x_val, y_val, *, l2: float = 1.0) -> RidgeRegression:
    x, y, xv, yv = _check_pool(x_train, y_train, x_val, y_val, "regression", None)
    if not l2 > 0:
      raise ValueError(f"l2 must be > 0, got {l2}.")
    outer = _upper_outer(np.concatenate([x, np.ones((len(x), 1), np.float32)], 1))
    return cls(jnp.asarray(x), jnp.asarray(y), jnp.asarray(xv), jnp.asarray(yv), jnp.asarray(outer), float(l2))

  def fit(self, weights: jax.Array) -> RidgeFit:
    weights = weights.astype(jnp.float32)
    d1 = self.x.shape[1] + 1
    pen = jnp.concatenate([jnp.full(d1 - 1, self.l2), jnp.full(1, 1e-6)])   # intercept: only a round-off guard
    gram = _symmetric_from_upper(weights @ self.outer, d1) + jnp.diag(pen)
    rhs = _augment(self.x).T @ (weights * self.y)
    return RidgeFit(jnp.linalg.solve(gram, rhs), weights)

  def add(self, fitted: RidgeFit, index: jax.Array) -> RidgeFit:
    return self.fit(fitted.weights.at[index].set(1.0))

  def score(self, fitted: RidgeFit) -> dict[str, jax.Array]:
    pred = _augment(self.x_val) @ fitted.params
    return {"neg_mse": -jnp.mean((pred - self.y_val) ** 2)}

  @property
  def num_points(self) -> int:
    return self.x.shape[0]


# ---------------------------------------------------------------------------------------------------------------
# Generic functions over any utility
# ---------------------------------------------------------------------------------------------------------------

def value(utility: Utility, weights: jax.Array) -> dict[str, jax.Array]:
  """U(D) for one subset given as weights float[n] (0/1): the utility's metrics. Vmap over ``weights``.

  Example:
    >>> import numpy as np
    >>> x = np.eye(4, dtype=np.float32); y = np.array([0.0, 1.0, 2.0, 3.0], np.float32)
    >>> u = RidgeRegression.create(x, y, x, y, l2=1e-3)
    >>> round(float(value(u, jnp.ones(4))["neg_mse"]), 4)
    -0.0
  """
  return utility.score(utility.fit(weights))


def contribution(utility: Utility, weights: jax.Array, index: jax.Array) -> dict[str, jax.Array]:
  """Marginal contribution U(D u {index}) - U(D) of one point, with D given by ``weights`` (index not in D).

  Returns every metric's contribution, plus 'base_<metric>' = U(D). Vmap over (weights, index).

  Example:
    >>> import numpy as np
    >>> x = np.eye(4, dtype=np.float32); y = np.array([0.0, 1.0, 2.0, 3.0], np.float32)
    >>> u = RidgeRegression.create(x, y, x, y, l2=1e-3)
    >>> out = contribution(u, jnp.array([1.0, 1.0, 1.0, 0.0]), 3)
    >>> bool(out["neg_mse"] > 0)
    True
  """
  base = utility.fit(weights)
  before, after = utility.score(base), utility.score(utility.add(base, index))
  return {**{k: after[k] - before[k] for k in before}, **{f"base_{k}": v for k, v in before.items()}}


def game(utility: Utility, metric: str | None = None) -> Callable[[jax.Array], jax.Array]:
  """The utility as an xattr game ``bool[b, n] -> float[b]`` (vmapped training), for xattr's estimators.

  ``xattr.shapley.permutation``, ``xattr.banzhaf.msr`` and ``xattr.loo.leave_one_out`` then give Data Shapley,
  Data Banzhaf and leave-one-out values with players = training points.

  Example:
    >>> import numpy as np
    >>> from xattr import loo
    >>> x = np.eye(3, dtype=np.float32); y = np.array([1.0, 2.0, 3.0], np.float32)
    >>> v = game(RidgeRegression.create(x, y, x, y))
    >>> loo.leave_one_out(v, 3).shape
    (3,)
  """
  metric = metric or METRICS[utility.task][0]
  if metric not in METRICS[utility.task]:
    raise ValueError(f"metric must be one of {METRICS[utility.task]} for a {utility.task} utility, got {metric!r}.")

  def v(masks: jax.Array) -> jax.Array:
    return jax.vmap(lambda m: value(utility, m.astype(jnp.float32))[metric])(masks)

  return v
