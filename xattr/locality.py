"""Locality alignment (MaskEmbed): post-training a ViT so that its patch tokens encode what is in their patch.

Backbones trained with image-level objectives (CLIP, SigLIP, classifiers) pool their patch tokens into one vector;
nothing forces token ``i`` to describe patch ``i``, and probes of individual tokens show poor patch-level semantics.
MaskEmbed (Covert et al., 2024, "Locality alignment improves vision-language models") fixes this without labels,
by self-distillation from the backbone itself under patch masking:

* Teacher ``h``: the frozen pre-trained ViT on the *pixel-masked* image ``m * x`` (patch mask upsampled to pixels,
  held-out pixels set to 0), read out at the penultimate block plus the final LayerNorm (the last block's patch
  tokens of a CLS-pooled model receive no training signal), all tokens, divided by a scalar scale estimated once
  so that the targets have unit variance.
* Student ``f``: a copy of the teacher, run ONCE per image on the full image; all its tokens are output.
* Decoder ``g``: learned position embedding + 2 transformer blocks + LayerNorm + linear, applied to the masked
  student tokens ``m * f(x)`` (held-out patch tokens and the prefix tokens zeroed).
* Loss: ``|| g(m * f(x)) - h(m * x) ||^2`` averaged over tokens and dimensions and over the masks of each image.

The loss can only be small if every patch token of ``f(x)`` carries the information that the teacher extracts
from that patch (and its interactions), because the decoder must reconstruct the teacher's view of any subset of
patches from the corresponding subset of tokens. Masks per image: one uniform-cardinality mask, its antithetic
complement and the all-ones mask (3 per image); the student's encoding is shared by the three, so a step costs
one student pass, three teacher passes (forward only) and three small decoder passes. Bernoulli and blockwise
masks are offered as ablations.

The objective is written as pure functions over callables (:func:`maskembed_loss`), so the identities it must
satisfy can be checked on toy encoders; :class:`MaskEmbed` binds them to a student/teacher
:class:`~xattr.models.vit.ViT` pair and a :class:`Decoder` for :func:`xattr.training.train`. A MIM-style
baseline (:func:`mim_loss`: masked patch pixel regression) and the patch-level evaluation (:class:`PatchProbe`,
:func:`macro_scores`) live here too.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from flax import nnx
  >>> from xattr import locality
  >>> from xattr.models import vit
  >>> teacher = vit.ViT(vit.config("nano/8", image_size=16, num_channels=1, num_classes=3), rngs=nnx.Rngs(0))
  >>> model = locality.MaskEmbed(teacher, rngs=nnx.Rngs(1))
  >>> loss, metrics = nnx.jit(lambda m, x, k: m.loss(x, k))(model, jnp.ones((2, 16, 16, 1)), jax.random.key(0))
  >>> loss.shape, sorted(metrics), model.num_masks
  ((), ['mse_full', 'mse_masked'], 3)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xattr import _checks
from xattr import masks as mask_lib
from xattr.models import vit

__all__ = [
    "SCHEMES", "blockwise", "sample_masks", "pixel_mask", "decoder_inputs", "teacher_targets", "maskembed_loss",
    "Decoder", "TargetScale", "MaskEmbed", "TRAINABLE", "target_scale", "mim_loss", "MIM", "PatchProbe",
    "macro_scores",
]

SCHEMES = ("uniform", "bernoulli", "blockwise")
Encoder = Callable[[jax.Array], jax.Array]


# ---------------------------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------------------------

def blockwise(key: jax.Array, grid: tuple[int, int], num_samples: int) -> jax.Array:
  """Rectangles of patches: uniform height and width in ``[1, side]``, uniform position; ``bool[n, gh * gw]``.

  Example:
    >>> z = blockwise(jax.random.key(0), (3, 4), 5)
    >>> z.shape, bool(z.any(1).all())
    ((5, 12), True)
  """
  gh, gw = grid
  u = jax.random.uniform(key, (4, num_samples))
  hh = 1 + jnp.floor(u[0] * gh).astype(jnp.int32)
  ww = 1 + jnp.floor(u[1] * gw).astype(jnp.int32)
  top = jnp.floor(u[2] * (gh - hh + 1)).astype(jnp.int32)
  left = jnp.floor(u[3] * (gw - ww + 1)).astype(jnp.int32)
  rows, cols = jnp.arange(gh)[None, :, None], jnp.arange(gw)[None, None, :]
  inside = ((rows >= top[:, None, None]) & (rows < (top + hh)[:, None, None])
            & (cols >= left[:, None, None]) & (cols < (left + ww)[:, None, None]))
  return inside.reshape(num_samples, gh * gw)


def sample_masks(key: jax.Array, grid: tuple[int, int], batch_size: int, *, scheme: str = "uniform",
                 antithetic: bool = True, include_full: bool = True) -> jax.Array:
  """MaskEmbed masks ``bool[batch_size, M, gh * gw]`` (True = patch kept), M = 1 + antithetic + include_full.

  Per image: one mask drawn by ``scheme`` ('uniform': uniform cardinality then a uniform subset; 'bernoulli':
  each patch kept with probability 1/2; 'blockwise': a random rectangle), then its complement (antithetic), then
  the all-ones mask. The complement makes every patch's token reconstruct the teacher somewhere in each pair.

  Example:
    >>> z = sample_masks(jax.random.key(0), (2, 2), 3)
    >>> z.shape, bool((z[:, 1] == ~z[:, 0]).all()), bool(z[:, 2].all())
    ((3, 3, 4), True, True)
  """
  if scheme not in SCHEMES:
    raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}.")
  gh, gw = grid
  n = _checks.positive_int("batch_size", batch_size)
  p = gh * gw
  if scheme == "uniform":
    base = mask_lib.uniform_cardinality(key, p, n)
  elif scheme == "bernoulli":
    base = mask_lib.bernoulli(key, p, n, p=0.5)
  else:
    base = blockwise(key, (gh, gw), n)
  parts = [base] + ([~base] if antithetic else []) + ([jnp.ones_like(base)] if include_full else [])
  return jnp.stack(parts, axis=1)


# ---------------------------------------------------------------------------------------------------------------
# The objective, as pure functions over encoders
# ---------------------------------------------------------------------------------------------------------------

def pixel_mask(images: jax.Array, masks: jax.Array, patch_size: int) -> jax.Array:
  """``images[B, H, W, C]`` and patch masks ``[B, M, P]`` -> ``[B * M, H, W, C]`` with held-out pixels 0.

  Example:
    >>> x = pixel_mask(jnp.ones((1, 4, 4, 1)), jnp.array([[[True, False, False, True]]]), 2)
    >>> x[0, ..., 0].astype(int).tolist()
    [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
  """
  b, h, w, c = images.shape
  m = masks.shape[1]
  pix = mask_lib.upsample_patches(masks, (h // patch_size, w // patch_size), patch_size)   # [B, M, H, W]
  out = images[:, None] * pix[..., None].astype(images.dtype)
  return out.reshape(b * m, h, w, c)


def decoder_inputs(tokens: jax.Array, masks: jax.Array, num_prefix: int) -> jax.Array:
  """Student tokens ``[B, T, D]`` and masks ``[B, M, P]`` -> ``[B * M, T, D]``: prefix zeroed, patches * mask.

  Example:
    >>> t = jnp.ones((1, 3, 2))                                # 1 prefix token + 2 patches
    >>> decoder_inputs(t, jnp.array([[[True, False]]]), 1)[0, :, 0].tolist()
    [0.0, 1.0, 0.0]
  """
  b, t, d = tokens.shape
  m = masks.shape[1]
  keep = jnp.concatenate([jnp.zeros((b, m, num_prefix), bool), masks], axis=2)      # [B, M, T]
  out = tokens[:, None] * keep[..., None].astype(tokens.dtype)
  return out.reshape(b * m, t, d)


def teacher_targets(teacher_fn: Encoder, images: jax.Array, masks: jax.Array, patch_size: int,
                    scale: jax.Array | float = 1.0) -> jax.Array:
  """``teacher_fn`` on the pixel-masked images, times ``scale``, no gradient: ``[B, M, T, D]``.

  Example:
    >>> f = lambda x: x.reshape(x.shape[0], 1, -1)            # a toy "encoder": one token of raw pixels
    >>> teacher_targets(f, jnp.ones((2, 4, 4, 1)), jnp.ones((2, 3, 4), bool), 2).shape
    (2, 3, 1, 16)
  """
  b, m = masks.shape[:2]
  out = teacher_fn(pixel_mask(images, masks, patch_size)) * scale
  return jax.lax.stop_gradient(out.reshape(b, m, *out.shape[1:]))


def _check_masks(images: Any, masks: Any, patch_size: int) -> None:
  shape = getattr(images, "shape", None)
  if shape is None or len(shape) != 4:
    raise ValueError(f"images must be float[B, H, W, C], got shape {shape}.")
  if shape[1] % patch_size or shape[2] % patch_size:
    raise ValueError(f"images height and width {tuple(shape[1:3])} must be divisible by patch_size {patch_size}.")
  num_patches = (shape[1] // patch_size) * (shape[2] // patch_size)
  if getattr(masks, "dtype", None) != np.bool_ or masks.ndim != 3 or tuple(masks.shape[::2]) != (shape[0], num_patches):
    raise ValueError(f"masks must be bool[batch, num_masks, num_patches] = bool[{shape[0]}, M, {num_patches}], got "
                     f"{getattr(masks, 'dtype', type(masks))}{tuple(getattr(masks, 'shape', ()))}.")


def maskembed_loss(encode_fn: Encoder, decode_fn: Encoder, teacher_fn: Encoder, images: jax.Array, masks: jax.Array,
                   *, patch_size: int, num_prefix: int, scale: jax.Array | float = 1.0,
                   reuse_encoder: bool = True) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The MaskEmbed loss ``mean || g(m * f(x)) - scale * h(m * x) ||^2`` over masks, tokens and dimensions.

  Args:
    encode_fn: student ``f``: images ``[N, H, W, C]`` -> tokens ``[N, T, D]``.
    decode_fn: decoder ``g``: ``[N, T, D]`` -> ``[N, T, D_teacher]``.
    teacher_fn: teacher ``h``: images -> ``[N, T, D_teacher]`` (gradients are stopped).
    images: ``[B, H, W, C]``.
    masks: ``bool[B, M, P]`` (see :func:`sample_masks`).
    patch_size: pixels per patch side (to upsample the masks).
    num_prefix: leading tokens (CLS, registers) that the decoder never sees.
    scale: multiplies the teacher's outputs (unit-variance targets, see :func:`target_scale`).
    reuse_encoder: run the student once per image and share its tokens across the M masks (True, the method);
      False runs it once per (image, mask) on a repeated batch, the same loss at M times the encoder cost (for
      the benchmark).

  Returns:
    (loss, metrics) with metrics ``mse_full`` (the all-ones mask, last) and ``mse_masked`` (the others).

  Example:
    >>> patches = lambda x: x.reshape(-1, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 4, 4)   # 2x2 patches
    >>> z = sample_masks(jax.random.key(0), (2, 2), 2)                  # a pixel-level "teacher" is reproduced
    >>> loss, _ = maskembed_loss(patches, lambda t: t, patches, jnp.arange(32.0).reshape(2, 4, 4, 1), z,
    ...                          patch_size=2, num_prefix=0)            # exactly by masking its tokens
    >>> float(loss)
    0.0
  """
  _check_masks(images, masks, patch_size)
  b, m = masks.shape[:2]
  targets = teacher_targets(teacher_fn, images, masks, patch_size, scale)          # [B, M, T, Dt]
  if reuse_encoder:
    tokens = encode_fn(images)                                                     # ONE pass per image
    inputs = decoder_inputs(tokens, masks, num_prefix)
  else:
    tokens = encode_fn(jnp.repeat(images, m, axis=0))                              # [B * M, T, D]
    inputs = decoder_inputs(tokens, masks.reshape(b * m, 1, -1), num_prefix)
  preds = decode_fn(inputs).astype(jnp.float32)
  err = jnp.square(preds.reshape(targets.shape) - targets).mean(axis=(2, 3))       # [B, M]
  metrics = {"mse_full": err[:, -1].mean(), "mse_masked": err[:, :-1].mean() if m > 1 else err[:, -1].mean()}
  return err.mean(), metrics


# ---------------------------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------------------------

class Decoder(nnx.Module):
  """MaskEmbed decoder: learned position embedding over all tokens + ``depth`` blocks + LayerNorm + linear.

  Example:
    >>> dec = Decoder(5, 32, 16, num_heads=2, mlp_dim=64, rngs=nnx.Rngs(0))
    >>> dec(jnp.ones((3, 5, 32))).shape
    (3, 5, 16)
  """

  def __init__(self, num_tokens: int, width: int, out_width: int, *, num_heads: int, mlp_dim: int, depth: int = 2,
               dtype: Any = jnp.float32, rngs: nnx.Rngs):
    self.pos_embed = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (num_tokens, width), jnp.float32))
    self.blocks = nnx.List([vit.Block(width, num_heads, mlp_dim, dtype=dtype, rngs=rngs) for _ in range(depth)])
    self.norm = vit.LayerNorm(width)
    self.out = nnx.Linear(width, out_width, kernel_init=nnx.initializers.xavier_uniform(), rngs=rngs)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    x = tokens.astype(jnp.float32) + self.pos_embed[...]
    for block in self.blocks:
      x, _ = block.forward(x, None)
    return self.out(self.norm(x))


class TargetScale(nnx.Variable):
  """A statistic estimated once before training (not optimized, checkpointed with the model)."""


def _penultimate(model: vit.ViT, depth: int | None) -> int:
  d = model.config.depth - 1 if depth is None else depth
  if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 0 <= d <= model.config.depth:
    raise ValueError(f"depth must be an int in [0, {model.config.depth}] (blocks run before the final norm), "
                     f"got {depth!r}.")
  return int(d)


def target_scale(teacher: vit.ViT, images: np.ndarray, *, depth: int | None = None, batch_size: int = 256) -> float:
  """``1 / std`` of the teacher's tokens (all tokens and dims pooled) on unmasked ``images``: unit-variance targets.

  Example:
    >>> t = vit.ViT(vit.config("nano/8", image_size=16, num_channels=1, num_classes=3), rngs=nnx.Rngs(0))
    >>> s = target_scale(t, np.random.default_rng(0).random((4, 16, 16, 1), np.float32))
    >>> s > 0
    True
  """
  d = _penultimate(teacher, depth)
  graphdef, state = nnx.split(teacher)
  encode = jax.jit(lambda x: nnx.merge(graphdef, state).encode(x, depth=d))
  images = np.asarray(images, np.float32)
  total = count = sq = 0.0
  for start in range(0, len(images), batch_size):
    out = np.asarray(encode(images[start:start + batch_size]), np.float64)
    total, sq, count = total + out.sum(), sq + np.square(out).sum(), count + out.size
  mean = total / count
  return float(1.0 / np.sqrt(max(sq / count - mean ** 2, 1e-12)))


TRAINABLE = nnx.All(nnx.Param, nnx.Any(nnx.PathContains("student"), nnx.PathContains("decoder")))


class MaskEmbed(nnx.Module):
  """Student (a copy of ``teacher``), frozen teacher, decoder and mask RNG: train with ``trainable=TRAINABLE``.

  Args:
    teacher: the pre-trained ViT (copied; the caller's module is not changed).
    depth: blocks run before the final LayerNorm, for teacher and student (None: the penultimate block).
    decoder_depth: transformer blocks in the decoder.
    scheme, antithetic, include_full: the mask sampler (see :func:`sample_masks`).
    scale: multiplies the teacher's outputs (use :func:`target_scale`).
    seed: seeds the mask stream.
    rngs: decoder initialization.
  """

  def __init__(self, teacher: vit.ViT, *, depth: int | None = None, decoder_depth: int = 2, scheme: str = "uniform",
               antithetic: bool = True, include_full: bool = True, scale: float = 1.0, seed: int = 0,
               rngs: nnx.Rngs):
    if not isinstance(teacher, vit.ViT):
      raise TypeError(f"teacher must be an xattr.models.vit.ViT, got {type(teacher).__name__}.")
    if scheme not in SCHEMES:
      raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}.")
    c = teacher.config
    self.depth = _penultimate(teacher, depth)
    self.scheme, self.antithetic, self.include_full = scheme, bool(antithetic), bool(include_full)
    self.teacher = nnx.clone(teacher)
    self.student = nnx.clone(teacher)
    self.decoder = Decoder(c.num_tokens, c.width, c.width, num_heads=c.num_heads, mlp_dim=c.mlp_dim,
                           depth=decoder_depth, dtype=c.dtype, rngs=rngs)
    self.scale = TargetScale(jnp.asarray(scale, jnp.float32))
    self.rngs = nnx.Rngs(masks=seed)

  @property
  def num_masks(self) -> int:
    return 1 + int(self.antithetic) + int(self.include_full)

  def encode(self, images: jax.Array) -> jax.Array:
    """The aligned representation: student tokens ``[B, T, D]`` at ``depth`` (after the final norm)."""
    return self.student.encode(images, depth=self.depth)

  def loss(self, images: jax.Array, key: jax.Array, *, reuse_encoder: bool = True
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MaskEmbed loss of ``images[B, H, W, C]`` with masks drawn from ``key``."""
    z = sample_masks(key, self.student.grid, images.shape[0], scheme=self.scheme, antithetic=self.antithetic,
                     include_full=self.include_full)
    return maskembed_loss(self.encode, self.decoder, lambda x: self.teacher.encode(x, depth=self.depth), images, z,
                          patch_size=self.student.config.patch_size, num_prefix=self.student.num_prefix_tokens,
                          scale=self.scale[...], reuse_encoder=reuse_encoder)


# ---------------------------------------------------------------------------------------------------------------
# MIM-style baseline: masked patch pixel regression
# ---------------------------------------------------------------------------------------------------------------

def mim_loss(encode_fn: Callable[[jax.Array, jax.Array], jax.Array], decode_fn: Encoder, images: jax.Array,
             masks: jax.Array, *, patch_size: int, num_prefix: int) -> jax.Array:
  """Masked image modelling: encode the visible patches, predict the pixels of the held-out ones (MSE on those).

  Args:
    encode_fn: ``(images, mask bool[B, P]) -> tokens [B, T, D]`` seeing only the kept patches.
    decode_fn: ``[B, T, D] -> [B, T, patch_size**2 * C]``.
    images: ``[B, H, W, C]``.
    masks: ``bool[B, P]`` (True = visible).
    patch_size, num_prefix: as in :func:`maskembed_loss`.

  Example:
    >>> enc = lambda x, m: jnp.zeros((x.shape[0], 5, 4))
    >>> float(mim_loss(enc, lambda t: t, jnp.zeros((1, 4, 4, 1)), jnp.array([[True, False, False, True]]),
    ...                patch_size=2, num_prefix=1))
    0.0
  """
  b, h, w, c = images.shape
  p = patch_size
  patches = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, p * p * c)
  tokens = encode_fn(images, masks)
  inputs = decoder_inputs(tokens, masks[:, None], num_prefix)
  preds = decode_fn(inputs)[:, num_prefix:].astype(jnp.float32)
  held_out = (~masks).astype(jnp.float32)
  err = jnp.square(preds - patches).mean(-1)
  return (err * held_out).sum() / jnp.maximum(held_out.sum(), 1.0)


class MIM(nnx.Module):
  """MIM baseline: a copy of ``backbone`` trained to regress held-out patch pixels (train with ``TRAINABLE``)."""

  def __init__(self, backbone: vit.ViT, *, depth: int | None = None, decoder_depth: int = 2, seed: int = 0,
               rngs: nnx.Rngs):
    c = backbone.config
    self.depth = _penultimate(backbone, depth)
    self.student = nnx.clone(backbone)
    self.decoder = Decoder(c.num_tokens, c.width, c.patch_size ** 2 * c.num_channels, num_heads=c.num_heads,
                           mlp_dim=c.mlp_dim, depth=decoder_depth, dtype=c.dtype, rngs=rngs)
    self.rngs = nnx.Rngs(masks=seed)

  def encode(self, images: jax.Array) -> jax.Array:
    return self.student.encode(images, depth=self.depth)

  def loss(self, images: jax.Array, key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    z = mask_lib.uniform_cardinality(key, self.student.num_patches, images.shape[0])
    loss = mim_loss(lambda x, m: self.student.encode(x, m, depth=self.depth), self.decoder, images, z,
                    patch_size=self.student.config.patch_size, num_prefix=self.student.num_prefix_tokens)
    return loss, {}


# ---------------------------------------------------------------------------------------------------------------
# Patch-level evaluation
# ---------------------------------------------------------------------------------------------------------------

class PatchProbe(nnx.Module):
  """Per-patch multi-label head on frozen tokens: 'linear' or 'transformer' (2 blocks + norm + linear).

  Input: all tokens ``[B, T, D]`` (prefix first); output: logits ``[B, T - num_prefix, num_classes]``.

  Example:
    >>> probe = PatchProbe(32, 10, num_prefix=1, kind="transformer", num_heads=2, mlp_dim=64, rngs=nnx.Rngs(0))
    >>> probe(jnp.ones((2, 5, 32))).shape
    (2, 4, 10)
  """

  def __init__(self, width: int, num_classes: int, *, num_prefix: int, kind: str = "linear", num_heads: int = 2,
               mlp_dim: int = 128, depth: int = 2, rngs: nnx.Rngs):
    if kind not in ("linear", "transformer"):
      raise ValueError(f"kind must be 'linear' or 'transformer', got {kind!r}.")
    self.num_prefix = int(num_prefix)
    self.blocks = nnx.List([vit.Block(width, num_heads, mlp_dim, rngs=rngs) for _ in range(depth)]
                           if kind == "transformer" else [])
    self.norm = vit.LayerNorm(width) if kind == "transformer" else None
    self.out = nnx.Linear(width, num_classes, rngs=rngs)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    x = tokens.astype(jnp.float32)
    for block in self.blocks:
      x, _ = block.forward(x, None)
    if self.norm is not None:
      x = self.norm(x)
    return self.out(x[:, self.num_prefix:])


def macro_scores(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
  """Macro precision/recall/F1 of multi-label predictions ``scores > threshold`` over all patches.

  Counts are pooled over images and patches per class, then averaged over the classes that occur in ``labels``.

  Example:
    >>> y = np.array([[[1, 0], [0, 1]]], bool)
    >>> macro_scores(np.array([[[0.9, 0.1], [0.8, 0.2]]]), y)
    {'macro_precision': 0.25, 'macro_recall': 0.5, 'macro_f1': 0.3333333333333333}
  """
  scores, labels = np.asarray(scores), np.asarray(labels).astype(bool)
  if scores.shape != labels.shape:
    raise ValueError(f"scores and labels must have the same shape, got {scores.shape} and {labels.shape}.")
  pred = (scores > threshold).reshape(-1, scores.shape[-1])
  y = labels.reshape(-1, labels.shape[-1])
  tp = (pred & y).sum(0).astype(np.float64)
  fp = (pred & ~y).sum(0)
  fn = (~pred & y).sum(0)
  present = y.sum(0) > 0
  precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
  recall = tp / np.maximum(tp + fn, 1)
  f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
  return {"macro_precision": float(precision[present].mean()), "macro_recall": float(recall[present].mean()),
          "macro_f1": float(f1[present].mean())}

