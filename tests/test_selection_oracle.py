"""The oracle problem: exact CMI against brute-force enumeration and the closed-form first-step values.

(That GDFS and DIME recover the oracle's order is checked on the driver's oracle run, tests/test_selection_driver.py;
that the rollout with the exact CMI follows the closed-form order, in tests/test_selection_rollout.py.)"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from xattr.selection import oracle

SMALL = oracle.Spec(flips_a=(0.1, 0.3), flips_b=(0.2, 0.05), num_distractors=1)


def _joint(spec: oracle.Spec) -> tuple[np.ndarray, np.ndarray]:
  """P(y, x) over every state and every +-1 feature vector, float64: (probs [4, 2^d], xs [2^d, d])."""
  table = oracle.feature_table(spec)
  d = table.shape[0]
  xs = np.array(list(itertools.product([-1.0, 1.0], repeat=d)))
  bits = xs > 0
  lik = np.prod(np.where(bits[None], table.T[:, None, :], 1 - table.T[:, None, :]), axis=-1)   # [4, 2^d]
  return 0.25 * lik, xs


def _entropy(p):
  p = p[p > 0]
  return float(-(p * np.log(p)).sum())


def _brute_force_cmi(probs, xs, x, mask, i):
  """I(y; x_i | x_S = x_S) by summing the joint over every completion of the unobserved features."""
  match = np.all(xs[:, mask] == x[mask], axis=1)
  py = probs[:, match].sum(1)
  total = py.sum()
  h = _entropy(py / total)
  expected = 0.0
  for v in (-1.0, 1.0):
    sub = match & (xs[:, i] == v)
    pv = probs[:, sub].sum(1)
    if pv.sum() > 0:
      expected += pv.sum() / total * _entropy(pv / pv.sum())
  return h - expected


def test_cmi_and_posterior_match_brute_force_enumeration():
  probs, xs = _joint(SMALL)
  d = xs.shape[1]
  rng = np.random.default_rng(0)
  # Only feature vectors with positive probability (x_0 = s is noiseless, so half the states are impossible).
  possible = probs.sum(0) > 0
  rows = xs[possible][rng.choice(int(possible.sum()), 40)]
  masks_ = rng.random((40, d)) < 0.4
  got = np.asarray(oracle.cmi(jnp.asarray(rows, jnp.float32), jnp.asarray(masks_), SMALL))
  post = np.asarray(oracle.posterior(jnp.asarray(rows, jnp.float32), jnp.asarray(masks_), SMALL))
  for r in range(40):
    match = np.all(xs[:, masks_[r]] == rows[r, masks_[r]], axis=1)
    py = probs[:, match].sum(1)
    np.testing.assert_allclose(post[r], py / py.sum(), atol=1e-6)
    for i in range(d):
      want = 0.0 if masks_[r, i] else _brute_force_cmi(probs, xs, rows[r], masks_[r], i)
      assert got[r, i] == pytest.approx(want, abs=2e-6), (r, i)


def test_first_step_closed_form_values():
  spec = oracle.Spec()
  c = np.asarray(oracle.cmi(jnp.ones((1, spec.num_features)), jnp.zeros((1, spec.num_features), bool), spec))[0]
  h = lambda e: -e * np.log(e) - (1 - e) * np.log(1 - e)
  k = len(spec.flips_a)
  assert c[0] == pytest.approx(np.log(2), abs=1e-6)
  np.testing.assert_allclose(c[1:1 + k], (np.log(2) - h(np.array(spec.flips_a))) / 2, atol=1e-6)
  np.testing.assert_allclose(c[1 + k:1 + 2 * k], (np.log(2) - h(np.array(spec.flips_b))) / 2, atol=1e-6)
  np.testing.assert_allclose(c[1 + 2 * k:], 0.0, atol=1e-6)


def test_sample_distribution():
  spec = oracle.Spec()
  x, y = oracle.sample(jax.random.key(0), spec, 20000)
  assert set(np.unique(x).tolist()) == {-1.0, 1.0} and np.bincount(y).min() > 4700
  s, b = y >= 2, y % 2 == 1
  # Block A's best feature agrees with b at rate 1 - 0.05 when s = 0 and 1/2 when s = 1.
  agree = (x[:, 1] > 0) == b
  assert abs(agree[~s].mean() - 0.95) < 0.01 and abs(agree[s].mean() - 0.5) < 0.02
  with pytest.raises(ValueError, match="distinct flip probabilities in"):
    oracle.feature_table(oracle.Spec(flips_a=(0.1, 0.6), flips_b=(0.1, 0.2)))
