"""Amortized data valuation: networks that map a point's features to its value, trained on noisy samples.

Per-point estimators see only that point's few samples. A network shared by all points pools them: points
with similar features have similar values, so it can average noise across points (amortization). Two models:

* :func:`fit_scaling_network` — predicts the individualized scaling law of a point,
  (sign, log|c|, log alpha, log sigma, log beta), and is trained by the Gaussian negative log-likelihood of the
  samples (z, k, Delta) under Delta | k ~ N(c k^-alpha, sigma^2 k^-beta). The sign is relaxed to tanh(s) so
  that the likelihood is differentiable in it: c = tanh(s) exp(log|c|).
* :func:`fit_value_network` — stochastic amortization: plain regression of a scalar value onto noisy unbiased
  labels (single marginal contributions of distributional samples, or one TMC ordering's contributions). If the
  labels are unbiased the regression optimum is the true value function; the label noise only slows SGD.

Both train with :func:`xattr.training.train` (Orbax checkpoints in ``workdir``, so a killed run resumes) on
scaled targets (Delta / scale, k / k_ref), stop early on held-out samples (a network fed a few noisy samples
per point would otherwise memorise their noise), and return predictions in the original units for every point.

Example:
  >>> import numpy as np
  >>> from xattr.valuation import amortized
  >>> rng = np.random.default_rng(0)
  >>> feats = rng.normal(size=(50, 2)).astype(np.float32)
  >>> points = np.repeat(np.arange(50), 4); labels = feats[points, 0] + rng.normal(size=200)
  >>> pred = amortized.fit_value_network(feats, points, labels, num_steps=300, progress=False)
  >>> bool(np.corrcoef(pred, feats[:, 0])[0, 1] > 0.8)
  True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from xattr import _checks, artifacts, training
from xattr.models import MLP
from xattr.valuation import scaling

__all__ = ["ScalingHeads", "scaling_heads", "scaling_nll", "fit_scaling_network", "fit_value_network"]


class ScalingHeads(NamedTuple):
  """The scaling network's outputs in scaled units: mean = c (k/k_ref)^-alpha, var = sigma^2 (k/k_ref)^-beta."""

  c: jax.Array
  alpha: jax.Array
  sigma: jax.Array
  beta: jax.Array


def scaling_heads(raw: jax.Array) -> ScalingHeads:
  """Maps raw outputs [..., 5] = (sign, log|c|, log alpha, log sigma, log beta) to the law's parameters.

  Example:
    >>> h = scaling_heads(jnp.array([[20.0, 0.0, 0.0, 0.0, jnp.log(2.0)]]))
    >>> [round(float(v[0]), 3) for v in h]
    [1.0, 1.0, 1.0, 2.0]
  """
  return ScalingHeads(jnp.tanh(raw[..., 0]) * jnp.exp(raw[..., 1]), jnp.exp(raw[..., 2]), jnp.exp(raw[..., 3]),
                      jnp.exp(raw[..., 4]))


def scaling_nll(raw: jax.Array, log_k: jax.Array, delta: jax.Array) -> jax.Array:
  """Per-sample Gaussian NLL of scaled Delta at scaled log k under the network outputs ``raw`` [..., 5].

  Example:
    >>> raw = jnp.array([[20.0, 0.0, 0.0, 0.0, 0.0]])          # c = 1, alpha = 1, sigma = 1, beta = 1
    >>> float(scaling_nll(raw, jnp.zeros(1), jnp.ones(1))[0])   # Delta exactly at the mean, unit variance
    0.0
  """
  h = scaling_heads(raw)
  mean = h.c * jnp.exp(-h.alpha * log_k)
  log_var = 2 * raw[..., 3] - h.beta * log_k
  return scaling.gaussian_nll(delta, mean, log_var)


def _check(features, points, name, values):
  features = np.asarray(features, np.float32)
  points = np.asarray(points)
  values = np.asarray(values, np.float32)
  if features.ndim != 2:
    raise ValueError(f"features must be float[num_points, num_features], got shape {features.shape}.")
  if points.ndim != 1 or values.shape != points.shape or points.size == 0:
    raise ValueError(f"points and {name} must be 1-D of one non-zero length, got shapes {points.shape} and "
                     f"{values.shape}.")
  if points.min() < 0 or points.max() >= features.shape[0]:
    raise ValueError(f"points must index the rows of features [0, {features.shape[0]}), got values in "
                     f"[{points.min()}, {points.max()}].")
  _checks.finite(name, values)
  _checks.finite("features", features)
  return features, points.astype(np.int32), values


def _predict(model: nnx.Module, features: np.ndarray) -> np.ndarray:
  # Eager: a handful of small ops, cheaper than compiling a new program for every trained network.
  return np.asarray(model(jnp.asarray(features)))


def fit_scaling_network(features, points, sizes, deltas, *, hidden_sizes: Sequence[int] = (64, 64),
                        num_steps: int = 2000, batch_size: int = 256, learning_rate: float = 2e-3,
                        weight_decay: float = 1e-4, k_ref: float | None = None, variance_weighting: float = 0.5,
                        holdout_fraction: float = 0.1,
                        eval_every: int = 50, seed: int = 0, workdir: str | os.PathLike | None = None,
                        progress: bool = True) -> scaling.ScalingFit:
  """Trains the amortized scaling-law network on samples (point, k, Delta) by Gaussian NLL.

  Args:
    features: float[P, f] one row per point (e.g. standardized x with a one-hot label).
    points: int[N] which point each sample values.
    sizes: int/float[N] dataset size k of each sample.
    deltas: float[N] marginal contributions.
    hidden_sizes, num_steps, batch_size, learning_rate, weight_decay, seed: network and optimiser (AdamW with
      cosine decay).
    k_ref: scaled sizes are k / k_ref (default: geometric mean of ``sizes``).
    variance_weighting: power p of the beta-NLL weights var^p (0: plain Gaussian NLL; 0.5 is the usual choice;
      1 gives the mean least-squares gradients).
    holdout_fraction: samples held out for early stopping: the network ends at the evaluated step with the
      lowest held-out loss (0: train on everything, keep the last step).
    eval_every: steps between held-out evaluations.
    workdir: checkpoint directory for :func:`xattr.training.train` (resumable); None: no checkpoints.
    progress: progress bar.

  Returns:
    :class:`xattr.valuation.scaling.ScalingFit` for every point (arrays [P], original units; nll is each point's
    mean NLL over its samples, NaN for points without samples).
  """
  features, points, deltas = _check(features, points, "deltas", deltas)
  sizes = np.asarray(sizes, np.float32)
  if sizes.shape != points.shape or not np.all(sizes > 0):
    raise ValueError(f"sizes must be positive with the shape of points {points.shape}, got shape {sizes.shape}.")
  k_ref = float(np.exp(np.log(sizes).mean())) if k_ref is None else float(k_ref)
  scale = float(np.sqrt(np.mean(deltas ** 2))) or 1.0
  log_k = np.log(sizes / k_ref).astype(np.float32)
  target = (deltas / scale).astype(np.float32)

  model = MLP(features.shape[1], tuple(hidden_sizes), 5, activation="gelu", rngs=nnx.Rngs(seed))
  # Start from a law that fits the pooled samples' scale: c ~ 0 with free sign, alpha = 1, beta = 2, and sigma
  # the pooled spread, so the first steps do not fight a wildly wrong variance.
  spread = float(np.sqrt(np.mean((target * np.exp(log_k)) ** 2)))
  last = model.layers[-1]
  last.kernel[...] = last.kernel[...] * 0.1
  last.bias[...] = jnp.array([0.0, np.log(0.3), 0.0, np.log(max(spread, 1e-6)), np.log(2.0)], jnp.float32)

  def loss_fn(m, batch):
    raw = m(batch["x"])
    nll = scaling_nll(raw, batch["log_k"], batch["delta"])
    if variance_weighting:
      # beta-NLL: weight each sample by its (stop-gradient) predicted variance^power, normalised. Plain NLL lets
      # the network explain a poorly fitted point by a large variance, which then shrinks that point's pull on
      # its mean; the weights keep the mean's gradient closer to least squares.
      log_var = jax.lax.stop_gradient(2 * raw[:, 3] - jnp.exp(raw[:, 4]) * batch["log_k"])
      w = jnp.exp(variance_weighting * (log_var - log_var.max()))
      return jnp.sum(w * nll) / jnp.sum(w), {}
    return nll.mean(), {}

  data = {"x": features[points], "log_k": log_k, "delta": target}
  _train_best_on_holdout(model, loss_fn, data, holdout_fraction=holdout_fraction, eval_every=eval_every,
                         seed=seed, workdir=workdir, desc="scaling network", progress=progress,
                         optimizer=_optimizer(learning_rate, weight_decay, num_steps), num_steps=num_steps,
                         batch_size=min(batch_size, len(points)), log_every=max(1, num_steps // 4))
  raw = jnp.asarray(_predict(model, features))
  c_s, alpha, sigma_s, beta = (np.asarray(v, np.float64) for v in scaling_heads(raw))
  per_sample = np.asarray(scaling_nll(raw[points], jnp.asarray(log_k), jnp.asarray(target)), np.float64)
  count = np.bincount(points, minlength=len(features))
  with np.errstate(invalid="ignore"):
    nll = np.bincount(points, per_sample, minlength=len(features)) / count + np.log(scale) + 0.5 * np.log(2 * np.pi)
  return scaling.ScalingFit(c_s * scale * k_ref ** alpha, alpha, sigma_s * scale * k_ref ** (beta / 2), beta, nll)


def fit_value_network(features, points, labels, *, hidden_sizes: Sequence[int] = (64, 64), num_steps: int = 2000,
                      batch_size: int = 256, learning_rate: float = 2e-3, weight_decay: float = 1e-4,
                      holdout_fraction: float = 0.1, eval_every: int = 50, seed: int = 0,
                      workdir: str | os.PathLike | None = None, progress: bool = True) -> np.ndarray:
  """Stochastic amortization: regresses a value network onto noisy unbiased per-sample labels (MSE).

  Args:
    features: float[P, f] one row per point.
    points: int[N] the point each label belongs to.
    labels: float[N] noisy labels (e.g. single marginal contributions).
    hidden_sizes, num_steps, batch_size, learning_rate, weight_decay, holdout_fraction, eval_every, seed, workdir,
      progress: as in :func:`fit_scaling_network`.

  Returns:
    float64[P] predicted values of every point (original units).
  """
  features, points, labels = _check(features, points, "labels", labels)
  scale = float(np.std(labels)) or 1.0
  shift = float(np.mean(labels))
  model = MLP(features.shape[1], tuple(hidden_sizes), 1, activation="gelu", rngs=nnx.Rngs(seed))

  def loss_fn(m, batch):
    return jnp.mean((m(batch["x"])[:, 0] - batch["y"]) ** 2), {}

  data = {"x": features[points], "y": ((labels - shift) / scale).astype(np.float32)}
  _train_best_on_holdout(model, loss_fn, data, holdout_fraction=holdout_fraction, eval_every=eval_every,
                         seed=seed, workdir=workdir, desc="value network", progress=progress,
                         optimizer=_optimizer(learning_rate, weight_decay, num_steps), num_steps=num_steps,
                         batch_size=min(batch_size, len(points)), log_every=max(1, num_steps // 4))
  return _predict(model, features)[:, 0].astype(np.float64) * scale + shift


def _train_best_on_holdout(model: nnx.Module, loss_fn, data: dict[str, np.ndarray], *, holdout_fraction: float,
                           eval_every: int, seed: int, workdir, desc: str, **train_kwargs) -> float:
  """Trains with :func:`xattr.training.train` on all but a random ``holdout_fraction`` of the samples and leaves
  ``model`` at the evaluated step with the lowest held-out loss (early stopping).

  With a handful of noisy samples per point a network can memorise each point's noise; the held-out samples of
  the same points show when that starts. The best state is kept in ``workdir/best_holdout.npz`` so a resumed
  run ends in the same place. Returns the best held-out loss (NaN without a holdout).
  """
  n = len(next(iter(data.values())))
  rng = np.random.default_rng([seed, 7])
  held = np.zeros(n, bool)
  if holdout_fraction > 0:
    held[rng.choice(n, max(1, int(round(holdout_fraction * n))), replace=False)] = True
  train_data = {k: v[~held] for k, v in data.items()}
  hold = {k: jnp.asarray(v[held]) for k, v in data.items()}
  state_def = jax.tree.structure(nnx.state(model))
  path = os.path.join(workdir, "best_holdout.npz") if workdir else None
  # The saved best state belongs to these samples, this split and this network only.
  shapes = [[list(np.shape(x)), str(x.dtype)] for x in jax.tree.leaves(nnx.state(model))]
  fp = artifacts.fingerprint("best_holdout", seed, holdout_fraction, eval_every, shapes, data=data, library=False)
  saved = artifacts.load(path, fp) if path else None
  best = {"loss": np.inf, "leaves": None}
  if saved is not None:
    best = {"loss": float(saved["loss"]), "leaves": [saved[f"leaf_{i}"] for i in range(int(saved["count"]))]}
  holdout_loss = jax.jit(lambda m, batch: loss_fn(m, batch)[0])

  def eval_fn(m, step):
    loss = float(holdout_loss(m, hold))
    if loss < best["loss"]:
      best.update(loss=loss, leaves=[np.asarray(x) for x in jax.tree.leaves(nnx.state(m))])
      if path:
        artifacts.save(path, {"loss": loss, "count": len(best["leaves"]),
                              **{f"leaf_{i}": x for i, x in enumerate(best["leaves"])}}, fp)
    return {"holdout_loss": loss}

  train_kwargs["batch_size"] = min(train_kwargs["batch_size"], int((~held).sum()))
  training.train(model, loss_fn, train_data, seed=seed, workdir=workdir, desc=desc,
                 eval_fn=eval_fn if held.any() else None, eval_every=eval_every, **train_kwargs)
  if held.any() and best["leaves"] is not None:
    nnx.update(model, jax.tree.unflatten(state_def, [jnp.asarray(x) for x in best["leaves"]]))
  return best["loss"] if held.any() else float("nan")


def _optimizer(learning_rate: float, weight_decay: float, num_steps: int) -> optax.GradientTransformation:
  schedule = optax.cosine_decay_schedule(learning_rate, max(int(num_steps), 1), alpha=0.05)
  return optax.adamw(schedule, weight_decay=weight_decay)
