"""Noisy attribution labels: per-example keys, budgets, caching, unbiasedness, and 4 devices vs 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import table_game
from xattr import games, methods, noisy_labels, shapley
from xattr.estimate import Estimate


def _game_of_x(x):
  """Softmax of a tanh-linear model (3 classes), held-out features at 0: not additive, so estimates are noisy."""
  w = jnp.asarray(np.random.default_rng(1).normal(size=(5, 3)) * 2, jnp.float32)
  return games.baseline(lambda b: jax.nn.softmax(jnp.tanh(b) @ w, axis=-1), x, jnp.zeros(5))


X = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)


def test_labels_are_the_per_example_estimates_with_folded_keys():
  label = noisy_labels.labeler(_game_of_x, "permutation", 5, 40, batch_size=64)
  key = jax.random.key(3)
  out = noisy_labels.generate(label, X, key, chunk_size=4, progress=False)   # 6 inputs in chunks of 4: padding
  assert out["values"].shape == (6, 5, 3)
  one = label(jnp.asarray(X[4]), jax.random.fold_in(key, 4))
  np.testing.assert_allclose(out["values"][4], one["values"], rtol=1e-5, atol=1e-6)
  # The budget is what the label really costs, and different keys give different (noisy) labels.
  assert set(out["num_evals"].tolist()) == {noisy_labels.evaluations_per_label("permutation", 5, 40)} == {34}
  assert np.abs(out["values"][0] - label(jnp.asarray(X[0]), jax.random.key(99))["values"]).max() > 1e-4


def test_kernel_shap_switches_to_the_unbiased_estimator_on_small_budgets():
  assert noisy_labels.estimator_kwargs("kernel_shap", 13, 32) == dict(num_samples=30, exact_a=True)
  assert noisy_labels.estimator_kwargs("kernel_shap", 13, 64) == dict(num_samples=62, exact_a=False)
  with pytest.raises(ValueError, match="method must be one of"):
    noisy_labels.labeler(_game_of_x, "shap", 5, 40)
  with pytest.raises(ValueError, match="budget must be >= 4"):
    noisy_labels.estimator_kwargs("kernel_shap", 5, 3)


def test_a_newly_registered_method_makes_labels():
  """One registration (a game method with a budget rule) is all noisy_labels needs: labels, costs, caching."""
  @methods.register("first_coalitions", target="shapley", budget=lambda d, b: dict(num_samples=b),
                    evaluations=lambda d, s: int(s["num_samples"]) + 1, replace=True)
  def first_coalitions(problem, key, *, num_samples: int, batch_size: int = 512):
    del key, batch_size
    z = jnp.eye(problem.num_players, dtype=bool)                # v({i}) - v({}) for every player
    values = problem.game(z) - problem.game(jnp.zeros((1, problem.num_players), bool))
    return Estimate(values, None, jnp.asarray(num_samples + 1, jnp.int32), None)

  try:
    assert "first_coalitions" in noisy_labels.label_methods()
    assert noisy_labels.estimator_kwargs("first_coalitions", 5, 7) == {"num_samples": 7}
    label = noisy_labels.labeler(_game_of_x, "first_coalitions", 5, 7)
    out = noisy_labels.generate(label, X, jax.random.key(0), progress=False)
    assert out["values"].shape == (6, 5, 3) and set(out["num_evals"].tolist()) == {8}
    assert noisy_labels.evaluations_per_label("first_coalitions", 5, 7) == 8
  finally:
    methods.unregister("first_coalitions")
  with pytest.raises(ValueError, match="method must be one of"):
    noisy_labels.labeler(_game_of_x, "leave_one_out", 5, 40)     # registered, but no budget rule


def test_permutation_labels_are_unbiased(random_table):
  """The mean of many 2-ordering labels is the exact Shapley value (within 4 standard errors)."""
  values, exact = random_table                                   # 6 players, 2 outputs
  game = table_game(values)
  label = noisy_labels.labeler(lambda x: game, "permutation", 6, 12)       # one antithetic pair per label
  n = 4000
  out = noisy_labels.generate(label, np.zeros((n, 1), np.float32), jax.random.key(0), progress=False)
  mean, se = out["values"].mean(0), out["values"].std(0) / np.sqrt(n)
  assert np.all(np.abs(mean - exact) < 4 * se + 1e-6)
  assert out["values"].std(0).min() > 0.05                                  # the labels are noisy


def test_generate_cached_reuses_and_regenerates(tmp_path):
  label = noisy_labels.labeler(_game_of_x, "banzhaf_msr", 5, 32)
  path = tmp_path / "labels.npz"
  a = noisy_labels.generate_cached(path, label, X, jax.random.key(0), tag="v1", progress=False)
  mtime = path.stat().st_mtime_ns
  b = noisy_labels.generate_cached(path, label, X, jax.random.key(0), tag="v1", progress=False)
  assert path.stat().st_mtime_ns == mtime                          # reused, not rewritten
  np.testing.assert_array_equal(a["values"], b["values"])
  c = noisy_labels.generate_cached(path, label, X, noisy_labels.epoch_key(jax.random.key(0), 1), tag="v1",
                                   progress=False)
  assert np.abs(c["values"] - a["values"]).max() > 1e-4            # a new epoch's key: fresh labels, rewritten
  d = noisy_labels.generate_cached(path, label, X[:5], jax.random.key(0), tag="v1", progress=False)
  assert d["values"].shape[0] == 5                                 # other inputs: regenerated, not reused


def test_exact_game_labels_match_exact_shapley():
  """With enough coalitions KernelSHAP enumerates everything: labels equal exact Shapley values."""
  label = noisy_labels.labeler(_game_of_x, "kernel_shap", 5, 2 ** 5 + 2)
  out = noisy_labels.generate(label, X[:2], jax.random.key(0), progress=False)
  exact = np.stack([shapley.exact(_game_of_x(jnp.asarray(x)), 5) for x in X[:2]])
  np.testing.assert_allclose(out["values"], exact, atol=1e-5)


@pytest.mark.multidevice
def test_labels_four_devices_match_one(tmp_path):
  from tests import multidevice_amortize_check as check
  from tests.four_devices import compare_with_one_device

  one, four = compare_with_one_device("multidevice_amortize_check.py", tmp_path / "four.npz", check.compute)
  check.assert_same(one, four, "parent 1 device vs subprocess 4 devices")
  for method in check.METHODS:
    values, evals = one[f"{method}/values"], one[f"{method}/num_evals"]
    assert values.shape == (check.NUM_INPUTS, check.D, 3) and np.ptp(values) > 0
    # Every label costs what evaluations_per_label says (<= the budget), and row i is the per-example estimate
    # with key fold_in(key, i).
    assert set(evals.tolist()) == {noisy_labels.evaluations_per_label(method, check.D, check.BUDGET)}
    assert evals[0] <= check.BUDGET
    row = check.labeler(method)(jnp.asarray(check.INPUTS[7]), jax.random.fold_in(check.KEY, 7))
    np.testing.assert_allclose(values[7], row["values"], rtol=1e-5, atol=1e-5, err_msg=method)
