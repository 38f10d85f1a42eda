"""Baseline attributions against closed forms: linear models, additive games, hand-built attention matrices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import table_game
from xattr import attributions, masks, shapley

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)
IMAGE = jnp.asarray(RNG.uniform(size=(4, 4, 3)), jnp.float32)
W = jnp.asarray(RNG.normal(size=(48, 3)), jnp.float32)


def linear_logits(xb):
  return xb.reshape(xb.shape[0], -1) @ W


W1 = jnp.asarray(RNG.normal(size=(48, 8)) * 0.5, jnp.float32)
W2 = jnp.asarray(RNG.normal(size=(8, 3)), jnp.float32)


def mlp_logits(xb):
  return jnp.tanh(xb.reshape(xb.shape[0], -1) @ W1) @ W2


def patch_sums(pixel_map, p):
  """Per-patch sums over pixels and channels, row-major, with plain numpy loops."""
  pixel_map = np.asarray(pixel_map)
  h, w = pixel_map.shape[:2]
  return np.array([pixel_map[r:r + p, c:c + p].sum() for r in range(0, h, p) for c in range(0, w, p)])


# --- game-based --------------------------------------------------------------------------------------------------


def test_random_and_leave_one_out():
  a = attributions.random(KEY, 6)
  assert a.shape == (6,)
  np.testing.assert_array_equal(a, attributions.random(KEY, 6))
  assert not np.allclose(a, attributions.random(jax.random.key(5), 6))
  values = np.random.default_rng(0).normal(size=2 ** 4)
  want = values[-1] - values[15 - 2 ** np.arange(4)]           # v(1) - v(1 - e_i) from the table
  np.testing.assert_allclose(attributions.leave_one_out(table_game(values), 4), want, atol=1e-6)


def test_rise_is_the_monte_carlo_mean_of_the_masks_it_draws():
  values = np.random.default_rng(1).normal(size=(2 ** 5, 2))        # vector-valued: one column per output
  inner = table_game(values)
  seen = []

  def game(z):
    seen.append(np.asarray(z))
    return inner(z)

  got = attributions.rise(game, 5, KEY, num_masks=300, p=0.3)
  z = seen[0]
  assert z.shape == (300, 5) and got.shape == (5, 2)
  v = values[(z * 2 ** np.arange(5)).sum(1)]
  np.testing.assert_allclose(got, z.T @ v / (300 * 0.3), rtol=1e-5, atol=1e-6)
  assert abs(z.mean() - 0.3) < 0.05


def test_rise_on_additive_game_recovers_w_within_its_std():
  d, n, p, c = 6, 4096, 0.5, 0.2
  w = np.array([1.5, -0.5, 0.8, 0.0, -1.2, 0.3])
  game = lambda m: c + m.astype(jnp.float32) @ jnp.asarray(w, jnp.float32)
  got = np.asarray(attributions.rise(game, d, KEY, num_masks=n, p=p, batch_size=1000))
  # E[v | m_i = 1] = c + w_i + p (S - w_i); Var(v m_i / p) = E[v^2 | m_i = 1] / p - mean^2.
  mean = c + w + p * (w.sum() - w)
  var_given = p * (1 - p) * ((w ** 2).sum() - w ** 2)
  std = np.sqrt(((mean ** 2 + var_given) / p - mean ** 2) / n)
  assert np.all(np.abs(got - mean) < 4 * std), (got - mean, std)
  recovered = (got - c - p * w.sum()) / (1 - p)
  assert np.all(np.abs(recovered - w) < 4 * std / (1 - p))


@pytest.mark.parametrize("paired, num_evals, num_samples", [(True, 35, 32), (True, 34, 32), (False, 35, 33)])
def test_kernel_shap_matched_spends_the_budget(monkeypatch, paired, num_evals, num_samples):
  calls = []

  def fake_kernel_shap(game, num_players, key, **kwargs):
    calls.append((num_players, kwargs))
    return shapley.Estimate(jnp.arange(3.0), jnp.zeros(3), jnp.array(num_evals), jnp.array(True))

  monkeypatch.setattr(shapley, "kernel_shap", fake_kernel_shap)
  got = attributions.kernel_shap_matched(lambda m: m.sum(1), 3, KEY, num_evals=num_evals, paired=paired)
  np.testing.assert_array_equal(got, [0.0, 1.0, 2.0])
  assert calls == [(3, dict(num_samples=num_samples, paired=paired, exact_a=False, batch_size=512))]


# --- gradient-based ----------------------------------------------------------------------------------------------


def test_gradient_x_input_on_linear_model():
  pixel = W[:, 2].reshape(4, 4, 3) * IMAGE
  np.testing.assert_allclose(attributions.gradient_x_input(linear_logits, IMAGE, 2), pixel, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(attributions.gradient_x_input(linear_logits, IMAGE, 2, players=2), patch_sums(pixel, 2),
                             rtol=1e-5, atol=1e-5)
  groups = masks.patch_groups(4, 2)
  np.testing.assert_allclose(attributions.gradient_x_input(linear_logits, IMAGE, 2, players=groups),
                             patch_sums(pixel, 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_steps", [1, 7])
def test_integrated_gradients_on_linear_model(num_steps):
  baseline = RNG.uniform(size=IMAGE.shape).astype(np.float32)
  got = attributions.integrated_gradients(linear_logits, IMAGE, 1, num_steps=num_steps, baseline=baseline)
  np.testing.assert_allclose(got, (IMAGE - baseline) * W[:, 1].reshape(4, 4, 3), rtol=1e-5, atol=1e-6)


def test_integrated_gradients_completeness_on_nonlinear_model():
  baseline = 0.5
  gap = mlp_logits(IMAGE[None])[0, 0] - mlp_logits(jnp.full((1, 4, 4, 3), baseline))[0, 0]

  @jax.jit
  def run(x):
    ig = attributions.integrated_gradients(mlp_logits, x, 0, num_steps=64, baseline=baseline, players=2)
    # Chunked evaluation of the path gives the same integral.
    chunked = attributions.integrated_gradients(mlp_logits, x, 0, num_steps=64, baseline=baseline, players=2,
                                                batch_size=20)
    return ig, chunked

  ig, chunked = run(IMAGE)
  assert ig.shape == (4,)
  assert abs(float(ig.sum() - gap)) < 1e-3 * max(1.0, abs(float(gap))), (float(ig.sum()), float(gap))
  np.testing.assert_allclose(chunked, ig, rtol=1e-5, atol=1e-6)


def test_smoothgrad_closed_forms():
  a = jnp.linspace(-1.0, 2.0, 48).reshape(4, 4, 3)
  quadratic = lambda xb: (a * xb ** 2).reshape(xb.shape[0], -1).sum(-1, keepdims=True)
  n, sigma = 256, 0.2

  @jax.jit
  def run(x):
    return (attributions.smoothgrad(quadratic, x, 0, KEY, num_samples=n, sigma=sigma, absolute=False),
            attributions.smoothgrad(quadratic, x, 0, KEY, num_samples=2, sigma=0.0, absolute=False),
            attributions.smoothgrad(linear_logits, x, 0, KEY, num_samples=3))

  noisy, plain, absolute = run(IMAGE)
  # Signed: E[2 a (x + eps)] = 2 a x, Monte Carlo std 2 |a| sigma range(x) / sqrt(n).
  std = 2 * jnp.abs(a) * sigma * (IMAGE.max() - IMAGE.min()) / np.sqrt(n)
  assert np.all(np.abs(np.asarray(noisy - 2 * a * IMAGE)) <= 4 * np.asarray(std) + 1e-6)
  # Without noise it is the plain gradient; on a linear model |gradient| = |w| exactly.
  np.testing.assert_allclose(plain, 2 * a * IMAGE, rtol=1e-5)
  np.testing.assert_allclose(absolute, jnp.abs(W[:, 0]).reshape(4, 4, 3), rtol=1e-5)
  # Same key, same noise.
  np.testing.assert_array_equal(run(IMAGE)[0], noisy)


def test_gradient_methods_jit_and_vmap_over_images_and_targets():
  images = RNG.uniform(size=(3, 4, 4, 3)).astype(np.float32)
  targets = jnp.array([0, 2, 1])

  def run(x, t):
    return (attributions.gradient_x_input(linear_logits, x, t, players=2),
            attributions.integrated_gradients(linear_logits, x, t, num_steps=4, players=2),
            attributions.smoothgrad(linear_logits, x, t, KEY, num_samples=4, players=2))

  gxi, ig, sg = jax.jit(jax.vmap(run))(images, targets)
  for i, t in enumerate(targets.tolist()):
    w = W[:, t].reshape(4, 4, 3)
    np.testing.assert_allclose(gxi[i], patch_sums(w * images[i], 2), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ig[i], patch_sums(w * images[i], 2), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sg[i], patch_sums(jnp.abs(w), 2), rtol=1e-4, atol=1e-5)


# --- attention-based ---------------------------------------------------------------------------------------------


def random_attention(seed, depth, heads, t):
  """Row-stochastic attention (softmax of random logits), float32 numpy."""
  logits = np.random.default_rng(seed).normal(size=(depth, heads, t, t)) * 2.0
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def numpy_rollout(attn, prefix):
  attn = np.asarray(attn, np.float64)
  t = attn.shape[-1]
  rollout = np.eye(t)
  for layer in attn:
    a = 0.5 * layer.mean(0) + 0.5 * np.eye(t)
    rollout = a @ rollout
  return rollout[0, prefix:]


def test_rollout_of_one_layer_is_half_attention_plus_identity():
  attn = random_attention(0, 1, 3, 6)
  mean = np.asarray(attn[0]).mean(0)
  for prefix in (1, 2):
    row = (0.5 * mean + 0.5 * np.eye(6))[0, prefix:]
    np.testing.assert_allclose(attributions.attention_rollout(attn, prefix), row, rtol=1e-5)
    np.testing.assert_allclose(attributions.last_layer_attention(attn, prefix), mean[0, prefix:], rtol=1e-5)


def test_rollout_closed_forms():
  t, depth = 5, 3
  # Uniform attention U: (U/2 + I/2)^L = I / 2^L + (1 - 1/2^L) U, so each patch gets (1 - 2^-L) / T.
  uniform = np.full((depth, 2, t, t), 1.0 / t, np.float32)
  np.testing.assert_allclose(attributions.attention_rollout(uniform, 1), np.full(t - 1, (1 - 0.5 ** depth) / t),
                             rtol=1e-6)
  # Every token attending only to itself: CLS never mixes in any patch.
  identity = np.broadcast_to(np.eye(t, dtype=np.float32), (depth, 2, t, t))
  np.testing.assert_allclose(attributions.attention_rollout(identity, 1), np.zeros(t - 1), atol=1e-7)


def test_rollout_matches_numpy_product_and_vmaps_over_batch():
  attn = random_attention(0, 4, 3, 7)
  np.testing.assert_allclose(attributions.attention_rollout(attn, 2), numpy_rollout(attn, 2), rtol=1e-5)
  np.testing.assert_allclose(attributions.attention_rollout(attn, 1, head_fusion="max"), _max_fused_reference(attn),
                             rtol=1e-5)
  # The model's [depth, B, heads, T, T] output: vmap over axis 1.
  batch = np.stack([attn, random_attention(9, 4, 3, 7)], axis=1)
  got = jax.jit(jax.vmap(lambda a: attributions.attention_rollout(a, 1), in_axes=1))(batch)
  np.testing.assert_allclose(got[1], numpy_rollout(batch[:, 1], 1), rtol=1e-5)


def _max_fused_reference(attn):
  """Rollout with max over heads: rows of max_h A + I renormalised (no longer 0.5 A + 0.5 I)."""
  attn = np.asarray(attn, np.float64)
  t = attn.shape[-1]
  rollout = np.eye(t)
  for layer in attn:
    a = layer.max(0) + np.eye(t)
    rollout = (a / a.sum(1, keepdims=True)) @ rollout
  return rollout[0, 1:]


# --- errors ------------------------------------------------------------------------------------------------------


def test_bad_arguments_raise_clear_errors():
  attn = random_attention(0, 2, 2, 5)
  with pytest.raises(ValueError, match=r"attn must be .*float\[depth, heads, T, T\].*attn\[:, b\].*\(2, 5, 5\)"):
    attributions.attention_rollout(attn[0], 1)
  with pytest.raises(ValueError, match=r"got shape \(2, 2, 5, 4\)"):
    attributions.last_layer_attention(attn[..., :4], 1)
  with pytest.raises(ValueError, match="num_prefix_tokens .* must be < the number of tokens T = 5, got 5"):
    attributions.attention_rollout(attn, 5)
  with pytest.raises(ValueError, match="head_fusion must be one of"):
    attributions.attention_rollout(attn, 1, head_fusion="sum")
  with pytest.raises(ValueError, match=r"target must be an int class index in \[0, 3\), got 3"):
    attributions.gradient_x_input(linear_logits, IMAGE, 3)
  with pytest.raises(ValueError, match=r"logit_fn must map images .* returned shape \(3,\)"):
    attributions.integrated_gradients(lambda xb: xb.sum((1, 2, 3)), IMAGE, 0, num_steps=2)
  with pytest.raises(ValueError, match="image must be one float input"):
    attributions.smoothgrad(linear_logits, jnp.ones((4, 4, 3), jnp.int32), 0, KEY)
  with pytest.raises(ValueError, match="p must lie strictly between 0 and 1"):
    attributions.rise(lambda m: m.sum(1).astype(jnp.float32), 3, KEY, num_masks=8, p=1.0)
  with pytest.raises(ValueError, match="num_evals must be >= 4"):
    attributions.kernel_shap_matched(lambda m: m.sum(1).astype(jnp.float32), 3, KEY, num_evals=3)
  with pytest.raises(ValueError, match="num_samples=8 is too few"):
    attributions.kernel_shap_matched(lambda m: m.sum(1).astype(jnp.float32), 8, KEY, num_evals=10,
                                     batch_size=8)


def test_vanilla_gradients_on_linear_model_and_under_vmap():
  for t in range(3):
    w = W[:, t].reshape(4, 4, 3)
    np.testing.assert_allclose(attributions.vanilla_gradients(linear_logits, IMAGE, t), jnp.abs(w), rtol=1e-6)
    np.testing.assert_allclose(attributions.vanilla_gradients(linear_logits, IMAGE, t, absolute=False), w,
                               rtol=1e-6)
  images = RNG.uniform(size=(2, 4, 4, 3)).astype(np.float32)
  got = jax.jit(jax.vmap(lambda x, t: attributions.vanilla_gradients(mlp_logits, x, t, players=2)))(
      images, jnp.array([0, 2]))
  for i, t in enumerate((0, 2)):
    grad = jax.grad(lambda x: mlp_logits(x[None])[0, t])(jnp.asarray(images[i]))
    np.testing.assert_allclose(got[i], patch_sums(jnp.abs(grad), 2), rtol=1e-5, atol=1e-6)
