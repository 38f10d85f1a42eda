"""The method registry: one name -> one attribution function with one signature, for every job.

Every attribution method is registered once here, as ``fn(problem, key, **settings) -> Estimate``:

  * ``problem`` (:class:`Problem`) holds what the method may look at: the game (``bool[n, d] -> float[n]`` or
    ``[n, k]``) and its player count, and for model-based methods the logit function, the input, the target
    class and the pixel-to-player pooling, or a ViT's attention weights;
  * ``key`` is a PRNG key (ignored by deterministic methods);
  * ``settings`` are the method's keyword arguments; a ``budget`` of game evaluations can be given instead and is
    turned into settings by the method's budget rule (explicit settings win over the rule).

The result is an :class:`xattr.Estimate` with ``values`` (float[d] or float[d, k]); ``std``, ``num_evals`` and
``converged`` are arrays where the method has them and None where it does not. The attribution job
(``experiments/attribute.py``), the ViT Shapley evaluation, :mod:`xattr.noisy_labels` and the amortization study
all look methods up here, so a method registered once (:func:`register`) is available to all of them.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from xattr import methods
  >>> v = lambda m: m.astype(jnp.float32) @ jnp.array([1.0, 2.0, 3.0])
  >>> problem = methods.Problem(game=v, num_players=3)
  >>> methods.attribute("exact_shapley", problem, jax.random.key(0)).values.tolist()
  [1.0, 2.0, 3.0]
  >>> est = methods.attribute("permutation", problem, jax.random.key(0), budget=10)
  >>> est.values.round(4).tolist(), int(est.num_evals)
  ([1.0, 2.0, 3.0], 10)
  >>> "kernel_shap" in methods.names(target="shapley")
  True
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from xattr import _checks, attributions, banzhaf, lime, loo, shapley
from xattr.estimate import Estimate

__all__ = ["NEEDS", "Problem", "Method", "register", "unregister", "get", "names", "settings_for", "evaluations",
           "attribute"]

NEEDS = ("game", "gradient", "attention", "vit", "none")
Game = Callable[[jax.Array], jax.Array]


class Problem(NamedTuple):
  """What a method explains; fields a method does not need may stay None.

  Attributes:
    game: ``bool[n, d] -> float[n]`` or ``float[n, k]`` (removal game of the input).
    num_players: d (static).
    logit_fn: ``float[b, ...] -> float[b, classes]`` (gradient methods).
    x: the input, without batch axis (gradient methods).
    target: the class gradient methods explain (int or int32 scalar).
    players: pixel-to-player pooling of gradient methods (patch size or group matrix; see
      :mod:`xattr.attributions`); None: one player per feature.
    attention: ``float[depth, heads, T, T]`` attention weights of a ViT on the input (attention methods).
    num_prefix_tokens: tokens before the patch tokens in ``attention`` (class token, registers).
    model: the explained :class:`xattr.models.vit.ViT` itself (methods that read its internals: GradCAM, LRP,
      attention x gradient; with ``x`` and ``target``).
  """

  game: Game | None = None
  num_players: int | None = None
  logit_fn: Callable[[jax.Array], jax.Array] | None = None
  x: jax.Array | None = None
  target: Any = None
  players: Any = None
  attention: jax.Array | None = None
  num_prefix_tokens: int = 0
  model: Any = None


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered method.

  Attributes:
    name: the registry key.
    fn: ``(problem, key, **settings) -> Estimate``.
    needs: which fields of :class:`Problem` it reads: ``'game'``, ``'gradient'`` (logit_fn, x, target, players),
      ``'attention'``, ``'vit'`` (model, x, target) or ``'none'``.
    target: what its values estimate (``'shapley'``, ``'banzhaf'``, ``'lime'``) or None for heuristics.
    stochastic: whether the result depends on the key.
    budget_rule: ``(num_players, budget) -> settings`` spending at most ``budget`` game evaluations; None if the
      method's cost is fixed or not counted in game evaluations.
    evaluations_rule: ``(num_players, settings) -> int`` game evaluations spent; None if not counted.
    settings: the keyword arguments ``fn`` accepts.
  """

  name: str
  fn: Callable[..., Estimate]
  needs: str
  target: str | None
  stochastic: bool
  budget_rule: Callable[[int, int], dict[str, Any]] | None
  evaluations_rule: Callable[[int, Mapping[str, Any]], int] | None
  settings: tuple[str, ...]


_REGISTRY: dict[str, Method] = {}


def register(name: str, *, needs: str = "game", target: str | None = None, stochastic: bool = True,
             budget: Callable[[int, int], dict[str, Any]] | None = None,
             evaluations: Callable[[int, Mapping[str, Any]], int] | None = None,
             replace: bool = False) -> Callable[[Callable[..., Estimate]], Callable[..., Estimate]]:
  """Decorator: registers ``fn(problem, key, **settings) -> Estimate`` under ``name``.

  Args:
    name: the method's name in configs and reports.
    needs: one of :data:`NEEDS`.
    target: what the values estimate, or None.
    stochastic: whether the key matters.
    budget: ``(num_players, budget) -> settings`` (see :class:`Method`).
    evaluations: ``(num_players, settings) -> int`` (see :class:`Method`).
    replace: allow replacing an existing registration (otherwise a clash raises).

  Example:
    >>> @register("first_player_only", needs="none", stochastic=False, replace=True)
    ... def first(problem, key):
    ...   d = problem.num_players
    ...   return Estimate(jnp.zeros(d).at[0].set(1.0), None, None, None)
    >>> attribute("first_player_only", Problem(num_players=3), jax.random.key(0)).values.tolist()
    [1.0, 0.0, 0.0]
    >>> unregister("first_player_only")
  """
  if needs not in NEEDS:
    raise ValueError(f"needs must be one of {NEEDS}, got {needs!r}.")

  def decorate(fn: Callable[..., Estimate]) -> Callable[..., Estimate]:
    if name in _REGISTRY and not replace:
      raise ValueError(f"method {name!r} is already registered; pass replace=True to override it.")
    params = list(inspect.signature(fn).parameters.values())
    if len(params) < 2:
      raise TypeError(f"a method must take (problem, key, **settings); {fn.__name__} takes {len(params)} "
                      "positional argument(s).")
    settings = tuple(p.name for p in params[2:] if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
    _REGISTRY[name] = Method(name, fn, needs, target, stochastic, budget, evaluations, settings)
    return fn

  return decorate


def unregister(name: str) -> None:
  """Removes a registration (for tests and notebooks that re-register)."""
  _REGISTRY.pop(name, None)


def get(name: str) -> Method:
  """The method registered as ``name``.

  Raises:
    ValueError: no such method (the message lists the registered names).
  """
  if name not in _REGISTRY:
    raise ValueError(f"method must be one of the registered names {names()}, got {name!r}. Register new ones "
                     "with xattr.methods.register.")
  return _REGISTRY[name]


def names(*, needs: str | None = None, target: str | None = None) -> tuple[str, ...]:
  """Registered names (registration order), optionally only those with the given ``needs`` / ``target``."""
  return tuple(m.name for m in _REGISTRY.values()
               if (needs is None or m.needs == needs) and (target is None or m.target == target))


def settings_for(name: str, num_players: int, budget: int | None = None,
                 settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The settings a call uses: the budget rule's (if ``budget``), overridden by explicit ``settings``.

  Raises:
    ValueError: a setting the method does not take, or a budget for a method without a budget rule.

  Example:
    >>> settings_for("permutation", 5, 34)
    {'num_permutations': 8}
  """
  method = get(name)
  out: dict[str, Any] = {}
  if budget is not None:
    if method.budget_rule is None:
      raise ValueError(f"method {name!r} has no budget rule (its cost is fixed); got budget={budget}.")
    out.update(method.budget_rule(_checks.positive_int("num_players", num_players),
                                  _checks.positive_int("budget", budget)))
  out.update(settings or {})
  unknown = sorted(set(out) - set(method.settings))
  if unknown:
    raise ValueError(f"settings {unknown} are not arguments of method {name!r}; it takes {list(method.settings)}.")
  return out


def evaluations(name: str, num_players: int, settings: Mapping[str, Any]) -> int | None:
  """Game evaluations a call with ``settings`` spends (None if the method does not count them).

  Example:
    >>> evaluations("kernel_shap", 4, settings_for("kernel_shap", 4, 100))   # all 2^4 coalitions, exact
    16
  """
  rule = get(name).evaluations_rule
  return None if rule is None else int(rule(num_players, settings))


def _check_problem(method: Method, problem: Problem) -> None:
  if not isinstance(problem, Problem):
    raise TypeError(f"problem must be an xattr.methods.Problem, got {type(problem).__name__}.")
  if method.needs == "game" and (problem.game is None or problem.num_players is None):
    raise ValueError(f"method {method.name!r} needs problem.game and problem.num_players.")
  if method.needs == "gradient" and (problem.logit_fn is None or problem.x is None or problem.target is None):
    raise ValueError(f"method {method.name!r} needs problem.logit_fn, problem.x and problem.target.")
  if method.needs == "attention" and problem.attention is None:
    raise ValueError(f"method {method.name!r} needs problem.attention (the ViT's attention weights).")
  if method.needs == "vit" and (problem.model is None or problem.x is None or problem.target is None):
    raise ValueError(f"method {method.name!r} needs problem.model (the ViT), problem.x and problem.target.")


def attribute(name: str, problem: Problem, key: jax.Array, *, budget: int | None = None,
              **settings: Any) -> Estimate:
  """Runs the method ``name`` on ``problem``: the one entry point every job uses.

  Args:
    name: a registered method (see :func:`names`).
    problem: what to explain.
    key: PRNG key.
    budget: game evaluations to spend (turned into settings by the method's budget rule).
    **settings: the method's own arguments (override the budget rule's).

  Returns:
    :class:`xattr.Estimate`; fields the method does not produce are None.
  """
  method = get(name)
  _check_problem(method, problem)
  out = method.fn(problem, key, **settings_for(name, problem.num_players or 0, budget, settings))
  if not isinstance(out, Estimate):
    raise TypeError(f"method {name!r} must return an xattr.Estimate, got {type(out).__name__}.")
  return out


# ---------------------------------------------------------------------------------------------------------------
# Budget rules: settings that spend at most `budget` game evaluations (grand and null included)
# ---------------------------------------------------------------------------------------------------------------

def _kernel_shap_budget(d: int, budget: int) -> dict[str, Any]:
  num_samples = (budget - 2) - (budget - 2) % 2
  if num_samples < 2:
    raise ValueError(f"budget must be >= 4 for kernel_shap (grand, null and one pair), got {budget}.")
  # The original estimator's sampled system is (nearly) singular below a few samples per player (errors of
  # 10^3 and more at 2d-3d samples, d = 13): there the unbiased estimator (closed-form A) is far better.
  return dict(num_samples=num_samples, exact_a=num_samples < 4 * d)


def _kernel_shap_evals(d: int, s: Mapping[str, Any]) -> int:
  if s.get("num_samples") is None:
    raise ValueError("kernel_shap without num_samples runs until converged: its evaluations are only known after "
                     "the run (Estimate.num_evals).")
  # A budget that covers every coalition is spent on enumerating them (exact values), no more.
  return min(int(s["num_samples"]), 2 ** d - 2) + 2


def _permutation_budget(d: int, budget: int) -> dict[str, Any]:
  if d < 2:
    raise ValueError(f"num_players must be >= 2 for permutation sampling, got {d}.")
  orderings = max(2, (budget - 2) // (d - 1))
  return dict(num_permutations=orderings - orderings % 2)


def _fixed(value: Any) -> jax.Array:
  return jnp.asarray(value, jnp.int32)


# ---------------------------------------------------------------------------------------------------------------
# The built-in methods
# ---------------------------------------------------------------------------------------------------------------

@register("exact_shapley", target="shapley", stochastic=False, evaluations=lambda d, s: 2 ** d)
def _exact_shapley(problem: Problem, key: jax.Array, *, batch_size: int = 4096) -> Estimate:
  del key
  d = problem.num_players
  return Estimate(shapley.exact(problem.game, d, batch_size=batch_size), None, _fixed(2 ** d), None)


@register("exact_banzhaf", target="banzhaf", stochastic=False, evaluations=lambda d, s: 2 ** d)
def _exact_banzhaf(problem: Problem, key: jax.Array, *, batch_size: int = 4096) -> Estimate:
  del key
  d = problem.num_players
  return Estimate(banzhaf.exact(problem.game, d, batch_size=batch_size), None, _fixed(2 ** d), None)


@register("kernel_shap", target="shapley", budget=_kernel_shap_budget, evaluations=_kernel_shap_evals)
def _kernel_shap(problem: Problem, key: jax.Array, *, num_samples: int | None = None, batch_size: int = 512,
                 paired: bool = True, exact_a: bool = False, threshold: float = 0.01, max_samples: int | None = None,
                 enumerate_sizes: int | None = None) -> Estimate:
  kw = dict(num_samples=num_samples, batch_size=batch_size, paired=paired, exact_a=exact_a, threshold=threshold,
            enumerate_sizes=enumerate_sizes)
  if max_samples is not None:
    kw["max_samples"] = max_samples
  return shapley.kernel_shap(problem.game, problem.num_players, key, **kw)


def _shapley_budget(d: int, budget: int) -> dict[str, Any]:
  num_samples = (budget - 2) - (budget - 2) % 2
  if num_samples < 2:
    raise ValueError(f"budget must be >= 4 for shapley (grand, null and one pair), got {budget}.")
  return dict(num_samples=num_samples)


@register("shapley", target="shapley", budget=_shapley_budget, evaluations=_kernel_shap_evals)
def _shapley(problem: Problem, key: jax.Array, *, num_samples: int | None = None, batch_size: int = 512,
             threshold: float = 0.01, max_samples: int | None = None) -> Estimate:
  # The recommended default: shapley.estimate picks odd_kernel_shap or kernel_shap (shapley.estimator_for).
  kw = dict(num_samples=num_samples, batch_size=batch_size, threshold=threshold)
  if max_samples is not None:
    kw["max_samples"] = max_samples
  return shapley.estimate(problem.game, problem.num_players, key, **kw)


@register("odd_kernel_shap", target="shapley", budget=lambda d, b: dict(num_samples=max(b - 2, 2) // 2 * 2),
          evaluations=_kernel_shap_evals)
def _odd_kernel_shap(problem: Problem, key: jax.Array, *, num_samples: int, batch_size: int = 512,
                     enumerate_sizes: int | None = None, ridge: float | None = None, prior: str = "heredity",
                     threshold: float = 0.01) -> Estimate:
  return shapley.odd_kernel_shap(problem.game, problem.num_players, key, num_samples=num_samples,
                                 batch_size=batch_size, enumerate_sizes=enumerate_sizes, ridge=ridge,
                                 prior=prior, threshold=threshold)


@register("permutation", target="shapley", budget=_permutation_budget,
          evaluations=lambda d, s: int(s["num_permutations"]) * (d - 1) + 2)
def _permutation(problem: Problem, key: jax.Array, *, num_permutations: int, batch_size: int = 512,
                 antithetic: bool = True) -> Estimate:
  return shapley.permutation(problem.game, problem.num_players, key, num_permutations=num_permutations,
                             batch_size=batch_size, antithetic=antithetic)


@register("banzhaf_msr", target="banzhaf", budget=lambda d, b: dict(num_samples=b),
          evaluations=lambda d, s: int(s["num_samples"]))
def _banzhaf_msr(problem: Problem, key: jax.Array, *, num_samples: int, batch_size: int = 512) -> Estimate:
  return banzhaf.msr(problem.game, problem.num_players, key, num_samples=num_samples, batch_size=batch_size)


def _kernel_banzhaf_budget(d: int, budget: int) -> dict[str, int]:
  return dict(num_samples=max(budget // 2 * 2, 2 * (d + 2)))


@register("kernel_banzhaf", target="banzhaf", budget=_kernel_banzhaf_budget,
          evaluations=lambda d, s: min(int(s["num_samples"]), 2 ** d))
def _kernel_banzhaf(problem: Problem, key: jax.Array, *, num_samples: int, batch_size: int = 512,
                    interactions: bool = True, ridge: float | None = None,
                    prior: str = "heredity") -> Estimate:
  return banzhaf.kernel_banzhaf(problem.game, problem.num_players, key, num_samples=num_samples,
                                batch_size=batch_size, interactions=interactions, ridge=ridge, prior=prior)


@register("banzhaf", target="banzhaf", budget=_kernel_banzhaf_budget,
          evaluations=lambda d, s: min(int(s["num_samples"]), 2 ** d) if banzhaf.estimator_for(
              d, s["num_samples"]) == "kernel_banzhaf" else int(s["num_samples"]))
def _banzhaf_default(problem: Problem, key: jax.Array, *, num_samples: int, batch_size: int = 512,
                     threshold: float = 0.01) -> Estimate:
  # The recommended default: banzhaf.estimate picks kernel_banzhaf or msr (banzhaf.estimator_for).
  return banzhaf.estimate(problem.game, problem.num_players, key, num_samples=num_samples, batch_size=batch_size,
                          threshold=threshold)


@register("lime", target="lime", budget=lambda d, b: dict(num_samples=max(b, d + 1)),
          evaluations=lambda d, s: int(s["num_samples"]))
def _lime(problem: Problem, key: jax.Array, *, num_samples: int = 1000, batch_size: int = 512,
          kernel_width: float = 0.5) -> Estimate:
  return lime.lime(problem.game, problem.num_players, key, num_samples=num_samples, batch_size=batch_size,
                   kernel_width=kernel_width)


@register("leave_one_out", stochastic=False, evaluations=lambda d, s: d + 1)
def _leave_one_out(problem: Problem, key: jax.Array) -> Estimate:
  del key
  d = problem.num_players
  return Estimate(loo.leave_one_out(problem.game, d), None, _fixed(d + 1), None)


@register("random", needs="none", evaluations=lambda d, s: 0)
def _random(problem: Problem, key: jax.Array) -> Estimate:
  return Estimate(attributions.random(key, problem.num_players), None, _fixed(0), None)


@register("rise", budget=lambda d, b: dict(num_masks=b), evaluations=lambda d, s: int(s["num_masks"]))
def _rise(problem: Problem, key: jax.Array, *, num_masks: int, p: float = 0.5,
          batch_size: int | None = None) -> Estimate:
  values = attributions.rise(problem.game, problem.num_players, key, num_masks=num_masks, p=p, batch_size=batch_size)
  return Estimate(values, None, _fixed(num_masks), None)


@register("gradient_x_input", needs="gradient", stochastic=False)
def _gradient_x_input(problem: Problem, key: jax.Array) -> Estimate:
  del key
  values = attributions.gradient_x_input(problem.logit_fn, problem.x, problem.target, players=problem.players)
  return Estimate(values, None, None, None)


@register("integrated_gradients", needs="gradient", stochastic=False)
def _integrated_gradients(problem: Problem, key: jax.Array, *, num_steps: int = 32) -> Estimate:
  del key
  values = attributions.integrated_gradients(problem.logit_fn, problem.x, problem.target, num_steps=num_steps,
                                             players=problem.players)
  return Estimate(values, None, None, None)


@register("smoothgrad", needs="gradient")
def _smoothgrad(problem: Problem, key: jax.Array, *, num_samples: int = 32, sigma: float = 0.15) -> Estimate:
  values = attributions.smoothgrad(problem.logit_fn, problem.x, problem.target, key, num_samples=num_samples,
                                   sigma=sigma, players=problem.players)
  return Estimate(values, None, None, None)


@register("attention_rollout", needs="attention", stochastic=False)
def _attention_rollout(problem: Problem, key: jax.Array, *, head_fusion: str = "mean") -> Estimate:
  del key
  values = attributions.attention_rollout(problem.attention, problem.num_prefix_tokens, head_fusion=head_fusion)
  return Estimate(values, None, None, None)


@register("last_layer_attention", needs="attention", stochastic=False)
def _last_layer_attention(problem: Problem, key: jax.Array) -> Estimate:
  del key
  return Estimate(attributions.last_layer_attention(problem.attention, problem.num_prefix_tokens), None, None, None)


@register("vanilla_gradients", needs="gradient", stochastic=False)
def _vanilla_gradients(problem: Problem, key: jax.Array, *, absolute: bool = True) -> Estimate:
  del key
  values = attributions.vanilla_gradients(problem.logit_fn, problem.x, problem.target, absolute=absolute,
                                          players=problem.players)
  return Estimate(values, None, None, None)


@register("gradcam", needs="vit", stochastic=False)
def _gradcam(problem: Problem, key: jax.Array, *, layer: int | None = None) -> Estimate:
  del key
  return Estimate(attributions.gradcam(problem.model, problem.x, problem.target, layer=layer), None, None, None)


@register("attention_x_gradient", needs="vit", stochastic=False)
def _attention_x_gradient(problem: Problem, key: jax.Array, *, layer: int = -1) -> Estimate:
  del key
  values = attributions.attention_x_gradient(problem.model, problem.x, problem.target, layer=layer)
  return Estimate(values, None, None, None)


@register("gradient_rollout", needs="vit", stochastic=False)
def _gradient_rollout(problem: Problem, key: jax.Array) -> Estimate:
  del key
  return Estimate(attributions.gradient_rollout(problem.model, problem.x, problem.target), None, None, None)


@register("lrp", needs="vit", stochastic=False)
def _lrp(problem: Problem, key: jax.Array) -> Estimate:
  del key
  return Estimate(attributions.lrp(problem.model, problem.x, problem.target), None, None, None)
