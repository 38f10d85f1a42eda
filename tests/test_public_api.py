"""Every public name listed in tests/public_api.txt exists and is documented; the cores work under jax.jit and
jax.vmap over inputs."""

import importlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr
from xattr import banzhaf, games, masks, shapley

D = 5
W = jnp.array([1.0, -1.0, 2.0, 0.5, -0.3])
MODEL = lambda xb: jnp.stack([jnp.tanh(xb @ W), jnp.sin(xb @ W)], -1)       # [b, D] -> [b, 2]
X = jax.random.normal(jax.random.key(0), (3, D))
BG = jax.random.normal(jax.random.key(1), (4, D))
KEY = jax.random.key(2)

SAMPLERS = {
    "shapley_kernel": lambda k: masks.shapley_kernel(k, D, 8, paired=True),
    "uniform_cardinality": lambda k: masks.uniform_cardinality(k, D, 8, paired=False),
    "bernoulli": lambda k: masks.bernoulli(k, D, 8, p=0.5, paired=False),
    "permutations": lambda k: masks.permutations(k, D, 8),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_jit_vmap(name):
  keys = jax.random.split(KEY, 3)
  batched = jax.jit(jax.vmap(SAMPLERS[name]))(keys)
  np.testing.assert_array_equal(batched[2], SAMPLERS[name](keys[2]))


GAMES = {
    "baseline": lambda x: games.baseline(MODEL, x, jnp.zeros(D)),
    "marginal": lambda x: games.marginal(MODEL, x, BG),
    "surrogate": lambda x: games.surrogate(lambda xb, mb: MODEL(jnp.where(mb, xb, 0.0)), x),
}

ESTIMATORS = {
    "shapley.exact": lambda g: shapley.exact(g, D),
    "shapley.kernel_shap": lambda g: shapley.kernel_shap(g, D, KEY, num_samples=16, batch_size=8,
                                                         enumerate_sizes=0).values,
    "shapley.kernel_shap(converge)": lambda g: shapley.kernel_shap(g, D, KEY, threshold=0.05, batch_size=16,
                                                                   enumerate_sizes=0).values,
    "shapley.permutation": lambda g: shapley.permutation(g, D, KEY, num_permutations=4).values,
    "banzhaf.exact": lambda g: banzhaf.exact(g, D),
    "banzhaf.msr": lambda g: banzhaf.msr(g, D, KEY, num_samples=32).values,
}


@pytest.mark.parametrize("game", sorted(GAMES))
@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_estimators_jit_vmap_over_inputs(game, estimator):
  run = lambda x: ESTIMATORS[estimator](GAMES[game](x))
  batched = jax.jit(jax.vmap(run))(X)
  assert batched.shape == (3, D, 2)
  np.testing.assert_allclose(batched[1], run(X[1]), rtol=1e-5, atol=1e-5)


def test_normalize_efficient_jit_vmap():
  phi = jax.random.normal(KEY, (3, D, 2))
  out = jax.jit(jax.vmap(shapley.normalize_efficient))(phi, jnp.ones((3, 2)), jnp.zeros((3, 2)))
  np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-5)


def test_top_level_exports():
  for name in ["masks", "games", "shapley", "banzhaf", "loo", "lime", "parallel", "Estimate"]:
    assert hasattr(xattr, name), name


def _listed_names() -> list[str]:
  text = (pathlib.Path(__file__).parent / "public_api.txt").read_text()
  return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _resolve(dotted: str):
  parts = dotted.split(".")
  for cut in range(len(parts), 0, -1):       # the longest importable module prefix, then attributes
    try:
      obj = importlib.import_module(".".join(parts[:cut]))
    except ModuleNotFoundError:
      continue
    for attr in parts[cut:]:
      obj = getattr(obj, attr)
    return obj
  raise ImportError(dotted)


@pytest.mark.parametrize("name", _listed_names())
def test_listed_public_name_exists_and_is_documented(name):
  obj = _resolve(name)
  assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
