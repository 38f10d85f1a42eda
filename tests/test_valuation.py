"""Data valuation: vmapped utility training, samplers of marginal contributions, scaling-law estimators."""

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression as SkLogistic

from xattr import banzhaf, data, loo, shapley
from xattr.valuation import amortized, samplers, scaling, utility

KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def cancer():
  """A 150-point pool of breast cancer and 60 validation rows; default and 40-Newton-step logistic utilities."""
  ds = data.load_embedded("breast_cancer", seed=0)
  x, y, xv, yv = ds.x_train[:150], ds.y_train[:150], ds.x_test[:60], ds.y_test[:60]
  u = utility.LogisticRegression.create(x, y, xv, yv, num_classes=2)
  return u, dataclasses.replace(u, newton_steps=40, chord_steps=0)


@pytest.fixture(scope="module")
def wine():
  ds = data.load_embedded("wine", seed=0)
  return ds, utility.LogisticRegression.create(ds.x_train, ds.y_train, ds.x_test, ds.y_test, num_classes=3)


def _subsets(key, n, num, low, high, labels=None):
  """Random 0/1 weights [num, n] of sizes in [low, high) (stratified if labels are given) and points outside."""
  labels = jnp.zeros(n, jnp.int32) if labels is None else jnp.asarray(labels)
  return _draw_subsets(key, labels, num, low, high, int(labels.max()) + 1)


@functools.partial(jax.jit, static_argnames=("num", "low", "high", "num_classes"))
def _draw_subsets(key, labels, num, low, high, num_classes):
  k_key, s_key = jax.random.split(key)
  sizes = samplers.sample_sizes(k_key, num, low, high)
  points = jax.random.randint(jax.random.fold_in(key, 1), (num,), 0, labels.shape[0])
  masks = jax.vmap(lambda k, z, s: samplers.class_balanced_subset(k, labels, num_classes, exclude=z, size=s))(
      jax.random.split(s_key, num), points, sizes)
  return masks.astype(jnp.float32), points


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# --- utilities -----------------------------------------------------------------------------------------------

# Utilities are pytrees: passed as arguments, one compilation serves every test with the same learner and shapes.
FIT_VALUE = jax.jit(lambda u, w: (u.fit(w).params, utility.value(u, w)))
BATCHED_FIT_VALUE = jax.jit(jax.vmap(lambda u, w: (u.fit(w).params, utility.value(u, w)), in_axes=(None, 0)))


def test_vmapped_training_equals_separate_trainings(cancer):
  """B models trained at once under vmap equal B separate (unvmapped) trainings, for every learner (the
  multinomial logistic regression shares the binary one's code path but its Hessian; see the sklearn test)."""
  u, _ = cancer
  x, y = np.asarray(u.x), np.asarray(u.y)
  x_gauss = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
  learners = {
      "logistic binary": u,
      "mlp": utility.MLPClassifier.create(x, y, u.x_val, u.y_val, num_classes=2, hidden_sizes=(8,), num_steps=30),
      # Well-conditioned features: a float32 linear solve on breast cancer's collinear ones differs by ~1e-4
      # between the batched and the single solver, which would test the conditioning, not vmap.
      "ridge": utility.RidgeRegression.create(x_gauss, x_gauss @ np.arange(5.0), x_gauss[:20], x_gauss[:20, 0]),
  }
  for name, learner in learners.items():
    n = learner.num_points
    weights, _ = _subsets(jax.random.fold_in(KEY, len(name)), n, 4, n // 3, n - 1, learner.y if name != "ridge"
                          else None)
    batched = BATCHED_FIT_VALUE(learner, weights)
    for i in range(len(weights)):
      _assert_trees_close(jax.tree.map(lambda a: a[i], batched), FIT_VALUE(learner, weights[i]))
    first = list(batched[1].values())[0]
    assert np.ptp(np.asarray(first)) > 0, name            # different subsets, different models


def test_logistic_regression_reaches_sklearn_optimum(cancer, wine):
  """Same L2 objective as scikit-learn's LogisticRegression(C=1/l2): same coefficients and utility."""
  u, _ = cancer
  weights, _ = _subsets(KEY, u.num_points, 4, 40, 140, u.y)
  params, values = BATCHED_FIT_VALUE(u, weights)
  x, y = np.asarray(u.x, np.float64), np.asarray(u.y)
  for i, w in enumerate(np.asarray(weights) > 0):
    sk = SkLogistic(C=1.0, solver="newton-cholesky", tol=1e-8, max_iter=200).fit(x[w], y[w])
    np.testing.assert_allclose(params[i][:-1, 0], sk.coef_[0], rtol=1e-3, atol=2e-5)
    np.testing.assert_allclose(params[i][-1, 0], sk.intercept_[0], atol=2e-5)
    p = sk.predict_proba(np.asarray(u.x_val, np.float64))
    ce = -np.mean(np.log(p[np.arange(len(p)), np.asarray(u.y_val)]))
    assert abs(float(values["neg_ce"][i]) + ce) < 2e-6
  ds, u_wine = wine
  w = np.zeros(u_wine.num_points, np.float32)
  w[::2] = 1
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    # float64 inputs: given float32 data, scikit-learn solves in float32.
    sk = SkLogistic(C=1.0, tol=1e-10, max_iter=5000).fit(ds.x_train[w > 0].astype(np.float64), ds.y_train[w > 0])
  fit_params, _ = FIT_VALUE(u_wine, jnp.asarray(w))
  ours = jax.nn.softmax(u_wine.logits(fit_params, u_wine.x_val), -1)
  np.testing.assert_allclose(ours, sk.predict_proba(ds.x_test.astype(np.float64)), atol=2e-6)


def test_contribution_equals_difference_of_two_converged_fits(cancer):
  """The warm-started U(D u {z}) of the fast path equals a cold 40-step Newton solve, and so does U(D)."""
  u, ref = cancer
  weights, points = _subsets(jax.random.fold_in(KEY, 3), u.num_points, 64, 40, 140, u.y)
  fast = jax.jit(jax.vmap(lambda w, z: utility.contribution(u, w, z)))(weights, points)

  def slow(w, z):
    before, after = utility.value(ref, w), utility.value(ref, w.at[z].set(1.0))
    return after["neg_ce"] - before["neg_ce"], before["neg_ce"]

  delta, base = jax.jit(jax.vmap(slow))(weights, points)
  np.testing.assert_allclose(fast["base_neg_ce"], base, atol=2e-6)
  np.testing.assert_allclose(fast["neg_ce"], delta, atol=1e-5)
  assert np.abs(np.asarray(delta)).max() > 1e-3                # the comparison is not between zeros


def test_batched_contributions_refine_the_slow_solves_to_the_long_solve():
  """utility.contributions gives the extra Newton steps only to the solves with the largest Newton decrement.
  With 20% flipped labels (so that some subsets start far from the warm start and some added points are
  influential) it matches a cold 40-step solve as the always-refined per-pair path does, while the same base
  steps without refinement do not (the stragglers exist)."""
  ds = data.load_embedded("breast_cancer", seed=0)
  y = ds.y_train.copy()
  flip = np.random.default_rng(0).random(len(y)) < 0.2
  y[flip] = 1 - y[flip]
  u = utility.LogisticRegression.create(ds.x_train, y, ds.x_test, ds.y_test, num_classes=2)
  weights, points = _subsets(jax.random.fold_in(KEY, 11), u.num_points, 256, 100, 400, u.y)
  ref = dataclasses.replace(u, newton_steps=40, chord_steps=0, add_newton_steps=30, add_chord_steps=0)
  long_solve = jax.jit(jax.vmap(lambda w, z: utility.contribution(ref, w, z)))(weights, points)
  batched = jax.jit(lambda w, z: utility.contributions(u, w, z))(weights, points)
  per_pair = jax.jit(jax.vmap(lambda w, z: utility.contribution(u, w, z)))(weights, points)
  unrefined = dataclasses.replace(u, refine_steps=0)
  base_only = jax.jit(lambda w, z: utility.contributions(unrefined, w, z))(weights, points)
  for out in (batched, per_pair):
    np.testing.assert_allclose(out["base_neg_ce"], long_solve["base_neg_ce"], atol=5e-7)
    np.testing.assert_allclose(out["neg_ce"], long_solve["neg_ce"], atol=5e-7)
  assert np.abs(np.asarray(base_only["neg_ce"]) - np.asarray(long_solve["neg_ce"])).max() > 1e-5
  assert np.abs(np.asarray(long_solve["neg_ce"])).max() > 1e-3


def test_subset_missing_a_class_scores_as_untrained_model(cancer):
  u, _ = cancer
  only_one_class = (u.y == 1).astype(jnp.float32)
  _, out = FIT_VALUE(u, only_one_class)
  assert float(out["neg_ce"]) == pytest.approx(-np.log(2.0), abs=1e-6)


def test_utility_errors():
  x, y = np.zeros((5, 2), np.float32), np.array([0, 1, 0, 1, 2])
  with pytest.raises(ValueError, match=r"y_train must hold integer class indices in \[0, 2\)"):
    utility.LogisticRegression.create(x, y, x, y[:5] % 2, num_classes=2)
  with pytest.raises(ValueError, match=r"x_train and x_val must be float\[n, d\] with the same d"):
    utility.LogisticRegression.create(x, y % 2, x[:, :1], y % 2, num_classes=2)
  with pytest.raises(ValueError, match="l2 must be > 0"):
    utility.LogisticRegression.create(x, y % 2, x, y % 2, num_classes=2, l2=0.0)
  with pytest.raises(ValueError, match="metric must be one of"):
    utility.game(utility.RidgeRegression.create(x, y.astype(float), x, y.astype(float)), "accuracy")


# --- samplers -------------------------------------------------------------------------------------------------

def _largest_remainder(counts, size):
  exact = size * counts / counts.sum()
  base = np.floor(exact)
  return base, base + 1


@pytest.mark.parametrize("balance", ["proportional", "equal", "none"])
def test_class_balanced_subsets_exclude_the_point_and_match_quotas(balance):
  labels = jnp.asarray(np.repeat([0, 1, 2], [10, 25, 40]))
  n, draws = 75, 3000
  keys = jax.random.split(jax.random.key(1), draws)
  points = jax.random.randint(jax.random.key(2), (draws,), 0, n)
  sizes = jax.random.randint(jax.random.key(3), (draws,), 3, 28)
  masks = np.asarray(jax.jit(jax.vmap(lambda k, z, s: samplers.class_balanced_subset(
      k, labels, 3, exclude=z, size=s, balance=balance)))(keys, points, sizes))
  points, sizes = np.asarray(points), np.asarray(sizes)
  assert not masks[np.arange(draws), points].any()                      # z is never in D
  np.testing.assert_array_equal(masks.sum(1), sizes)                     # |D| = k exactly
  counts = np.stack([masks[:, np.asarray(labels) == c].sum(1) for c in range(3)], 1)
  if balance == "none":
    return
  pool_counts = np.array([10, 25, 40])[None] - (np.asarray(labels)[points][:, None] == np.arange(3))
  share = pool_counts / pool_counts.sum(1, keepdims=True) if balance == "proportional" else np.full((1, 3), 1 / 3)
  exact = sizes[:, None] * share
  assert np.all((counts == np.floor(exact)) | (counts == np.ceil(exact)))  # stratified, largest-remainder


def test_class_balanced_subsets_are_uniform_within_class():
  """With z and k fixed, every other point of a class is kept with probability quota / class size."""
  labels = jnp.asarray(np.repeat([0, 1], [12, 28]))
  masks = np.asarray(jax.jit(jax.vmap(lambda k: samplers.class_balanced_subset(
      k, labels, 2, exclude=5, size=10)))(jax.random.split(jax.random.key(4), 6000)))
  freq = masks.mean(0)
  # 10 of 39 points, proportional: 11 * 10 / 39 = 2.82 -> 3 of class 0 (11 eligible), 7 of class 1 (28).
  expected = np.where(np.asarray(labels) == 0, 3 / 11, 7 / 28)
  expected[5] = 0.0
  se = np.sqrt(expected * (1 - expected) / 6000) + 1e-9
  assert np.all(np.abs(freq - expected) < 5 * se)


def test_distributional_is_deterministic_and_independent_of_splitting(cancer):
  u, _ = cancer
  points, sizes = np.arange(24) % u.num_points, np.asarray(samplers.sample_sizes(KEY, 24, 40, 140))
  whole = samplers.distributional(u, KEY, points, sizes, chunk_size=16, progress=False)
  again = samplers.distributional(u, KEY, points, sizes, chunk_size=16, progress=False)
  pieces = [samplers.distributional(u, KEY, points[s], sizes[s], ids=np.arange(24)[s], chunk_size=16,
                                    progress=False) for s in (slice(0, 10), slice(10, 24))]
  for k in whole:
    np.testing.assert_array_equal(whole[k], again[k])
    np.testing.assert_allclose(whole[k], np.concatenate([p[k] for p in pieces]), rtol=1e-5, atol=1e-7)
  other = samplers.distributional(u, jax.random.key(9), points, sizes, chunk_size=16, progress=False)
  assert not np.allclose(other["neg_ce"], whole["neg_ce"])
  with pytest.raises(ValueError, match=r"sizes must lie in \[1, 149\]"):
    samplers.distributional(u, KEY, points[:2], np.array([10, 150]), progress=False)
  with pytest.raises(ValueError, match="sizes must lie in .*with equal class counts"):
    samplers.distributional(u, KEY, points[:2], np.array([10, 149]), balance="equal", progress=False)
  with pytest.raises(ValueError, match="balance must be one of"):
    samplers.distributional(u, KEY, points[:2], np.array([10, 10]), balance="stratified", progress=False)
  with pytest.raises(ValueError, match="k_max must be > k_min"):
    samplers.sample_sizes(KEY, 4, 10, 10)


def test_tmc_telescopes_and_converges_to_exact_data_shapley():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6, 2)).astype(np.float32)
  y = (x @ np.array([1.0, -2.0]) + rng.normal(size=6)).astype(np.float32)
  u = utility.RidgeRegression.create(x, y, x, y, l2=0.5)
  game = jax.jit(utility.game(u))
  rows = samplers.tmc(u, KEY, 256, chunk_size=2048, progress=False)
  gap = float((game(jnp.ones((1, 6), bool)) - game(jnp.zeros((1, 6), bool)))[0])
  np.testing.assert_allclose(rows.sum(1), gap, rtol=1e-5, atol=1e-5)     # every ordering telescopes
  est = samplers.tmc_values(rows)
  exact = np.asarray(shapley.exact(game, 6))
  assert np.all(np.abs(np.asarray(est.values) - exact) < 4 * np.asarray(est.std) + 1e-6)
  np.testing.assert_allclose(samplers.leave_one_out(u), loo.leave_one_out(game, 6), rtol=1e-5, atol=1e-6)
  b = samplers.data_banzhaf(u, KEY, 1024)
  assert np.all(np.abs(np.asarray(b.values) - np.asarray(banzhaf.exact(game, 6))) < 4 * np.asarray(b.std) + 1e-6)


# --- scaling laws ---------------------------------------------------------------------------------------------

def test_mle_recovers_scaling_law_from_the_noise_model():
  rng = np.random.default_rng(0)
  p, m = 12, 3000
  c = rng.uniform(1.0, 3.0, p) * rng.choice([-1, 1], p)
  alpha, sigma, beta = rng.uniform(0.5, 1.3, p), rng.uniform(0.1, 0.3, p), rng.uniform(1.6, 2.4, p)
  k = rng.integers(100, 1000, (p, m)).astype(np.float64)
  delta = c[:, None] * k ** -alpha[:, None] + sigma[:, None] * k ** (-beta[:, None] / 2) * rng.normal(size=(p, m))
  fit = scaling.mle_fit(k, delta, grid=(31, 31))               # the refinement rounds make up for the grid
  assert np.abs(fit.alpha - alpha).max() < 0.1
  assert np.abs(np.log(fit.c / c)).max() < 0.5                        # c is the law extrapolated to k = 1
  # Averaged over the sampled sizes, the fitted law is pinned down much better than c alone.
  np.testing.assert_allclose(scaling.distributional_value(fit.c, fit.alpha, 100, 1000),
                             scaling.distributional_value(c, alpha, 100, 1000), rtol=0.05)
  assert np.abs(fit.beta - beta).max() < 0.2
  # The maximiser beats the true parameters on the likelihood it maximises.
  log_k = np.log(k / np.exp(np.log(k).mean()))
  scale = np.sqrt(np.mean(delta ** 2))
  true_nll = np.asarray(scaling.profile_nll(jnp.asarray(alpha), jnp.asarray(beta), jnp.asarray(log_k),
                                            jnp.asarray(delta / scale), jnp.ones((p, m)))[0])
  fit_nll = np.asarray(scaling.profile_nll(jnp.asarray(fit.alpha), jnp.asarray(fit.beta), jnp.asarray(log_k),
                                           jnp.asarray(delta / scale), jnp.ones((p, m)))[0])
  assert np.all(fit_nll <= true_nll + 1e-6)


def test_loglog_fit_is_exact_on_noiseless_laws():
  k = np.tile(np.geomspace(100, 1000, 8), (3, 4))
  c, alpha = np.array([[2.0], [-0.5], [1.0]]), np.array([[1.0], [1.5], [0.7]])
  fit = scaling.loglog_fit(k, c * k ** -alpha, num_bins=8)
  np.testing.assert_allclose(fit.alpha, alpha[:, 0], rtol=1e-4)
  np.testing.assert_allclose(fit.c, c[:, 0], rtol=1e-3)
  assert float(scaling.distributional_value(2.0, 1.0, 1, 3)) == pytest.approx(1.5)


def test_amortized_estimators_beat_per_point_mc_mean_at_equal_budget():
  """300 points with smooth (c, alpha) in their features, 4 noisy samples each: pooling beats per-point means."""
  rng = np.random.default_rng(1)
  p, m = 300, 4
  feats = rng.normal(size=(p, 2)).astype(np.float32)
  c = 1.0 + 0.8 * np.tanh(feats[:, 0])
  alpha = 1.0 + 0.3 * np.tanh(feats[:, 1])
  k = rng.integers(100, 1000, (p, m)).astype(np.float32)
  delta = c[:, None] * k ** -alpha[:, None] + k ** -1.0 * rng.normal(size=(p, m))
  truth = scaling.distributional_value(c, alpha, 100, 1000)
  points = np.repeat(np.arange(p), m)
  rmse = lambda est: float(np.sqrt(np.mean((est - truth) ** 2)))
  mc = rmse(delta.mean(1))
  fit = amortized.fit_scaling_network(feats, points, k.ravel(), delta.ravel(), hidden_sizes=(32, 32),
                                      num_steps=300, progress=False)
  law = rmse(scaling.distributional_value(fit.c, fit.alpha, 100, 1000))
  value = rmse(amortized.fit_value_network(feats, points, delta.ravel(), hidden_sizes=(32, 32), num_steps=300,
                                           progress=False))
  assert law < 0.3 * mc and value < 0.5 * mc, (law, value, mc)


def test_value_network_resumes_at_its_best_holdout_state(tmp_path):
  """A finished run started again ends at the same early-stopped state (best_holdout.npz, fingerprinted)."""
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(40, 2)).astype(np.float32)
  points = np.repeat(np.arange(40), 3)
  labels = feats[points, 0] + rng.normal(size=120)
  kwargs = dict(hidden_sizes=(8,), num_steps=40, eval_every=10, workdir=str(tmp_path), progress=False)
  first = amortized.fit_value_network(feats, points, labels, **kwargs)
  assert (tmp_path / "best_holdout.npz").exists()
  np.testing.assert_allclose(amortized.fit_value_network(feats, points, labels, **kwargs), first, rtol=1e-6)
