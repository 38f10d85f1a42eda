"""Amortized explanation objectives: pure loss functions for training explainers inside any JAX step.

An amortized explainer ``phi(x; theta) -> float[d, k]`` is trained once and then explains a new input with a
single forward pass. Three objectives, all plain functions of arrays (so they fit any training step, including
``xattr.training.train``):

  * :func:`fastshap_loss` (FastSHAP, Jethani et al. 2022): the weighted least squares characterisation of the
    Shapley value. With coalitions ``z`` drawn from the Shapley kernel (paired), minimise
    ``d * E_z[(null + z^T phi - v(z))^2]`` over ``phi``; after the additive efficient normalization
    ``phi + (grand - null - 1^T phi) / d`` the minimiser is exactly the Shapley value, for every class at once.
  * :func:`regression_loss` (stochastic amortization, Covert et al. 2024): ``d * MSE`` onto noisy but unbiased
    labels (e.g. KernelSHAP or permutation estimates with few samples). Unbiased noise leaves the optimum unchanged;
    it only slows SGD down.
  * :func:`surrogate_kl_loss`: trains a surrogate that accepts a mask to match the original model's prediction
    under removal, ``KL(p_model(x) || p_surrogate(x, z))``; :func:`surrogate_mse_loss` for regression models.

A trained tabular explainer is saved with :func:`save` (an Orbax checkpoint plus ``architecture.json``, holding
the explainer and, for the efficient normalization, the model whose game it explains) and reloaded with
:func:`load`: ``explainer = xattr.amortize.load(path); phi = explainer(x)`` maps float[B, d] to
float[B, d, classes] with nothing else needed. :func:`masked_value_fn` turns a saved game model into the
``(x, mask) -> values`` function that both training and :class:`Explainer` use.

Example (a linear "explainer" recovers an additive game's weights):
  >>> import jax, jax.numpy as jnp
  >>> from xattr import amortize, masks
  >>> w = jnp.array([1.0, -2.0, 0.5])
  >>> z = masks.shapley_kernel(jax.random.key(0), 3, 64)[None]       # [batch=1, samples, d]
  >>> values = (z @ w)[..., None]                                    # v(z) for one class, null = 0
  >>> null, grand = jnp.zeros(1), w.sum()[None, None]
  >>> loss = lambda phi: amortize.fastshap_loss(phi, z, values, null, grand)
  >>> phi = jnp.zeros((1, 3, 1))
  >>> for _ in range(300):
  ...   phi = phi - 0.5 * jax.grad(loss)(phi)
  >>> jnp.round(amortize.efficient_normalize(phi, grand, null)[0, :, 0], 3).tolist()  # raw phi: up to a shift
  [1.0, -2.0, 0.5]
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xattr import _checks, shapley

__all__ = ["efficient_normalize", "fastshap_loss", "regression_loss", "surrogate_kl_loss", "surrogate_mse_loss",
           "MODULE_KINDS", "build_module", "masked_value_fn", "Explainer", "save", "load"]


def _check_rank(name: str, value: jax.Array, rank: int, shape_hint: str) -> None:
  if value.ndim != rank:
    raise ValueError(f"{name} must be {shape_hint} (rank {rank}), got shape {tuple(value.shape)}.")


def efficient_normalize(phi: jax.Array, grand: jax.Array, null: jax.Array) -> jax.Array:
  """Additive efficient normalization of a batch of explanations, so each sums to ``grand - null`` per class.

  Args:
    phi: float[B, d, k] raw explainer outputs.
    grand: float[B, k], v(1) per input.
    null: float[k] or float[B, k], v(0).

  Returns:
    float[B, d, k].

  Example:
    >>> efficient_normalize(jnp.zeros((1, 2, 1)), jnp.ones((1, 1)), jnp.zeros(1))[0, :, 0].tolist()
    [0.5, 0.5]
  """
  _check_rank("phi", phi, 3, "float[batch, players, classes]")
  null = jnp.broadcast_to(null, grand.shape)
  return shapley.normalize_efficient(phi, grand, null)


def fastshap_loss(phi: jax.Array, masks: jax.Array, values: jax.Array, null: jax.Array,
                  grand: jax.Array | None = None, *, normalize: bool = True,
                  efficiency_weight: float = 0.0) -> jax.Array:
  """FastSHAP objective ``d * mean_{x, z, class} (null + z^T phi(x) - v_x(z))^2``.

  Args:
    phi: float[B, d, k] explainer outputs for B inputs.
    masks: bool[B, m, d] coalitions per input (Shapley-kernel samples, paired: see
      :func:`xattr.masks.shapley_kernel`).
    values: float[B, m, k] game values v_x(z) of those coalitions (e.g. surrogate class probabilities).
    null: float[k] or float[B, k], v(0).
    grand: float[B, k], v(1); needed when ``normalize`` or ``efficiency_weight`` is used.
    normalize: apply :func:`efficient_normalize` first (the reference default): the optimum is then exactly
      the Shapley value and efficiency holds by construction.
    efficiency_weight: weight of an optional penalty ``mean (1^T phi - (grand - null))^2`` (for unnormalized
      training).

  Returns:
    scalar loss.
  """
  _check_rank("phi", phi, 3, "float[batch, players, classes]")
  _check_rank("masks", masks, 3, "bool[batch, samples, players]")
  if jnp.asarray(masks).dtype != jnp.bool_:
    raise _checks.ArgumentTypeError(f"masks must have dtype bool (True = player kept), got {masks.dtype}: the "
                                    f"loss treats a mask entry as 'player present', so 0/1 ints or fractional "
                                    f"floats would silently mean something else. Convert with masks.astype(bool).")
  _check_rank("values", values, 3, "float[batch, samples, classes]")
  b, d, k = phi.shape
  if masks.shape[0] != b or masks.shape[2] != d:
    raise ValueError(f"masks must be [batch={b}, samples, players={d}] to match phi, got {tuple(masks.shape)}.")
  if values.shape != (b, masks.shape[1], k):
    raise ValueError(f"values must be [batch, samples, classes] = {(b, masks.shape[1], k)}, "
                     f"got {tuple(values.shape)}.")
  if (normalize or efficiency_weight) and grand is None:
    raise ValueError("grand (v(1) per input, float[batch, classes]) is required when normalize=True or "
                     "efficiency_weight > 0.")
  null = jnp.broadcast_to(null, (b, k))
  if normalize:
    phi = efficient_normalize(phi, grand, null)
  pred = null[:, None, :] + jnp.einsum("bmd,bdk->bmk", masks.astype(phi.dtype), phi)
  loss = d * jnp.mean((pred - values) ** 2)
  if efficiency_weight:
    loss = loss + efficiency_weight * jnp.mean((phi.sum(1) - (grand - null)) ** 2)
  return loss


def regression_loss(phi: jax.Array, labels: jax.Array, *, scale: float | jax.Array = 1.0) -> jax.Array:
  """Stochastic-amortization objective ``d * mean ((phi - labels) / scale)^2`` onto (noisy) attribution labels.

  Args:
    phi: float[B, d] or float[B, d, k] explainer outputs.
    labels: same shape: precomputed or freshly sampled noisy estimates (unbiased for the target values).
    scale: target scale (a scalar or broadcastable array, e.g. the labels' std) so that learning rates carry
      over between datasets.

  Example:
    >>> float(regression_loss(jnp.ones((2, 4)), jnp.zeros((2, 4))))
    4.0
  """
  if phi.shape != labels.shape:
    raise ValueError(f"labels must have the explainer's output shape {tuple(phi.shape)}, got {tuple(labels.shape)}.")
  if phi.ndim not in (2, 3):
    raise ValueError(f"phi must be float[batch, players] or float[batch, players, classes], got {tuple(phi.shape)}.")
  return phi.shape[1] * jnp.mean(((phi - labels) / scale) ** 2)


def surrogate_kl_loss(surrogate_logits: jax.Array, target_probs: jax.Array) -> jax.Array:
  """Mean ``KL(target || softmax(surrogate_logits))`` over all leading axes.

  Args:
    surrogate_logits: float[..., k] surrogate outputs on masked inputs (e.g. [batch, masks, k]).
    target_probs: float[..., k] the original model's class probabilities on the full inputs, broadcastable
      (e.g. [batch, 1, k]).

  Example:
    >>> p = jnp.array([0.25, 0.75])
    >>> abs(round(float(surrogate_kl_loss(jnp.log(p), p)), 6))
    0.0
  """
  log_q = jax.nn.log_softmax(surrogate_logits, axis=-1)
  target_probs = jnp.broadcast_to(target_probs, log_q.shape)
  log_p = jnp.log(jnp.clip(target_probs, 1e-12, 1.0))
  return jnp.mean(jnp.sum(target_probs * (log_p - log_q), axis=-1))


def surrogate_mse_loss(surrogate_outputs: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean squared error between a regression surrogate's masked outputs and the model's full-input outputs.

  Example:
    >>> float(surrogate_mse_loss(jnp.ones((2, 3)), jnp.zeros((2, 1))))
    1.0
  """
  return jnp.mean((surrogate_outputs - jnp.broadcast_to(targets, surrogate_outputs.shape)) ** 2)


# ---------------------------------------------------------------------------------------------------------------
# Saving and loading trained tabular explainers
# ---------------------------------------------------------------------------------------------------------------

def _module_kinds() -> dict[str, Callable[..., nnx.Module]]:
  # Deferred imports: the heads module pulls in the ViT, the selection package its training machinery.
  from xattr.models import MLP, heads
  from xattr.selection.predictor import MaskedMLP
  return {"mlp": MLP, "mlp_explainer": heads.MLPExplainer, "masked_mlp": MaskedMLP}


MODULE_KINDS = ("mlp", "mlp_explainer", "masked_mlp")
_POSTPROCESS = {"identity": lambda y: y, "softmax": lambda y: jax.nn.softmax(y, axis=-1)}


def build_module(spec: Mapping[str, Any], *, seed: int = 0) -> nnx.Module:
  """Builds a module from a JSON-able spec ``{"kind": one of MODULE_KINDS, **constructor keyword arguments}``.

  ``mlp``: :class:`xattr.models.MLP` (in_features, hidden_sizes, out_features, activation);
  ``mlp_explainer``: :class:`xattr.models.heads.MLPExplainer` (num_features, hidden_sizes, num_classes,
  activation); ``masked_mlp``: :class:`xattr.selection.predictor.MaskedMLP` (num_features, out_features,
  hidden_sizes, activation).

  Example:
    >>> build_module({"kind": "mlp_explainer", "num_features": 4, "hidden_sizes": [8], "num_classes": 2})(
    ...     jnp.ones((3, 4))).shape
    (3, 4, 2)
  """
  spec = dict(spec)
  kind = spec.pop("kind", None)
  kinds = _module_kinds()
  if kind not in kinds:
    raise ValueError(f"spec['kind'] must be one of {MODULE_KINDS}, got {kind!r}.")
  if "hidden_sizes" in spec:
    spec["hidden_sizes"] = tuple(spec["hidden_sizes"])
  return kinds[kind](**spec, rngs=nnx.Rngs(seed))


def masked_value_fn(game: Mapping[str, Any], model: nnx.Module) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The game ``(x float[B, d], mask bool[B, d]) -> float[B, k]`` of a tabular model, closed over its state.

  Args:
    game: ``{"removal": "baseline", "reference": float[d], "postprocess": ...}`` for a plain model on inputs
      whose held-out features take the reference value, or ``{"removal": "surrogate", "postprocess": ...}`` for a
      masked model ``model(x, mask)`` (e.g. a masked MLP on [x * m, m]); ``postprocess`` is 'softmax' (class
      probabilities) or 'identity' (regression outputs, float[B, 1]).
    model: the module (``mlp`` or ``masked_mlp``).

  Example:
    >>> net = build_module({"kind": "mlp", "in_features": 2, "hidden_sizes": [], "out_features": 1})
    >>> v = masked_value_fn({"removal": "baseline", "reference": [0.0, 0.0], "postprocess": "identity"}, net)
    >>> bool(jnp.allclose(v(jnp.ones((1, 2)), jnp.zeros((1, 2), bool)), net(jnp.zeros((1, 2)))))
    True
  """
  removal, post_name = game.get("removal"), game.get("postprocess", "identity")
  if post_name not in _POSTPROCESS:
    raise ValueError(f"game['postprocess'] must be one of {sorted(_POSTPROCESS)}, got {post_name!r}.")
  post = _POSTPROCESS[post_name]
  graphdef, state = nnx.split(model)
  if removal == "baseline":
    reference = jnp.asarray(game["reference"], jnp.float32)
    return lambda x, m: post(nnx.merge(graphdef, state)(jnp.where(m, x, reference)))
  if removal == "surrogate":
    return lambda x, m: post(nnx.merge(graphdef, state)(x, m))
  raise ValueError(f"game['removal'] must be 'baseline' or 'surrogate', got {removal!r}.")


class Explainer:
  """A trained amortized explainer: ``explainer(x float[B, d]) -> float[B, d, classes]`` in one forward pass.

  With ``normalize=True`` the raw outputs get the additive efficient normalization, using the grand and null
  values of the game (the model it explains, held by the explainer), so that every explanation sums to
  ``v_x(1) - v_x(0)`` per class.

  Attributes:
    num_features: d.
    num_classes: k (1 for a regression model).
    normalize: whether outputs are efficiency-normalized.
    metadata: the free-form dict saved with it (method, dataset, feature and class names, ...).
  """

  def __init__(self, module: nnx.Module, *, num_features: int, num_classes: int, normalize: bool = False,
               value_fn: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
               metadata: Mapping[str, Any] | None = None):
    if normalize and value_fn is None:
      raise ValueError("normalize=True needs value_fn (the game (x, mask) -> values) for grand and null.")
    self.num_features, self.num_classes = int(num_features), int(num_classes)
    self.normalize = bool(normalize)
    self.metadata = dict(metadata or {})
    self.value_fn = value_fn
    graphdef, state = nnx.split(module)
    self._state = state

    def explain(state, x):
      phi = nnx.merge(graphdef, state)(x)
      if not self.normalize:
        return phi
      ones = jnp.ones(x.shape, bool)
      return efficient_normalize(phi, value_fn(x, ones), value_fn(x, ~ones))

    self._explain = jax.jit(explain)

  def __call__(self, x: Any) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != self.num_features or not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f"x must be float[batch, num_features={self.num_features}], got shape {tuple(x.shape)} "
                       f"and dtype {x.dtype}.")
    return self._explain(self._state, x.astype(jnp.float32))


def _pure_params(module: nnx.Module) -> dict[str, Any]:
  return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def save(path: str | os.PathLike, explainer: nnx.Module, explainer_spec: Mapping[str, Any], *,
         game: Mapping[str, Any] | None = None, game_model: nnx.Module | None = None,
         game_model_spec: Mapping[str, Any] | None = None, normalize: bool = False,
         metadata: Mapping[str, Any] | None = None) -> str:
  """Saves a trained explainer (and the game model it normalizes with) so that :func:`load` needs nothing else.

  Writes ``path/architecture.json`` (the module specs, game, normalization flag and metadata) and an Orbax
  checkpoint ``path/params`` of the parameters.

  Args:
    path: output folder (created; an existing checkpoint there is overwritten).
    explainer: the trained explainer module, built from ``explainer_spec`` (see :func:`build_module`).
    explainer_spec: e.g. ``{"kind": "mlp_explainer", "num_features": d, "hidden_sizes": [128, 128],
      "num_classes": k}``.
    game: see :func:`masked_value_fn`; needed with ``normalize``.
    game_model, game_model_spec: the model the game evaluates and its spec.
    normalize: apply the efficient normalization when explaining.
    metadata: JSON-able extras kept in ``architecture.json``.

  Returns:
    the absolute path.
  """
  import orbax.checkpoint as ocp

  if normalize and (game is None or game_model is None or game_model_spec is None):
    raise ValueError("normalize=True needs game, game_model and game_model_spec (grand and null values).")
  path = os.path.abspath(os.fspath(path))
  os.makedirs(path, exist_ok=True)
  game = None if game is None else {k: (np.asarray(v).tolist() if k == "reference" else v) for k, v in game.items()}
  architecture = dict(format=1, explainer=dict(explainer_spec), normalize=bool(normalize), game=game,
                      game_model=None if game_model is None else dict(game_model_spec),
                      metadata=dict(metadata or {}))
  params = {"explainer": _pure_params(explainer)}
  if game_model is not None:
    params["game_model"] = _pure_params(game_model)
  with open(os.path.join(path, "architecture.json"), "w") as f:
    json.dump(architecture, f, indent=2, default=lambda o: np.asarray(o).tolist())
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(os.path.join(path, "params"), params, force=True)
    ckpt.wait_until_finished()
  return path


def _restore_into(module: nnx.Module, pure: dict[str, Any]) -> None:
  state = nnx.state(module, nnx.Param)
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(module, state)


def load(path: str | os.PathLike) -> Explainer:
  """Loads an explainer saved by :func:`save`: ``explainer = load(path); phi = explainer(x)``.

  Returns:
    an :class:`Explainer` mapping float[B, d] (numpy or jax) to float[B, d, classes], with attributes
    ``num_features``, ``num_classes``, ``normalize`` and ``metadata``.

  Raises:
    FileNotFoundError: if ``path`` holds no ``architecture.json``.

  Example:
    >>> import tempfile
    >>> spec = {"kind": "mlp_explainer", "num_features": 3, "hidden_sizes": [4], "num_classes": 2}
    >>> net = build_module(spec)
    >>> explainer = load(save(os.path.join(tempfile.mkdtemp(), "e"), net, spec))
    >>> explainer(np.ones((5, 3), np.float32)).shape, explainer.num_features, explainer.num_classes
    ((5, 3, 2), 3, 2)
  """
  import orbax.checkpoint as ocp

  path = os.path.abspath(os.fspath(path))
  arch_path = os.path.join(path, "architecture.json")
  if not os.path.exists(arch_path):
    raise FileNotFoundError(f"path must be a folder written by xattr.amortize.save (with architecture.json), "
                            f"got {path!r}.")
  with open(arch_path) as f:
    arch = json.load(f)
  explainer = build_module(arch["explainer"])
  target = {"explainer": _pure_params(explainer)}
  game_model = None
  if arch.get("game_model") is not None:
    game_model = build_module(arch["game_model"])
    target["game_model"] = _pure_params(game_model)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  with ocp.StandardCheckpointer() as ckpt:
    params = ckpt.restore(os.path.join(path, "params"), abstract)
  _restore_into(explainer, params["explainer"])
  value_fn = None
  if game_model is not None:
    _restore_into(game_model, params["game_model"])
    value_fn = masked_value_fn(arch["game"], game_model)
  return Explainer(explainer, num_features=explainer.num_features, num_classes=explainer.num_classes,
                   normalize=arch["normalize"], value_fn=value_fn, metadata=arch.get("metadata"))
