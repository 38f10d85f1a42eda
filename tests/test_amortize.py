"""Amortized objectives: the FastSHAP optimum is the Shapley value; efficiency; KL/MSE surrogate losses; errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import brute_force_shapley, table_game
from xattr import amortize, masks


@jax.jit
def _minimize_fastshap(z, values, null, grand):
  """The phi minimizing the FastSHAP loss, by solving its normal equations (the loss is quadratic in phi)."""
  d = z.shape[-1]
  loss = lambda flat: amortize.fastshap_loss(flat.reshape(1, d, -1), z, values, null, grand)
  k = values.shape[-1]
  flat0 = jnp.zeros(d * k)
  hessian = jax.hessian(loss)(flat0)
  # The normalized loss is flat along phi -> phi + c (normalization removes the shift): use the min-norm solution.
  phi = -jnp.linalg.pinv(hessian) @ jax.grad(loss)(flat0)
  return amortize.efficient_normalize(phi.reshape(1, d, k), grand, null)[0]


def test_fastshap_optimum_is_the_shapley_value(random_table):
  values, exact = random_table                                 # 6 players, 2 outputs
  game = table_game(values)
  d = 6
  z = masks.shapley_kernel(jax.random.key(0), d, 40000)[None]     # paired Shapley-kernel samples
  grand = game(jnp.ones((1, d), bool))
  null = game(jnp.zeros((1, d), bool))[0]
  phi = _minimize_fastshap(z, game(z[0])[None], null, grand)
  # The sampled objective's minimizer is KernelSHAP's estimate on these samples: close to exact, not equal.
  np.testing.assert_allclose(phi, exact, atol=0.05)
  np.testing.assert_allclose(phi.sum(0), grand[0] - null, atol=1e-4)      # efficiency holds exactly
  # ... and a different phi has a larger loss.
  loss = lambda p: amortize.fastshap_loss(p[None], z, game(z[0])[None], null, grand)
  assert loss(phi) < loss(jnp.asarray(exact + np.random.default_rng(0).normal(0, 0.2, exact.shape), jnp.float32))


def test_fastshap_on_additive_game_is_exact_from_few_samples():
  w = jnp.array([0.3, -1.0, 2.0, 0.5, 0.0])
  z = masks.shapley_kernel(jax.random.key(1), 5, 16)[None]
  values = (z.astype(jnp.float32) @ w + 0.7)[..., None]
  null, grand = jnp.array([0.7]), (w.sum() + 0.7)[None, None]
  phi = _minimize_fastshap(z, values, null, grand)
  np.testing.assert_allclose(phi[:, 0], w, atol=1e-4)


def test_efficient_normalize_and_penalty():
  phi = jax.random.normal(jax.random.key(0), (3, 4, 2))
  grand = jax.random.normal(jax.random.key(1), (3, 2))
  null = jnp.array([0.1, -0.2])
  out = amortize.efficient_normalize(phi, grand, null)
  np.testing.assert_allclose(out.sum(1), grand - null, atol=1e-5)
  np.testing.assert_allclose(out - phi, jnp.broadcast_to((out - phi)[:, :1], out.shape), atol=1e-6)  # shift
  z = masks.shapley_kernel(jax.random.key(2), 4, 8)[None].repeat(3, 0)
  values = jnp.zeros((3, 8, 2))
  plain = amortize.fastshap_loss(phi, z, values, null, grand, normalize=False)
  penalized = amortize.fastshap_loss(phi, z, values, null, grand, normalize=False, efficiency_weight=2.0)
  gap = jnp.mean((phi.sum(1) - (grand - null)) ** 2)
  np.testing.assert_allclose(penalized - plain, 2.0 * gap, rtol=1e-5)


def test_regression_and_surrogate_losses():
  labels = jax.random.normal(jax.random.key(0), (8, 5, 3))
  assert float(amortize.regression_loss(labels, labels)) == 0.0
  np.testing.assert_allclose(amortize.regression_loss(labels + 2.0, labels, scale=2.0), 5.0, rtol=1e-6)
  # With unbiased noisy labels the minimizer over a constant prediction is their mean (the clean label's estimate).
  noisy = labels[None] + jax.random.normal(jax.random.key(1), (500, 8, 5, 3))
  fit = lambda c: amortize.regression_loss(jnp.broadcast_to(c, noisy.shape).reshape(-1, 5, 3), noisy.reshape(-1, 5, 3))
  best = noisy.mean(0)
  assert fit(best) < fit(best + 0.05) and fit(best) < fit(best - 0.05)
  np.testing.assert_allclose(best, labels, atol=0.2)

  p = jax.nn.softmax(jax.random.normal(jax.random.key(2), (4, 1, 3)), -1)
  logits = jax.random.normal(jax.random.key(3), (4, 6, 3))
  kl = amortize.surrogate_kl_loss(logits, p)
  manual = jnp.mean(jnp.sum(p * (jnp.log(p) - jax.nn.log_softmax(logits, -1)), -1))
  np.testing.assert_allclose(kl, manual, rtol=1e-5)
  assert float(kl) > 0 and abs(float(amortize.surrogate_kl_loss(jnp.log(p), p))) < 1e-6
  assert float(amortize.surrogate_mse_loss(jnp.ones((2, 3)), jnp.ones((2, 1)))) == 0.0


def test_bad_shapes_are_named():
  phi, z = jnp.zeros((2, 4, 3)), jnp.ones((2, 8, 4), bool)
  with pytest.raises(ValueError, match=r"values must be \[batch, samples, classes\] = \(2, 8, 3\)"):
    amortize.fastshap_loss(phi, z, jnp.zeros((2, 8, 2)), jnp.zeros(3), jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match=r"masks must be \[batch=2, samples, players=4\]"):
    amortize.fastshap_loss(phi, jnp.ones((2, 8, 5), bool), jnp.zeros((2, 8, 3)), jnp.zeros(3), jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match="grand"):
    amortize.fastshap_loss(phi, z, jnp.zeros((2, 8, 3)), jnp.zeros(3))
  with pytest.raises(ValueError, match=r"phi must be float\[batch, players, classes\]"):
    amortize.efficient_normalize(jnp.zeros((4, 3)), jnp.zeros((4,)), jnp.zeros(()))
  with pytest.raises(ValueError, match="labels must have the explainer's output shape"):
    amortize.regression_loss(jnp.zeros((2, 4)), jnp.zeros((2, 5)))
