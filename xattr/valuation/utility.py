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

from xattr import _checks, linalg
from xattr.models import mlp as mlp_lib

__all__ = ["Utility", "LogisticRegression", "LogisticFit", "MLPClassifier", "RidgeRegression", "value",
           "contribution", "contributions", "game", "METRICS"]

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
  """[..., T] upper-triangle entries -> symmetric [..., dim, dim] (one gather: XLA:CPU scatters are slow)."""
  iu, ju = np.triu_indices(dim)
  index = np.zeros((dim, dim), np.int32)
  index[iu, ju] = index[ju, iu] = np.arange(len(iu))
  return tri[..., index]


def _cho_solve(chol: jax.Array, b: jax.Array) -> jax.Array:
  """x with (L L^T) x = b for one lower Cholesky factor L [m, m] and b [m] or [m, r]."""
  return jax.scipy.linalg.cho_solve((chol, True), b)


def _with_point(weights: jax.Array, index: jax.Array) -> jax.Array:
  """0/1 weights of D u {index}: a max with a one-hot, not a scatter (XLA:CPU runs scatters slowly under vmap)."""
  return jnp.maximum(weights, jax.nn.one_hot(index, weights.shape[-1], dtype=weights.dtype))


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
  weights: the subset it was fitted on; decrement: the Newton decrement g^T H^-1 g (about twice the objective
  left to gain) before the solver's last step, which ranks the fits that need more steps."""

  params: jax.Array
  chol: jax.Array
  weights: jax.Array
  decrement: jax.Array


@functools.partial(_register, data=("x", "y", "x_val", "y_val", "outer", "init", "path_sizes", "path_params",
                                    "path_hinv"))
@dataclasses.dataclass(frozen=True)
class LogisticRegression:
  """L2-regularised logistic regression on subsets of a training pool; utility = validation neg. CE / accuracy.

  Minimises ``sum_i w_i CE_i + l2/2 ||W||^2 + l2_intercept/2 ||b||^2`` over the rows with weight 1 — scikit-learn's
  ``LogisticRegression(C=1/l2)`` objective when ``l2_intercept=0``. Build with :meth:`create`.

  Attributes:
    x, y: the training pool, float32[n, d] and int32[n].
    x_val, y_val: the validation set the utility scores on.
    outer: float32[n, T] per-row upper-triangular outer products of [x, 1].
    init: float32[d + 1, c] the optimum on the whole pool.
    path_sizes: float32[G] subset sizes k, ascending (geometric up to n), of the size path.
    path_params: float32[G, d + 1, c] the size path: the optimum with every row weighted k / n, i.e. the
      expected objective of a subset of size k. A fit of D starts at the path point of |D| (interpolated in
      log k): the size's regularisation shift is the largest part of the way from the full-pool optimum.
    path_hinv: float32[G, m, m] inverse Hessians (m = c (d + 1)) at the path points: a subset's Hessian is close
      to its size's, so ``path_steps`` damped steps with it need no factorisation of the subset's own.
    num_classes: C >= 2.
    l2, l2_intercept: penalties.
    path_steps: damped steps with the size path's inverse Hessian at the start of each fit of D.
    newton_steps: Newton steps with a fresh Hessian; chord_steps: further steps reusing its factor.
    add_newton_steps, add_chord_steps: the same for :meth:`add`, from the fit of D to the fit of D u {z}.
    refine_steps: further Newton steps (and one chord step) for the fits that need them: always in
      :meth:`fit` / :meth:`add`; in the batched :meth:`contributions`, only for the ``refine_fraction`` of each
      batch whose Newton decrement is largest.
  """

  x: jax.Array
  y: jax.Array
  x_val: jax.Array
  y_val: jax.Array
  outer: jax.Array
  init: jax.Array
  path_sizes: jax.Array
  path_params: jax.Array
  path_hinv: jax.Array
  num_classes: int = 2
  l2: float = 1.0
  l2_intercept: float = 0.0
  path_steps: int = 5
  newton_steps: int = 2
  chord_steps: int = 1
  add_newton_steps: int = 1
  add_chord_steps: int = 1
  refine_steps: int = 4
  refine_fraction: float = 1 / 16

  task = "classification"

  @classmethod
  def create(cls, x_train, y_train, x_val, y_val, *, num_classes: int, l2: float = 1.0, l2_intercept: float = 0.0,
             path_steps: int = 5, newton_steps: int = 2, chord_steps: int = 1, add_newton_steps: int = 1,
             add_chord_steps: int = 1, refine_steps: int = 4, refine_fraction: float = 1 / 16, init_steps: int = 30,
             path_points: int = 16) -> LogisticRegression:
    """Validates the data, precomputes outer products and fits the size path used as warm start.

    Args:
      x_train, y_train: the pool (float[n, d], int class indices in [0, num_classes)).
      x_val, y_val: validation data the utility is measured on.
      num_classes: C >= 2 (binary problems use one sigmoid output).
      l2: penalty on the weights (= 1 / scikit-learn's C); must be > 0.
      l2_intercept: penalty on the intercept (0 = unpenalised, as scikit-learn's lbfgs/newton solvers).
      path_steps: damped steps with the size path's inverse Hessian that start each fit of D (no factorisation).
      newton_steps, chord_steps: damped Newton steps (fresh Hessian each) and chord steps (last Hessian factor
        reused) of :meth:`fit`, after the path steps.
      add_newton_steps, add_chord_steps: the same for :meth:`add` (warm start from the fit of D, after a first
        Newton step that reuses D's factor).
      refine_steps, refine_fraction: extra damped Newton steps for the fits that need them (see the class
        docstring): in the batched path, the ``refine_fraction`` of the batch with the largest Newton decrement
        g^T H^-1 g. Most subsets converge within the first steps; a few (an influential added point) need ~4
        more. With the defaults every one of 8192 breast-cancer pairs (|D| in [100, 400) of 455 rows) agrees with
        scikit-learn's newton-cholesky solver at tol 1e-8 to 1e-7 in Delta; more classes need more steps: wine
        (3 classes, noisy) 12 + 8, digits (10 classes, noisy) 10 + 4 — check against a long solve when changing
        data (the driver's ``solver_check`` does).
      init_steps: Newton steps for the full-pool optimum (from zero); each further path point starts from the
        previous one and takes a third as many.
      path_points: G, the sizes of the path (geometric from max(2, n / 100) to n).

    Returns:
      A :class:`LogisticRegression` (a pytree: pass it as an argument to jitted functions).
    """
    x, y, xv, yv = _check_pool(x_train, y_train, x_val, y_val, "classification", num_classes)
    if not l2 > 0 or l2_intercept < 0:
      raise ValueError(f"l2 must be > 0 and l2_intercept >= 0, got l2={l2}, l2_intercept={l2_intercept}.")
    for name, v in (("newton_steps", newton_steps), ("init_steps", init_steps), ("path_points", path_points)):
      _checks.positive_int(name, v)
    for name, v in (("path_steps", path_steps), ("chord_steps", chord_steps), ("add_newton_steps", add_newton_steps),
                    ("add_chord_steps", add_chord_steps), ("refine_steps", refine_steps)):
      _checks.positive_int(name, v, minimum=0)
    if not 0 < refine_fraction <= 1:
      raise ValueError(f"refine_fraction must be in (0, 1], got {refine_fraction}.")
    n, c = len(x), 1 if num_classes == 2 else num_classes
    sizes = np.unique(np.geomspace(min(n, max(2.0, n / 100)), n, path_points).astype(np.float32))
    outer = _upper_outer(np.concatenate([x, np.ones((n, 1), np.float32)], 1))
    zeros = jnp.zeros((x.shape[1] + 1, c), jnp.float32)
    u = cls(jnp.asarray(x), jnp.asarray(y), jnp.asarray(xv), jnp.asarray(yv), jnp.asarray(outer), zeros,
            # The path solve reads neither path field: empty placeholders until it fills them.
            jnp.asarray(sizes), jnp.zeros((0, *zeros.shape), jnp.float32), jnp.zeros((0, 0, 0), jnp.float32),
            int(num_classes), float(l2),
            float(l2_intercept), int(path_steps), int(newton_steps), int(chord_steps), int(add_newton_steps),
            int(add_chord_steps), int(refine_steps), float(refine_fraction))
    init, params, hessians = jax.jit(lambda v: v._size_path(int(init_steps)))(u)
    hinv = np.linalg.inv(np.asarray(hessians, np.float64)).astype(np.float32)
    return dataclasses.replace(u, init=init, path_params=params, path_hinv=jnp.asarray(hinv))

  def _size_path(self, init_steps: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(full-pool optimum, optima [G, d + 1, c] and Hessians [G, m, m] at the path sizes), from large to small
    sizes, each warm-started from the previous one."""
    n = self.num_points

    def solve(params, k, steps):
      weights = jnp.full(n, k / n, jnp.float32)
      params = self._solve(weights, params, steps, 0).params
      theta = self._to_theta(params)
      return params, self._hessian(self._logits_of(theta), weights)

    full, _ = solve(self.init, jnp.float32(n), init_steps)
    step = lambda params, k: (lambda out: (out[0], out))(solve(params, k, max(1, init_steps // 3)))
    _, (params, hessians) = jax.lax.scan(step, full, self.path_sizes[::-1])
    return full, params[::-1], hessians[::-1]

  # -- pieces of the objective ----------------------------------------------------------------------------------

  @property
  def _penalty(self) -> jax.Array:
    d = self.x.shape[1]
    return jnp.concatenate([jnp.full(d, self.l2, jnp.float32), jnp.full(1, self.l2_intercept, jnp.float32)])

  # The solver works on flat, class-major parameters theta [c * (d + 1)] (the Hessian's ordering) and logits of
  # shape [n] (binary) or [n, C]: under vmap, [n, 1] columns make XLA:CPU transpose every operand and run the
  # fused probability-times-residual reductions ~10x slower than on vectors (measured with jaxlib 0.10).

  def _to_theta(self, params: jax.Array) -> jax.Array:
    return params.T.reshape(-1)

  def _to_params(self, theta: jax.Array) -> jax.Array:
    return theta.reshape(-1, self.x.shape[1] + 1).T

  # The (batched) parameters and residuals go on the left of the pool's matrix: under vmap the batch axis then
  # leads the matmul's output, and XLA:CPU does not transpose a [n, B] result into [B, n] on every step.

  def _logits_of(self, theta: jax.Array) -> jax.Array:
    if self.num_classes == 2:
      return theta @ _augment(self.x).T
    return (self._to_params(theta).T @ _augment(self.x).T).T

  def _residuals(self, logits: jax.Array, weights: jax.Array) -> jax.Array:
    """Per-row gradient of the weighted loss with respect to the logits: [n] (binary) or [n, C]."""
    if self.num_classes == 2:
      return weights * (jax.nn.sigmoid(logits) - self.y)
    return weights[:, None] * (jax.nn.softmax(logits, -1) - jax.nn.one_hot(self.y, self.num_classes))

  def _gradient(self, theta, logits, weights) -> jax.Array:
    r = self._residuals(logits, weights)
    data = r @ _augment(self.x) if self.num_classes == 2 else (r.T @ _augment(self.x)).reshape(-1)
    return data + self._theta_penalty * theta

  @property
  def _theta_penalty(self) -> jax.Array:
    c = 1 if self.num_classes == 2 else self.num_classes
    return jnp.tile(self._penalty, c)

  def _hessian(self, logits, weights) -> jax.Array:
    d1 = self.x.shape[1] + 1
    if self.num_classes == 2:
      p = jax.nn.sigmoid(logits)
      # Penalty and jitter go onto the diagonal entries of the upper triangle, before the one gather.
      tri = (weights * p * (1 - p)) @ self.outer
      diag = np.cumsum(np.r_[0, np.arange(d1, 1, -1)])            # positions of (i, i) in the triangle
      scale = tri[diag].sum() / d1
      tri = tri.at[diag].add(self._penalty + 1e-6 * scale + 1e-6)
      return _symmetric_from_upper(tri, d1)
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
    # A relative jitter keeps float32 Cholesky away from breakdown when a class is (nearly) separable.
    return h + (1e-6 * (jnp.trace(h) / h.shape[0]) + 1e-6) * jnp.eye(h.shape[0], dtype=h.dtype)

  def _factor(self, logits, weights) -> jax.Array:
    return jnp.linalg.cholesky(self._hessian(logits, weights))

  def _step(self, theta, logits, g, direction, weights, damped: bool):
    """(theta, logits, gradient) after theta - t * direction.

    Damped (Newton steps from a far warm start): t = 1 unless the objective still rises along the direction
    at the full step (its slope there > 0), then the root of the secant through the slopes at t = 0 and 1,
    kept in [0.1, 1]. The slopes need one probability pass, no loss evaluation and no extra matmul (the logits
    are linear in t). Chord steps near the optimum take t = 1.
    """
    dlogits = self._logits_of(direction)
    if damped:
      slope0 = -jnp.dot(g, direction)
      slope1 = (-jnp.vdot(self._residuals(logits - dlogits, weights), dlogits)
                - jnp.dot(self._theta_penalty * (theta - direction), direction))
      t = jnp.where(slope1 <= 0, 1.0, jnp.clip(slope0 / jnp.minimum(slope0 - slope1, -1e-30), 0.1, 1.0))
    else:
      t = 1.0
    theta, logits = theta - t * direction, logits - t * dlogits
    return theta, logits, self._gradient(theta, logits, weights)

  # -- public ---------------------------------------------------------------------------------------------------

  def _solve(self, weights: jax.Array, params: jax.Array, newton_steps: int, chord_steps: int,
             first_direction: Callable[[jax.Array], jax.Array] | None = None, chol: jax.Array | None = None,
             first_steps: int = 1):
    """``newton_steps`` damped Newton steps (fresh Hessian factor each) then ``chord_steps`` reusing the last
    factor; ``first_direction`` (if given: gradient -> step, e.g. a known inverse Hessian's) makes the first
    ``first_steps`` damped steps instead."""
    theta = self._to_theta(params)
    logits = self._logits_of(theta)
    carry = (theta, logits, self._gradient(theta, logits, weights))
    if first_direction is not None:
      for _ in range(first_steps):          # unrolled: a few steps, and no LAPACK call inside a loop
        carry = self._step(*carry, first_direction(carry[2]), weights, True)

    def newton(state, _):
      carry, _ = state
      chol = self._factor(carry[1], weights)
      direction = _cho_solve(chol, carry[2])
      return (self._step(*carry, direction, weights, True), jnp.dot(carry[2], direction)), chol

    def chord(state, _):
      carry, _ = state
      direction = _cho_solve(chol, carry[2])
      return (self._step(*carry, direction, weights, False), jnp.dot(carry[2], direction)), None

    state = (carry, jnp.float32(jnp.inf))
    if newton_steps:
      state, chols = jax.lax.scan(newton, state, None, length=newton_steps)
      chol = chols[-1]
    (carry, decrement), _ = jax.lax.scan(chord, state, None, length=chord_steps)
    return LogisticFit(self._to_params(carry[0]), chol, weights, decrement)

  def _path_mix(self, size: jax.Array) -> jax.Array:
    """float[G]: the weights of the size path's points at subset size ``size`` (linear in log k between the two
    neighbours, clamped at the ends); one-hot products instead of a scatter, which XLA:CPU runs slowly."""
    g = self.path_sizes.shape[0]
    if g == 1:
      return jnp.ones(1, jnp.float32)
    logk, at = jnp.log(self.path_sizes), jnp.log(jnp.maximum(size, 1.0))
    j = jnp.clip(jnp.searchsorted(logk, at), 1, g - 1)
    a = jnp.clip((at - logk[j - 1]) / (logk[j] - logk[j - 1]), 0.0, 1.0)
    return (1 - a) * jax.nn.one_hot(j - 1, g) + a * jax.nn.one_hot(j, g)

  def _fit(self, weights: jax.Array, init: jax.Array | None = None) -> LogisticFit:
    weights = weights.astype(jnp.float32)
    mix = self._path_mix(weights.sum())
    start = jnp.tensordot(mix, self.path_params, 1) if init is None else init
    g, m = self.path_hinv.shape[:2]
    # Every path point's inverse Hessian times the gradient is one matmul under vmap; then the mix.
    path_direction = lambda grad: mix @ (self.path_hinv.reshape(g * m, m) @ grad).reshape(g, m)
    return self._solve(weights, start, self.newton_steps, self.chord_steps, path_direction,
                       first_steps=self.path_steps)

  def _add(self, fitted: LogisticFit, index: jax.Array) -> LogisticFit:
    weights = _with_point(fitted.weights, index)
    first = None
    if self.num_classes == 2:
      # D's last factor plus the new point's rank-one curvature (Sherman-Morrison) is the Hessian of D u {index}
      # at D's optimum: the first step is an exact Newton step without a new factorisation.
      xz = _augment(self.x)[index]
      p = jax.nn.sigmoid(xz @ fitted.params[:, 0])
      curvature = p * (1 - p)

      def first(g):
        # One solve with both right-hand sides: two independent LAPACK calls in one program can deadlock
        # XLA:CPU's thread pool (see xattr.linalg).
        h_inv_x, h_inv_g = _cho_solve(fitted.chol, jnp.stack([xz, g], 1)).T
        shrink = curvature / (1.0 + curvature * (xz @ h_inv_x))
        return h_inv_g - h_inv_x * (shrink * (xz @ h_inv_g))

    return self._solve(weights, fitted.params, self.add_newton_steps, self.add_chord_steps, first, fitted.chol)

  def _refine(self, fitted: LogisticFit) -> LogisticFit:
    return self._solve(fitted.weights, fitted.params, self.refine_steps, 1 if self.refine_steps else 0,
                       chol=fitted.chol)

  def _refine_stragglers(self, fits: LogisticFit) -> LogisticFit:
    """Refines the ``refine_fraction`` of a batch of fits (leading axis) with the largest Newton decrement.

    Static shapes: a fixed number of fits is gathered, refined under ``vmap`` and scattered back. On breast
    cancer ~2-3% of the solves need it (decrement > 1e-10 after the base steps), inside the default 1/16. A
    data-dependent loop over further passes would be safer for noisier data but puts batched LAPACK calls
    inside a ``while``, which hangs XLA:CPU (see :mod:`xattr.linalg`); the driver's ``solver_check`` compares
    samples with long solves instead.
    """
    if not self.refine_steps:
      return fits
    batch = fits.params.shape[0]
    k = min(batch, max(1, int(np.ceil(batch * self.refine_fraction))))
    _, worst = jax.lax.top_k(fits.decrement, k)
    better = jax.vmap(self._refine)(jax.tree.map(lambda a: a[worst], fits))
    return jax.tree.map(lambda a, b: a.at[worst].set(b), fits, better)

  def fit(self, weights: jax.Array, init: jax.Array | None = None) -> LogisticFit:
    """Fits the model on the rows with weight 1 (``weights``: float[n] of 0/1). Pure; vmap over ``weights``.

    Starts from ``init`` (default: the size path at |D|), takes ``path_steps`` damped steps with the path's
    inverse Hessian at |D|, then ``newton_steps`` damped Newton steps,
    ``chord_steps`` chord steps and ``refine_steps`` more Newton steps (see :meth:`contributions` for the batched
    path that refines only the subsets that need it).
    """
    return self._refine(self._fit(weights, init))

  def add(self, fitted: LogisticFit, index: jax.Array) -> LogisticFit:
    """The fit on D u {index}, warm-started from the fit on D.

    The first step is an exact Newton step for free (binary case): D's last Hessian factor plus the new point's
    rank-one curvature. Then ``add_newton_steps`` damped Newton steps with fresh factors, ``add_chord_steps``
    chord steps and ``refine_steps`` Newton steps: a few influential points (large loss, little curvature along
    their direction) move the optimum as far as a cold start would, and only fresh Hessians bring those back to
    float32 precision.
    """
    return self._refine(self._add(fitted, index))

  def contributions(self, weights: jax.Array, index: jax.Array) -> dict[str, jax.Array]:
    """Batched :func:`contribution`: weights float[B, n] (subsets D), index int[B] (the points added).

    The same solves as ``vmap(contribution)``, except that the ``refine_steps`` extra Newton steps go only to the
    ``refine_fraction`` of the fits (of D, then of D u {z}) with the largest Newton decrement: under ``vmap`` every
    subset pays for the slowest one, and the slow ones are a few percent. About 2x faster on breast cancer at the
    same precision.
    """
    base = self._refine_stragglers(jax.vmap(self._fit)(weights.astype(jnp.float32)))
    added = self._refine_stragglers(jax.vmap(self._add)(base, index))
    before, after = jax.vmap(self.score)(base), jax.vmap(self.score)(added)
    return {**{k: after[k] - before[k] for k in before}, **{f"base_{k}": v for k, v in before.items()}}

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
    return self.fit(_with_point(fitted.weights, index))

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
    # Plain XLA elimination, not LAPACK: U(D) and U(D u {z}) are independent solves in one program, and two
    # batched LAPACK calls at once can deadlock XLA:CPU's thread pool (see xattr.linalg).
    return RidgeFit(linalg.solve_psd(gram, rhs), weights)

  def add(self, fitted: RidgeFit, index: jax.Array) -> RidgeFit:
    return self.fit(_with_point(fitted.weights, index))

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


def contributions(utility: Utility, weights: jax.Array, index: jax.Array) -> dict[str, jax.Array]:
  """:func:`contribution` for a batch: weights float[B, n], index int[B] -> each metric's contributions [B].

  Utilities with a batched solver (:meth:`LogisticRegression.contributions`) use it; others are vmapped.

  Example:
    >>> import numpy as np
    >>> x = np.eye(4, dtype=np.float32); y = np.array([0.0, 1.0, 2.0, 3.0], np.float32)
    >>> u = RidgeRegression.create(x, y, x, y, l2=1e-3)
    >>> contributions(u, jnp.array([[1.0, 1.0, 1.0, 0.0]]), jnp.array([3]))["neg_mse"].shape
    (1,)
  """
  if hasattr(utility, "contributions"):
    return utility.contributions(weights, index)
  return jax.vmap(lambda w, i: contribution(utility, w, i))(weights, index)


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
