"""Removal games: baseline, marginal, surrogate, grouping, links and loss games."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xattr import games, masks, shapley

W = jnp.array([[1.0, -1.0], [2.0, 0.5], [-0.5, 1.5]])


def model(x):
  return x @ W                                         # [b, 3] -> [b, 2] logits


def test_baseline_replaces_held_out_features():
  x, ref = jnp.array([1.0, 2.0, 3.0]), jnp.array([10.0, 20.0, 30.0])
  m = jnp.array([[True, False, True]])
  np.testing.assert_allclose(games.baseline(model, x, ref)(m), model(jnp.array([[1.0, 20.0, 3.0]])))


def test_marginal_is_one_batched_call_and_averages():
  calls = []

  def counting_model(x):
    calls.append(x.shape)
    return model(x)

  x = jnp.array([1.0, 2.0, 3.0])
  bg = jax.random.normal(jax.random.key(0), (5, 3))
  m = masks.bernoulli(jax.random.key(1), 3, 4)
  out = games.marginal(counting_model, x, bg)(m)
  assert calls == [(20, 3)]                            # masks x background rows, one call
  expected = np.stack([np.mean([model(jnp.where(mi, x, b)[None])[0] for b in bg], 0) for mi in m])
  np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_links():
  x = jnp.array([1.0, 2.0, 3.0])
  m = jnp.array([[True, True, False]])
  probs = games.baseline(model, x, jnp.zeros(3), link="softmax")(m)
  np.testing.assert_allclose(probs, jax.nn.softmax(model(jnp.array([[1.0, 2.0, 0.0]]))), rtol=1e-6)
  logit = games.get_link("logit")(jnp.array([0.25, 0.5]))
  np.testing.assert_allclose(logit, [np.log(1 / 3), 0.0], atol=1e-6)
  with pytest.raises(ValueError, match="link must be"):
    games.baseline(model, x, jnp.zeros(3), link="probit")


def test_image_players_broadcast_over_channels():
  image = jnp.arange(2 * 2 * 3, dtype=jnp.float32).reshape(2, 2, 3)
  f = lambda b: b.reshape(b.shape[0], -1).sum(-1)
  v = games.baseline(f, image, 0.0)
  m = jnp.array([[True, False, False, False]])        # one player per pixel, channels follow
  np.testing.assert_allclose(v(m), [0 + 1 + 2])
  with pytest.raises(ValueError, match="matches no product"):
    v(jnp.ones((1, 5), bool))


def test_surrogate_receives_masks():
  f = lambda xb, mb: jnp.where(mb, xb, 0.0).sum(-1)
  v = games.surrogate(f, jnp.array([1.0, 2.0, 4.0]))
  np.testing.assert_allclose(v(jnp.array([[True, False, True], [False, True, False]])), [5.0, 2.0])


def test_grouped_game_values_sum_groups_of_additive_game():
  w = jnp.arange(1.0, 7.0)
  inner = lambda m: m.astype(jnp.float32) @ w
  g = masks.group_matrix([[0, 1], [2, 3, 4], [5]], 6)
  np.testing.assert_allclose(shapley.exact(games.grouped(inner, g), 3), [3.0, 12.0, 6.0], atol=1e-5)


def test_restrict_keeps_other_features():
  w = jnp.arange(1.0, 6.0)
  inner = lambda m: jnp.prod(jnp.where(m, 1.0, 0.5), axis=1) * (m.astype(jnp.float32) @ w)
  sub = games.restrict(inner, [4, 1], 5)
  m = jnp.array([[True, False]])
  np.testing.assert_allclose(sub(m), inner(jnp.array([[True, False, True, True, True]])))
  with pytest.raises(ValueError, match="players must"):
    games.restrict(inner, [0, 5], 5)


def test_loss_game_and_select():
  x = jnp.array([1.0, 2.0, 3.0])
  probs = games.baseline(model, x, jnp.zeros(3), link="softmax")
  m = masks.bernoulli(jax.random.key(2), 3, 6)
  lossv = games.loss(probs, 1)(m)
  np.testing.assert_allclose(lossv, jnp.log(games.select(probs, 1)(m)), rtol=1e-5)
  mse = games.loss(games.select(games.baseline(model, x, jnp.zeros(3)), 0), 2.0, "mse")(m)
  np.testing.assert_allclose(mse, -(games.select(games.baseline(model, x, jnp.zeros(3)), 0)(m) - 2.0) ** 2,
                             rtol=1e-5)


def test_marginal_rejects_mismatched_background():
  with pytest.raises(ValueError, match="background must have shape"):
    games.marginal(model, jnp.zeros(3), jnp.zeros((4, 2)))
