"""Contrastive feature selection: gate penalty against its closed form, exact-k Concrete selection, recovery of the
linear-Gaussian salient features against target-only baselines, resuming a killed selection, the data and errors.

The driver end to end (grassy digits) is in test_cfs_driver.py; 4 devices vs 1 in test_cfs_multidevice.py."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from xattr import cfs
from xattr.cfs import baselines, model
from xattr.data import contrastive

SMALL = dict(hidden_sizes=(64,), learning_rate=3e-3, batch_size=128)


def test_gate_penalty_and_gradient_match_closed_form():
  mu = jnp.array([-1.2, -0.5, 0.0, 0.3, 1.1])
  sigma = 0.5
  phi = lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2)))
  expected = np.mean([phi((m + 0.5) / sigma) for m in mu.tolist()])
  np.testing.assert_allclose(float(model.gate_penalty(mu, sigma)), expected, rtol=1e-6)
  density = lambda t: math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
  grad = jax.grad(model.gate_penalty)(mu, sigma)
  np.testing.assert_allclose(grad, [density((m + 0.5) / sigma) / (sigma * len(mu)) for m in mu.tolist()], rtol=1e-5)


def test_gates_sample_is_clipped_and_matches_its_definition():
  gates = model.StochasticGates(6, sigma=0.5, rngs=nnx.Rngs(0))
  key = jax.random.key(3)
  eps = jax.random.normal(key, (6,))
  expected = np.clip(np.asarray(gates.mu[...]) + 0.5 + 0.5 * np.asarray(eps), 0, 1)
  np.testing.assert_allclose(gates.sample(key), expected, rtol=1e-6)
  assert abs(float(gates.mu[...].mean())) < 0.05          # the gate mean mu + 0.5 starts near 0.5


def test_concrete_selector_returns_exactly_k_distinct_features():
  ds = contrastive.linear_gaussian(seed=2, num_target=256, num_background=256)
  k = 12
  sel = baselines.cae(jax.random.key(0), ds.target, num_features=k, selector_steps=40, hidden_sizes=(16,),
                      batch_size=128)
  assert sel.indices.shape == (k,) and len(set(sel.indices.tolist())) == k
  assert sel.indices.min() >= 0 and sel.indices.max() < ds.num_features
  # Rows that all prefer one player still give k distinct players.
  layer = model.ConcreteTopK(3, 4, num_steps=1, rngs=nnx.Rngs(0))
  layer.layer.logits[...] = jnp.array([[9.0, 0, 0, 0]] * 3)
  assert sorted(layer.selection().tolist()) == [0, 1, 2]
  # The temperature decays from 10 to 0.01 over num_steps samples.
  assert float(layer.temperature()) == pytest.approx(10.0)
  layer.sample(jax.random.key(0))
  assert float(layer.temperature()) == pytest.approx(0.01)


def test_groups_select_whole_groups():
  ds = contrastive.linear_gaussian(seed=0, num_target=512, num_background=512)
  d = ds.num_features
  groups = np.zeros((d // 2, d), bool)
  order = np.argsort(np.isin(np.arange(d), ds.salient), kind="stable")[::-1]   # salient features paired first
  for g in range(d // 2):
    groups[g, order[2 * g:2 * g + 2]] = True
  sel = cfs.select(jax.random.key(0), ds.target, ds.background, num_features=5, groups=groups, penalty=0.05,
                   background_steps=150, selector_steps=200, **SMALL)
  assert sel.scores.shape == (d // 2,) and sel.indices.max() < d // 2
  chosen = np.flatnonzero(groups[sel.indices].any(0))
  assert np.isin(chosen, ds.salient).mean() >= 0.8, chosen


@pytest.fixture(scope="module")
def linear():
  return contrastive.linear_gaussian(seed=0, num_target=1000, num_background=1000)


def test_linear_gaussian_recovery_cfs_vs_target_only_baselines(linear):
  k = len(linear.salient)
  recovery = lambda sel: np.isin(sel.indices, linear.salient).mean()
  kw = dict(background_steps=400, selector_steps=600, **SMALL)
  found = {"cfs": recovery(cfs.select(jax.random.key(0), linear.target, linear.background, num_features=k,
                                      penalty=0.05, **kw)),
           "cae": recovery(baselines.cae(jax.random.key(0), linear.target, num_features=k, **kw))}
  for name, rank in baselines.RANKINGS.items():
    found[name] = recovery(rank(linear.target, num_features=k))
  print("recovery of the salient features at k = #salient:", found)
  assert found["cfs"] >= 0.9
  best_baseline = max(v for n, v in found.items() if n != "cfs")
  assert best_baseline <= found["cfs"] - 0.5, found         # far fewer: at least 5 of the 10 salient features


def test_killed_selection_resumes_to_the_same_result(linear, tmp_path):
  kw = dict(num_features=10, penalty=0.05, background_steps=60, selector_steps=80, **SMALL)
  straight = cfs.select(jax.random.key(1), linear.target, linear.background, **kw)
  stopped = cfs.select(jax.random.key(1), linear.target, linear.background, workdir=tmp_path, stop_at=50, **kw)
  assert stopped.history["stopped_early"]
  assert os.path.isdir(tmp_path / "background" / "checkpoints")
  resumed = cfs.select(jax.random.key(1), linear.target, linear.background, workdir=tmp_path, **kw)
  assert not resumed.history["stopped_early"] and "background" in resumed.history
  np.testing.assert_array_equal(resumed.indices, straight.indices)
  np.testing.assert_array_equal(resumed.scores, straight.scores)     # bitwise: the same batches and noise


def test_laplacian_variance_pca_on_known_structure():
  rng = np.random.default_rng(0)
  clusters = rng.integers(0, 2, 300)
  x = np.stack([clusters * 3 + 0.3 * rng.normal(size=300), 2 * rng.normal(size=300), rng.normal(size=300)], 1)
  assert baselines.laplacian_score(x, num_features=1).indices.tolist() == [0]   # graph structure, not variance
  assert baselines.variance(x, num_features=1).indices.tolist() == [1]
  assert baselines.pca_loading(x, num_features=1, num_components=1).indices.tolist() == [1]
  groups = np.array([[1, 0, 1], [0, 1, 0]])
  assert baselines.variance(x, num_features=1, groups=groups).indices.tolist() == [1]


def test_supervised_stg_finds_the_label_feature():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(512, 8)).astype(np.float32)
  y = (x[:, 5] > 0).astype(np.int32)
  sel = baselines.stg(jax.random.key(0), x, y, num_features=1, hidden_sizes=(16,), selector_steps=200,
                      learning_rate=1e-2, penalty=0.5)
  assert sel.indices.tolist() == [5]


def test_data_generators_are_seeded_and_grounded():
  a, b = contrastive.linear_gaussian(seed=3, num_target=50), contrastive.linear_gaussian(seed=3, num_target=50)
  np.testing.assert_array_equal(a.target, b.target)
  assert not np.array_equal(a.target, contrastive.linear_gaussian(seed=4, num_target=50).target)
  # Background: the salient features hold noise only (variance noise^2).
  assert a.background[:, a.salient].std() == pytest.approx(0.3, rel=0.1)
  g = contrastive.grassy_digits(seed=0, num_background=50)
  assert g.target.shape[1] == 256 and g.test.shape[1] == 256 and len(g.test_labels) == len(g.test)
  assert g.ink.sum() > 50 and not g.ink.reshape(16, 16)[0].any()          # the border row carries no ink
  # The texture dominates the variance outside the ink region: a target-only ranking is drawn away from the digit.
  assert g.target.var(0)[~g.ink].mean() > g.target.var(0)[g.ink].mean()


def test_file_loader_npz_and_csv(tmp_path):
  rng = np.random.default_rng(0)
  t, b = rng.normal(size=(40, 3)), rng.normal(size=(30, 3))
  y = np.arange(40) % 2
  np.savez(tmp_path / "t.npz", x=t, y=y)
  np.savez(tmp_path / "b.npz", x=b)
  ds = contrastive.load_files(tmp_path / "t.npz", tmp_path / "b.npz")
  assert ds.target.shape == (30, 3) and ds.test.shape == (10, 3) and ds.background.shape == (30, 3)
  with open(tmp_path / "t.csv", "w") as f:
    f.write("a,b,c,label\n" + "\n".join(",".join(map(str, [*row, lab])) for row, lab in zip(t, y)))
  np.savetxt(tmp_path / "b.csv", b, delimiter=",")
  csv_ds = contrastive.load_files(tmp_path / "t.csv", tmp_path / "b.csv", label_column="label")
  np.testing.assert_allclose(np.sort(csv_ds.target[:, 0]), np.sort(ds.target[:, 0]), rtol=1e-6)
  with pytest.raises(KeyError, match="no column 'lbl'"):
    contrastive.load_files(tmp_path / "t.csv", tmp_path / "b.csv", label_column="lbl")
  np.savez(tmp_path / "b4.npz", x=rng.normal(size=(30, 4)))
  with pytest.raises(ValueError, match="background_path has 4"):
    contrastive.load_files(tmp_path / "t.npz", tmp_path / "b4.npz")


@pytest.mark.parametrize("target, background, kwargs, error, match", [
    (np.zeros((8, 3)), np.zeros((8, 4)), {}, ValueError, "same number of features: target has 3, background has 4"),
    (np.zeros((8, 3)), np.zeros((0, 3)), {}, ValueError, "background must have at least one row"),
    (np.zeros((8, 3)), np.zeros((8, 3)), {"num_features": 4}, ValueError, r"num_features must be <= .* \(3\), got 4"),
    (np.full((8, 3), np.nan), np.zeros((8, 3)), {}, FloatingPointError, "target contains 24 non-finite"),
    (np.zeros((8, 3)), np.zeros((8, 3)), {"selector": "lasso"}, ValueError, "selector must be one of"),
    (np.zeros(8), np.zeros((8, 3)), {}, ValueError, "target must be a 2-D array"),
    (np.zeros((8, 3)), np.zeros((8, 3)), {"groups": np.ones((2, 4))}, ValueError, "groups must be a 0/1 matrix"),
])
def test_bad_input_raises_clear_errors(target, background, kwargs, error, match):
  kwargs = {"num_features": 2, "hidden_sizes": (4,), "background_steps": 1, "selector_steps": 1, **kwargs}
  with pytest.raises(error, match=match):
    cfs.select(jax.random.key(0), target, background, **kwargs)
