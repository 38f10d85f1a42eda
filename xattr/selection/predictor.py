"""Masked predictors f(x_S): networks that see only the selected features, and their pretraining.

Dynamic feature selection needs predictions from *any* subset of features: the selection policy is scored by
how well the predictor does with what it has chosen. A tabular masked predictor is an MLP on ``[x * m, m]``:
held-out features are zeroed and the mask itself is an input, so that "observed zero" and "not observed" differ.
Players may be *groups* of features (e.g. 2x2 pixel blocks): a 0/1 group matrix ``G[num_players, num_features]``
maps a player mask to a feature mask (``m_features = min(1, m_players @ G)``), and the mask part of the input is
the player mask. Masks may be bool or float in [0, 1]; float masks are the Concrete relaxations GDFS and
CAE-style selection train through.

Optional prior information z (features known before any selection, DIME's "prior information" setting) is
concatenated to the input: inputs are then ``{"x": float[B, d], "prior": float[B, q]}``.

Pretraining draws one uniform-cardinality mask per row (|S| uniform on 0..d, then a uniform subset; see
:func:`xattr.masks.uniform_cardinality`), so the predictor has seen every subset size before GDFS or DIME
starts choosing subsets.

Image predictors: :class:`MaskedViT` wraps the masked Vision Transformer of :mod:`xattr.models.vit`, whose
patches are the players (held out by attention masking; float masks weight the patch tokens' attention keys).

Every network of :mod:`xattr.selection` is used through a plain function ``apply(params, inputs, mask)``
(:func:`masked_fn`), so any masked model can take the place of these two.

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from xattr.selection import predictor
  >>> net = predictor.MaskedMLP(4, 3, (8,), rngs=nnx.Rngs(0))
  >>> params, apply = predictor.masked_fn(net)
  >>> apply(params, jnp.ones((2, 4)), jnp.array([[True, False, True, False]] * 2)).shape
  (2, 3)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from xattr import _checks, masks, training
from xattr.models import MLP

__all__ = ["GroupMatrix", "MaskedMLP", "MaskedViT", "MaskedFn", "masked_fn", "cross_entropy", "inputs_of",
           "check_data", "check_training", "Scalar", "Bundle", "pretrain", "mask_key_and_seed", "train_stage"]

Inputs = Any        # float[B, d] or {"x": float[B, d], "prior": float[B, q]}
ApplyFn = Callable[[Any, Inputs, jax.Array], jax.Array]


class GroupMatrix(nnx.Variable):
  """The fixed player-to-feature 0/1 matrix of a masked model (state, not a trainable parameter)."""


class MaskedMLP(nnx.Module):
  """An MLP on ``[x * m_features, m_players (, prior)]``: predictions (or selection scores) from a subset.

  Args:
    num_features: d, width of ``x``.
    out_features: output width (classes for a predictor, players for a policy or value network).
    hidden_sizes: widths of the hidden layers.
    groups: optional bool[num_players, num_features] group matrix (see :func:`xattr.masks.group_matrix`);
      None: every feature is its own player.
    prior_features: q > 0 if the inputs carry prior information ``{"x", "prior"}``.
    activation: hidden nonlinearity (a name in :data:`xattr.models.ACTIVATIONS` or a callable).
    rngs: ``nnx.Rngs`` for the initialization.
  """

  def __init__(self, num_features: int, out_features: int, hidden_sizes: Sequence[int] = (128, 128), *,
               groups: np.ndarray | jax.Array | None = None, prior_features: int = 0,
               activation: str | Callable[[jax.Array], jax.Array] = "relu", rngs: nnx.Rngs):
    d = _checks.positive_int("num_features", num_features)
    _checks.positive_int("out_features", out_features)
    q = _checks.positive_int("prior_features", prior_features, minimum=0)
    if groups is None:
      self.groups = None
      p = d
    else:
      g = np.asarray(groups)
      if g.ndim != 2 or g.shape[1] != d:
        raise ValueError(f"groups must be a [num_players, num_features={d}] 0/1 matrix, got shape {g.shape}.")
      self.groups = GroupMatrix(jnp.asarray(g, jnp.float32))
      p = g.shape[0]
    self.num_features, self.num_players, self.prior_features = d, p, q
    self.mlp = MLP(d + p + q, hidden_sizes, out_features, activation=activation, rngs=rngs)

  def feature_mask(self, mask: jax.Array) -> jax.Array:
    """Player mask bool/float[B, p] -> float[B, d] feature mask."""
    m = mask.astype(jnp.float32)
    if self.groups is None:
      return m
    return jnp.minimum(m @ self.groups[...], 1.0)

  def __call__(self, inputs: Inputs, mask: jax.Array) -> jax.Array:
    x, prior = (inputs["x"], inputs["prior"]) if isinstance(inputs, Mapping) else (inputs, None)
    if x.shape[-1] != self.num_features or mask.shape[-1] != self.num_players:
      raise ValueError(f"MaskedMLP expects x [..., {self.num_features}] and mask [..., {self.num_players}], got "
                       f"x {tuple(x.shape)} and mask {tuple(mask.shape)}.")
    if (prior is None) != (self.prior_features == 0):
      raise ValueError(f"this MaskedMLP has prior_features={self.prior_features}: inputs must be "
                       f"{'{x, prior}' if self.prior_features else 'an array'}, got {type(inputs).__name__}.")
    parts = [x * self.feature_mask(mask), mask.astype(x.dtype)]
    if prior is not None:
      parts.append(prior)
    return self.mlp(jnp.concatenate(parts, axis=-1))


class MaskedViT(nnx.Module):
  """A masked Vision Transformer as a selection network: the players are its image patches.

  A bool mask holds patches out exactly as :class:`xattr.models.vit.ViT` does (their tokens are dropped by
  attention masking). A float mask in [0, 1], the Concrete relaxation GDFS and CAE-style selection train
  through, weights each patch token's attention *key* by m (an additive bias log m): at m = 0 or 1 this is the
  hard mask, in between it is differentiable in m.

  Args:
    model: a :class:`~xattr.models.vit.ViT` with ``removal='attention'``; its ``num_classes`` is the output width
      (classes for a predictor, ``num_patches`` for a policy or value network).

  Example:
    >>> from xattr.models import vit
    >>> cfg = vit.config("nano/4", image_size=8, num_channels=1, num_classes=3)
    >>> net = nnx.jit(lambda: MaskedViT(vit.ViT(cfg, rngs=nnx.Rngs(0))))()   # one compiled init, not op by op
    >>> params, apply = masked_fn(net)
    >>> x, m = jnp.ones((2, 8, 8, 1)), jnp.array([[True, False, True, True]] * 2)
    >>> hard, soft = jax.jit(lambda p: (apply(p, x, m), apply(p, x, m.astype(jnp.float32))))(params)
    >>> net.num_players, bool(jnp.allclose(hard, soft, atol=1e-5))
    (4, True)
  """

  def __init__(self, model: nnx.Module):
    config = getattr(model, "config", None)
    if getattr(config, "removal", None) != "attention":
      raise ValueError(f"model must be a xattr.models.vit.ViT with removal='attention', got "
                       f"{type(model).__name__} with removal={getattr(config, 'removal', None)!r}.")
    self.vit = model
    self.num_players = int(model.num_patches)

  def __call__(self, images: jax.Array, mask: jax.Array) -> jax.Array:
    if mask.dtype == jnp.bool_:
      return self.vit(images, mask)
    vit = self.vit
    m = mask.astype(jnp.float32)
    # log m with its gradient cut below 1e-30: exp(-69) is an exact zero weight in float32 softmax.
    keys = jnp.log(jnp.maximum(m, 1e-30))
    bias = jnp.concatenate([jnp.zeros((m.shape[0], vit.num_prefix_tokens)), keys], axis=1)[:, None, None, :]
    x = vit.embed(images)
    for block in vit.blocks:
      x, _ = block.forward(x, bias)
    tokens = vit.norm(x)
    if vit.config.pool == "cls":
      pooled = tokens[:, 0]
    else:
      weight = m[..., None]
      pooled = (tokens[:, vit.num_prefix_tokens:] * weight).sum(1) / jnp.maximum(weight.sum(1), 1e-6)
    return vit.head(pooled)


class MaskedFn(NamedTuple):
  """A masked network as pure data plus a pure function: ``apply(params, inputs, mask) == module(inputs, mask)``."""

  params: nnx.State
  apply: ApplyFn


def masked_fn(module: nnx.Module) -> MaskedFn:
  """Splits a module called as ``module(inputs, mask)`` into ``(state, apply)`` for use under jit/vmap/grad.

  ``params`` holds the module's whole state (parameters and constants such as the group matrix), a snapshot:
  later updates of ``module`` do not change it.

  Example:
    >>> net = MaskedMLP(2, 1, (), rngs=nnx.Rngs(0))
    >>> params, apply = masked_fn(net)
    >>> x, m = jnp.ones((1, 2)), jnp.array([[True, True]])
    >>> bool(jnp.allclose(apply(params, x, m), net(x, m)))
    True
  """
  graphdef, state = nnx.split(module)
  return MaskedFn(state, _apply_for(graphdef))


@functools.lru_cache(maxsize=64)
def _apply_for(graphdef: nnx.GraphDef) -> ApplyFn:
  # One function object per architecture: jit caches key on function identity, so every snapshot of the same
  # architecture (each stage, each seed) reuses one compilation of the code that calls it.
  def apply(params: nnx.State, inputs: Inputs, mask: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, params)(inputs, mask)

  return apply


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-row softmax cross-entropy (nats) with integer labels.

  Example:
    >>> round(float(cross_entropy(jnp.zeros((1, 4)), jnp.array([2]))[0]), 4)   # log 4
    1.3863
  """
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def inputs_of(batch: Mapping[str, Any]) -> Inputs:
  """The network inputs of a batch ``{"x", "y"[, "prior"]}``: ``x``, or ``{"x", "prior"}`` with prior information.

  Example:
    >>> inputs_of({"x": 1, "y": 2})
    1
  """
  return {"x": batch["x"], "prior": batch["prior"]} if "prior" in batch else batch["x"]


def check_data(name: str, data: Any) -> None:
  """Raises unless ``data`` is ``{"x": [n, ...], "y": int[n](, "prior": [n, q])}`` with matching row counts.

  Example:
    >>> check_data("train_data", {"x": np.zeros((3, 2)), "y": np.zeros(3, np.int32)})
  """
  if not isinstance(data, Mapping) or "x" not in data or "y" not in data:
    keys = sorted(data) if isinstance(data, Mapping) else type(data).__name__
    raise ValueError(f"{name} must be a mapping with keys 'x' and 'y' (and optionally 'prior'), got {keys}.")
  rows = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in data.items()}
  if len(set(rows.values())) != 1:
    raise ValueError(f"{name} arrays must share their number of rows, got {rows}.")
  if not np.issubdtype(np.asarray(data["y"]).dtype, np.integer):
    raise ValueError(f"{name}['y'] must hold integer class labels, got dtype {np.asarray(data['y']).dtype}.")


def check_training(predictor: nnx.Module, selector: nnx.Module, selector_name: str, num_steps: int,
                   train_data: Any, val_data: Any) -> tuple[int, int]:
  """Checks a predictor and a selection network (``selector_name``: ``'policy'``, ``'value_net'``) trained together
  for ``num_steps`` selections, and their data; returns ``(num_players, num_steps)``.

  Example:
    >>> from types import SimpleNamespace as NS
    >>> data = {"x": np.zeros((3, 2)), "y": np.zeros(3, np.int32)}
    >>> check_training(NS(num_players=4), NS(num_players=4), "policy", 2, data, data)
    (4, 2)
  """
  num_players = _checks.positive_int(f"{selector_name}.num_players", getattr(selector, "num_players", None))
  if getattr(predictor, "num_players", num_players) != num_players:
    raise ValueError(f"predictor.num_players ({predictor.num_players}) must equal {selector_name}.num_players "
                     f"({num_players}).")
  num_steps = _checks.positive_int("num_steps", num_steps)
  if num_steps > num_players:
    raise ValueError(f"num_steps must be <= num_players={num_players}, got {num_steps}.")
  check_data("train_data", train_data)
  check_data("val_data", val_data)
  return num_players, num_steps


class Scalar(nnx.Variable):
  """A hyperparameter held in a module's state (e.g. a temperature or an exploration rate), not trained."""


class Bundle(nnx.Module):
  """The modules a selection objective trains together, the ``nnx.Rngs`` its random masks draw from, and its
  scheduled hyperparameters.

  :func:`xattr.training.train` checkpoints a module's whole state, so keeping the random stream inside the
  trained module makes a resumed run draw exactly the masks an uninterrupted one would. Hyperparameters that
  change between training stages (``scalars``, read as ``bundle.<name>[...]``) are state too, not constants of
  the compiled step: every stage then compiles to the same program, which a persistent compilation cache
  (``jax_compilation_cache_dir``) serves after the first stage. The submodules are the caller's objects:
  training the bundle updates them in place.

  Example:
    >>> b = Bundle(jax.random.key(0), scalars={"temperature": 0.5}, net=nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
    >>> float(b.temperature[...])
    0.5
  """

  def __init__(self, key: jax.Array, *, scalars: Mapping[str, float] | None = None, **modules: nnx.Module):
    for name, module in modules.items():
      setattr(self, name, module)
    for name, value in (scalars or {}).items():
      setattr(self, name, Scalar(jnp.asarray(value, jnp.float32)))
    self.rngs = nnx.Rngs(key)


def mask_key_and_seed(key: jax.Array) -> tuple[jax.Array, int]:
  """Splits a key into an RBG key for the random masks of a training run and an int seed for its data order.

  The masks, Gumbel noise and exploration draws of training steps use the "rbg" PRNG (XLA's RngBitGenerator):
  on CPU, compiling threefry's random bits for a [batch, players] draw takes longer than the rest of a small
  selection model's training step, and every training stage compiles its step anew. The RBG key is derived
  deterministically from ``key``, so the same key still gives the same run.

  Example:
    >>> k, seed = mask_key_and_seed(jax.random.key(0))
    >>> str(jax.random.key_impl(k)), isinstance(seed, int)
    ('rbg', True)
  """
  mask_key, order_key = jax.random.split(key)
  rbg_key = jax.random.wrap_key_data(jax.random.bits(mask_key, (4,), jnp.uint32), impl="rbg")
  return rbg_key, int(jax.random.randint(order_key, (), 0, 2 ** 31 - 1))


def train_stage(key: jax.Array, loss_fn: training.LossFn, train_data: Mapping[str, np.ndarray], *,
                scalars: Mapping[str, float], optimizer: optax.GradientTransformation, num_steps: int,
                batch_size: int, workdir: str | None, progress: bool, desc: str,
                **modules: nnx.Module) -> training.TrainResult:
  """One stage of a staged selection objective (a GDFS temperature, a DIME epsilon block): the ``modules`` trained
  together in a :class:`Bundle` holding this stage's ``scalars``, masks and data order drawn from ``key``.

  Every stage runs the same compiled program (the scalars are state), and ``workdir`` (None: no checkpoints)
  makes the stage resumable on its own.

  Example:
    >>> net = MaskedMLP(2, 2, (), rngs=nnx.Rngs(0))
    >>> data = {"x": np.ones((8, 2), np.float32), "y": np.zeros(8, np.int32)}
    >>> loss = lambda b, batch: (b.scale[...] * cross_entropy(b.predictor(batch["x"], jnp.ones((8, 2), bool)),
    ...                                                      batch["y"]).mean(), {})
    >>> out = train_stage(jax.random.key(0), loss, data, scalars={"scale": 1.0}, optimizer=optax.adam(0.1),
    ...                   num_steps=2, batch_size=8, workdir=None, progress=False, desc="stage", predictor=net)
    >>> int(out.state.step)
    2
  """
  mask_key, seed = mask_key_and_seed(key)
  bundle = Bundle(mask_key, scalars=dict(scalars), **modules)
  return training.train(bundle, loss_fn, dict(train_data), optimizer=optimizer, num_steps=num_steps,
                        batch_size=batch_size, seed=seed, workdir=workdir, progress=progress, desc=desc)


def pretrain(key: jax.Array, predictor: nnx.Module, train_data: Mapping[str, np.ndarray], *, num_steps: int,
             batch_size: int, learning_rate: float = 1e-3, weight_decay: float = 0.0,
             workdir: str | None = None, eval_fn: training.EvalFn | None = None, eval_every: int | None = None,
             progress: bool = True, desc: str = "pretrain") -> training.TrainResult:
  """Trains a masked predictor on random uniform-cardinality masks (in place), with the shared training loop.

  Args:
    key: PRNG key for the masks and the data order.
    predictor: a module called as ``predictor(inputs, mask)`` with a ``num_players`` attribute (e.g.
      :class:`MaskedMLP`); updated in place.
    train_data: ``{"x": float[n, ...], "y": int[n]}`` (plus ``"prior"`` if the predictor takes prior info).
    num_steps, batch_size, learning_rate, weight_decay: AdamW training settings.
    workdir: Orbax checkpoints go to ``workdir/checkpoints`` (resumes from there); None: no checkpoints.
    eval_fn, eval_every: evaluation hook of :func:`xattr.training.train`, called with the predictor.
    progress, desc: progress bar.

  Returns:
    the :class:`xattr.training.TrainResult` (its ``model`` is the bundle holding the predictor).

  Example:
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(64, 3)).astype(np.float32)
    >>> net = MaskedMLP(3, 2, (8,), rngs=nnx.Rngs(0))
    >>> out = pretrain(jax.random.key(0), net, {"x": x, "y": (x[:, 0] > 0).astype(np.int32)}, num_steps=5,
    ...                batch_size=16, progress=False)
    >>> int(out.state.step)
    5
  """
  num_players = _checks.positive_int("predictor.num_players", getattr(predictor, "num_players", None))
  check_data("train_data", train_data)
  mask_key, seed = mask_key_and_seed(key)

  def loss_fn(bundle: Bundle, batch: Mapping[str, jax.Array]):
    rows = batch["y"].shape[0]
    m = masks.uniform_cardinality(bundle.rngs(), num_players, rows)
    logits = bundle.predictor(inputs_of(batch), m)
    loss = cross_entropy(logits, batch["y"]).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}

  wrapped_eval = None if eval_fn is None else (lambda bundle, step: eval_fn(bundle.predictor, step))
  return training.train(Bundle(mask_key, predictor=predictor), loss_fn, dict(train_data),
                        optimizer=optax.adamw(learning_rate, weight_decay=weight_decay), num_steps=num_steps,
                        batch_size=batch_size, seed=seed, workdir=workdir, eval_fn=wrapped_eval,
                        eval_every=eval_every, progress=progress, desc=desc)
