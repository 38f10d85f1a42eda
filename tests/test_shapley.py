"""Shapley estimators against exact enumeration, closed forms and the Shapley axioms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LinearRegression, LogisticRegression

from tests.conftest import brute_force_shapley, table_game
from xattr import games, masks, shapley

KEY = jax.random.key(0)


def additive_game(w, null=0.5):
  w = jnp.asarray(w, jnp.float32)
  return lambda m: null + m.astype(jnp.float32) @ w


def test_exact_matches_brute_force(random_table):
  values, phi = random_table
  np.testing.assert_allclose(shapley.exact(table_game(values), 6, batch_size=16), phi, atol=1e-5)
  # Scalar games come back with scalar shape.
  np.testing.assert_allclose(shapley.exact(table_game(values[:, 0]), 6), phi[:, 0], atol=1e-5)


def test_exact_axioms():
  rng = np.random.default_rng(1)
  d = 5
  masks_ = np.array([[(i >> j) & 1 for j in range(d)] for i in range(2 ** d)], bool)
  # Players 0 and 1 symmetric (the game depends on them only through their count), player 4 null.
  values = rng.normal(size=(d + 1, d + 1))[masks_[:, :2].sum(1), masks_[:, 2:4].sum(1) * 2 // 2]
  values += masks_[:, 2] * 0.7
  phi = np.asarray(shapley.exact(table_game(values), d))
  assert abs(phi[0] - phi[1]) < 1e-6
  assert abs(phi[4]) < 1e-6
  assert abs(phi.sum() - (values[-1] - values[0])) < 1e-5


def test_exact_rejects_too_many_players():
  with pytest.raises(ValueError, match="num_players=21 is too large for exact enumeration"):
    shapley.exact(additive_game(np.ones(21)), 21)


@pytest.mark.parametrize("paired", [True, False])
@pytest.mark.parametrize("num_samples", [24, 40])
def test_original_kernel_shap_is_exact_on_additive_games(paired, num_samples):
  w = np.random.default_rng(2).normal(size=10)
  est = shapley.kernel_shap(additive_game(w), 10, KEY, num_samples=num_samples, batch_size=16, paired=paired)
  np.testing.assert_allclose(est.values, w, atol=5e-5)      # float32 solve of a system with condition ~1e2-1e3
  assert int(est.num_evals) == num_samples + 2


@pytest.mark.parametrize("enumerate_sizes", [0, 1])
@pytest.mark.parametrize("exact_a", [False, True])
@pytest.mark.parametrize("paired", [True, False])
def test_kernel_shap_matches_exact(random_table, exact_a, paired, enumerate_sizes):
  values, phi = random_table
  est = shapley.kernel_shap(table_game(values), 6, KEY, num_samples=8192, batch_size=512, paired=paired,
                            exact_a=exact_a, enumerate_sizes=enumerate_sizes)
  assert est.values.shape == (6, 2) and est.std.shape == (6, 2)
  err = np.abs(np.asarray(est.values) - phi)
  assert np.all(err < 5 * np.asarray(est.std) + 1e-4), (err, est.std)
  assert np.mean(err) < 0.05
  # Efficiency per output.
  np.testing.assert_allclose(np.asarray(est.values).sum(0), values[-1] - values[0], atol=1e-5)


def test_vector_game_equals_per_output_scalar_games(random_table):
  values, _ = random_table
  vec = shapley.kernel_shap(table_game(values), 6, KEY, num_samples=256, batch_size=64, enumerate_sizes=0)
  for k in range(2):
    one = shapley.kernel_shap(table_game(values[:, k]), 6, KEY, num_samples=256, batch_size=64, enumerate_sizes=0)
    np.testing.assert_allclose(vec.values[:, k], one.values, atol=1e-5)
    np.testing.assert_allclose(vec.std[:, k], one.std, rtol=1e-4)


def test_convergence_mode_stops_at_threshold(random_table):
  values, phi = random_table
  loose = shapley.kernel_shap(table_game(values), 6, KEY, threshold=0.05, batch_size=64, enumerate_sizes=0)
  tight = shapley.kernel_shap(table_game(values), 6, KEY, threshold=0.02, batch_size=64, enumerate_sizes=0)
  for est, thr in [(loose, 0.05), (tight, 0.02)]:
    assert bool(est.converged)
    ratio = np.max(est.std, 0) / np.ptp(np.asarray(est.values), 0)
    assert ratio.max() < thr
  assert int(tight.num_evals) > int(loose.num_evals)
  assert np.abs(np.asarray(tight.values) - phi).max() < 5 * float(np.max(tight.std)) + 1e-4
  capped = shapley.kernel_shap(table_game(values), 6, KEY, threshold=1e-5, batch_size=64, max_samples=256,
                                  enumerate_sizes=0)
  assert not bool(capped.converged) and int(capped.num_evals) == 256 + 2      # the cap counts all coalitions


def test_full_enumeration_is_exact_with_zero_std(random_table):
  values, phi = random_table
  # A budget of 72 fits all 62 proper coalitions, so the plan enumerates them and stops there.
  est = shapley.kernel_shap(table_game(values), 6, KEY, num_samples=72)
  np.testing.assert_allclose(est.values, phi, atol=1e-5)
  np.testing.assert_array_equal(est.std, 0.0)
  assert int(est.num_evals) == 2 ** 6 and bool(est.converged)


def test_enumerating_extreme_sizes_reduces_error(random_table):
  """At equal cost, enumerating sizes 1 and d-1 beats sampling them (mean over seeds, d = 10)."""
  rng = np.random.default_rng(5)
  table = rng.normal(size=2 ** 10) + np.array([bin(i).count("1") for i in range(2 ** 10)]) ** 1.5
  game = table_game(table)
  phi = np.asarray(shapley.exact(game, 10))
  keys = jax.random.split(jax.random.key(3), 64)
  errs = {}
  for k in (0, 1):
    run = jax.jit(jax.vmap(lambda key: shapley.kernel_shap(game, 10, key, num_samples=160, batch_size=80,
                                                           enumerate_sizes=k).values))
    errs[k] = np.mean((np.asarray(run(keys)) - phi) ** 2)
  assert errs[1] < 0.8 * errs[0], errs


def test_permutation_matches_exact_and_is_efficient(random_table):
  values, phi = random_table
  for antithetic in (True, False):
    est = shapley.permutation(table_game(values), 6, KEY, num_permutations=2000, antithetic=antithetic)
    np.testing.assert_allclose(np.asarray(est.values).sum(0), values[-1] - values[0], atol=1e-4)
    assert np.all(np.abs(np.asarray(est.values) - phi) < 5 * np.asarray(est.std) + 1e-4)
    assert int(est.num_evals) == 2000 * 5 + 2


def test_permutation_exact_on_additive_game():
  w = np.arange(5.0)
  est = shapley.permutation(additive_game(w), 5, KEY, num_permutations=4)
  np.testing.assert_allclose(est.values, w, atol=1e-5)
  np.testing.assert_allclose(est.std, 0.0, atol=1e-5)


@pytest.mark.parametrize("estimator", ["original", "exact_a", "original+enumerated", "exact_a+enumerated",
                                       "permutation"])
def test_std_is_calibrated_across_seeds(random_table, estimator):
  """Observed spread of estimates over 200 seeds matches the reported std within 20%."""
  values, phi = random_table
  game = table_game(values[:, 0])
  if estimator == "permutation":
    run = lambda k: shapley.permutation(game, 6, k, num_permutations=64, antithetic=True)
  else:
    run = lambda k: shapley.kernel_shap(game, 6, k, num_samples=1024, batch_size=128,
                                        exact_a=estimator.startswith("exact_a"),
                                        enumerate_sizes=1 if estimator.endswith("enumerated") else 0)
  est = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(42), 200))
  observed = np.asarray(est.values).std(0, ddof=1)
  reported = np.sqrt(np.mean(np.asarray(est.std) ** 2, 0))
  ratio = np.sqrt(np.mean(observed ** 2) / np.mean(reported ** 2))
  assert 0.8 < ratio < 1.2, (ratio, observed, reported)
  # Centred on the exact values (the original estimator's small-sample bias is well inside this).
  assert np.abs(np.asarray(est.values).mean(0) - phi[:, 0]).max() < 4 * observed.max() / np.sqrt(200) + 2e-3


def test_jit_vmap_over_inputs_equals_eager():
  w = jnp.array([1.0, -2.0, 0.5, 3.0])
  f = lambda x: jnp.tanh(x @ w)
  X = jax.random.normal(jax.random.key(3), (4, 4))
  ref = jnp.zeros(4)
  explain = lambda x: shapley.kernel_shap(games.baseline(f, x, ref), 4, KEY, num_samples=64, batch_size=32,
                                                  enumerate_sizes=0)
  batched = jax.jit(jax.vmap(explain))(X)
  for i in range(4):
    one = explain(X[i])
    np.testing.assert_allclose(batched.values[i], one.values, atol=1e-5)
    np.testing.assert_allclose(batched.std[i], one.std, rtol=1e-4, atol=1e-6)
    exact = shapley.exact(games.baseline(f, X[i], ref), 4)
    assert np.abs(np.asarray(one.values) - np.asarray(exact)).max() < 5 * float(one.std.max()) + 1e-4


def test_vmapped_convergence_mode_matches_single_runs(random_table):
  values, _ = random_table
  tables = jnp.stack([jnp.asarray(values[:, 0]), 3 * jnp.asarray(values[:, 1])])

  def run(t):
    return shapley.kernel_shap(table_game(t), 6, KEY, threshold=0.02, batch_size=64, enumerate_sizes=1)

  batched = jax.jit(jax.vmap(run))(tables)
  for i in range(2):
    single = run(tables[i])
    np.testing.assert_allclose(batched.values[i], single.values, atol=1e-5)
    assert int(batched.num_evals[i]) == int(single.num_evals)


def test_linear_regression_closed_form():
  """For a linear model the Shapley values are w_i (x_i - E[x_i]) (marginal) and w_i (x_i - r_i) (baseline)."""
  x_all, y_all = load_diabetes(return_X_y=True)
  model = LinearRegression().fit(x_all, y_all)
  w, b = jnp.asarray(model.coef_, jnp.float32), float(model.intercept_)
  f = lambda x: x @ w + b
  x, background = jnp.asarray(x_all[0], jnp.float32), jnp.asarray(x_all[1:65], jnp.float32)
  expected = np.asarray(w) * (np.asarray(x) - np.asarray(background).mean(0))
  est = shapley.kernel_shap(games.marginal(f, x, background), 10, KEY, num_samples=64, batch_size=32)
  np.testing.assert_allclose(est.values, expected, rtol=1e-3, atol=1e-2)
  exact = shapley.exact(games.baseline(f, x, background[0]), 10)
  np.testing.assert_allclose(exact, np.asarray(w) * (np.asarray(x) - np.asarray(background[0])), rtol=1e-3,
                             atol=1e-2)


def test_sklearn_classifier_against_exact():
  x_all, y_all = load_breast_cancer(return_X_y=True)
  x_all = (x_all - x_all.mean(0)) / x_all.std(0)
  d = 8
  clf = LogisticRegression(max_iter=1000).fit(x_all[:, :d], y_all)
  w, b = jnp.asarray(clf.coef_[0], jnp.float32), float(clf.intercept_[0])
  f = lambda x: jnp.stack([1 - jax.nn.sigmoid(x @ w + b), jax.nn.sigmoid(x @ w + b)], -1)
  x, bg = jnp.asarray(x_all[3, :d], jnp.float32), jnp.asarray(x_all[100:132, :d], jnp.float32)
  np.testing.assert_allclose(f(x[None])[0], clf.predict_proba(x_all[3:4, :d])[0], atol=1e-5)
  game = games.marginal(f, x, bg)
  exact = np.asarray(shapley.exact(game, d))
  est = shapley.kernel_shap(game, d, KEY, threshold=0.005, batch_size=256)
  assert bool(est.converged)
  assert np.abs(np.asarray(est.values) - exact).max() < 5 * float(est.std.max()) + 1e-4
  np.testing.assert_allclose(exact[:, 0], -exact[:, 1], atol=1e-5)    # the two probabilities sum to one


def test_normalize_efficient():
  phi = jnp.array([[1.0, 0.0], [2.0, 1.0], [0.0, 0.0]])
  out = shapley.normalize_efficient(phi, jnp.array([6.0, 1.0]), jnp.array([0.0, 1.0]))
  np.testing.assert_allclose(out.sum(0), [6.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(out - phi, [[1.0, -1 / 3]] * 3, atol=1e-6)


def test_exact_a_matrix_matches_sampled_moments():
  z = np.asarray(masks.shapley_kernel(KEY, 7, 200000), np.float64)
  np.testing.assert_allclose(z.T @ z / len(z), shapley.exact_a_matrix(7), atol=5e-3)


def test_convergence_mode_enumerates_small_games_exactly(random_table):
  values, phi = random_table
  est = shapley.kernel_shap(table_game(values), 6, KEY, threshold=0.01)       # 62 <= max_samples / 8
  np.testing.assert_allclose(est.values, phi, atol=1e-5)
  assert int(est.num_evals) == 2 ** 6 and bool(est.converged)
  sampled = shapley.kernel_shap(table_game(values), 6, KEY, threshold=0.05, max_samples=256, batch_size=16)
  assert float(np.max(sampled.std)) > 0                                        # 62 > 256 / 8: sampled


def test_std_calibrated_when_the_budget_fits_one_default_batch():
  """d = 12, 1024 coalitions: sizes 1-3 are enumerated and the 428 sampled ones would fit one batch of 512; the
  original estimator still gets several batches, so its std comes from their spread and stays calibrated. On a
  nearly additive game the original estimator's variance is far below the exact-A formula's, which is what a
  single batch would have to fall back on."""
  w = jax.random.normal(jax.random.key(0), (12,))
  x = jax.random.normal(jax.random.key(1), (12,))
  game = games.baseline(lambda xb: jnp.tanh(xb @ w), x, jnp.zeros(12))
  est = jax.jit(jax.vmap(lambda k: shapley.kernel_shap(game, 12, k, num_samples=1024)))(
      jax.random.split(jax.random.key(5), 200))
  observed = np.asarray(est.values).std(0, ddof=1)
  reported = np.sqrt(np.mean(np.asarray(est.std) ** 2, 0))
  ratio = np.sqrt(np.mean(observed ** 2) / np.mean(reported ** 2))
  assert 0.8 < ratio < 1.2, ratio


def test_convergence_mode_std_covers_exact_values_despite_optional_stopping():
  """The loop stops when the std happens to be small, so an uncorrected std undercovers (measured here: 93% of
  exact values within 1.96 std instead of 95%, as in the tabular demo's 92%). The stopped estimate's std is
  widened by the t/normal quantile ratio of its jackknife's degrees of freedom; with it ~94.6% are covered."""
  d = 10
  rng = np.random.default_rng(0)
  w = rng.normal(size=d)
  z = ((np.arange(2 ** d)[:, None] >> np.arange(d)) & 1).astype(float)
  table = np.tanh(0.7 * z @ w) + 0.3 * rng.normal(size=2 ** d) * (z.sum(1) % 2)     # interactions: not additive
  truth = np.asarray(shapley.exact(table_game(table), d))
  covered = []
  for batch_size, threshold in ((32, 0.05), (16, 0.1)):
    run = lambda k: shapley.kernel_shap(table_game(table), d, k, threshold=threshold, batch_size=batch_size,
                                        max_samples=4096)      # 2^d - 2 > 4096 / 8: sampled, not enumerated
    est = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(7), 400))
    assert bool(np.all(est.converged))
    covered.append(np.abs(np.asarray(est.values) - truth) <= 1.96 * np.asarray(est.std))
  coverage = np.mean(covered)
  assert coverage > 0.938, coverage          # uncorrected std: 0.929 on the same seeds
