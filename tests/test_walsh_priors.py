"""xattr.walsh: the weighted odd kernel against brute force, the heredity prior and its guard
(issue 13, sample efficiency: odd_kernel_shap / kernel_banzhaf ahead of shapiq's OddSHAP / Kernel Banzhaf)."""

import itertools
from math import comb

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import smooth_game
from xattr import banzhaf, shapley, walsh

KEY = jax.random.key(0)


def _brute_kernel(x, x2, s, fifth):
  d = x.shape[1]
  out = np.zeros((len(x), len(x2)))
  for order, weight in ((3, 1.0), (5, fifth)):
    terms = list(itertools.combinations(range(d), order))
    norm = sum(np.prod(s[list(t)]) for t in terms)
    for t in terms:
      t = list(t)
      out += weight * np.prod(s[t]) * np.outer(np.prod(x[:, t], 1), np.prod(x2[:, t], 1)) / norm
  return out


@pytest.mark.parametrize("fifth", [0.0, 0.3])
def test_weighted_kernel_equals_the_sum_over_terms(fifth):
  rng = np.random.default_rng(0)
  d = 7
  x, x2 = rng.choice([-1.0, 1.0], (5, d)), rng.choice([-1.0, 1.0], (4, d))
  s = rng.uniform(0.2, 3.0, d)
  got = walsh.odd_kernel(jnp.asarray(x), jnp.asarray(x2), jnp.asarray(s), fifth)
  np.testing.assert_allclose(got, _brute_kernel(x, x2, s, fifth), rtol=1e-4, atol=1e-5)
  # Unit scales, third order: e_3(x * x') / C(d, 3), a function of x . x' only.
  sdot = x @ x2.T
  np.testing.assert_allclose(walsh.odd_kernel(jnp.asarray(x), jnp.asarray(x2), jnp.ones(d)),
                             (sdot ** 3 - (3 * d - 2) * sdot) / (6 * comb(d, 3)), rtol=1e-5, atol=1e-6)


def test_kernel_part_gives_each_player_its_shapley_share():
  """A kernel part f = sum_s a_s K(x_s, .) has coefficients c_T; its Shapley values are sum_{T ni i} 2 c_T / |T|
  (and its Banzhaf values 0). OddFit.g must be that map, for weighted third- and fifth-order kernels."""
  rng = np.random.default_rng(1)
  d, n, fifth = 6, 9, 0.5
  x = rng.choice([-1.0, 1.0], (n, d))
  s = rng.uniform(0.2, 3.0, d)
  a = rng.normal(size=n)
  fit = walsh.OddFit(jnp.asarray(x), jnp.zeros((n, 1)), jnp.ones(n), d, scales=jnp.asarray(s), fifth=fifth)
  want = np.zeros(d)
  for order, weight in ((3, 1.0), (5, fifth)):
    terms = list(itertools.combinations(range(d), order))
    norm = sum(np.prod(s[list(t)]) for t in terms)
    for t in terms:
      c = weight * np.prod(s[list(t)]) * np.sum(a * np.prod(x[:, list(t)], 1)) / norm
      want[list(t)] += 2.0 * c / order
  np.testing.assert_allclose(np.asarray(fit.g).T @ a, want, rtol=1e-4, atol=1e-5)


def test_heredity_scales_follow_the_main_effects_and_fall_back_to_ones():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.choice([-1.0, 1.0], (64, 5)))
  b = jnp.array([0.0, 1.0, -2.0, 3.0, 0.5])
  s = walsh.heredity_scales(x, (x @ b)[:, None], jnp.ones(64), 5)
  want = np.asarray(b) ** 2 / np.mean(np.asarray(b) ** 2) + walsh.HEREDITY_FLOOR
  np.testing.assert_allclose(s, want, rtol=1e-4)
  np.testing.assert_allclose(walsh.heredity_scales(x, jnp.zeros((64, 1)), jnp.ones(64), 5), np.ones(5))


def test_heredity_prior_is_more_accurate_on_a_smooth_game():
  d, n = 10, 160
  v = smooth_game(d)
  truth = shapley.exact(v, d)
  keys = jax.random.split(KEY, 20)
  mse = {}
  for prior in ("heredity", "flat"):
    est = jax.jit(jax.vmap(lambda k: shapley.odd_kernel_shap(v, d, k, num_samples=n, prior=prior)))(keys)
    mse[prior] = float(jnp.mean((est.values - truth) ** 2))
  assert mse["heredity"] < 0.8 * mse["flat"], mse


def _weak_interaction_game(d):
  """Main effects 0..d-1 and a three-way AND of the three weakest players: a heredity prior puts little mass on it."""
  w = jnp.arange(d, dtype=jnp.float32)
  return lambda m: m.astype(jnp.float32) @ w + 4.0 * (m[:, 0] & m[:, 1] & m[:, 2])


@pytest.mark.parametrize("estimator", ["shapley", "banzhaf"])
def test_interactions_among_weak_players_are_not_lost(estimator):
  """The heredity fit alone misses them (errors ~0.2-0.4 at 128 rows); the leave-one-out choice falls back to the
  flat prior."""
  d, n = 8, 128
  v = _weak_interaction_game(d)
  if estimator == "shapley":
    truth, run = shapley.exact(v, d), lambda k, p: shapley.odd_kernel_shap(v, d, k, num_samples=n, prior=p)
  else:
    truth, run = banzhaf.exact(v, d), lambda k, p: banzhaf.kernel_banzhaf(v, d, k, num_samples=n, prior=p)
  keys = jax.random.split(KEY, 5)
  err = {p: np.mean([float(jnp.abs(run(k, p).values - truth).max()) for k in keys]) for p in ("heredity", "flat")}
  assert err["heredity"] <= 1.05 * err["flat"] + 1e-4, err
  assert err["heredity"] < 0.05, err


def test_an_unknown_prior_names_the_choices():
  with pytest.raises(ValueError, match="prior must be one of"):
    shapley.odd_kernel_shap(smooth_game(6), 6, KEY, num_samples=40, prior="flatt")
  with pytest.raises(ValueError, match="prior must be one of"):
    banzhaf.kernel_banzhaf(smooth_game(6), 6, KEY, num_samples=40, prior="none")
