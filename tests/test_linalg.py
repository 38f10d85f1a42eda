"""xattr.linalg: plain-XLA PSD solves (no LAPACK custom calls, which can deadlock XLA:CPU when batched)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xattr import games, lime, linalg, shapley


def _spd(rng, d):
  m = rng.normal(size=(d, d))
  return (m @ m.T + 0.5 * np.eye(d)).astype(np.float32)


@pytest.mark.parametrize("d", [1, 2, 7, 31])
def test_solve_and_inverse_match_numpy(d):
  rng = np.random.default_rng(d)
  a, b = _spd(rng, d), rng.normal(size=(d, 3)).astype(np.float32)
  np.testing.assert_allclose(linalg.solve_psd(a, b), np.linalg.solve(a, b), rtol=2e-3, atol=2e-4)
  np.testing.assert_allclose(linalg.solve_psd(a, b[:, 0]), np.linalg.solve(a, b[:, 0]), rtol=2e-3, atol=2e-4)
  np.testing.assert_allclose(linalg.inv_psd(a) @ a, np.eye(d), atol=2e-3)


def test_vmap_and_jit_equal_one_by_one():
  rng = np.random.default_rng(0)
  a = np.stack([_spd(rng, 5) for _ in range(4)])
  b = rng.normal(size=(4, 5, 2)).astype(np.float32)
  batched = jax.jit(jax.vmap(linalg.solve_psd))(a, b)
  for i in range(4):
    np.testing.assert_allclose(batched[i], linalg.solve_psd(a[i], b[i]), rtol=1e-5, atol=1e-6)


def test_singular_matrix_gives_non_finite_or_huge_values():
  a = jnp.array([[1.0, 1.0], [1.0, 1.0]])
  x = np.asarray(linalg.solve_psd(a, jnp.array([1.0, 2.0])))
  assert not np.all(np.isfinite(x)) or np.abs(x).max() > 1e6


def test_bad_shapes_are_named():
  with pytest.raises(ValueError, match=r"a must be a square matrix \[d, d\], got shape \(2, 3\)"):
    linalg.solve_psd(jnp.ones((2, 3)), jnp.ones(2))
  with pytest.raises(ValueError, match=r"b must have shape \[2\] or \[2, r\]"):
    linalg.solve_psd(jnp.eye(2), jnp.ones(3))


def _lowered_text(fn, *args):
  return jax.jit(fn).lower(*args).as_text()


def test_vmapped_estimators_compile_without_lapack_calls():
  """The batched programs users build (KernelSHAP / LIME vmapped over inputs) contain no LAPACK custom call."""
  w = jnp.arange(1.0, 7.0)
  bg = jnp.zeros((4, 6))
  f = lambda b: jnp.tanh(b @ w)
  xs = jnp.ones((3, 6))
  keys = jax.random.split(jax.random.key(0), 3)
  ks = lambda x, k: shapley.kernel_shap(games.marginal(f, x, bg), 6, k, num_samples=64).values
  lm = lambda x, k: lime.lime(games.marginal(f, x, bg), 6, k, num_samples=64).values
  for fn in (ks, lm):
    text = _lowered_text(jax.vmap(fn), xs, keys).lower()
    assert "lapack" not in text and "getrf" not in text and "potrf" not in text
