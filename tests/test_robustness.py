"""Robustness bounds as code (xattr.robustness): operator constants vs brute force, tightness, the game-perturbation
bounds on random and adversarial (PGD) perturbations over many seeds, and Lipschitz upper >= lower."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import table_game
from xattr import banzhaf, games, loo, shapley
from xattr.models import MLP, functional
from xattr.robustness import bounds, lipschitz, models, operators, perturb
from xattr.robustness import problem as problem_lib
from xattr.robustness import study


# --- summary operators -------------------------------------------------------------------------------------------

def test_matrices_match_the_estimators():
  d = 4
  values = np.random.default_rng(d).normal(size=2 ** d)
  game = table_game(values)
  got = {t: operators.matrix(t, d) @ values for t in operators.TECHNIQUES}
  np.testing.assert_allclose(got["shapley"], shapley.exact(game, d), atol=1e-5)
  np.testing.assert_allclose(got["banzhaf"], banzhaf.exact(game, d), atol=1e-5)
  np.testing.assert_allclose(got["leave_one_out"], loo.leave_one_out(game, d), atol=1e-5)
  z = operators.coalitions(d)
  np.testing.assert_allclose(got["mean_when_included"], [values[z[:, i]].mean() for i in range(d)], atol=1e-12)


def _brute_force(w: np.ndarray) -> float:
  """max ||W u|| over every sign vector u of all 2^d columns (no merging)."""
  n = w.shape[1]
  signs = np.array(list(itertools.product([-1.0, 1.0], repeat=n)))
  return float(np.sqrt(np.max(np.sum((signs @ w.T) ** 2, axis=1))))


@pytest.mark.parametrize("d", [1, 2, 3, 4])
@pytest.mark.parametrize("technique", operators.TECHNIQUES)
def test_constants_match_brute_force(technique, d):
  w = operators.matrix(technique, d)
  brute = _brute_force(w)
  assert operators.exact_norm(w) == pytest.approx(brute, rel=1e-9)
  c = operators.constant(technique, d)
  assert c.value == pytest.approx(brute, rel=1e-9)
  assert c.lower <= brute * (1 + 1e-9) and operators.upper_bound(w) >= brute * (1 - 1e-9)
  # The paper's 2 sqrt(d) bounds every probabilistic value (mean when included: sqrt(d)).
  assert brute <= c.paper * (1 + 1e-9)
  if technique != "shapley":
    assert operators.closed_form(technique, d) == pytest.approx(brute, rel=1e-9)


def test_shapley_constant_brackets_and_stays_far_below_the_paper_bound():
  for d in range(2, 8):
    c = operators.constant("shapley", d)
    assert 2.0 - 1e-9 <= c.lower <= c.value <= c.upper <= c.paper + 1e-9, (d, c)
  assert operators.constant("shapley", 5).exact == pytest.approx(2.03306, abs=1e-4)      # exhaustive search
  assert operators.constant("shapley", 7).upper < 0.7 * operators.constant("shapley", 7).paper


@pytest.mark.parametrize("technique,d", [("leave_one_out", 5), ("banzhaf", 6), ("mean_when_included", 4)])
def test_a_game_pair_attains_the_bound(technique, d):
  u, v = operators.attaining_pair(technique, d)
  w = operators.matrix(technique, d)
  assert np.abs(u - v).max() == pytest.approx(1.0)
  assert np.linalg.norm(w @ (u - v)) == pytest.approx(operators.constant(technique, d).value, rel=1e-9)
  if technique == "leave_one_out":
    assert np.linalg.norm(w @ (u - v)) == pytest.approx(2 * math.sqrt(d))


@pytest.mark.parametrize("technique", operators.TECHNIQUES)
def test_random_and_adversarial_game_perturbations_stay_within_the_bound(technique):
  d = 6
  w = operators.matrix(technique, d)
  c = operators.constant(technique, d).value
  _, worst = operators.lower_bound(w)
  rng = np.random.default_rng(0)
  for seed in range(200):
    u = rng.normal(size=2 ** d)
    delta = rng.uniform(0.01, 2.0)
    kind = seed % 3
    du = (rng.uniform(-1, 1, 2 ** d) if kind == 0 else rng.choice([-1.0, 1.0], 2 ** d) if kind == 1 else worst)
    du = delta * du / np.abs(du).max()
    assert np.linalg.norm(w @ (u + du) - w @ u) <= c * delta * (1 + 1e-9)


def test_operator_errors_name_the_argument():
  with pytest.raises(ValueError, match="technique must be one of"):
    operators.matrix("owen", 3)
  with pytest.raises(ValueError, match="num_players must be <= 14"):
    operators.matrix("shapley", 15)
  with pytest.raises(ValueError, match="distinct column directions"):
    operators.exact_norm(operators.matrix("shapley", 7))


# --- Lipschitz constants -----------------------------------------------------------------------------------------

def _random_mlp(seed: int, d: int = 5, hidden: tuple[int, ...] = (12, 12), kind: str = "plain"):
  net = (models.SpectralMLP(d, hidden, 2, cap=0.8, rngs=nnx.Rngs(seed)) if kind == "spectral"
         else MLP(d, hidden, 2, rngs=nnx.Rngs(seed)))
  if kind == "plain":           # sharper than the default init, so that the bounds are exercised
    for layer in net.layers:
      layer.kernel[...] = 2.0 * layer.kernel[...]
  return net


def test_linear_and_logistic_lipschitz_constants_are_exact():
  w = jnp.array([1.0, -2.0, 0.5])
  f = lambda x: x @ w
  g = lambda x: jax.nn.sigmoid(x @ w + 0.3)
  assert float(lipschitz.linear(w)) == pytest.approx(float(lipschitz.gradient_norms(f, jnp.ones((1, 3)))[0]))
  on_boundary = (-0.3 * w / jnp.dot(w, w))[None]
  assert float(lipschitz.logistic(w)) == pytest.approx(float(lipschitz.gradient_norms(g, on_boundary)[0]), rel=1e-5)
  mat = jax.random.normal(jax.random.key(0), (4, 3))
  assert float(lipschitz.linear(mat)) == pytest.approx(float(jnp.linalg.norm(mat, 2)), rel=1e-5)


@pytest.mark.parametrize("kind", ["plain", "spectral"])
def test_lipschitz_upper_bound_exceeds_lower_bound(kind):
  nets = [_random_mlp(seed, kind=kind) for seed in range(2)]
  apply = functional(nets[0]).apply
  lower_fn = jax.jit(lambda state, x, c: lipschitz.gradient_lower(lambda xb: apply(state, xb)[:, c], x, num_steps=3),
                     static_argnums=2)
  for seed, net in enumerate(nets):
    kernels, _ = models.layers(net)
    x = jax.random.normal(jax.random.key(seed), (32, 5))
    for c in (0, 1):
      upper = float(lipschitz.mlp_upper(kernels, output=c))
      lower = float(lower_fn(functional(net).state, x, c))
      assert 0 < lower <= upper * (1 + 1e-5), (seed, c, lower, upper)
    power = float(lipschitz.mlp_upper(kernels, method="power"))
    # Power iteration converges from below (close singular values slow it down); SVD is the certified one.
    svd = float(lipschitz.mlp_upper(kernels))
    assert 0.95 * svd <= power <= svd * (1 + 1e-5)
    if kind == "spectral":
      assert all(float(jnp.linalg.norm(k, 2)) <= 0.8 * (1 + 1e-5) for k in kernels)
      assert svd <= 0.8 ** 3 * (1 + 1e-5)
  with pytest.raises(ValueError, match="method must be 'power' or 'svd'"):
    lipschitz.spectral_norm(jnp.eye(2), method="qr")


# --- game perturbation bounds ------------------------------------------------------------------------------------

D, F = 4, 4
COV = problem_lib.gaussian_covariance(F, 0.3, 0.9)
COND = bounds.gaussian_conditional(np.zeros(F), COV)
W_ALL = jnp.asarray(np.stack([operators.matrix(t, D) for t in operators.TECHNIQUES]), jnp.float32)
CONSTS = np.array([operators.constant(t, D).value for t in operators.TECHNIQUES])


def test_gaussian_conditional_matches_regression():
  t = 0b0101                                             # keep features 0 and 2
  keep, rest = [0, 2], [1, 3]
  gain = COV[np.ix_(rest, keep)] @ np.linalg.inv(COV[np.ix_(keep, keep)])
  np.testing.assert_allclose(np.asarray(COND.a[t])[np.ix_(rest, keep)], gain, atol=1e-6)
  cond_cov = COV[np.ix_(rest, rest)] - gain @ COV[np.ix_(keep, rest)]
  chol = np.asarray(COND.chol[t])[np.ix_(rest, rest)]
  np.testing.assert_allclose(chol @ chol.T, cond_cov, atol=1e-5)
  # TV of N(m, s^2) vs N(m', s^2) in 1-D by numerical integration.
  cond1 = bounds.gaussian_conditional(np.zeros(2), np.array([[1.0, 0.8], [0.8, 1.0]]))
  tv = float(bounds.conditional_tv(cond1, jnp.array([0.5, 0.0]))[1])
  s, shift = math.sqrt(1 - 0.64), 0.8 * 0.5
  grid = np.linspace(-10, 10, 200001)
  pdf = lambda m: np.exp(-0.5 * ((grid - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
  assert tv == pytest.approx(0.5 * np.trapezoid(np.abs(pdf(0) - pdf(shift)), grid), abs=1e-4)


def _tables(apply, state, ref, bg, noise):
  out = lambda xb: jax.nn.softmax(apply(state, xb), -1)[:, 1]
  return {"baseline": lambda x: bounds.game_table(games.baseline(out, x, ref), D),
          "marginal": lambda x: bounds.game_table(games.marginal(out, x, bg), D),
          "conditional": lambda x: bounds.game_table(bounds.conditional_game(out, x, COND, noise), D)}


def test_input_bounds_hold_for_gaussian_and_pgd_perturbations_over_seeds():
  eps = jnp.array([0.05, 0.3, 1.0])
  rng = np.random.default_rng(1)
  bg = jnp.asarray(rng.multivariate_normal(np.zeros(F), COV, 8), jnp.float32)
  noise = jnp.asarray(rng.normal(size=(8, F)), jnp.float32)
  gain = float(bounds.conditional_gain(COND))
  nets = [_random_mlp(seed, d=F) for seed in range(4)]
  apply = functional(nets[0]).apply

  @jax.jit
  def measure(state, xs, key):          # one compilation serves every seed's network
    tables = _tables(apply, state, jnp.zeros(F), bg, noise)
    one = lambda x, k: {n: perturb.input_changes(fn, W_ALL, x, k, eps, num_steps=4) for n, fn in tables.items()}
    return jax.vmap(one)(xs, jax.random.split(key, xs.shape[0]))

  ratios = []
  for seed, net in enumerate(nets):
    lip = lipschitz.PROBABILITY_FACTOR * float(lipschitz.mlp_upper(models.layers(net)[0]))
    x = jnp.asarray(rng.multivariate_normal(np.zeros(F), COV, 3), jnp.float32)
    got = measure(functional(net).state, x, jax.random.key(seed))
    for name, parts in got.items():
      bound = CONSTS[None] * lip * np.asarray(eps)[:, None] * (gain if name == "conditional" else 1.0)
      for kind in ("gaussian", "pgd"):
        assert (np.asarray(parts[kind]) <= bound[None] * (1 + 1e-4) + 1e-6).all(), (seed, name, kind)
      assert (parts["pgd"] >= parts["gaussian"] - 1e-6).all()
      ratios.append(float((parts["pgd"] / bound[None]).max()))
  assert max(ratios) > 0.01                     # the comparison is not vacuous


def test_per_perturbation_coupling_bound_holds_for_the_monte_carlo_conditional_game():
  rng = np.random.default_rng(2)
  noise = jnp.asarray(rng.normal(size=(16, F)), jnp.float32)
  for seed in range(20):
    net = _random_mlp(seed, d=F)
    f = lambda xb: net(xb)[:, 0]
    lip = float(lipschitz.mlp_upper(models.layers(net)[0], output=0))
    x, dx = jnp.asarray(rng.normal(size=F), jnp.float32), jnp.asarray(rng.normal(size=F) * 0.3, jnp.float32)
    table = lambda z: bounds.game_table(bounds.conditional_game(f, z, COND, noise), D)
    delta = float(jnp.abs(table(x + dx) - table(x)).max())
    bound = bounds.conditional_input_bound(lip, COND, dx)["coupling"]
    assert delta <= float(bound) * (1 + 1e-4) + 1e-6
    assert float(bound) <= lip * float(jnp.linalg.norm(dx)) * float(bounds.conditional_gain(COND)) * (1 + 1e-5)


def test_model_perturbation_bounds_chain_over_seeds():
  rng = np.random.default_rng(3)
  bg = jnp.asarray(rng.normal(size=(6, F)), jnp.float32)
  noise = jnp.asarray(rng.normal(size=(8, F)), jnp.float32)
  rem = study.Removals(problem_lib.Problem("t", np.zeros((1, F)), None, None, None, 2, np.eye(F, dtype=bool),
                                           None, None), np.zeros(F, np.float32), np.asarray(bg), COND, np.asarray(noise))
  x = rng.normal(size=(3, F)).astype(np.float32)
  apply = functional(_random_mlp(0, d=F)).apply
  measure = jax.jit(lambda sf, sg: study.changes(rem, W_ALL, lambda xb: apply(sf, xb)[:, 1],
                                                 lambda xb: apply(sg, xb)[:, 1], jnp.asarray(x)))
  for seed in range(3):
    net = _random_mlp(seed, d=F)
    other = study.perturbed(net, 0.1 * (seed + 1), jax.random.key(seed))
    got = {k: np.asarray(v) for k, v in measure(functional(net).state, functional(other).state).items()}
    ka, ba = models.layers(net)
    kb, bb = models.layers(other)
    for name in ("baseline", "marginal", "conditional"):
      change, delta, pts = got[f"{name}/change"], got[f"{name}/delta"], got[f"{name}/sup_points"]
      assert (change <= CONSTS * delta[:, None] * (1 + 1e-4) + 1e-6).all()
      assert (delta <= pts * (1 + 1e-5) + 1e-6).all() and delta.max() > 0
    for i, xi in enumerate(x):
      radius = bounds.hybrid_radius(xi, bg)
      ball = float(bounds.mlp_difference_bound(ka, ba, kb, bb, radius))
      assert got["marginal/sup_points"][i] <= ball * (1 + 1e-5)
      z = jax.random.normal(jax.random.key(i), (256, F))
      z = z * (radius * jax.random.uniform(jax.random.key(i + 9), (256, 1)) / jnp.linalg.norm(z, axis=1, keepdims=True))
      assert float(jnp.linalg.norm(net(z) - other(z), axis=-1).max()) <= ball * (1 + 1e-5)


def test_off_data_pair_agrees_on_data_and_leaves_conditional_removal_unmoved():
  rng = np.random.default_rng(4)
  cov = problem_lib.gaussian_covariance(F, 0.2, 0.98)
  cond = bounds.gaussian_conditional(np.zeros(F), cov)
  data = rng.multivariate_normal(np.zeros(F), cov, 2000).astype(np.float32)
  net = _random_mlp(0, d=F)
  f = lambda xb: net(xb)[:, 0]
  g, info = study.pair_model(f, data, 3.0)
  assert (info["i"], info["j"]) == (0, 1)
  np.testing.assert_array_equal(np.asarray(g(jnp.asarray(data))), np.asarray(f(jnp.asarray(data))))
  noise = jnp.asarray(rng.normal(size=(32, F)), jnp.float32)
  rem = study.Removals(problem_lib.Problem("t", data, None, None, None, 2, np.eye(F, dtype=bool), None, None),
                       np.zeros(F, np.float32), data[:16], cond, np.asarray(noise))
  x = data[:6] * 1.0
  got = study.model_changes(rem, W_ALL, f, g, x)
  off = min(got["baseline/change"][:, 0].max(), got["marginal/change"][:, 0].max())
  assert off > 0.1 and got["conditional/change"][:, 0].max() < 0.1 * off


def test_perturb_change_is_exact_for_a_linear_model():
  w = jnp.asarray(operators.matrix("banzhaf", 3))[None]
  table = lambda x: bounds.game_table(games.baseline(lambda b: b @ jnp.array([1.0, -2.0, 0.5]), x, jnp.zeros(3)), 3)
  out = perturb.input_changes(table, w, jnp.ones(3), jax.random.key(0), jnp.array([0.2, 1.0]), num_steps=20)
  # Banzhaf of a linear game is w_i (x_i - r_i): the change is ||w * delta||, at most max|w| eps = 2 eps (PGD).
  np.testing.assert_allclose(out["pgd"][:, 0], [0.4, 2.0], rtol=5e-2)
  assert (out["pgd"][:, 0] <= np.array([0.4, 2.0]) * (1 + 1e-5)).all()
  assert (out["gaussian"][:, 0] <= out["pgd"][:, 0] + 1e-6).all()
