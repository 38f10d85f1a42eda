"""Explainer heads: networks that output one attribution per player and class in a single forward pass.

* :class:`ViTExplainer` (ViT Shapley): a ViT backbone (initialised from the surrogate), extra transformer blocks
  over all its tokens, and an MLP applied to every patch token, giving float[B, patches, classes] through
  ``tanh`` (game values are probabilities, so attributions lie in [-1, 1]).
* :class:`MLPExplainer` (FastSHAP for tabular data): an MLP from x to float[B, d, classes].

Both return RAW outputs; the efficient normalization (:func:`xattr.amortize.efficient_normalize`) needs the
game's grand and null values, so it is applied by the objective and by :func:`explain`.

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from xattr.models import heads
  >>> explainer = heads.MLPExplainer(5, (16,), 3, rngs=nnx.Rngs(0))
  >>> explainer(jnp.ones((2, 5))).shape
  (2, 5, 3)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from xattr.models import vit as vit_lib
from xattr.models.mlp import MLP

__all__ = ["ViTExplainer", "MLPExplainer"]


class ViTExplainer(nnx.Module):
  """ViT backbone + ``extra_blocks`` transformer blocks + a per-patch MLP head -> float[B, patches, classes].

  Args:
    backbone: the ViT whose tokens the head reads (usually a copy of the trained surrogate); it is owned and
      fine-tuned by the explainer.
    num_classes: number of classes explained at once.
    extra_blocks: transformer blocks added on top of the backbone's tokens.
    hidden_sizes: hidden widths of the per-patch MLP head.
    rngs: initializers for the new layers.
  """

  def __init__(self, backbone: vit_lib.ViT, num_classes: int, *, extra_blocks: int = 1,
               hidden_sizes: Sequence[int] = (), rngs: nnx.Rngs):
    cfg = backbone.config
    self.backbone = backbone
    self.blocks = nnx.List([vit_lib.Block(cfg.width, cfg.num_heads, cfg.mlp_dim, dtype=cfg.dtype, rngs=rngs)
                            for _ in range(int(extra_blocks))])
    self.norm = nnx.LayerNorm(cfg.width, epsilon=1e-6, rngs=rngs)
    self.head = MLP(cfg.width, hidden_sizes, num_classes, activation="gelu", rngs=rngs)
    self.num_prefix_tokens = backbone.num_prefix_tokens

  def __call__(self, images: jax.Array) -> jax.Array:
    tokens = self.backbone.encode(images)
    for block in self.blocks:
      tokens = block(tokens)
    patches = self.norm(tokens)[:, self.num_prefix_tokens:].astype(jnp.float32)
    return jnp.tanh(self.head(patches))


class MLPExplainer(nnx.Module):
  """MLP from a tabular input float[B, d] to attributions float[B, d, classes] (FastSHAP's tabular explainer)."""

  def __init__(self, num_features: int, hidden_sizes: Sequence[int], num_classes: int, *,
               activation: str = "relu", rngs: nnx.Rngs):
    self.num_features, self.num_classes = int(num_features), int(num_classes)
    self.net = MLP(num_features, hidden_sizes, self.num_features * self.num_classes, activation=activation,
                   rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.net(x).reshape(x.shape[0], self.num_features, self.num_classes)
