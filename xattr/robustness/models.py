"""The models of the robustness experiments: MLPs trained plain, with weight decay or spectrally normalised, and
masked surrogates; their layers as plain arrays for the Lipschitz and difference bounds.

* Weight decay: AdamW's decoupled decay (``weight_decay`` of the optimizer section, :func:`xattr.training.optimizer`).
* Spectral normalisation: :class:`SpectralMLP` divides each kernel by max(1, sigma_max(W) / cap) in the forward
  pass (sigma by SVD, differentiated through), so every layer of the *trained* model is cap-Lipschitz and the
  network's Lipschitz constant is at most cap^layers (times the activation's): a hard constraint, not a penalty.

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from xattr.robustness import models
  >>> net = models.SpectralMLP(3, (8,), 2, cap=0.5, rngs=nnx.Rngs(0))
  >>> ks, bs = models.layers(net)
  >>> [round(float(jnp.linalg.svd(k, compute_uv=False)[0]), 3) <= 0.5 for k in ks]
  [True, True]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from xattr import masks, models, training
from xattr.selection import predictor

__all__ = ["KINDS", "SpectralMLP", "layers", "build", "train_classifier", "train_surrogate", "surrogate_layers"]

KINDS = ("plain", "weight_decay", "spectral")


def _normalised(kernel: jax.Array, cap: float) -> jax.Array:
  sigma = jnp.linalg.svd(kernel, compute_uv=False)[0]
  return kernel / jnp.maximum(1.0, sigma / cap)


class SpectralMLP(models.MLP):
  """An :class:`xattr.models.MLP` whose every layer's kernel is rescaled to spectral norm <= ``cap``.

  Args:
    in_features, hidden_sizes, out_features, activation, rngs: as for :class:`xattr.models.MLP`.
    cap: the largest spectral norm of a layer.
  """

  def __init__(self, in_features: int, hidden_sizes: Sequence[int], out_features: int, *, cap: float = 1.0,
               activation: str | Callable[[jax.Array], jax.Array] = "relu", rngs: nnx.Rngs):
    super().__init__(in_features, hidden_sizes, out_features, activation=activation, rngs=rngs)
    if not cap > 0:
      raise ValueError(f"cap must be > 0, got {cap}.")
    self.cap = float(cap)

  def __call__(self, x: jax.Array) -> jax.Array:
    *hidden, last = self.layers
    for layer in hidden:
      x = self.activation(x @ _normalised(layer.kernel[...], self.cap) + layer.bias[...])
    return x @ _normalised(last.kernel[...], self.cap) + last.bias[...]


def layers(model: models.MLP) -> tuple[list[jax.Array], list[jax.Array]]:
  """The (kernels, biases) the model really applies (for :class:`SpectralMLP`: the normalised kernels)."""
  cap = getattr(model, "cap", None)
  kernels = [layer.kernel[...] for layer in model.layers]
  if cap is not None:
    kernels = [_normalised(k, cap) for k in kernels]
  return kernels, [layer.bias[...] for layer in model.layers]


def build(kind: str, num_features: int, num_classes: int, section: Any, seed: int) -> models.MLP:
  """The MLP of ``kind`` ('plain', 'weight_decay': an MLP; 'spectral': :class:`SpectralMLP` with
  ``section.spectral_cap``), hidden sizes ``section.hidden_sizes``, initialised from ``seed``."""
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
  rngs = nnx.Rngs(seed)
  if kind == "spectral":
    return SpectralMLP(num_features, section.hidden_sizes, num_classes, cap=section.spectral_cap,
                       activation=section.activation, rngs=rngs)
  return models.MLP(num_features, section.hidden_sizes, num_classes, activation=section.activation, rngs=rngs)


class _WithRngs(nnx.Module):
  """A module plus the mask stream its training loss draws from (checkpointed with it)."""

  def __init__(self, module: nnx.Module, seed: int):
    self.module, self.rngs = module, nnx.Rngs(masks=seed)


def _ce_loss(m: nnx.Module, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
  logits = m(batch["x"])
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), {}


def train_classifier(kind: str, x: np.ndarray, y: np.ndarray, num_classes: int, section: Any, *, seed: int,
                     workdir: str | None, progress: bool = False) -> models.MLP:
  """Trains (or resumes, from ``workdir``) a classifier of ``kind`` with :func:`xattr.training.train`.

  ``section``: hidden_sizes, activation, spectral_cap, num_steps, batch_size, learning_rate and ``weight_decay``
  (used for kind 'weight_decay' only; the others train with none).
  """
  model = build(kind, x.shape[1], num_classes, section, seed)
  decay = section.weight_decay if kind == "weight_decay" else 0.0
  tx = training.optimizer(dict(learning_rate=section.learning_rate, weight_decay=decay))
  training.train(model, _ce_loss, {"x": x, "y": y}, optimizer=tx, num_steps=section.num_steps,
                 batch_size=min(section.batch_size, len(x)), seed=seed, workdir=workdir, progress=progress,
                 desc=f"train {kind}", mesh=None)
  return model


def train_surrogate(targets: np.ndarray, x: np.ndarray, groups: np.ndarray | None, section: Any, *, seed: int,
                    workdir: str | None, progress: bool = False) -> predictor.MaskedMLP:
  """A masked MLP s(x * m, m) fitted by least squares to the scalar model outputs ``targets`` float[n] under
  uniform-cardinality player masks: it estimates E[f(X) | x_S] from the data alone (conditional removal)."""
  d = x.shape[1]
  net = predictor.MaskedMLP(d, 1, section.hidden_sizes, groups=groups, activation=section.activation,
                            rngs=nnx.Rngs(seed))
  players = d if groups is None else np.asarray(groups).shape[0]
  wrapper = _WithRngs(net, seed + 1)

  def loss_fn(w, batch):
    z = masks.uniform_cardinality(w.rngs.masks(), players, batch["x"].shape[0], paired=False)
    return jnp.mean((w.module(batch["x"], z)[:, 0] - batch["t"]) ** 2), {}

  tx = training.optimizer(dict(learning_rate=section.learning_rate))
  training.train(wrapper, loss_fn, {"x": x, "t": np.asarray(targets, np.float32)}, optimizer=tx,
                 num_steps=section.surrogate_steps, batch_size=min(section.batch_size, len(x)), seed=seed,
                 workdir=workdir, progress=progress, desc="surrogate", mesh=None)
  return wrapper.module


def surrogate_layers(net: predictor.MaskedMLP) -> list[jax.Array]:
  """Kernels bounding the surrogate's Lipschitz constant in x: the first layer's rows that multiply x * m
  (|x * m - x' * m| <= |x - x'|), then the others."""
  kernels = [layer.kernel[...] for layer in net.mlp.layers]
  return [kernels[0][:net.num_features], *kernels[1:]]


def checkpoint_dir(workdir: str | None, name: str) -> str | None:
  """``workdir/name`` or None."""
  return None if workdir is None else os.path.join(workdir, name)
