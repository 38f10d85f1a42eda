"""The method registry: every registered method is its core function, budgets are honoured, errors are clear."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xattr import attributions, banzhaf, games, lime, loo, methods, shapley
from xattr.estimate import Estimate

D = 6
W = jnp.arange(1.0, D + 1)
MODEL = lambda xb: jnp.tanh(xb @ W / 10)
X = jnp.linspace(-1.0, 1.0, D)
GAME = games.baseline(MODEL, X, jnp.zeros(D))
PROBLEM = methods.Problem(game=GAME, num_players=D)
KEY = jax.random.key(3)

# name -> (settings, the core call the registry must reproduce)
DIRECT = {
    "exact_shapley": ({}, lambda: shapley.exact(GAME, D)),
    "exact_banzhaf": ({}, lambda: banzhaf.exact(GAME, D)),
    "kernel_shap": ({"num_samples": 32}, lambda: shapley.kernel_shap(GAME, D, KEY, num_samples=32).values),
    "permutation": ({"num_permutations": 4}, lambda: shapley.permutation(GAME, D, KEY, num_permutations=4).values),
    "banzhaf_msr": ({"num_samples": 64}, lambda: banzhaf.msr(GAME, D, KEY, num_samples=64).values),
    "kernel_banzhaf": ({"num_samples": 40}, lambda: banzhaf.kernel_banzhaf(GAME, D, KEY, num_samples=40).values),
    "lime": ({"num_samples": 64}, lambda: lime.lime(GAME, D, KEY, num_samples=64).values),
    "leave_one_out": ({}, lambda: loo.leave_one_out(GAME, D)),
    "random": ({}, lambda: attributions.random(KEY, D)),
    "rise": ({"num_masks": 64}, lambda: attributions.rise(GAME, D, KEY, num_masks=64)),
}


@pytest.mark.parametrize("name", sorted(DIRECT))
def test_registered_game_methods_are_their_core_functions(name):
  settings, direct = DIRECT[name]
  est = methods.attribute(name, PROBLEM, KEY, **settings)
  assert isinstance(est, Estimate)
  np.testing.assert_allclose(est.values, direct(), rtol=1e-6, atol=1e-6)


def test_gradient_and_attention_methods():
  logits = lambda xb: jnp.stack([xb @ W, -(xb @ W)], -1)
  problem = methods.Problem(logit_fn=logits, x=X, target=0, num_players=D)
  g = methods.attribute("gradient_x_input", problem, KEY).values
  np.testing.assert_allclose(g, attributions.gradient_x_input(logits, X, 0), rtol=1e-6)
  np.testing.assert_allclose(g, W * X, rtol=1e-6)           # linear logit: gradient x input is w * x
  ig = methods.attribute("integrated_gradients", problem, KEY, num_steps=8).values
  np.testing.assert_allclose(ig, W * X, rtol=1e-5)          # and so is integrated gradients from zero
  np.testing.assert_allclose(methods.attribute("vanilla_gradients", problem, KEY).values, W, rtol=1e-6)
  np.testing.assert_allclose(methods.attribute("vanilla_gradients", problem, KEY, absolute=False).values, W,
                             rtol=1e-6)
  attn = jax.nn.softmax(jax.random.normal(KEY, (2, 1, 5, 5)), -1)
  problem = methods.Problem(attention=attn, num_prefix_tokens=1, num_players=4)
  np.testing.assert_allclose(methods.attribute("last_layer_attention", problem, KEY).values,
                             attributions.last_layer_attention(attn, 1), rtol=1e-6)


def test_efficiency_of_every_shapley_estimate():
  exact = shapley.exact(GAME, D)
  grand_minus_null = float(GAME(jnp.ones((1, D), bool))[0] - GAME(jnp.zeros((1, D), bool))[0])
  for name in methods.names(target="shapley"):
    values = methods.attribute(name, PROBLEM, KEY, budget=40 if methods.get(name).budget_rule else None).values
    np.testing.assert_allclose(float(values.sum()), grand_minus_null, rtol=1e-4, err_msg=name)
  assert float(jnp.abs(exact.sum() - grand_minus_null)) < 1e-5


@pytest.mark.parametrize("name", ["kernel_shap", "odd_kernel_shap", "permutation", "banzhaf_msr", "kernel_banzhaf",
                                  "lime", "rise"])
@pytest.mark.parametrize("budget", [20, 41])
def test_budget_rules_spend_at_most_the_budget(name, budget):
  settings = methods.settings_for(name, D, budget)
  spent = methods.evaluations(name, D, settings)
  assert spent <= max(budget, D + 1)            # lime needs at least d + 1 rows for its regression
  est = methods.attribute(name, PROBLEM, KEY, budget=budget)
  assert int(est.num_evals) == spent


def test_explicit_settings_override_the_budget_rule():
  assert methods.settings_for("kernel_shap", D, 20) == {"num_samples": 18, "exact_a": True}   # < 4d samples
  assert methods.settings_for("kernel_shap", D, 30) == {"num_samples": 28, "exact_a": False}
  assert methods.settings_for("kernel_shap", D, 20, {"exact_a": False}) == {"num_samples": 18, "exact_a": False}
  assert methods.evaluations("kernel_shap", 4, methods.settings_for("kernel_shap", 4, 100)) == 16


def test_under_jit_and_vmap_over_inputs():
  def explain(x):
    problem = methods.Problem(game=games.baseline(MODEL, x, jnp.zeros(D)), num_players=D)
    return methods.attribute("kernel_shap", problem, KEY, num_samples=16).values
  xs = jnp.stack([X, -X, 2 * X])
  batched = jax.jit(jax.vmap(explain))(xs)
  np.testing.assert_allclose(batched[1], explain(xs[1]), rtol=1e-5, atol=1e-6)


def test_clear_errors():
  with pytest.raises(ValueError, match=r"method must be one of the registered names \(.*'kernel_shap'.*got 'nope'"):
    methods.attribute("nope", PROBLEM, KEY)
  with pytest.raises(ValueError, match=r"settings \['num_masks'\] are not arguments of method 'kernel_shap'"):
    methods.attribute("kernel_shap", PROBLEM, KEY, num_masks=3)
  with pytest.raises(ValueError, match="method 'leave_one_out' has no budget rule"):
    methods.attribute("leave_one_out", PROBLEM, KEY, budget=10)
  with pytest.raises(ValueError, match="needs problem.game"):
    methods.attribute("kernel_shap", methods.Problem(num_players=D), KEY, num_samples=8)
  with pytest.raises(ValueError, match="needs problem.logit_fn"):
    methods.attribute("smoothgrad", PROBLEM, KEY)
  with pytest.raises(ValueError, match="budget must be >= 4 for kernel_shap"):
    methods.settings_for("kernel_shap", D, 3)
  with pytest.raises(ValueError, match="already registered"):
    methods.register("kernel_shap")(lambda problem, key: None)
  with pytest.raises(ValueError, match="needs must be one of"):
    methods.register("x", needs="model")


def test_registration_is_one_step_and_reversible():
  @methods.register("half_loo", stochastic=False, evaluations=lambda d, s: d + 1)
  def half_loo(problem, key, *, scale=0.5):
    return Estimate(scale * loo.leave_one_out(problem.game, problem.num_players), None, None, None)

  try:
    assert "half_loo" in methods.names() and methods.get("half_loo").settings == ("scale",)
    np.testing.assert_allclose(methods.attribute("half_loo", PROBLEM, KEY).values,
                               0.5 * loo.leave_one_out(GAME, D), rtol=1e-6)
    with pytest.raises(TypeError, match="must return an xattr.Estimate"):
      methods.register("bad", replace=True)(lambda problem, key: 1.0)
      methods.attribute("bad", PROBLEM, KEY)
  finally:
    methods.unregister("half_loo")
    methods.unregister("bad")
  assert "half_loo" not in methods.names()
