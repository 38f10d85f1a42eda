"""Victim models (a small CNN, an MLP, xattr's ViT) and their training through the shared ``training.train`` loop.

A :class:`Victim` holds the network and an ``nnx.Rngs`` from which its loss draws augmentation and adversarial
keys, so the randomness of a defence is part of the checkpointed state: a killed run resumes bitwise.

Example:
  >>> import numpy as np
  >>> from flax import nnx
  >>> from xattr.shortcuts import victims
  >>> model = victims.build("cnn", (32, 32, 1), 10, seed=0)
  >>> model(np.zeros((2, 32, 32, 1), np.float32)).shape
  (2, 10)
  >>> sorted(victims.KINDS)
  ['cnn', 'mlp', 'vit']
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from xattr import training
from xattr.models import mlp as mlp_lib
from xattr.models import vit as vit_lib
from xattr.shortcuts.defences import NONE, Defence, augment, pgd

__all__ = ["KINDS", "CNN", "MLPNet", "Victim", "build", "loss_fn", "train", "accuracy", "predict", "logit_fn"]

KINDS = ("cnn", "mlp", "vit")


class CNN(nnx.Module):
  """A small convolutional network: ``[conv 3x3 -> ReLU -> 2x2 max-pool] x len(channels)``, a dense hidden layer,
  logits. Flattened (not globally pooled) features, so it can use *where* a pattern is."""

  def __init__(self, image_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (8, 16),
               hidden: int = 64, *, rngs: nnx.Rngs):
    h, w, c = (int(s) for s in image_shape)
    sizes = [c, *map(int, channels)]
    self.convs = nnx.List([nnx.Conv(a, b, (3, 3), padding="SAME", rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
    flat = (h >> len(channels)) * (w >> len(channels)) * sizes[-1]
    self.hidden = nnx.Linear(flat, int(hidden), rngs=rngs)
    self.out = nnx.Linear(int(hidden), int(num_classes), rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    for conv in self.convs:
      x = nnx.max_pool(jax.nn.relu(conv(x)), (2, 2), (2, 2))
    return self.out(jax.nn.relu(self.hidden(x.reshape(x.shape[0], -1))))


class MLPNet(nnx.Module):
  """xattr's :class:`~xattr.models.MLP` on flattened images."""

  def __init__(self, image_shape: Sequence[int], num_classes: int, hidden_sizes: Sequence[int] = (256, 256), *,
               rngs: nnx.Rngs):
    self.mlp = mlp_lib.MLP(int(np.prod(image_shape)), tuple(hidden_sizes), int(num_classes), rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.mlp(x.reshape(x.shape[0], -1))


class Victim(nnx.Module):
  """A network plus the ``nnx.Rngs`` its defences draw from; calling it gives logits."""

  def __init__(self, net: nnx.Module, seed: int):
    self.net = net
    self.rngs = nnx.Rngs(defence=seed)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.net(x)


def build(kind: str, image_shape: Sequence[int], num_classes: int, *, seed: int, cnn_channels: Sequence[int] = (8, 16),
          cnn_hidden: int = 64, mlp_hidden: Sequence[int] = (256, 256), vit: str = "nano/8",
          vit_overrides: dict[str, Any] | None = None) -> Victim:
  """A fresh victim network of ``kind`` ('cnn', 'mlp' or 'vit' with an xattr ViT size name like ``'mu/8'``)."""
  rngs = nnx.Rngs(seed)
  if kind == "cnn":
    net: nnx.Module = CNN(image_shape, num_classes, cnn_channels, cnn_hidden, rngs=rngs)
  elif kind == "mlp":
    net = MLPNet(image_shape, num_classes, mlp_hidden, rngs=rngs)
  elif kind == "vit":
    h, w, c = image_shape
    cfg = vit_lib.config(vit, image_size=(int(h), int(w)), num_channels=int(c), num_classes=int(num_classes),
                         **dict(vit_overrides or {}))
    net = vit_lib.ViT(cfg, rngs=rngs)
  else:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
  return Victim(net, seed + 1)


def logit_fn(model: nnx.Module) -> Callable[[jax.Array], jax.Array]:
  """``images -> logits`` of a (copied) model, as a pure function for jit and the attribution games."""
  graphdef, state = nnx.split(model)
  return lambda x: nnx.merge(graphdef, state)(x)


@functools.lru_cache(maxsize=32)
def _apply_jit(graphdef: nnx.GraphDef) -> Callable:
  return jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))


def predict(model: nnx.Module, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
  """Logits ``[N, classes]`` of ``model`` on host images, in fixed-size batches (one compile per model structure)."""
  graphdef, state = nnx.split(model)
  apply = _apply_jit(graphdef)
  images = np.asarray(images, np.float32)
  out = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    pad = batch_size - len(chunk)
    padded = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)]) if pad else chunk
    out.append(np.asarray(apply(state, padded))[:len(chunk)])
  return np.concatenate(out)


@functools.lru_cache(maxsize=32)
def loss_fn(defence: Defence = NONE) -> Callable[[Victim, Any], tuple[jax.Array, dict[str, jax.Array]]]:
  """The victim's training loss (cross-entropy) under ``defence``; the same object for the same defence, so
  ``training.train`` reuses its compiled step."""

  def loss(model: Victim, batch: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    x, y = batch["x"], batch["y"]
    if defence.augments:
      x = augment(model.rngs.defence(), x, crop_padding=defence.crop_padding, flip=defence.flip,
                  noise_std=defence.noise_std)
    if defence.adversarial:
      graphdef, state = nnx.split(model.net)
      frozen = jax.lax.stop_gradient(state)
      x = pgd(model.rngs.defence(), lambda z: nnx.merge(graphdef, frozen)(z), x, y,
              linf=defence.adversarial_linf, steps=defence.adversarial_steps)
    logits = model(x)
    value = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return value, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}

  return loss


def train(model: Victim, images: np.ndarray, labels: np.ndarray, *, section: Any, defence: Defence = NONE,
          seed: int = 0, workdir: str | os.PathLike | None = None, progress: bool = False,
          stop_at: int | None = None, mesh: Any = "auto") -> training.TrainResult:
  """Trains ``model`` in place on ``(images, labels)`` with ``training.train`` (data-parallel over every device).

  ``section`` holds ``num_steps``, ``batch_size`` and the optimizer fields of :func:`xattr.training.optimizer`
  (and optionally ``checkpoint_every``).
  """
  steps = int(section.num_steps)
  data = {"x": np.asarray(images, np.float32), "y": np.asarray(labels, np.int32)}
  return training.train(model, loss_fn(defence), data,
                        optimizer=training.optimizer(section, num_steps=steps), num_steps=steps,
                        batch_size=int(section.batch_size), seed=seed,
                        workdir=None if workdir is None else os.fspath(workdir),
                        checkpoint_every=section.get("checkpoint_every", None), eval_fn=None, log_every=max(steps, 1),
                        stop_at=stop_at, progress=progress, desc=f"victim[{defence.name}]", mesh=mesh)


def accuracy(model: nnx.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 512) -> float:
  """Top-1 accuracy of ``model`` on ``(images, labels)``."""
  if not len(labels):
    return float("nan")
  logits = predict(model, images, min(batch_size, len(labels)))
  return float(np.mean(np.argmax(logits, -1) == np.asarray(labels)))
