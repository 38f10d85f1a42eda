"""The amortization study's data, model and game: a standardized tabular split, the MLP being explained, an
optional masked-MLP surrogate, and the removal game the estimators and amortized explainers share.

Example:
  >>> import ml_collections
  >>> from xattr.amortization import tabular
  >>> config = ml_collections.ConfigDict(dict(source="embedded", seed=0, test_fraction=0.2))
  >>> ds = tabular.load_tabular(config, "wine")
  >>> ds.x_train.shape, tabular.num_outputs(ds), tabular.output_names(ds)
  ((142, 13), 3, ('class_0', 'class_1', 'class_2'))
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from xattr import amortize, data, games, masks, training
from xattr.models import rowwise

__all__ = ["num_outputs", "output_names", "split_source", "load_tabular", "WithRngs", "train_model",
           "train_surrogate", "Game", "build_game", "game_of_x", "grand_null"]


def num_outputs(ds: data.Dataset) -> int:
  """Model outputs: one per class, or a single prediction for regression."""
  return ds.num_classes or 1


def output_names(ds: data.Dataset) -> tuple[str, ...]:
  """Names of the model outputs (saved with explainers): the class names, or ``('prediction',)``."""
  return ds.class_names or ("prediction",)


def split_source(src: data.Source, seed: int, test_fraction: float) -> data.Dataset:
  """A classification :class:`xattr.data.Dataset` from a vector source: a seeded train/test split, features
  standardized with the training split's mean and scale.

  Example:
    >>> src = data.from_arrays("toy", np.arange(20.0).reshape(10, 2), np.arange(10) % 2)
    >>> ds = split_source(src, seed=0, test_fraction=0.2)
    >>> ds.x_train.shape, ds.x_test.shape, bool(abs(ds.x_train.mean(0)).max() < 1e-5)
    ((8, 2), (2, 2), True)
  """
  x, y = src.read_all()
  x = np.asarray(x, np.float32).reshape(len(x), -1)
  n = len(x)
  order = np.random.default_rng(seed).permutation(n)
  cut = n - max(1, int(round(test_fraction * n)))
  tr, te = order[:cut], order[cut:]
  mean, scale = x[tr].mean(0), x[tr].std(0)
  scale = np.where(scale > 0, scale, 1.0)
  std = lambda a: ((a - mean) / scale).astype(np.float32)
  names = src.feature_names or tuple(f"x{i}" for i in range(x.shape[1]))
  return data.Dataset(src.name, "classification", std(x[tr]), y[tr], std(x[te]), y[te], tuple(names),
                      tuple(src.class_names), mean, scale)


def load_tabular(config: ml_collections.ConfigDict, dataset: str) -> data.Dataset:
  """``config.source='embedded'``: a bundled scikit-learn dataset (regression targets standardized too);
  ``'synthetic'``: :func:`xattr.data.synthetic.tabular` with ``config.synthetic`` (num_rows, num_features, rho);
  ``'tfds'``: the TFDS dataset of ``config.tfds`` (a vector feature and a class label, read from a prepared
  ``data_dir`` with :func:`xattr.data.from_tfds`)."""
  if config.source == "tfds":
    t = config.tfds
    if not t.name:
      raise ValueError("source='tfds' needs config.tfds.name (and config.tfds.data_dir), got name=None.")
    src = data.from_tfds(t.name, data_dir=t.data_dir, split=t.split, feature_key=t.feature_key,
                         label_key=t.label_key, flatten=True, max_examples=t.max_examples)
    return split_source(src, config.seed, config.test_fraction)
  if config.source == "synthetic":
    from xattr.data import synthetic    # imported on use, as the other generated datasets are

    g = config.synthetic
    src = synthetic.tabular(num_rows=g.num_rows, num_features=g.num_features, rho=g.rho, seed=config.seed)
    return split_source(src, config.seed, config.test_fraction)
  if config.source != "embedded":
    raise ValueError(f"config.source must be 'embedded', 'synthetic' or 'tfds', got {config.source!r}.")
  ds = data.load_embedded(dataset, seed=config.seed, test_fraction=config.test_fraction)
  if ds.task == "classification":
    return ds
  mu, sd = ds.y_train.mean(), ds.y_train.std()
  return dataclasses.replace(ds, y_train=(ds.y_train - mu) / sd, y_test=(ds.y_test - mu) / sd)


class WithRngs(nnx.Module):
  """A module plus the random stream its training loss draws masks from (checkpointed with it)."""

  def __init__(self, module: nnx.Module, seed: int):
    self.module = module
    self.rngs = nnx.Rngs(masks=seed)


def train_model(config: ml_collections.ConfigDict, ds: data.Dataset, workdir: str,
                ) -> tuple[nnx.Module, dict[str, Any], float]:
  """The MLP to explain (cross-entropy, or MSE on the standardized target), trained (or resumed) in
  ``workdir/model``; returns it, its spec and its held-out accuracy (R^2 for regression)."""
  m = config.model
  spec = dict(kind="mlp", in_features=ds.num_features, hidden_sizes=list(m.hidden_sizes), out_features=num_outputs(ds),
              activation=m.activation)
  model = amortize.build_module(spec, seed=config.seed)
  classification = ds.task == "classification"

  def loss_fn(net, batch):
    out = net(batch["x"])
    if classification:
      return optax.softmax_cross_entropy_with_integer_labels(out, batch["y"]).mean(), {}
    return jnp.mean((out[:, 0] - batch["y"]) ** 2), {}

  training.train(model, loss_fn, {"x": ds.x_train, "y": ds.y_train},
                 optimizer=training.optimizer(m, num_steps=m.num_steps, schedule="cosine"), num_steps=m.num_steps,
                 batch_size=min(m.batch_size, len(ds.x_train)), seed=config.seed,
                 workdir=os.path.join(workdir, "model"), progress=config.progress, desc=f"{ds.name}: model")
  out = np.asarray(model(jnp.asarray(ds.x_test)))
  metric = (float(np.mean(out.argmax(-1) == ds.y_test)) if classification
            else float(1 - np.mean((out[:, 0] - ds.y_test) ** 2) / np.var(ds.y_test)))
  return model, spec, metric


def train_surrogate(config: ml_collections.ConfigDict, ds: data.Dataset, model: nnx.Module, post: str,
                    workdir: str) -> tuple[nnx.Module, dict[str, Any]]:
  """Masked MLP on [x * m, m] matching the model under uniform-cardinality masks (KL; MSE for regression),
  trained (or resumed) in ``workdir/surrogate``."""
  s = config.surrogate
  d, k = ds.num_features, num_outputs(ds)
  spec = dict(kind="masked_mlp", num_features=d, out_features=k, hidden_sizes=list(s.hidden_sizes),
              activation=config.model.activation)
  wrapper = WithRngs(amortize.build_module(spec, seed=config.seed + 1), config.seed + 2)
  targets = np.asarray(model(jnp.asarray(ds.x_train)))
  if post == "softmax":
    targets = np.asarray(jax.nn.softmax(targets, -1))
  num_masks = s.num_masks

  def loss_fn(w, batch):
    b = batch["x"].shape[0]
    z = masks.uniform_cardinality(w.rngs.masks(), d, b * num_masks)
    out = w.module(jnp.repeat(batch["x"], num_masks, axis=0), z).reshape(b, num_masks, k)
    if post == "softmax":
      return amortize.surrogate_kl_loss(out, batch["target"][:, None, :]), {}
    return amortize.surrogate_mse_loss(out, batch["target"][:, None, :]), {}

  training.train(wrapper, loss_fn, {"x": ds.x_train, "target": targets},
                 optimizer=training.optimizer(s, num_steps=s.num_steps, schedule="cosine"), num_steps=s.num_steps,
                 batch_size=min(s.batch_size, len(ds.x_train)), seed=config.seed + 1,
                 workdir=os.path.join(workdir, "surrogate"), progress=config.progress, desc=f"{ds.name}: surrogate")
  return wrapper.module, spec


@dataclasses.dataclass
class Game:
  """The explained game: its saved form (spec, model) and the functions the estimators and losses call.

  Attributes:
    spec: the game's spec for :func:`xattr.amortize.save` (removal, reference, postprocess).
    model: the module the game evaluates (the model, or its surrogate).
    model_spec: that module's spec (:func:`xattr.amortize.build_module`).
    value_fn: ``(x float[B, d], mask bool[B, d]) -> float[B, k]``.
    game_of_x: ``x float[d] -> game`` (``bool[n, d] -> float[n, k]``) for the per-example estimators.
  """

  spec: dict[str, Any]
  model: nnx.Module
  model_spec: dict[str, Any]
  value_fn: Callable[[jax.Array, jax.Array], jax.Array]
  game_of_x: Callable[[jax.Array], Callable[[jax.Array], jax.Array]]


def build_game(config: ml_collections.ConfigDict, ds: data.Dataset, workdir: str) -> tuple[Game, float]:
  """Trains the model (and surrogate, ``config.removal='surrogate'``) and returns the game with the model's
  held-out accuracy / R^2."""
  model, model_spec, metric = train_model(config, ds, workdir)
  post = "softmax" if ds.task == "classification" else "identity"
  if config.removal == "baseline":
    # Standardized features: the training mean is 0, so 'held out' = replaced by the mean.
    spec = dict(removal="baseline", reference=[0.0] * ds.num_features, postprocess=post)
  elif config.removal == "surrogate":
    model, model_spec = train_surrogate(config, ds, model, post, workdir)
    spec = dict(removal="surrogate", postprocess=post)
  else:
    raise ValueError(f"config.removal must be 'baseline' or 'surrogate', got {config.removal!r}.")
  value_fn = amortize.masked_value_fn(spec, model)
  return Game(spec, model, model_spec, value_fn, game_of_x(value_fn, ds.num_features)), metric


def game_of_x(value_fn: Callable[[jax.Array, jax.Array], jax.Array], num_features: int
              ) -> Callable[[jax.Array], Callable[[jax.Array], jax.Array]]:
  """``x -> game`` of a masked value function ``(x float[B, d], mask bool[B, d]) -> float[B, k]``, written so that
  ``vmap`` over inputs folds into one 2-D matmul batch (several times faster on CPU than batched matmuls).

  Example:
    >>> value_fn = lambda x, m: jnp.where(m, x, 0.0).sum(-1, keepdims=True)
    >>> game = game_of_x(value_fn, 3)(jnp.array([1.0, 2.0, 3.0]))
    >>> game(jnp.array([[True, False, True]])).tolist()
    [[4.0]]
  """
  d = num_features
  folded = rowwise(lambda xm: value_fn(xm[:, :d], xm[:, d:] > 0.5))
  masked = lambda xb, m: folded(jnp.concatenate([xb, m.astype(xb.dtype)], axis=-1))
  return lambda x: games.surrogate(masked, x)


def grand_null(game: Game, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The game's grand values ``v_x(1)`` for every row of ``x`` (float[n, k]) and its null value (float[k]: the
  same for every input under baseline or surrogate removal)."""
  xj = jnp.asarray(x)
  ones = jnp.ones(xj.shape, bool)
  return np.asarray(game.value_fn(xj, ones)), np.asarray(game.value_fn(xj[:1], ~ones[:1]))[0]
