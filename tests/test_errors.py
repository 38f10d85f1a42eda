"""Bad input gets a clear error naming the argument, the expected and the received value."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xattr import banzhaf, games, lime, masks, shapley

KEY = jax.random.key(0)
additive = lambda m: m.astype(jnp.float32) @ jnp.arange(4.0)


def test_mask_dtype_and_shape():
  v = games.baseline(lambda x: x.sum(-1), jnp.ones(4), jnp.zeros(4))
  with pytest.raises(TypeError, match="mask must have dtype bool.*got float32"):
    v(jnp.ones((2, 4), jnp.float32))
  with pytest.raises(ValueError, match=r"mask must be a 2-D array .*got shape \(4,\)"):
    v(jnp.ones(4, bool))


def test_num_players_mismatch():
  v = games.grouped(additive, np.eye(4, dtype=bool))
  with pytest.raises(ValueError, match=r"mask must have 4 columns \(num_players\), got shape \(\d+, 3\)"):
    shapley.kernel_shap(v, 3, KEY, num_samples=16)
  with pytest.raises(ValueError, match="matches no product"):
    shapley.kernel_shap(games.baseline(lambda x: x.sum(-1), jnp.ones(4), 0.0), 3, KEY, num_samples=16)


def test_bad_game_output_shape():
  with pytest.raises(ValueError, match="game must map bool\\[n, num_players\\] to float\\[n\\] or float\\[n, k\\]"):
    shapley.kernel_shap(lambda m: jnp.zeros((3, 3, 3)), 4, KEY, num_samples=16)


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_non_finite_game_values(bad):
  v = lambda m: jnp.where(m.sum(1) == 2, bad, m.sum(1).astype(jnp.float32))
  with pytest.raises(FloatingPointError, match="game returned non-finite values"):
    shapley.kernel_shap(v, 4, KEY, num_samples=64)
  with pytest.raises(FloatingPointError, match="non-finite"):
    shapley.permutation(v, 4, KEY, num_permutations=8)
  with pytest.raises(FloatingPointError, match="non-finite"):
    shapley.exact(v, 4)
  with pytest.raises(FloatingPointError, match="non-finite"):
    banzhaf.msr(v, 4, KEY, num_samples=64)


def test_non_finite_values_propagate_under_jit():
  v = lambda m: jnp.where(m.sum(1) == 2, jnp.nan, m.sum(1).astype(jnp.float32))
  est = jax.jit(lambda k: shapley.kernel_shap(v, 4, k, num_samples=64))(KEY)
  assert np.isnan(np.asarray(est.values)).any()


def test_too_few_samples():
  with pytest.raises(ValueError, match="num_samples=8 is too few for a solvable system.*needs num_samples >= 18"):
    shapley.kernel_shap(additive, 10, KEY, num_samples=8)
  with pytest.raises(ValueError, match="needs num_samples >= 10"):
    shapley.kernel_shap(additive, 10, KEY, num_samples=8, paired=False)
  with pytest.raises(ValueError, match="num_samples must be even when paired=True"):
    shapley.kernel_shap(additive, 4, KEY, num_samples=31, exact_a=True)
  with pytest.raises(ValueError, match="too few"):
    lime.lime(additive, 4, KEY, num_samples=3)


def test_exact_enumeration_limit():
  with pytest.raises(ValueError, match=r"num_players=24 is too large .* limit is 20"):
    banzhaf.exact(additive, 24)


def test_sampler_arguments():
  with pytest.raises(ValueError, match="num_players must be >= 2, got 1"):
    masks.shapley_kernel(KEY, 1, 4)
  with pytest.raises(TypeError, match="num_samples must be a Python int"):
    masks.bernoulli(KEY, 4, 2.5)
  with pytest.raises(ValueError, match=r"p must lie in \[0, 1\], got 1.5"):
    masks.bernoulli(KEY, 4, 8, p=1.5)
  with pytest.raises(ValueError, match="threshold must be > 0"):
    shapley.kernel_shap(additive, 4, KEY, threshold=0.0)
