"""Baseline attribution methods to compare removal-based explainers against (as in the ViT Shapley study).

Three families, each returning one value per player (float[d], or float[d, k] for a vector-valued game) for one
input, and vmappable over inputs:

* **Game-based** (any removal, any model; players = features or patches): :func:`random`,
  :func:`leave_one_out`, :func:`rise` (E[v(m) m_i] / p over Bernoulli(p) masks, in player space) and
  :func:`kernel_shap_matched` (KernelSHAP given the same number of game evaluations as another method).
* **Gradient-based** (any differentiable ``logit_fn(images[B, ...]) -> logits[B, k]`` and a target class):
  :func:`gradient_x_input`, :func:`integrated_gradients` (trapezoid rule along the straight path from a baseline,
  so sum(IG) -> f(x) - f(baseline) as the steps grow) and :func:`smoothgrad` (gradients averaged over noisy
  copies). Pixel maps are summed into patches with ``players=`` (see :func:`xattr.evaluation.aggregate_to_players`).
* **Attention-based** (ViTs; ``attn`` = post-softmax attention probabilities float[depth, heads, T, T] of one
  image, prefix tokens first with CLS at index 0): :func:`attention_rollout` (Abnar & Zuidema, 2020) and
  :func:`last_layer_attention`.
* **ViT internals** (a :class:`xattr.models.vit.ViT`, one image, a target class; one forward and one backward
  pass of :func:`vit_trace`, which recomputes the model's blocks with taps on the token states and the attention
  probabilities): :func:`gradcam` (gradient-weighted token activations of a block), :func:`attention_x_gradient`
  (the positive part of attention times its gradient, averaged over heads), :func:`gradient_rollout` (Chefer et
  al.'s relevance rollout of gradient-weighted attention) and :func:`lrp` (conservative LRP for transformers,
  Ali et al. 2022: relevance is conserved through every block). :func:`vanilla_gradients` (|d logit / d x|) takes
  any ``logit_fn``.

Gradient methods call ``logit_fn`` on batches of perturbed images and differentiate the sum of the target logits,
so ``logit_fn`` must treat rows independently (no batch statistics). They explain the target *logit*; pass e.g.
``lambda x: jax.nn.log_softmax(f(x))`` to explain log-probabilities.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from xattr import attributions
  >>> v = lambda m: 1.0 + m.astype(jnp.float32) @ jnp.array([3.0, 1.0, 2.0])
  >>> attributions.leave_one_out(v, 3).tolist()
  [3.0, 1.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from xattr import _checks, games, loo, shapley
from xattr import masks as masks_lib
from xattr.evaluation import aggregate_to_players

Game = Callable[[jax.Array], jax.Array]
LogitFn = Callable[[jax.Array], jax.Array]
Players = int | jax.Array | np.ndarray | None

__all__ = ["random", "leave_one_out", "rise", "kernel_shap_matched", "gradient_x_input", "integrated_gradients",
           "smoothgrad", "vanilla_gradients", "attention_rollout", "last_layer_attention", "ViTTrace", "vit_trace",
           "gradcam", "attention_x_gradient", "gradient_rollout", "lrp"]


# --- game-based -------------------------------------------------------------------------------------------------


def random(key: jax.Array, num_players: int) -> jax.Array:
  """Random attributions (standard normal): the chance-level baseline for rankings.

  Example:
    >>> random(jax.random.key(0), 4).shape
    (4,)
  """
  d = _checks.positive_int("num_players", num_players)
  return jax.random.normal(key, (d,))


def leave_one_out(game: Game, num_players: int) -> jax.Array:
  """phi_i = v(1) - v(1 - e_i), d + 1 game evaluations (see :func:`xattr.loo.leave_one_out`).

  Example:
    >>> v = lambda m: jnp.all(m, axis=1).astype(jnp.float32)
    >>> leave_one_out(v, 2).tolist()
    [1.0, 1.0]
  """
  return loo.leave_one_out(game, num_players)


def rise(game: Game, num_players: int, key: jax.Array, *, num_masks: int, p: float = 0.5,
         batch_size: int | None = None) -> jax.Array:
  """RISE in player space: phi_i = E[v(m) m_i] / p = E[v(m) | m_i = 1] over masks keeping each player w.p. p.

  On an additive game v(m) = c + m^T w this is c + p sum(w) + (1 - p) w_i: the ranking of w, shifted. The
  Monte Carlo error of player i is sqrt(Var(v(m) m_i / p) / num_masks). Reference: Petsiuk et al., BMVC 2018.

  Args:
    game: bool[n, d] -> float[n] or float[n, k].
    num_players: d (static).
    key: PRNG key; same key -> same masks.
    num_masks: Bernoulli masks (static); also the number of game evaluations.
    p: probability of keeping a player, in (0, 1).
    batch_size: None evaluates all masks in one game call; an int bounds the masks per call.

  Returns:
    float[d] or float[d, k].

  Example:
    >>> v = lambda m: m.astype(jnp.float32) @ jnp.array([2.0, 0.0])
    >>> rise(v, 2, jax.random.key(0), num_masks=4096).round(1).tolist()
    [2.0, 1.0]
  """
  d = _checks.positive_int("num_players", num_players)
  n = _checks.positive_int("num_masks", num_masks)
  p = _checks.probability("p", p)
  if not 0.0 < p < 1.0:
    raise ValueError(f"p must lie strictly between 0 and 1 (the probability of keeping a player), got {p}.")
  masks = masks_lib.bernoulli(key, d, n, p=p)
  values = games.evaluate(game, masks, batch_size=batch_size)
  return masks.astype(jnp.float32).T @ values / (n * p)


def kernel_shap_matched(game: Game, num_players: int, key: jax.Array, *, num_evals: int, paired: bool = True,
                        exact_a: bool = False, batch_size: int = 512) -> jax.Array:
  """KernelSHAP given a budget of ``num_evals`` game evaluations in total (grand and null included).

  Use it to compare at matched compute: e.g. ``num_evals = num_masks`` of :func:`rise`, ``d + 1`` of
  :func:`leave_one_out`, or an amortized explainer's training evaluations per example. This is
  :func:`xattr.shapley.kernel_shap` with ``num_samples = num_evals - 2`` (rounded down to even when paired).

  Args:
    game: bool[n, d] -> float[n] or float[n, k].
    num_players: d >= 2 (static).
    key: PRNG key.
    num_evals: total game evaluations (static).
    paired: paired sampling.
    exact_a: the unbiased estimator (closed-form A), which also works below the original estimator's minimum
      of 2(d - 1) samples.
    batch_size: coalitions per game call.

  Returns:
    float[d] or float[d, k], summing to v(1) - v(0).

  Example:
    >>> v = lambda m: jnp.all(m, axis=1).astype(jnp.float32)        # 16 evaluations enumerate every coalition
    >>> kernel_shap_matched(v, 4, jax.random.key(0), num_evals=16).round(4).tolist()
    [0.25, 0.25, 0.25, 0.25]
  """
  total = _checks.positive_int("num_evals", num_evals, minimum=4)
  num_samples = total - 2
  if paired:
    num_samples -= num_samples % 2
  return shapley.kernel_shap(game, num_players, key, num_samples=num_samples, paired=paired, exact_a=exact_a,
                             batch_size=batch_size).values


# --- gradient-based ---------------------------------------------------------------------------------------------


def _check_target(target, num_outputs: int) -> None:
  if _checks.is_concrete(target):
    t = np.asarray(target)
    if t.ndim != 0 or t.dtype.kind not in "iu" or not 0 <= int(t) < num_outputs:
      raise ValueError(f"target must be an int class index in [0, {num_outputs}), got {target!r}.")


def _target_grads(logit_fn: LogitFn, images: jax.Array, target, batch_size: int | None) -> jax.Array:
  """d logit_fn(images)[:, target] / d images, one gradient per row, in one (or chunked) backward pass."""

  def total(batch):
    logits = jnp.asarray(logit_fn(batch))
    if logits.ndim != 2 or logits.shape[0] != batch.shape[0]:
      raise ValueError(f"logit_fn must map images float[B, ...] to logits float[B, k]; for B = {batch.shape[0]} it "
                       f"returned shape {tuple(logits.shape)}.")
    _check_target(target, logits.shape[1])
    return logits[:, target].astype(jnp.float32).sum()

  grad = jax.grad(total)
  n = images.shape[0]
  if batch_size is None or n <= batch_size:
    return grad(images)
  bs = _checks.positive_int("batch_size", batch_size)
  chunks = -(-n // bs)
  padded = jnp.concatenate([images, jnp.broadcast_to(images[:1], (chunks * bs - n, *images.shape[1:]))])
  out = jax.lax.map(grad, padded.reshape(chunks, bs, *images.shape[1:]))
  return out.reshape(chunks * bs, *images.shape[1:])[:n]


def _to_players(attr: jax.Array, players: Players) -> jax.Array:
  return attr if players is None else aggregate_to_players(attr, players)


def _check_image(image: jax.Array) -> jax.Array:
  image = jnp.asarray(image)
  if image.ndim < 1 or not jnp.issubdtype(image.dtype, jnp.floating):
    raise ValueError(f"image must be one float input (e.g. float[H, W, C], no batch axis), got shape "
                     f"{tuple(image.shape)} and dtype {image.dtype}.")
  return image


def gradient_x_input(logit_fn: LogitFn, image: jax.Array, target, *, players: Players = None) -> jax.Array:
  """Gradient of the target logit times the input, optionally summed per player (patch).

  Args:
    logit_fn: float[B, *image.shape] -> float[B, k], differentiable.
    image: one input (e.g. float[H, W, C]).
    target: class index (int, or a traced int under vmap).
    players: None keeps the input's shape; a patch size (int) or group matrix sums into players.

  Returns:
    float[*image.shape], or float[d] with ``players``.

  Example:
    >>> f = lambda xb: xb.reshape(len(xb), -1) @ jnp.array([[1.0], [2.0], [3.0], [4.0]])
    >>> gradient_x_input(f, jnp.ones((2, 2)), 0, players=1).tolist()
    [1.0, 2.0, 3.0, 4.0]
  """
  image = _check_image(image)
  grads = _target_grads(logit_fn, image[None], target, None)[0]
  return _to_players(grads * image, players)


def integrated_gradients(logit_fn: LogitFn, image: jax.Array, target, *, num_steps: int = 32,
                         baseline: float | jax.Array = 0.0, players: Players = None,
                         batch_size: int | None = None) -> jax.Array:
  """Integrated gradients (Sundararajan et al., 2017) along the straight path from ``baseline`` to ``image``.

  IG_j = (x_j - b_j) * integral_0^1 df(b + a (x - b)) / dx_j da, by the trapezoid rule on ``num_steps + 1``
  evenly spaced points (error O(1 / num_steps^2)); completeness sum_j IG_j = f(x) - f(b) holds up to that error.

  Args:
    logit_fn: float[B, *image.shape] -> float[B, k], differentiable.
    image: one input.
    target: class index.
    num_steps: intervals of the path (static); the model runs on num_steps + 1 images.
    baseline: reference input, broadcastable to ``image`` (e.g. 0 or the data mean).
    players: None, a patch size or a group matrix (see :func:`gradient_x_input`).
    batch_size: None differentiates all path points in one call; an int bounds the images per call.

  Returns:
    float[*image.shape], or float[d] with ``players``.

  Example:
    >>> f = lambda xb: (xb ** 2).sum(-1, keepdims=True)
    >>> integrated_gradients(f, jnp.array([1.0, 2.0]), 0, num_steps=4).tolist()
    [1.0, 4.0]
  """
  image = _check_image(image)
  steps = _checks.positive_int("num_steps", num_steps)
  baseline = jnp.broadcast_to(jnp.asarray(baseline, image.dtype), image.shape)
  alphas = jnp.linspace(0.0, 1.0, steps + 1, dtype=image.dtype)
  path = baseline + alphas.reshape(-1, *([1] * image.ndim)) * (image - baseline)
  grads = _target_grads(logit_fn, path, target, batch_size)
  weights = jnp.full(steps + 1, 1.0 / steps, image.dtype).at[jnp.array([0, steps])].set(0.5 / steps)
  mean_grad = jnp.tensordot(weights, grads, axes=1)
  return _to_players((image - baseline) * mean_grad, players)


def smoothgrad(logit_fn: LogitFn, image: jax.Array, target, key: jax.Array, *, num_samples: int = 32,
               sigma: float = 0.15, absolute: bool = True, players: Players = None,
               batch_size: int | None = None) -> jax.Array:
  """SmoothGrad (Smilkov et al., 2017): the target logit's gradient averaged over noisy copies of the input.

  Noise is Gaussian with std ``sigma * (max(image) - min(image))`` (the paper's "noise level" of 10-20%).
  With ``absolute=True`` (saliency maps, the paper's default) the magnitudes |gradient| are averaged.

  Args:
    logit_fn: float[B, *image.shape] -> float[B, k], differentiable.
    image: one input.
    target: class index.
    key: PRNG key; same key -> same noise.
    num_samples: noisy copies (static).
    sigma: noise std as a fraction of the input's value range.
    absolute: average |gradient| instead of the signed gradient.
    players: None, a patch size or a group matrix (see :func:`gradient_x_input`).
    batch_size: None differentiates all copies in one call; an int bounds the images per call.

  Returns:
    float[*image.shape], or float[d] with ``players``.

  Example:
    >>> f = lambda xb: xb @ jnp.array([[1.0], [-2.0]])
    >>> smoothgrad(f, jnp.array([0.0, 1.0]), 0, jax.random.key(0), num_samples=4).tolist()
    [1.0, 2.0]
  """
  image = _check_image(image)
  n = _checks.positive_int("num_samples", num_samples)
  sigma = float(sigma)
  if not sigma >= 0:
    raise ValueError(f"sigma must be >= 0 (a fraction of the input's value range), got {sigma}.")
  scale = sigma * (image.max() - image.min())
  noisy = image + scale * jax.random.normal(key, (n, *image.shape), image.dtype)
  grads = _target_grads(logit_fn, noisy, target, batch_size)
  grads = jnp.abs(grads) if absolute else grads
  return _to_players(grads.mean(0), players)


def vanilla_gradients(logit_fn: LogitFn, image: jax.Array, target, *, absolute: bool = True,
                      players: Players = None) -> jax.Array:
  """Vanilla gradients (Simonyan et al., 2014): the target logit's gradient, |.| by default, per player summed.

  Args:
    logit_fn: float[B, *image.shape] -> float[B, k], differentiable.
    image: one input.
    target: class index.
    absolute: the saliency map |gradient| (the paper's); False keeps the sign.
    players: None, a patch size or a group matrix (see :func:`gradient_x_input`).

  Returns:
    float[*image.shape], or float[d] with ``players``.

  Example:
    >>> f = lambda xb: xb @ jnp.array([[1.0], [-2.0]])
    >>> vanilla_gradients(f, jnp.array([5.0, 5.0]), 0).tolist(), vanilla_gradients(f, jnp.ones(2), 0,
    ...                                                                             absolute=False).tolist()
    ([1.0, 2.0], [1.0, -2.0])
  """
  image = _check_image(image)
  grads = _target_grads(logit_fn, image[None], target, None)[0]
  return _to_players(jnp.abs(grads) if absolute else grads, players)


# --- attention-based --------------------------------------------------------------------------------------------


def _check_attention(attn: jax.Array, num_prefix_tokens: int) -> tuple[jax.Array, int]:
  attn = jnp.asarray(attn)
  if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
    raise ValueError(f"attn must be post-softmax attention float[depth, heads, T, T] for one image (select it from "
                     f"the model's [depth, B, heads, T, T] with attn[:, b]), got shape {tuple(attn.shape)}.")
  t = attn.shape[-1]
  prefix = _checks.positive_int("num_prefix_tokens", num_prefix_tokens)
  if prefix >= t:
    raise ValueError(f"num_prefix_tokens (CLS + registers) must be < the number of tokens T = {t}, got {prefix}.")
  return attn, prefix


_HEAD_FUSIONS = {"mean": jnp.mean, "max": jnp.max, "min": jnp.min}


def attention_rollout(attn: jax.Array, num_prefix_tokens: int, *, head_fusion: str = "mean") -> jax.Array:
  """Attention rollout: CLS-to-patch attention propagated through all layers with the residual connection.

  Per layer the heads are fused (averaged), the identity is added for the residual path and rows are
  renormalised, A'_l = (A_l + I) / rowsum (= 0.5 A_l + 0.5 I for row-stochastic A_l); the rollout is
  R = A'_L ... A'_1 and the attribution of patch j is R[0, num_prefix_tokens + j]. Computed as a vector-matrix
  product per layer, O(depth T^2).

  Args:
    attn: float[depth, heads, T, T], rows = queries, post-softmax; token 0 is CLS, then the other prefix tokens
      (registers), then the patches in row-major order.
    num_prefix_tokens: CLS + register tokens (static).
    head_fusion: 'mean' (standard), 'max' or 'min' over heads.

  Returns:
    float[T - num_prefix_tokens].

  Example:
    >>> a = jnp.full((2, 1, 3, 3), 1.0 / 3)                       # uniform attention, 2 layers
    >>> attention_rollout(a, 1).round(4).tolist()                   # (1 - 0.5^2) / 3 per patch
    [0.25, 0.25]
  """
  attn, prefix = _check_attention(attn, num_prefix_tokens)
  if head_fusion not in _HEAD_FUSIONS:
    raise ValueError(f"head_fusion must be one of {sorted(_HEAD_FUSIONS)}, got {head_fusion!r}.")
  return _rollout(attn, prefix, head_fusion)


@partial(jax.jit, static_argnums=(1, 2))
def _rollout(attn: jax.Array, prefix: int, head_fusion: str) -> jax.Array:
  t = attn.shape[-1]
  fused = _HEAD_FUSIONS[head_fusion](attn.astype(jnp.float32), axis=1) + jnp.eye(t)
  fused = fused / fused.sum(-1, keepdims=True)

  def step(row, layer):
    return row @ layer, None

  # The CLS row of A'_L ... A'_1: start from e_0 at the last layer and walk down.
  row, _ = jax.lax.scan(step, jnp.zeros(t).at[0].set(1.0), fused, reverse=True)
  return row[prefix:]


def last_layer_attention(attn: jax.Array, num_prefix_tokens: int) -> jax.Array:
  """The last layer's CLS-to-patch attention, averaged over heads.

  Args:
    attn: float[depth, heads, T, T] post-softmax attention of one image (see :func:`attention_rollout`).
    num_prefix_tokens: CLS + register tokens.

  Returns:
    float[T - num_prefix_tokens].

  Example:
    >>> a = jnp.zeros((1, 2, 3, 3)).at[0, 0, 0].set(jnp.array([0.0, 1.0, 0.0])).at[0, 1, 0, 2].set(1.0)
    >>> last_layer_attention(a, 1).tolist()
    [0.5, 0.5]
  """
  attn, prefix = _check_attention(attn, num_prefix_tokens)
  return attn[-1].astype(jnp.float32).mean(0)[0, prefix:]


# --- ViT internals ----------------------------------------------------------------------------------------------


class ViTTrace(NamedTuple):
  """One image through a ViT, as :func:`vit_trace` records it.

  Attributes:
    logits: float[k].
    tokens: float[depth + 1, T, width]: the residual stream entering each block, and leaving the last one
      (before the final LayerNorm).
    attention: float[depth, heads, T, T] post-softmax attention probabilities (rows = queries).
  """

  logits: jax.Array
  tokens: jax.Array
  attention: jax.Array


def _layer_norm(norm: Any, x: jax.Array, frozen: bool) -> jax.Array:
  centered = x - x.mean(-1, keepdims=True)
  inverse_std = jax.lax.rsqrt(jnp.square(centered).mean(-1, keepdims=True) + norm.eps)
  inverse_std = jax.lax.stop_gradient(inverse_std) if frozen else inverse_std   # LRP's LN rule: a linear map
  return centered * inverse_std * norm.scale[...] + norm.bias[...]


def _attention(attn: Any, x: jax.Array, offset: jax.Array, frozen: bool) -> tuple[jax.Array, jax.Array]:
  qkv = jnp.einsum("tw,wshd->shtd", x, attn.qkv_kernel[...]) + attn.qkv_bias[...][:, :, None, :]
  q, k, v = qkv[0], qkv[1], qkv[2]
  probs = jax.nn.softmax(jnp.einsum("htd,hsd->hts", q, k) * attn.scale, axis=-1)
  used = (jax.lax.stop_gradient(probs) if frozen else probs) + offset     # LRP's AH rule: attention is constant
  out = jnp.einsum("hts,hsd->thd", used, v)
  return jnp.einsum("thd,hdw->tw", out, attn.out_kernel[...]) + attn.out_bias[...], probs


def _mlp(mlp: Any, x: jax.Array, frozen: bool) -> jax.Array:
  h = mlp.fc1(x)
  gate = 0.5 * (1.0 + jax.lax.erf(h / np.sqrt(2.0)))                     # exact GELU: h * Phi(h)
  return mlp.fc2(h * (jax.lax.stop_gradient(gate) if frozen else gate))


def vit_trace(model: Any, image: jax.Array, *, token_offset: jax.Array | None = None,
              attention_offset: jax.Array | None = None, conservative: bool = False) -> ViTTrace:
  """The forward pass of a :class:`xattr.models.vit.ViT` on one unmasked image, in float32, with taps.

  The blocks are recomputed from the model's parameters (same result as ``model(image[None])``), so gradients
  with respect to the token states and the attention probabilities are available: ``token_offset`` is added to
  the residual stream entering each block (and leaving the last), ``attention_offset`` to each block's
  post-softmax attention; differentiate at zero offsets. ``conservative=True`` applies the rules of conservative
  LRP (Ali et al., ICML 2022): attention probabilities, LayerNorm's 1/std and GELU's gate Phi(h) are constants
  for the gradient (the forward values are unchanged), so the network is linear in its input tokens.

  Args:
    model: the ViT (read through its public modules: ``embed``, ``blocks``, ``norm``, ``pool``, ``head``).
    image: float[H, W, C], no batch axis.
    token_offset: float[depth + 1, T, width] or None (zeros).
    attention_offset: float[depth, heads, T, T] or None (zeros).
    conservative: the LRP rules above.

  Returns:
    :class:`ViTTrace`.

  Example:
    >>> from flax import nnx; from xattr.models.vit import ViT, config; from xattr.jobs import placeholder_module
    >>> m = placeholder_module(lambda: ViT(config("nano/8", image_size=16, num_channels=1, num_classes=3),
    ...                                    rngs=nnx.Rngs(0)))                       # zero weights: shapes only
    >>> x = jnp.linspace(0, 1, 256).reshape(16, 16, 1)
    >>> t = vit_trace(m, x)
    >>> t.tokens.shape, t.attention.shape, bool(jnp.allclose(t.logits, m(x[None])[0], atol=1e-5))
    ((3, 5, 32), (2, 2, 5, 5), True)
  """
  image = _check_image(image)
  c = model.config
  depth, t = c.depth, c.num_tokens
  token_offset = jnp.zeros((depth + 1, t, c.width)) if token_offset is None else token_offset
  attention_offset = jnp.zeros((depth, c.num_heads, t, t)) if attention_offset is None else attention_offset
  x = model.embed(image[None].astype(jnp.float32))[0].astype(jnp.float32)
  tokens, attention = [], []
  for i, block in enumerate(model.blocks):
    x = x + token_offset[i]
    tokens.append(x)
    y, probs = _attention(block.attn, _layer_norm(block.norm1, x, conservative), attention_offset[i], conservative)
    attention.append(probs)
    x = x + y
    x = x + _mlp(block.mlp, _layer_norm(block.norm2, x, conservative), conservative)
  x = x + token_offset[depth]
  tokens.append(x)
  pooled = model.pool(_layer_norm(model.norm, x, conservative)[None])
  return ViTTrace(model.head(pooled)[0], jnp.stack(tokens), jnp.stack(attention))


def _vit_gradients(model: Any, image: jax.Array, target, conservative: bool = False
                   ) -> tuple[ViTTrace, jax.Array, jax.Array]:
  """(trace, d logit / d tokens, d logit / d attention) in one backward pass."""
  c = model.config
  t = c.num_tokens
  _check_target(target, c.num_classes)

  def logit(offsets):
    trace = vit_trace(model, image, token_offset=offsets[0], attention_offset=offsets[1], conservative=conservative)
    return trace.logits[target], trace

  zeros = (jnp.zeros((c.depth + 1, t, c.width)), jnp.zeros((c.depth, c.num_heads, t, t)))
  (grad_tokens, grad_attention), trace = jax.grad(logit, has_aux=True)(zeros)
  return trace, grad_tokens, grad_attention


def _check_layer(name: str, layer: int | None, count: int, default: int) -> int:
  layer = default if layer is None else layer
  if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not -count <= layer < count:
    raise ValueError(f"{name} must be an int in [-{count}, {count}) or None, got {layer!r}.")
  return int(layer) % count


def gradcam(model: Any, image: jax.Array, target, *, layer: int | None = None) -> jax.Array:
  """GradCAM on ViT tokens: ReLU(h_j . mean_i dy/dh_i) for each patch token j of the residual stream h.

  Selvaraju et al. (2017) weight a CNN's feature maps by their spatially averaged gradients; on a ViT the
  "spatial" axis is the patch tokens. ``layer`` picks the token states entering that block (default: the last
  block, as pytorch-grad-cam's ViT recipe: leaving the last block, patch tokens no longer reach a CLS-pooled
  head and their gradients are 0). Without position embeddings the map is equivariant to permuting the patches.

  Args:
    model: a :class:`xattr.models.vit.ViT`.
    image: float[H, W, C].
    target: class index.
    layer: index into :attr:`ViTTrace.tokens` (0 = embeddings, ``depth`` = after the last block); None: depth - 1.

  Returns:
    float[num_patches], >= 0.

  Example:
    >>> from flax import nnx; from xattr.models.vit import ViT, config; from xattr.jobs import placeholder_module
    >>> m = placeholder_module(lambda: ViT(config("nano/8", image_size=16, num_channels=1, num_classes=3),
    ...                                    rngs=nnx.Rngs(0)))                       # zero weights: shapes only
    >>> cam = gradcam(m, jnp.linspace(0, 1, 256).reshape(16, 16, 1), 0); cam.shape, bool((cam >= 0).all())
    ((4,), True)
  """
  depth = model.config.depth
  layer = _check_layer("layer", layer, depth + 1, depth - 1)
  trace, grad_tokens, _ = _vit_gradients(model, image, target)
  prefix = model.num_prefix_tokens
  weights = grad_tokens[layer, prefix:].mean(0)                          # [width]
  return jax.nn.relu(trace.tokens[layer, prefix:] @ weights)


def _weighted_attention(model: Any, image: jax.Array, target) -> jax.Array:
  """Chefer et al.'s A-bar = E_heads[(dy/dA * A)^+] per layer, float[depth, T, T]."""
  trace, _, grad_attention = _vit_gradients(model, image, target)
  return jax.nn.relu(grad_attention * trace.attention).mean(1)


def attention_x_gradient(model: Any, image: jax.Array, target, *, layer: int = -1) -> jax.Array:
  """Attention times gradient: the CLS row of E_heads[(A * dy/dA)^+] of one layer (the last by default).

  The gradient-weighted attention map of Chefer et al. (CVPR 2021, ICCV 2021) for one layer, without rollout:
  heads whose attention the target logit does not depend on drop out.

  Args:
    model: a :class:`xattr.models.vit.ViT` (CLS-pooled, so the CLS row is the one that matters).
    image: float[H, W, C].
    target: class index.
    layer: the block (negative counts from the end).

  Returns:
    float[num_patches], >= 0.

  Example: see :func:`gradient_rollout`, whose example checks the two agree for a one-block ViT.
  """
  layer = _check_layer("layer", layer, model.config.depth, -1)
  return _weighted_attention(model, image, target)[layer, 0, model.num_prefix_tokens:]


def gradient_rollout(model: Any, image: jax.Array, target) -> jax.Array:
  """Chefer et al. (ICCV 2021): relevance rollout of gradient-weighted attention, R <- R + A-bar_l R from R = I.

  A-bar_l = E_heads[(A_l * dy/dA_l)^+] for each block l in order (see :func:`attention_x_gradient`); the
  attribution of patch j is R[0, num_prefix_tokens + j] (the identity keeps each token's own relevance).

  Args:
    model: a :class:`xattr.models.vit.ViT`.
    image: float[H, W, C].
    target: class index.

  Returns:
    float[num_patches], >= 0.

  Example (with one block, R = I + A-bar: the rollout is attention x gradient):
    >>> from flax import nnx; from xattr.models import vit
    >>> x, cfg = jnp.linspace(0, 1, 256).reshape(16, 16, 1), vit.config("nano/8", image_size=16, num_channels=1,
    ...                                                                 num_classes=3, depth=1)
    >>> m = vit.ViT(cfg, rngs=nnx.Rngs(0))      # random weights: initializers compile once per parameter shape
    >>> bool(jnp.allclose(gradient_rollout(m, x, 1), attention_x_gradient(m, x, 1)))
    True
  """
  weighted = _weighted_attention(model, image, target)
  t = weighted.shape[-1]

  def step(r, a):
    return r + a @ r, None

  r, _ = jax.lax.scan(step, jnp.eye(t), weighted)
  return r[0, model.num_prefix_tokens:]


def lrp(model: Any, image: jax.Array, target, *, include_prefix: bool = False) -> jax.Array:
  """Conservative LRP for transformers (Ali et al., ICML 2022): relevance of each input token.

  The AH rule (attention probabilities are constants) and the LN rule (LayerNorm's 1/std is a constant), with
  GELU's gate Phi(h) held constant too (LRP's identity rule for elementwise activations), make the network linear
  in its input tokens; the relevance of token j is then gradient x input at the embeddings, R_j = x_j . dy/dx_j
  (token = patch embedding + position embedding). Conservation: sum_j R_j (prefix tokens included) equals the
  logit up to what the blocks' biases (attention, MLP, LayerNorm and head biases) absorb, exactly when they are 0.

  Args:
    model: a :class:`xattr.models.vit.ViT`.
    image: float[H, W, C].
    target: class index.
    include_prefix: also return the CLS / register tokens' relevance (first).

  Returns:
    float[num_patches], or float[num_tokens] with ``include_prefix``.

  Example:
    >>> from flax import nnx; from xattr.models.vit import ViT, config; from xattr.jobs import placeholder_module
    >>> m = placeholder_module(lambda: ViT(config("nano/8", image_size=16, num_channels=1, num_classes=3),
    ...                                    rngs=nnx.Rngs(0)))                       # zero weights: shapes only
    >>> lrp(m, jnp.linspace(0, 1, 256).reshape(16, 16, 1), 0).shape
    (4,)
  """
  trace, grad_tokens, _ = _vit_gradients(model, image, target, conservative=True)
  relevance = (trace.tokens[0] * grad_tokens[0]).sum(-1)
  return relevance if include_prefix else relevance[model.num_prefix_tokens:]
