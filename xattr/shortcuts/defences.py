"""Defences a victim can train with: data augmentation (random crops, flips, Gaussian noise) and adversarial
training with l_inf PGD examples. Both are pure and jittable; the victims' loss (:mod:`xattr.shortcuts.victims`)
draws their keys from the model's ``nnx.Rngs``, so they are checkpointed and resumed with the training state.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from xattr.shortcuts import defences
  >>> x = jnp.zeros((2, 8, 8, 1)).at[:, 0, 0].set(1.0)
  >>> out = defences.augment(jax.random.key(0), x, crop_padding=0, flip=False, noise_std=0.0)
  >>> bool((out == x).all())
  True
  >>> d = defences.Defence("adversarial", adversarial_linf=8 / 255)
  >>> d.adversarial, d.augments
  (True, False)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

__all__ = ["Defence", "NONE", "augment", "pgd"]


@dataclasses.dataclass(frozen=True)
class Defence:
  """How a victim trains (hashable: part of the compiled loss).

  Attributes:
    name: the label in reports ('none', 'augment', 'adversarial', ...).
    crop_padding: random crops: pad by this many pixels (zeros) and crop back at a random offset; 0: none.
    flip: random horizontal flips.
    noise_std: Gaussian noise of this standard deviation (then clipped to [0, 1]); 0: none.
    adversarial_linf: > 0: train on l_inf PGD adversarial examples of this radius (error-maximising).
    adversarial_steps: PGD steps (step size ``2.5 * radius / steps``).
  """

  name: str = "none"
  crop_padding: int = 0
  flip: bool = False
  noise_std: float = 0.0
  adversarial_linf: float = 0.0
  adversarial_steps: int = 5

  def __post_init__(self):
    if self.crop_padding < 0 or self.noise_std < 0 or self.adversarial_linf < 0 or self.adversarial_steps < 1:
      raise ValueError(f"Defence {self.name!r}: crop_padding, noise_std and adversarial_linf must be >= 0 and "
                       f"adversarial_steps >= 1, got {dataclasses.asdict(self)}.")

  @property
  def augments(self) -> bool:
    return bool(self.crop_padding or self.flip or self.noise_std)

  @property
  def adversarial(self) -> bool:
    return self.adversarial_linf > 0


NONE = Defence()


def _crop(key: jax.Array, image: jax.Array, padding: int) -> jax.Array:
  h, w, _ = image.shape
  padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  top, left = jax.random.randint(key, (2,), 0, 2 * padding + 1)
  return jax.lax.dynamic_slice(padded, (top, left, 0), image.shape)


def augment(key: jax.Array, images: jax.Array, *, crop_padding: int = 4, flip: bool = True,
            noise_std: float = 0.0) -> jax.Array:
  """Random crops (zero padding), horizontal flips and Gaussian noise, independently per image; clipped to [0, 1].

  Args:
    key: PRNG key.
    images: float ``[B, H, W, C]``.
    crop_padding, flip, noise_std: see :class:`Defence`.
  """
  k_crop, k_flip, k_noise = jax.random.split(key, 3)
  b = images.shape[0]
  if crop_padding:
    images = jax.vmap(_crop, (0, 0, None))(jax.random.split(k_crop, b), images, int(crop_padding))
  if flip:
    do = jax.random.bernoulli(k_flip, 0.5, (b, 1, 1, 1))
    images = jnp.where(do, images[:, :, ::-1], images)
  if noise_std:
    images = images + noise_std * jax.random.normal(k_noise, images.shape, images.dtype)
  return jnp.clip(images, 0.0, 1.0)


def pgd(key: jax.Array, logit_fn: Callable[[jax.Array], jax.Array], images: jax.Array, labels: jax.Array, *,
        linf: float, steps: int = 5, step_size: float | None = None) -> jax.Array:
  """l_inf PGD adversarial examples (random start, signed ascent on the cross-entropy), clipped to [0, 1].

  Example:
    >>> f = lambda x: jnp.stack([x.sum((1, 2, 3)), -x.sum((1, 2, 3))], -1)
    >>> adv = pgd(jax.random.key(0), f, jnp.full((1, 2, 2, 1), 0.5), jnp.array([0]), linf=0.1)
    >>> bool(jnp.allclose(adv, 0.4))
    True
  """
  step_size = 2.5 * linf / steps if step_size is None else step_size

  def loss(x):
    return optax.softmax_cross_entropy_with_integer_labels(logit_fn(x), labels).sum()

  x = jnp.clip(images + jax.random.uniform(key, images.shape, images.dtype, -linf, linf), 0.0, 1.0)
  for _ in range(int(steps)):
    x = x + step_size * jnp.sign(jax.grad(loss)(x))
    x = jnp.clip(jnp.clip(x, images - linf, images + linf), 0.0, 1.0)
  return jax.lax.stop_gradient(x)
