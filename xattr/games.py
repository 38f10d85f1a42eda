"""Cooperative games built from a model and an input by removing features.

A *game* is any function ``bool[n, d] -> float[n]`` or ``float[n, k]``: it scores a batch of coalitions at once
(True = player kept). The constructors below return callable pytrees: their arrays (the input, the reference,
the background, group matrices, labels) are leaves and the model function is static. An estimator therefore
compiles once per model and shapes and reuses that program for every new input, and the games stay usable
inside ``jit``/``vmap``/``grad`` (as closures or as arguments). Everything here evaluates its whole mask batch in one
model call: the marginal game flattens (masks x background rows) into a single batch.

Removal:
  * :func:`baseline` – held-out features take a fixed reference value.
  * :func:`marginal` – held-out features are averaged over a background sample.
  * :func:`stochastic_marginal` – the marginal game, which estimators may evaluate on a few random background
    rows per coalition (unbiased, ``rows`` model rows per coalition instead of the background's size).
  * :func:`surrogate` – a model trained to accept ``(x, mask)`` sees the mask directly.
Transforms:
  * :func:`grouped`, :func:`restrict` – players are groups of features / a subset of features.
  * :func:`select` – one output of a vector-valued game; :func:`loss` – minus a loss against a label.

Example:
  >>> import jax.numpy as jnp
  >>> from xattr import games
  >>> f = lambda x: x.sum(-1)
  >>> v = games.baseline(f, jnp.array([1.0, 2.0, 3.0]), jnp.zeros(3))
  >>> v(jnp.array([[True, False, True], [False, False, False]])).tolist()
  [4.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from xattr import _checks
from xattr import masks as masks_lib

Game = Callable[[jax.Array], jax.Array]
Link = str | Callable[[jax.Array], jax.Array] | None

__all__ = ["Game", "LINKS", "get_link", "evaluate", "baseline", "marginal", "stochastic_marginal", "is_stochastic",
           "sample", "sample_speedup", "surrogate", "grouped", "restrict", "select", "loss"]


def evaluate(game: Game, masks: jax.Array, *, batch_size: int | None = None,
             check_finite: bool = True) -> jax.Array:
  """Game values float32[n] or [n, k] on ``masks``: one call, or ``lax.map`` over chunks of ``batch_size`` masks.

  The one chunked game evaluation of the library (estimators, curves, baselines): a large batch of coalitions
  never has to fit in memory at once; the whole chunks share one shape (one trace inside ``lax.map``) and the
  remainder is one more call, so the game never sees padding rows.

  Args:
    game: bool[n, d] -> float[n] or float[n, k].
    masks: bool[n, d].
    batch_size: None evaluates all masks in one call; an int bounds the masks per call (whole chunks, then
      the remainder: the game sees exactly the n masks, no padding rows).
    check_finite: raise on NaN/inf values of a concrete (not traced) result.

  Example:
    >>> v = lambda m: m.astype(jnp.float32) @ jnp.array([1.0, 2.0])
    >>> evaluate(v, jnp.array([[True, False], [True, True], [False, True]]), batch_size=2).tolist()
    [1.0, 3.0, 2.0]
  """
  _checks.mask_batch("masks", masks)
  n, d = masks.shape
  if batch_size is None or n <= batch_size:
    out = jnp.asarray(game(masks))
  else:
    bs = _checks.positive_int("batch_size", batch_size)
    full, rest = divmod(n, bs)                     # whole chunks through lax.map, the remainder in one call
    out = jax.lax.map(game, masks[:full * bs].reshape(full, bs, d))
    out = jnp.asarray(out).reshape(full * bs, *out.shape[2:])
    if rest:
      out = jnp.concatenate([out, jnp.asarray(game(masks[full * bs:])).astype(out.dtype)])
  if out.ndim not in (1, 2) or out.shape[0] != n:
    raise ValueError(f"game must map bool[n, num_players] to float[n] or float[n, k]; for n = {n} masks it "
                     f"returned shape {tuple(out.shape)}.")
  if check_finite:
    _checks.finite("game values", out, "Check the model, the link function and the input.")
  return out.astype(jnp.float32)


def _logit(p: jax.Array) -> jax.Array:
  p = jnp.clip(p, 1e-7, 1 - 1e-7)
  return jnp.log(p) - jnp.log1p(-p)


LINKS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "identity": lambda y: y,
    "softmax": lambda y: jax.nn.softmax(y, axis=-1),
    "logit": _logit,
}


def get_link(link: Link) -> Callable[[jax.Array], jax.Array]:
  """Resolves None / a name in :data:`LINKS` / a callable to a callable.

  Example:
    >>> get_link("logit")(jnp.array(0.5)).item()
    0.0
  """
  if link is None:
    return LINKS["identity"]
  if callable(link):
    return link
  if link not in LINKS:
    raise ValueError(f"link must be None, a callable or one of {sorted(LINKS)}, got {link!r}.")
  return LINKS[link]


def _feature_mask(mask: jax.Array, x_shape: tuple[int, ...]) -> jax.Array:
  """Broadcasts bool[n, f] to x's shape, where f is the size of x's leading axes (e.g. H*W for HxWxC)."""
  n, f = mask.shape
  size = 1
  for lead in range(len(x_shape) + 1):
    if size == f:
      tail = (1,) * (len(x_shape) - lead)
      return mask.reshape(n, *x_shape[:lead], *tail)
    if lead < len(x_shape):
      size *= x_shape[lead]
  raise ValueError(f"mask has {f} columns, which matches no product of x's leading axes; x has shape "
                   f"{x_shape} (expected e.g. {int(np.prod(x_shape))} for one player per feature).")


def _check_game_input(mask: jax.Array) -> None:
  _checks.mask_batch("mask", mask)


class _Game:
  """A callable pytree: the attributes in ``_leaves`` are its children (arrays or inner games), ``_static`` are
  hashable aux data (model functions, links, indices), so ``jit`` keys its cache on them and traces the rest."""

  _leaves: tuple[str, ...] = ()
  _static: tuple[str, ...] = ()

  def tree_flatten(self):
    return tuple(getattr(self, n) for n in self._leaves), tuple(getattr(self, n) for n in self._static)

  @classmethod
  def tree_unflatten(cls, aux, children):
    obj = object.__new__(cls)
    for name, value in zip(cls._leaves + cls._static, tuple(children) + tuple(aux)):
      object.__setattr__(obj, name, value)
    return obj

  @classmethod
  def build(cls, **fields):
    return cls.tree_unflatten(tuple(fields[n] for n in cls._static), tuple(fields[n] for n in cls._leaves))

  def __repr__(self) -> str:
    return f"games.{type(self).__name__.strip('_').lower()}(...)"


def _model_output(out: jax.Array, rows: int, name: str) -> jax.Array:
  """Checks that a model mapped a batch of ``rows`` inputs to float[rows] or float[rows, k]."""
  out = jnp.asarray(out)
  if out.ndim == 0 or out.shape[0] != rows:
    raise ValueError(f"{name} must map a batch float[b, *x.shape] to float[b] or float[b, k] (one output row per "
                     f"input row); for b = {rows} inputs it returned shape {tuple(out.shape)}. A model that returns "
                     f"a scalar per batch needs e.g. jax.vmap or a per-row output.")
  return out


@jax.tree_util.register_pytree_node_class
class _Baseline(_Game):
  _leaves, _static = ("x", "reference"), ("model_fn", "link_fn")

  def __call__(self, mask: jax.Array) -> jax.Array:
    _check_game_input(mask)
    keep = _feature_mask(mask, self.x.shape)
    out = _model_output(self.model_fn(jnp.where(keep, self.x, self.reference)), mask.shape[0], "model_fn")
    return self.link_fn(out)


@jax.tree_util.register_pytree_node_class
class _Marginal(_Game):
  _leaves, _static = ("x", "background"), ("model_fn", "link_fn")

  def __call__(self, mask: jax.Array) -> jax.Array:
    _check_game_input(mask)
    return self.link_fn(_mean_over_rows(self.model_fn, self.x, mask, self.background[None]))


def _mean_over_rows(model_fn, x: jax.Array, mask: jax.Array, rows: jax.Array) -> jax.Array:
  """mean_j f(x_z, rows_j) per mask: ``rows`` is [n or 1, r, *x] (r rows per mask, or shared by all masks); all
  n * r inputs go through the model as one batch."""
  n, r = mask.shape[0], rows.shape[1]
  keep = _feature_mask(mask, x.shape)[:, None]                        # [n, 1, *x]
  inputs = jnp.broadcast_to(jnp.where(keep, x, rows), (n, r, *x.shape))
  out = _model_output(model_fn(inputs.reshape(-1, *x.shape)), n * r, "model_fn")
  return out.reshape(n, r, *out.shape[1:]).mean(axis=1)


@jax.tree_util.register_pytree_node_class
class _StochasticMarginal(_Marginal):
  """The marginal game (its call is exact) plus :meth:`sample`, its unbiased few-rows estimate."""

  _leaves, _static = ("x", "background"), ("model_fn", "link_fn", "rows")

  def sample(self, mask: jax.Array, key: jax.Array, group: int = 1) -> jax.Array:
    _check_game_input(mask)
    x, background = self.x, self.background
    n, m = mask.shape[0], background.shape[0]
    if n % group:
      raise ValueError(f"sample: the {n} masks must come in whole groups of group={group} (paired coalitions).")
    # One draw of `rows` background rows per group, shared by its masks: a pair (z, 1 - z) then sees the same
    # rows, which keeps the pair's sum exact for additive models (the pairing's variance reduction survives).
    idx = jax.random.randint(key, (n // group, 1, self.rows), 0, m)
    idx = jnp.broadcast_to(idx, (n // group, group, self.rows)).reshape(n, self.rows)
    return self.link_fn(_mean_over_rows(self.model_fn, x, mask, background[idx]))


def is_stochastic(game: Game) -> bool:
  """Whether ``game`` (possibly wrapped by :func:`grouped`, :func:`restrict`, :func:`select`) can be
  evaluated by :func:`sample` at less than its exact cost.

  Example:
    >>> f = lambda b: b.sum(-1)
    >>> is_stochastic(stochastic_marginal(f, jnp.ones(2), jnp.zeros((4, 2)))), is_stochastic(f)
    (True, False)
  """
  if isinstance(game, _StochasticMarginal):
    return True
  if isinstance(game, (_Grouped, _Restrict, _Select)):
    return is_stochastic(game.game)
  return False


def sample_speedup(game: Game) -> int:
  """How many times fewer model rows :func:`sample` spends per coalition than a call: m // rows for a
  :func:`stochastic_marginal` game over m background rows (wrapped or not), 1 for any other game.

  Example:
    >>> sample_speedup(stochastic_marginal(lambda b: b.sum(-1), jnp.ones(2), jnp.zeros((64, 2)), rows=2))
    32
  """
  if isinstance(game, _StochasticMarginal):
    return max(game.background.shape[0] // game.rows, 1)
  if isinstance(game, (_Grouped, _Restrict, _Select)):
    return sample_speedup(game.game)
  return 1


def sample(game: Game, mask: jax.Array, key: jax.Array, *, group: int = 1) -> jax.Array:
  """An unbiased random estimate of ``game(mask)``; exactly ``game(mask)`` for games that are not stochastic.

  For :func:`stochastic_marginal` games each group of ``group`` consecutive masks (a coalition and its
  complement, for paired samplers) is evaluated on the same ``rows`` background rows, drawn uniformly with
  replacement: E_key[sample(game, z, key)] = game(z) for every z. Distinct groups get independent rows.

  Args:
    game: a game from this module (wrappers of a stochastic game stay stochastic).
    mask: bool[n, d], n a multiple of ``group``.
    key: PRNG key for the background rows.
    group: consecutive masks that share their rows.

  Example:
    >>> bg = jnp.array([[0.0, 0.0], [2.0, 4.0]])
    >>> v = stochastic_marginal(lambda b: b.sum(-1), jnp.array([1.0, 1.0]), bg)
    >>> z = jnp.array([[True, False]])
    >>> draws = jnp.stack([sample(v, z, jax.random.key(i)) for i in range(200)])
    >>> sorted(set(draws.ravel().tolist())), v(z).tolist()     # one row each: 1 + 0 or 1 + 4; exact mean 3
    ([1.0, 5.0], [3.0])
  """
  _checks.prng_key("key", key)
  if isinstance(game, _StochasticMarginal):
    return game.sample(mask, key, group)
  if isinstance(game, (_Grouped, _Restrict)) and is_stochastic(game):
    return sample(game.game, game.lift(mask), key, group=group)
  if isinstance(game, _Select) and is_stochastic(game):
    return sample(game.game, mask, key, group=group)[..., game.index]
  return game(mask)


@jax.tree_util.register_pytree_node_class
class _Surrogate(_Game):
  _leaves, _static = ("x",), ("masked_model_fn", "link_fn")

  def __call__(self, mask: jax.Array) -> jax.Array:
    _check_game_input(mask)
    xb = jnp.broadcast_to(self.x, (mask.shape[0], *self.x.shape))
    return self.link_fn(_model_output(self.masked_model_fn(xb, mask), mask.shape[0], "masked_model_fn"))


@jax.tree_util.register_pytree_node_class
class _Grouped(_Game):
  _leaves = ("game", "groups")

  def lift(self, mask: jax.Array) -> jax.Array:
    """The inner game's mask (every feature of a kept group kept)."""
    _checks.mask_batch("mask", mask, self.groups.shape[0])
    return masks_lib.expand_groups(mask, self.groups)

  def __call__(self, mask: jax.Array) -> jax.Array:
    return self.game(self.lift(mask))


@jax.tree_util.register_pytree_node_class
class _Restrict(_Game):
  _leaves, _static = ("game",), ("players", "num_features")

  def lift(self, mask: jax.Array) -> jax.Array:
    """The inner game's mask (the features that are not players always kept)."""
    _checks.mask_batch("mask", mask, len(self.players))
    return jnp.ones((mask.shape[0], self.num_features), bool).at[:, np.asarray(self.players)].set(mask)

  def __call__(self, mask: jax.Array) -> jax.Array:
    return self.game(self.lift(mask))


@jax.tree_util.register_pytree_node_class
class _Select(_Game):
  _leaves, _static = ("game",), ("index",)

  def __call__(self, mask: jax.Array) -> jax.Array:
    return self.game(mask)[..., self.index]


@jax.tree_util.register_pytree_node_class
class _Loss(_Game):
  _leaves, _static = ("game", "label"), ("loss_fn",)

  def __call__(self, mask: jax.Array) -> jax.Array:
    return -self.loss_fn(self.game(mask), self.label)


def baseline(model_fn: Callable[[jax.Array], jax.Array], x: jax.Array, reference: jax.Array, *,
             link: Link = None) -> Game:
  """Game that replaces held-out features with a fixed reference.

  Args:
    model_fn: float[b, *x.shape] -> float[b] or float[b, k].
    x: one input, any shape. Players are its flattened features, or its leading axes (e.g. pixels of HxWxC).
    reference: broadcastable to x's shape (e.g. zeros or the data mean).
    link: applied to the model output (None/'identity', 'softmax', 'logit', or a callable).

  Returns:
    game(mask: bool[n, d]) -> float[n] or float[n, k].

  Example:
    >>> v = baseline(lambda b: b @ jnp.array([1.0, 10.0]), jnp.array([1.0, 1.0]), jnp.zeros(2))
    >>> v(jnp.array([[False, True]])).tolist()
    [10.0]
  """
  x = jnp.asarray(x)
  reference = jnp.broadcast_to(jnp.asarray(reference, x.dtype), x.shape)
  return _Baseline.build(x=x, reference=reference, model_fn=model_fn, link_fn=get_link(link))


def marginal(model_fn: Callable[[jax.Array], jax.Array], x: jax.Array, background: jax.Array, *,
             link: Link = None) -> Game:
  """Game that averages the model over a background sample for the held-out features.

  v(z) = link(mean_j f(x_z, b_j,{~z})). All (mask, background row) pairs go through the model as ONE batch of
  n * m rows, so keep n * m within memory (the estimators' ``batch_size`` controls n).

  Args:
    model_fn: float[b, *x.shape] -> float[b] or float[b, k].
    x: one input.
    background: float[m, *x.shape].
    link: applied after averaging over the background (as shap's KernelExplainer does).

  Returns:
    game(mask: bool[n, d]) -> float[n] or float[n, k].

  Example:
    >>> bg = jnp.array([[0.0, 0.0], [2.0, 4.0]])
    >>> v = marginal(lambda b: b.sum(-1), jnp.array([1.0, 1.0]), bg)
    >>> v(jnp.array([[True, False], [False, False]])).tolist()
    [3.0, 3.0]
  """
  x = jnp.asarray(x)
  background = jnp.asarray(background, x.dtype)
  if background.ndim != x.ndim + 1 or background.shape[1:] != x.shape:
    raise ValueError(f"background must have shape [num_rows, *x.shape] = [m, {', '.join(map(str, x.shape))}], "
                     f"got {tuple(background.shape)}.")
  return _Marginal.build(x=x, background=background, model_fn=model_fn, link_fn=get_link(link))


def stochastic_marginal(model_fn: Callable[[jax.Array], jax.Array], x: jax.Array, background: jax.Array, *,
                        rows: int = 1, link: Link = None) -> Game:
  """The marginal game, plus a cheap unbiased estimate of it that sampling estimators use per coalition.

  Called as a game it is exactly :func:`marginal` (m model rows per coalition). :func:`sample` instead
  evaluates each coalition on ``rows`` background rows drawn at random: E[f(x_z, b_{~z})] over a uniform row b
  is v(z), so the estimate is unbiased and costs ``rows`` model rows, m / rows times less. KernelSHAP
  (:func:`xattr.shapley.kernel_shap`) samples its coalitions through :func:`sample`, so the rows' noise is part of
  what its std and convergence test measure; its enumerated coalitions, v(1) and v(0) stay exact. Other
  estimators evaluate the exact game.

  The averaging must happen before any nonlinearity for the estimate to be unbiased, so ``link`` must be
  None/'identity': put a softmax/probability inside ``model_fn`` instead (the model's output is then averaged,
  as in :func:`marginal` with the identity link).

  Args:
    model_fn: float[b, *x.shape] -> float[b] or float[b, k].
    x: one input.
    background: float[m, *x.shape].
    rows: background rows per sampled coalition (1 <= rows <= m).
    link: None or 'identity' (see above).

  Returns:
    game(mask: bool[n, d]) -> float[n] or float[n, k], the exact marginal game.

  Example:
    >>> from xattr import shapley
    >>> rng = np.random.default_rng(0)
    >>> bg = jnp.asarray(rng.normal(size=(64, 6)), jnp.float32)
    >>> x = jnp.ones(6)
    >>> f = lambda b: jnp.tanh(b) @ jnp.arange(1.0, 7.0)
    >>> v = stochastic_marginal(f, x, bg)
    >>> est = shapley.kernel_shap(v, 6, jax.random.key(0), num_samples=2000)
    >>> exact = shapley.exact(marginal(f, x, bg), 6)
    >>> bool(jnp.all(jnp.abs(est.values - exact) < 4 * est.std + 1e-3))
    True
  """
  rows = _checks.positive_int("rows", rows)
  if not (link is None or link == "identity"):
    raise ValueError(f"stochastic_marginal: link must be None or 'identity' (a nonlinear link after a few-row "
                     f"average is biased), got {link!r}; apply the nonlinearity inside model_fn instead.")
  base = marginal(model_fn, x, background)
  if rows > base.background.shape[0]:
    raise ValueError(f"rows must be in [1, {base.background.shape[0]}] (the background's rows), got {rows}.")
  return _StochasticMarginal.build(x=base.x, background=base.background, model_fn=model_fn,
                                   link_fn=get_link(None), rows=rows)


def surrogate(masked_model_fn: Callable[[jax.Array, jax.Array], jax.Array], x: jax.Array, *,
              link: Link = None) -> Game:
  """Game for a model that takes the mask itself (masked MLP on [x*m, m], attention-masked ViT).

  Args:
    masked_model_fn: (float[b, *x.shape], bool[b, d]) -> float[b] or float[b, k].
    x: one input.
    link: applied to the model output.

  Returns:
    game(mask: bool[n, d]) -> float[n] or float[n, k].

  Example:
    >>> f = lambda xb, m: (xb * m).sum(-1)
    >>> surrogate(f, jnp.array([1.0, 2.0]))(jnp.array([[False, True]])).tolist()
    [2.0]
  """
  return _Surrogate.build(x=jnp.asarray(x), masked_model_fn=masked_model_fn, link_fn=get_link(link))


def grouped(game: Game, groups: jax.Array | np.ndarray) -> Game:
  """Game whose players are groups of the inner game's players (features).

  Args:
    game: game over f features.
    groups: bool[d, f] group matrix (see :func:`xattr.masks.group_matrix` / :func:`xattr.masks.patch_groups`).

  Returns:
    game over d players.

  Example:
    >>> inner = lambda m: m.sum(-1).astype(jnp.float32)
    >>> g = grouped(inner, jnp.array([[True, True, False], [False, False, True]]))
    >>> g(jnp.array([[True, False]])).tolist()
    [2.0]
  """
  groups = jnp.asarray(groups, bool)
  if groups.ndim != 2:
    raise ValueError(f"groups must be a bool[num_players, num_features] matrix, got shape {tuple(groups.shape)}.")
  return _Grouped.build(game=game, groups=groups)


def restrict(game: Game, players: Sequence[int], num_features: int) -> Game:
  """Game over a subset of the features; every other feature is always kept.

  Useful to get exact Shapley values for a few features of a wide model.

  Args:
    game: game over ``num_features`` players.
    players: indices of the features that become the players (in this order).
    num_features: the inner game's number of players.

  Returns:
    game over len(players) players.

  Example:
    >>> inner = lambda m: m.sum(-1).astype(jnp.float32)
    >>> restrict(inner, [0, 2], 4)(jnp.array([[False, True]])).tolist()
    [3.0]
  """
  players = np.asarray(list(players), dtype=np.int64)
  nf = _checks.positive_int("num_features", num_features)
  if players.ndim != 1 or players.size == 0 or players.min() < 0 or players.max() >= nf:
    raise ValueError(f"players must be a non-empty list of indices in [0, {nf}), got {players.tolist()}.")
  if np.unique(players).size != players.size:
    raise ValueError(f"players must not repeat an index, got {players.tolist()}.")
  return _Restrict.build(game=game, players=tuple(int(p) for p in players), num_features=nf)


def select(game: Game, index: int) -> Game:
  """Scalar game from one output (e.g. a class) of a vector-valued game.

  Example:
    >>> inner = lambda m: jnp.stack([m.sum(-1), -m.sum(-1)], -1).astype(jnp.float32)
    >>> select(inner, 1)(jnp.array([[True, True]])).tolist()
    [-2.0]
  """
  return _Select.build(game=game, index=index)


def _cross_entropy(probs: jax.Array, label: jax.Array) -> jax.Array:
  p = jnp.take_along_axis(probs, jnp.reshape(label, (1,) * (probs.ndim - 1) + (1,)).astype(jnp.int32), -1)
  return -jnp.log(jnp.clip(p[..., 0], 1e-12, 1.0))


_LOSSES = {
    "cross_entropy": _cross_entropy,
    "mse": lambda pred, target: jnp.sum(jnp.reshape((pred - target) ** 2, (pred.shape[0], -1)), axis=-1),
}


def loss(game: Game, label: jax.Array, loss_fn: str | Callable[[jax.Array, jax.Array], jax.Array] = "cross_entropy"
         ) -> Game:
  """Loss game v(z) = -loss(prediction(z), label): how much each player lowers the loss.

  Args:
    game: prediction game; for 'cross_entropy' it must output class probabilities [n, k] (use link='softmax'
      on logits).
    label: int class index ('cross_entropy') or target ('mse').
    loss_fn: 'cross_entropy', 'mse', or a callable (predictions[n, ...], label) -> float[n].

  Example:
    >>> probs = lambda m: jnp.where(m[:, :1], jnp.array([0.9, 0.1]), jnp.array([0.5, 0.5]))
    >>> v = loss(probs, 0)
    >>> bool(v(jnp.array([[True]]))[0] > v(jnp.array([[False]]))[0])
    True
  """
  if isinstance(loss_fn, str):
    if loss_fn not in _LOSSES:
      raise ValueError(f"loss_fn must be a callable or one of {sorted(_LOSSES)}, got {loss_fn!r}.")
    loss_fn = _LOSSES[loss_fn]
  return _Loss.build(game=game, label=jnp.asarray(label), loss_fn=loss_fn)
