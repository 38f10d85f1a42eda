"""A Vision Transformer (Flax NNX) that holds image patches out by attention masking.

Removal-based explanations of a ViT need the model's output when only a subset of patches is present. Replacing
the missing pixels by a baseline (zeros, a blur) shows the network an out-of-distribution image; a transformer
can instead *drop* the tokens: ViT Shapley holds a patch out by setting the attention logits of its token to
-inf on the KEY axis in every layer and head, so no other token can read from it. The class (CLS) and register
tokens are always kept. Because every other operation of a transformer acts token by token, the kept tokens then
evolve exactly as if the held-out tokens had never been in the sequence: the output equals running the model on
the kept tokens alone, with static shapes (one compiled program for every mask) and no gather.

The mask enters as an additive bias ``f32[B, 1, 1, T]`` (0 or -inf) built once per forward pass and reused by
all layers. Held-out tokens are still computed as queries (their outputs are simply never read); a row that keeps
no patch at all still attends to the CLS token, so it produces the "empty coalition" output without NaNs.

Two other removal schemes are offered for comparison (``ViTConfig.removal``):

* ``"zero_input"``: the pixels of held-out patches are set to 0 before the patch embedding (all tokens attend).
  The patch embedding is linear, so this is computed by zeroing the flattened patch vectors; the token of a
  held-out patch becomes ``embedding bias + position embedding``.
* ``"zero_embedding"``: the patch embedding (after its bias) of a held-out patch is replaced by 0 *before* the
  position embedding is added, so the token keeps its position: ``token = position embedding``.

Layout: images ``float[B, H, W, C]`` (channels last); patches are numbered row-major over the ``(gh, gw)`` grid,
the order of :func:`xattr.masks.patch_groups` and :func:`xattr.masks.upsample_patches`; tokens are ordered
``[CLS, registers..., patches...]``. Blocks are pre-LayerNorm (eps 1e-6) with exact (erf) GELU, as in
big_vision and timm, so their checkpoints load unchanged (:mod:`xattr.models.convert`).

Mixed precision: with ``dtype=jnp.bfloat16`` the matmuls run in bf16 on fp32 parameters, while the residual
stream, LayerNorm, attention logits and softmax stay in fp32.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from flax import nnx
  >>> from xattr.models import vit
  >>> model = vit.ViT(vit.config("nano/8", image_size=16, num_channels=1, num_classes=3), rngs=nnx.Rngs(0))
  >>> model.num_patches, model.grid, model.num_prefix_tokens
  (4, (2, 2), 1)
  >>> f = jax.jit(vit.masked_model_fn(model, postprocess="softmax"))   # (images, mask) -> probabilities
  >>> mask = jnp.array([[True, False, False, True], [False, False, False, False]])   # row 2: no patch kept
  >>> probs = f(jnp.ones((2, 16, 16, 1)), mask)
  >>> probs.shape, bool(jnp.allclose(probs.sum(-1), 1.0))
  ((2, 3), True)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xattr.models.mlp import Functional, resolve_postprocess

__all__ = [
    "VARIANTS", "REMOVALS", "POOLS", "ViTConfig", "config", "attention_bias", "LayerNorm", "Attention", "MlpBlock",
    "Block", "ViT", "make_head", "functional", "masked_model_fn", "pair_model_fn", "flops_per_example",
]

# Standard sizes (width, depth, heads, MLP width), plus tiny ones for tests and CPU runs.
VARIANTS: dict[str, dict[str, int]] = {
    "nano": dict(width=32, depth=2, num_heads=2, mlp_dim=128),
    "mu": dict(width=64, depth=2, num_heads=2, mlp_dim=256),
    "Ti": dict(width=192, depth=12, num_heads=3, mlp_dim=768),
    "S": dict(width=384, depth=12, num_heads=6, mlp_dim=1536),
    "M": dict(width=512, depth=12, num_heads=8, mlp_dim=2048),
    "B": dict(width=768, depth=12, num_heads=12, mlp_dim=3072),
    "L": dict(width=1024, depth=24, num_heads=16, mlp_dim=4096),
    "H": dict(width=1280, depth=32, num_heads=16, mlp_dim=5120),
}
REMOVALS = ("attention", "zero_input", "zero_embedding")
POOLS = ("cls", "mean")
LAYER_NORM_EPS = 1e-6
_COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """Architecture and removal scheme of a :class:`ViT` (hashable, so it can be a static jit argument).

  Attributes:
    image_size: side of the (square) input, or ``(height, width)``; divisible by ``patch_size``.
    patch_size: side of the square patches.
    num_channels: input channels C.
    num_classes: output logits.
    width: token dimension.
    depth: number of transformer blocks.
    num_heads: attention heads (``width`` must be divisible by it).
    mlp_dim: hidden width of the blocks' MLPs.
    num_registers: extra learned tokens after CLS (always visible, like CLS).
    removal: how held-out patches are removed: 'attention' (key masking), 'zero_input' or 'zero_embedding'.
    dtype: compute dtype of the matmuls (float32, bfloat16 or float16); parameters are always float32.
    pool: 'cls' (the CLS token's final state) or 'mean' (mean of the final states of the visible patch tokens;
      of all patch tokens for the zero_* removals).
  """

  image_size: int | tuple[int, int]
  patch_size: int
  num_channels: int
  num_classes: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  num_registers: int = 0
  removal: str = "attention"
  dtype: Any = jnp.float32
  pool: str = "cls"

  def __post_init__(self):
    for name in ("patch_size", "num_channels", "num_classes", "width", "depth", "num_heads", "mlp_dim"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"ViTConfig.{name} must be a positive int, got {value!r}.")
    if isinstance(self.num_registers, bool) or not isinstance(self.num_registers, (int, np.integer)) \
        or self.num_registers < 0:
      raise ValueError(f"ViTConfig.num_registers must be an int >= 0, got {self.num_registers!r}.")
    h, w = self.image_hw
    if h % self.patch_size or w % self.patch_size:
      raise ValueError(f"ViTConfig.image_size {(h, w)} must be divisible by patch_size {self.patch_size} "
                       f"(got a remainder of {(h % self.patch_size, w % self.patch_size)} pixels).")
    if self.width % self.num_heads:
      raise ValueError(f"ViTConfig.width ({self.width}) must be divisible by num_heads ({self.num_heads}).")
    if self.removal not in REMOVALS:
      raise ValueError(f"ViTConfig.removal must be one of {REMOVALS}, got {self.removal!r}.")
    if self.pool not in POOLS:
      raise ValueError(f"ViTConfig.pool must be one of {POOLS}, got {self.pool!r}.")
    try:
      dtype_name = jnp.dtype(self.dtype).name
    except TypeError as err:
      raise ValueError(f"ViTConfig.dtype must be one of {_COMPUTE_DTYPES}, got {self.dtype!r}.") from err
    if dtype_name not in _COMPUTE_DTYPES:
      raise ValueError(f"ViTConfig.dtype must be one of {_COMPUTE_DTYPES}, got {dtype_name}.")

  @property
  def image_hw(self) -> tuple[int, int]:
    """``(height, width)`` of the input."""
    size = self.image_size
    if isinstance(size, (tuple, list)):
      if len(size) != 2:
        raise ValueError(f"ViTConfig.image_size must be an int or (height, width), got {size!r}.")
      return int(size[0]), int(size[1])
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
      raise ValueError(f"ViTConfig.image_size must be a positive int or (height, width), got {size!r}.")
    return int(size), int(size)

  @property
  def grid(self) -> tuple[int, int]:
    """Patch grid ``(gh, gw)``."""
    h, w = self.image_hw
    return h // self.patch_size, w // self.patch_size

  @property
  def num_patches(self) -> int:
    return self.grid[0] * self.grid[1]

  @property
  def num_prefix_tokens(self) -> int:
    """CLS plus registers: the tokens that are never held out."""
    return 1 + self.num_registers

  @property
  def num_tokens(self) -> int:
    return self.num_prefix_tokens + self.num_patches

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads


def config(name: str, *, image_size: int | tuple[int, int] = 224, num_channels: int = 3, num_classes: int = 1000,
           **overrides: Any) -> ViTConfig:
  """A :class:`ViTConfig` from a size name like ``"S/16"`` (the number after ``/`` is the patch size).

  Args:
    name: ``"<size>/<patch>"`` with size in :data:`VARIANTS` (Ti, S, M, B, L, H, and tiny 'mu', 'nano').
    image_size: input side or ``(height, width)``.
    num_channels: input channels.
    num_classes: output logits.
    **overrides: replace any other :class:`ViTConfig` field (e.g. ``depth=3``, ``dtype=jnp.bfloat16``).

  Example:
    >>> c = config("S/16", num_classes=10, num_registers=4)
    >>> (c.width, c.depth, c.num_heads, c.mlp_dim, c.grid, c.num_prefix_tokens)
    (384, 12, 6, 1536, (14, 14), 5)
  """
  variant, sep, patch = str(name).partition("/")
  if not sep or variant not in VARIANTS or not patch.isdigit() or int(patch) < 1:
    raise ValueError(f"name must look like '<size>/<patch size>' with size in {sorted(VARIANTS)}, e.g. 'S/16', "
                     f"got {name!r}.")
  fields = {f.name for f in dataclasses.fields(ViTConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise TypeError(f"unknown ViTConfig field(s) {unknown}; valid fields are {sorted(fields)}.")
  kwargs: dict[str, Any] = dict(VARIANTS[variant], patch_size=int(patch), image_size=image_size,
                                num_channels=num_channels, num_classes=num_classes)
  kwargs.update(overrides)
  return ViTConfig(**kwargs)


def attention_bias(key_mask: jax.Array | None) -> jax.Array | None:
  """Additive attention bias ``f32[B, 1, 1, T]`` from a key mask ``bool[B, T]`` (True = visible): 0 or -inf.

  Example:
    >>> attention_bias(jnp.array([[True, False]])).tolist()
    [[[[0.0, -inf]]]]
  """
  if key_mask is None:
    return None
  return jnp.where(key_mask, 0.0, -jnp.inf).astype(jnp.float32)[:, None, None, :]


def _check_tokens(tokens: Any, width: int, key_mask: Any) -> None:
  shape = getattr(tokens, "shape", None)
  if shape is None or len(shape) != 3 or shape[-1] != width:
    raise ValueError(f"tokens must be float[batch, num_tokens, {width}], got shape {shape}.")
  if key_mask is None:
    return
  if getattr(key_mask, "dtype", None) != np.bool_:
    raise TypeError(f"key_mask must have dtype bool (True = visible key), got {getattr(key_mask, 'dtype', None)}.")
  if tuple(key_mask.shape) != tuple(shape[:2]):
    raise ValueError(f"key_mask must have shape (batch, num_tokens) = {tuple(shape[:2])}, got {tuple(key_mask.shape)}.")


class LayerNorm(nnx.Module):
  """LayerNorm computed in float32 whatever the input dtype (eps 1e-6, as in big_vision/timm ViTs)."""

  def __init__(self, width: int, *, eps: float = LAYER_NORM_EPS):
    self.eps = eps
    self.scale = nnx.Param(jnp.ones((width,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((width,), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    centered = x - mean
    var = jnp.square(centered).mean(-1, keepdims=True)
    return centered * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]


class Attention(nnx.Module):
  """Multi-head self-attention with one fused qkv projection (kernel ``[width, 3, heads, head_dim]``).

  Logits and softmax are float32; an additive bias (see :func:`attention_bias`) removes keys.
  """

  def __init__(self, width: int, num_heads: int, *, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    head_dim = width // num_heads
    self.dtype = dtype
    self.scale = 1.0 / math.sqrt(head_dim)
    # Fans as for separate q/k/v projections (width -> heads * head_dim), the '3' axis is a batch axis.
    qkv_init = nnx.initializers.xavier_uniform(in_axis=0, out_axis=(2, 3), batch_axis=(1,))
    out_init = nnx.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2)
    self.qkv_kernel = nnx.Param(qkv_init(rngs.params(), (width, 3, num_heads, head_dim), jnp.float32))
    self.qkv_bias = nnx.Param(jnp.zeros((3, num_heads, head_dim), jnp.float32))
    self.out_kernel = nnx.Param(out_init(rngs.params(), (num_heads, head_dim, width), jnp.float32))
    self.out_bias = nnx.Param(jnp.zeros((width,), jnp.float32))

  def __call__(self, x: jax.Array, bias: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """``x[B, T, width]``, optional ``bias`` broadcastable to ``[B, heads, T, T]`` -> (output, f32 weights)."""
    # Plain 2-D matmuls on [B * T, width] rows and [B, heads, T, head_dim] attention operands: XLA:CPU runs these
    # 2-3x faster than einsums with other output layouts (measured with JAX 0.10), and GPUs want them too.
    dt = self.dtype
    b, t, w = x.shape
    _, _, h, d = self.qkv_kernel.shape
    qkv = x.astype(dt) @ self.qkv_kernel[...].reshape(w, 3 * h * d).astype(dt)
    qkv = qkv + self.qkv_bias[...].reshape(3 * h * d).astype(dt)
    q, k, v = qkv.reshape(b, t, 3, h, d).transpose(2, 0, 3, 1, 4)
    logits = jnp.matmul(q, k.swapaxes(-1, -2), preferred_element_type=jnp.float32) * self.scale
    if bias is not None:
      logits = logits + bias
    # Softmax normalised after the value matmul: exp(l - max) @ v / sum divides [B, heads, T, head_dim] instead of
    # [B, heads, T, T] (2.5x faster attention on XLA:CPU at ViT-S/16 with 64 rows, outputs within 1.5e-6). The
    # normalised weights are only computed when a caller uses them (attention rollout); XLA drops them otherwise.
    shifted = jnp.exp(logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True)))
    total = shifted.sum(-1, keepdims=True)
    weights = shifted / total
    out = jnp.matmul(shifted.astype(dt), v, preferred_element_type=jnp.float32) / total
    out = out.astype(dt).transpose(0, 2, 1, 3).reshape(b, t, h * d)
    y = out @ self.out_kernel[...].reshape(h * d, w).astype(dt) + self.out_bias[...].astype(dt)
    return y, weights


class MlpBlock(nnx.Module):
  """Dense -> exact (erf) GELU -> Dense; matmuls in ``dtype``, the GELU in float32."""

  def __init__(self, width: int, mlp_dim: int, *, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    init = nnx.initializers.xavier_uniform()
    self.fc1 = nnx.Linear(width, mlp_dim, dtype=dtype, kernel_init=init, rngs=rngs)
    self.fc2 = nnx.Linear(mlp_dim, width, dtype=dtype, kernel_init=init, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.fc1(x)
    h = exact_gelu(h.astype(jnp.float32)).astype(h.dtype)
    return self.fc2(h)


def exact_gelu(x: jax.Array) -> jax.Array:
  """x * Phi(x) written with erfc: the same values as ``jax.nn.gelu(x, approximate=False)`` (bit-identical on the
  10^6 normal inputs of scale 4 checked in tests/test_vit.py), ~30% faster on XLA:CPU (erf is a longer polynomial).

  Example:
    >>> x = jnp.linspace(-4.0, 4.0, 9)
    >>> bool(jnp.allclose(exact_gelu(x), jax.nn.gelu(x, approximate=False), atol=1e-6))
    True
  """
  return 0.5 * x * jax.lax.erfc(-x * (1.0 / math.sqrt(2.0)))


class Block(nnx.Module):
  """Pre-LayerNorm transformer block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``; float32 residual stream.

  Args:
    width: token dimension.
    num_heads: attention heads.
    mlp_dim: hidden width of the MLP.
    dtype: compute dtype of the matmuls.
    rngs: initialization RNGs.

  Example:
    >>> blk = Block(32, 2, 128, rngs=nnx.Rngs(0))
    >>> tokens = jnp.linspace(-1, 1, 3 * 32).reshape(1, 3, 32)
    >>> apply = nnx.jit(lambda b, t, m: b(t, m))
    >>> out = apply(blk, tokens, jnp.array([[True, True, False]]))    # token 2 is not a visible key
    >>> out.shape, bool(jnp.allclose(out[:, :2], apply(blk, tokens[:, :2], None), atol=1e-5))
    ((1, 3, 32), True)
  """

  def __init__(self, width: int, num_heads: int, mlp_dim: int, *, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    if width % num_heads:
      raise ValueError(f"width ({width}) must be divisible by num_heads ({num_heads}).")
    self.width = width
    self.dtype = dtype
    self.norm1 = LayerNorm(width)
    self.attn = Attention(width, num_heads, dtype=dtype, rngs=rngs)
    self.norm2 = LayerNorm(width)
    self.mlp = MlpBlock(width, mlp_dim, dtype=dtype, rngs=rngs)

  def __call__(self, tokens: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
    """``tokens[B, T, width]``, ``key_mask: bool[B, T]`` (True = visible key) -> float32 ``[B, T, width]``."""
    _check_tokens(tokens, self.width, key_mask)
    return self.forward(tokens, attention_bias(key_mask))[0]

  def forward(self, tokens: jax.Array, bias: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Unchecked block with a precomputed additive attention ``bias``; returns (tokens, attention weights)."""
    x = tokens.astype(jnp.float32)
    y, weights = self.attn(self.norm1(x).astype(self.dtype), bias)
    x = x + y.astype(jnp.float32)
    x = x + self.mlp(self.norm2(x).astype(self.dtype)).astype(jnp.float32)
    return x, weights


_FAN_IN = nnx.initializers.variance_scaling(1.0, "fan_in", "normal")   # untruncated: cheaper to compile


def make_head(config: ViTConfig, *, rngs: nnx.Rngs) -> nnx.Linear:
  """The classification head ``width -> num_classes`` (float32), as :class:`ViT` initializes it."""
  return nnx.Linear(config.width, config.num_classes, kernel_init=_FAN_IN, rngs=rngs)


class ViT(nnx.Module):
  """Vision Transformer with patch masks: ``model(images, mask) -> float32 logits[B, num_classes]``.

  Args:
    config: a :class:`ViTConfig` (see :func:`config`).
    rngs: initialization RNGs.

  Parameters (the names the converters in :mod:`xattr.models.convert` map to): ``patch_embed`` (a Linear on
  flattened patches, rows ordered (row in patch, column in patch, channel)), ``cls`` ``[1, width]``,
  ``registers`` ``[num_registers, width]`` (None when there are none), ``pos_embed`` ``[num_patches, width]``
  (patch tokens only; learned prefix tokens need none), ``blocks``, ``norm``, ``head``.
  """

  def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs):
    if not isinstance(config, ViTConfig):
      raise TypeError(f"config must be a ViTConfig (see xattr.models.vit.config), got {type(config).__name__}.")
    c = self.config = config
    p, w = c.patch_size, c.width
    normal = nnx.initializers.normal(0.02)
    self.patch_embed = nnx.Linear(p * p * c.num_channels, w, dtype=c.dtype, kernel_init=_FAN_IN, rngs=rngs)
    self.cls = nnx.Param(normal(rngs.params(), (1, w), jnp.float32))
    self.registers = nnx.Param(normal(rngs.params(), (c.num_registers, w), jnp.float32)) if c.num_registers else None
    self.pos_embed = nnx.Param(normal(rngs.params(), (c.num_patches, w), jnp.float32))
    self.blocks = nnx.List([Block(w, c.num_heads, c.mlp_dim, dtype=c.dtype, rngs=rngs) for _ in range(c.depth)])
    self.norm = LayerNorm(w)
    self.head = make_head(c, rngs=rngs)

  @property
  def num_patches(self) -> int:
    return self.config.num_patches

  @property
  def num_prefix_tokens(self) -> int:
    """1 (CLS) + registers."""
    return self.config.num_prefix_tokens

  @property
  def grid(self) -> tuple[int, int]:
    return self.config.grid

  def _check(self, images: Any, mask: Any) -> None:
    c = self.config
    shape = getattr(images, "shape", None)
    expected = (*c.image_hw, c.num_channels)
    if shape is None or len(shape) != 4:
      raise ValueError(f"images must be float[batch, height, width, channels] = [B, {expected[0]}, {expected[1]}, "
                       f"{expected[2]}], got shape {shape}.")
    if tuple(shape[1:3]) != expected[:2]:
      raise ValueError(f"images must be {expected[0]}x{expected[1]} (config.image_size; divisible by patch_size "
                       f"{c.patch_size}), got {shape[1]}x{shape[2]} (shape {tuple(shape)}).")
    if shape[3] != c.num_channels:
      raise ValueError(f"images must have {c.num_channels} channels (config.num_channels, channels last), got "
                       f"{shape[3]} (shape {tuple(shape)}).")
    if not jnp.issubdtype(images.dtype, jnp.floating):
      raise TypeError(f"images must have a floating dtype, got {images.dtype}.")
    if mask is None:
      return
    if getattr(mask, "dtype", None) != np.bool_:
      raise TypeError(f"mask must have dtype bool (True = patch kept), got {getattr(mask, 'dtype', type(mask))}. "
                      f"Convert with mask.astype(bool).")
    if tuple(mask.shape) != (shape[0], c.num_patches):
      raise ValueError(f"mask must have shape (batch, num_patches) = ({shape[0]}, {c.num_patches}) for a "
                       f"{c.grid[0]}x{c.grid[1]} patch grid, got {tuple(mask.shape)}.")

  def patchify(self, images: jax.Array) -> jax.Array:
    """``[B, H, W, C]`` -> ``[B, num_patches, p * p * C]``, patches row-major, pixels (row, column, channel)."""
    b = images.shape[0]
    (gh, gw), p = self.grid, self.config.patch_size
    x = images.reshape(b, gh, p, gw, p, -1).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, gh * gw, -1)

  def embed(self, images: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Input tokens ``f32[B, T, width]`` (``[CLS, registers..., patches...]``), after zero_* removal if any."""
    self._check(images, mask)
    c = self.config
    patches = self.patchify(images.astype(c.dtype))
    if mask is not None and c.removal == "zero_input":
      patches = jnp.where(mask[..., None], patches, 0)
    emb = self.patch_embed(patches).astype(jnp.float32)
    if mask is not None and c.removal == "zero_embedding":
      emb = jnp.where(mask[..., None], emb, 0.0)
    emb = emb + self.pos_embed[...]
    prefix = [self.cls[...]] + ([self.registers[...]] if self.registers is not None else [])
    prefix = jnp.broadcast_to(jnp.concatenate(prefix, 0), (emb.shape[0], c.num_prefix_tokens, c.width))
    return jnp.concatenate([prefix, emb], axis=1)

  def _bias(self, mask: jax.Array | None) -> jax.Array | None:
    if mask is None or self.config.removal != "attention":
      return None
    prefix = jnp.ones((mask.shape[0], self.num_prefix_tokens), bool)
    return attention_bias(jnp.concatenate([prefix, mask], axis=1))

  def _run(self, images: jax.Array, mask: jax.Array | None, depth: int | None) -> tuple[jax.Array, list[jax.Array]]:
    depth = self.config.depth if depth is None else depth
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or not 0 <= depth <= self.config.depth:
      raise ValueError(f"depth must be an int in [0, {self.config.depth}] (number of blocks to run), got {depth!r}.")
    x = self.embed(images, mask)
    bias = self._bias(mask)                   # built once, shared by every layer
    weights = []
    for block in self.blocks[:depth]:
      x, w = block.forward(x, bias)
      weights.append(w)
    return self.norm(x), weights

  def encode(self, images: jax.Array, mask: jax.Array | None = None, *, depth: int | None = None) -> jax.Array:
    """All final token states ``f32[B, T, width]`` (CLS, registers, patches) after the final LayerNorm.

    Args:
      images: ``float[B, H, W, C]``.
      mask: ``bool[B, num_patches]`` (True = kept) or None (all kept).
      depth: run only the first ``depth`` blocks, then the final LayerNorm (None = all).
    """
    return self._run(images, mask, depth)[0]

  def pool(self, tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Pooled representation ``[B, width]`` of encoded tokens (see ``ViTConfig.pool``)."""
    if self.config.pool == "cls":
      return tokens[:, 0]
    patches = tokens[:, self.num_prefix_tokens:]
    if mask is None or self.config.removal != "attention":
      return patches.mean(1)
    weight = mask.astype(jnp.float32)[..., None]
    return (patches * weight).sum(1) / jnp.maximum(weight.sum(1), 1.0)   # no visible patch -> zeros

  def __call__(self, images: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Logits ``f32[B, num_classes]`` of ``images[B, H, W, C]`` with patches kept where ``mask[B, P]`` is True."""
    return self.head(self.pool(self.encode(images, mask), mask))

  def attention_weights(self, images: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Post-softmax attention ``f32[depth, B, heads, T, T]`` (for attention rollout and last-layer attention)."""
    return jnp.stack(self._run(images, mask, None)[1])

  def complement_pair(self, images: jax.Array, mask: jax.Array) -> jax.Array:
    """Logits under ``mask`` and under its complement ``~mask``, ``f32[B, 2, num_classes]``, in ONE forward pass.

    Paired sampling (KernelSHAP, FastSHAP, ViT Shapley) evaluates every mask together with its complement. The two
    coalitions split the patches, so both fit in one sequence: ``[prefix, prefix, patches]`` where each patch
    token belongs to the copy of the prefix on its side, and a block-diagonal attention bias lets a token see only
    its own side. Since attention masking equals dropping tokens, each side computes exactly what the model
    computes on that coalition alone, at the cost of one unmasked pass (plus ``num_prefix_tokens`` tokens) instead
    of two: about 2x the throughput of :meth:`__call__` on paired masks. Requires ``removal='attention'``.

    Example:
      >>> m = ViT(config("nano/8", image_size=16, num_channels=1, num_classes=3), rngs=nnx.Rngs(0))
      >>> x, mask = jnp.ones((1, 16, 16, 1)), jnp.array([[True, False, False, True]])
      >>> pair = nnx.jit(lambda m, x, z: m.complement_pair(x, z))(m, x, mask)
      >>> single = nnx.jit(lambda m, x, z: m(x, z))(m, x, ~mask)
      >>> pair.shape, bool(jnp.allclose(pair[:, 1], single, atol=1e-5))
      ((1, 2, 3), True)
    """
    c = self.config
    if c.removal != "attention":
      raise ValueError(f"complement_pair needs removal='attention' (tokens dropped by attention masking), got "
                       f"removal={c.removal!r}.")
    if mask is None:
      raise ValueError("complement_pair needs a mask bool[batch, num_patches], got None.")
    self._check(images, mask)
    b, n = mask.shape[0], c.num_prefix_tokens
    tokens = self.embed(images)
    tokens = jnp.concatenate([tokens[:, :n], tokens], axis=1)            # [prefix, prefix, patches]
    side = jnp.concatenate([jnp.zeros((b, n), bool), jnp.ones((b, n), bool), ~mask], axis=1)
    bias = jnp.where(side[:, :, None] == side[:, None, :], 0.0, -jnp.inf).astype(jnp.float32)[:, None]
    x = tokens
    for block in self.blocks:
      x, _ = block.forward(x, bias)
    x = self.norm(x)
    if c.pool == "cls":
      pooled = jnp.stack([x[:, 0], x[:, n]], axis=1)
    else:
      patches = x[:, 2 * n:]
      pooled = jnp.stack([self.pool(jnp.concatenate([x[:, :n], patches], 1), mask),
                          self.pool(jnp.concatenate([x[:, n:2 * n], patches], 1), ~mask)], axis=1)
    return self.head(pooled)


def functional(model: ViT) -> Functional:
  """Splits ``model`` into ``(state, apply)`` with ``apply(state, images, mask=None) == model(images, mask)``.

  Example:
    >>> m = ViT(config("nano/8", image_size=16, num_channels=1, num_classes=3), rngs=nnx.Rngs(0))
    >>> state, apply = functional(m)
    >>> jax.jit(apply)(state, jnp.ones((2, 16, 16, 1)), jnp.ones((2, 4), bool)).shape
    (2, 3)
  """
  graphdef, state = nnx.split(model)

  def apply(state: nnx.State, images: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    return nnx.merge(graphdef, state)(images, mask)

  return Functional(state, apply)


def masked_model_fn(model: ViT, postprocess: str | Callable[[jax.Array], jax.Array] | None = None
                    ) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """A pure ``(images[B, ...], mask bool[B, P]) -> outputs`` closure over a snapshot of ``model``'s state.

  This is the ``masked_model_fn`` that :func:`xattr.games.surrogate` takes. Later changes to ``model`` do not
  affect it.

  Args:
    model: a :class:`ViT`.
    postprocess: None (logits), 'softmax', 'sigmoid', 'squeeze' or a callable on the logits.
  """
  post = resolve_postprocess(postprocess)
  state, apply = functional(model)
  return lambda images, mask: post(apply(state, images, mask))


def pair_model_fn(model: ViT, postprocess: str | Callable[[jax.Array], jax.Array] | None = None
                  ) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Like :func:`masked_model_fn` for :meth:`ViT.complement_pair`: ``(images[B, ...], mask[B, P]) -> [B, 2, ...]``
  (outputs under ``mask`` and ``~mask`` from one packed forward pass)."""
  post = resolve_postprocess(postprocess)
  graphdef, state = nnx.split(model)
  return lambda images, mask: post(nnx.merge(graphdef, state).complement_pair(images, mask))


def flops_per_example(config: ViTConfig, num_tokens: int | None = None) -> int:
  """Matmul FLOPs (2 per multiply-add) of one forward pass over all tokens; elementwise work not counted.

  ``num_tokens`` overrides the sequence length (e.g. ``num_tokens + num_prefix_tokens`` for
  :meth:`ViT.complement_pair`, which evaluates two coalitions per pass).

  Example:
    >>> round(flops_per_example(config("S/16")) / 1e9, 1)    # ViT-S/16 at 224: 4.6 G multiply-adds
    9.2
  """
  c = config
  t, w = c.num_tokens if num_tokens is None else num_tokens, c.width
  embed = 2 * c.num_patches * c.patch_size ** 2 * c.num_channels * w
  block = 2 * t * w * 3 * w + 2 * 2 * t * t * w + 2 * t * w * w + 2 * 2 * t * w * c.mlp_dim
  return int(embed + c.depth * block + 2 * w * c.num_classes)
