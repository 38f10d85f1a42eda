"""Amortized explainers: regression onto exact / unbiased noisy labels, FastSHAP on an additive model,
efficiency after normalization, and the save -> load -> explain contract."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from xattr import amortize, games, masks, noisy_labels, shapley, training

D = 4
W = np.array([1.0, -2.0, 0.5, 0.0], np.float32)


def _f(b):
  """w.x + x0 x1 x2: not additive, so sampled Shapley estimates are noisy (a 3-way interaction, which antithetic
  orderings do not cancel); exact values phi_i = w_i x_i (+ x0 x1 x2 / 3 for players 0-2), held-out features at 0."""
  return (b @ W + b[..., 0] * b[..., 1] * b[..., 2])[..., None]


def _game_of_x(x):
  return games.baseline(_f, x, jnp.zeros(D))


def _closed_form(x):
  phi = x * W
  phi[:, :3] += (x[:, 0] * x[:, 1] * x[:, 2])[:, None] / 3
  return phi[..., None]


def _linear_explainer(seed=0):
  return amortize.build_module({"kind": "mlp_explainer", "num_features": D, "hidden_sizes": [], "num_classes": 1},
                               seed=seed)


def _fit(labels, x, steps=600, lr=0.05):
  """Regression of a linear explainer onto labels with the shared training loop."""
  model = _linear_explainer()
  loss = lambda m, b: (amortize.regression_loss(m(b["x"]), b["y"]), {})
  training.train(model, loss, {"x": x, "y": labels}, optimizer=optax.adam(optax.cosine_decay_schedule(lr, steps)),
                 num_steps=steps, batch_size=256, progress=False)
  return model


def _least_squares(x, labels):
  """The regression optimum over linear explainers phi(x) = A x + b (numpy)."""
  design = np.concatenate([x, np.ones((len(x), 1), np.float32)], 1)
  coef, *_ = np.linalg.lstsq(design, labels.reshape(len(x), -1), rcond=None)
  return (design @ coef).reshape(labels.shape)


X = np.random.default_rng(0).normal(size=(2048, D)).astype(np.float32)


def test_exact_labels_recover_exact_values_and_noisy_unbiased_labels_the_same_solution():
  exact = _closed_form(X)
  # The closed form is the Shapley value (exact enumeration agrees).
  np.testing.assert_allclose(shapley.exact(_game_of_x(jnp.asarray(X[0])), D), exact[0], atol=1e-5)

  # A problem the explainer can represent exactly: an additive model (drop the interaction) -> phi = w * x.
  linear = X * W
  model = _fit(linear[..., None], X)
  np.testing.assert_allclose(model(jnp.asarray(X[:64])), linear[:64, :, None], atol=2e-3)

  # The non-additive game: the regression optimum is the least-squares projection of the exact values; unbiased
  # noisy labels (permutation sampling, one antithetic pair of orderings each) converge to the same solution.
  label = noisy_labels.labeler(_game_of_x, "permutation", D, 2 * (D - 1) + 2)
  noisy = noisy_labels.generate(label, X, jax.random.key(1), progress=False)["values"]
  label_noise = np.abs(noisy - exact).mean()
  fit_exact = np.asarray(_fit(exact, X)(jnp.asarray(X)))
  fit_noisy = np.asarray(_fit(noisy, X)(jnp.asarray(X)))
  np.testing.assert_allclose(fit_exact, _least_squares(X, exact), atol=5e-3)
  gap = np.abs(fit_noisy - fit_exact).mean()
  assert label_noise > 0.05 and gap < 0.15 * label_noise, (label_noise, gap)


def test_fastshap_on_an_additive_model_recovers_its_weights():
  f = lambda b: (b @ W)[..., None]                       # additive: the Shapley value of x is w * x
  value_fn = lambda x, m: f(jnp.where(m, x, 0.0))
  x = X[:512]
  grand = np.asarray(value_fn(jnp.asarray(x), jnp.ones(x.shape, bool)))
  null = np.zeros((len(x), 1), np.float32)
  s = 8

  class WithRngs(nnx.Module):
    def __init__(self):
      self.module = _linear_explainer(seed=1)
      self.rngs = nnx.Rngs(masks=0)

  def loss(w, batch):
    b = batch["x"].shape[0]
    z = jax.vmap(lambda k: masks.shapley_kernel(k, D, s))(jax.random.split(w.rngs.masks(), b))
    values = value_fn(jnp.repeat(batch["x"], s, 0), z.reshape(b * s, D)).reshape(b, s, 1)
    return amortize.fastshap_loss(w.module(batch["x"]), z, values, batch["null"], batch["grand"]), {}

  wrapper = WithRngs()
  training.train(wrapper, loss, {"x": x, "grand": grand, "null": null},
                 optimizer=optax.adam(optax.cosine_decay_schedule(0.05, 600)), num_steps=600, batch_size=128,
                 progress=False)
  ones = jnp.ones((1, D))
  phi = amortize.efficient_normalize(wrapper.module(ones), value_fn(ones, ones > 0), jnp.zeros(1))
  np.testing.assert_allclose(phi[0, :, 0], W, atol=0.02)
  phi = amortize.efficient_normalize(wrapper.module(jnp.asarray(x[:32])), grand[:32], jnp.zeros(1))
  np.testing.assert_allclose(phi[..., 0], x[:32] * W, atol=0.05)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A random explainer saved with its game model (a softmax MLP classifier, baseline removal)."""
  spec = {"kind": "mlp_explainer", "num_features": 5, "hidden_sizes": [16], "num_classes": 3}
  model_spec = {"kind": "mlp", "in_features": 5, "hidden_sizes": [8], "out_features": 3}
  explainer, model = amortize.build_module(spec, seed=2), amortize.build_module(model_spec, seed=3)
  game = {"removal": "baseline", "reference": np.full(5, 0.5, np.float32), "postprocess": "softmax"}
  path = amortize.save(tmp_path_factory.mktemp("explainer") / "e", explainer, spec, game=game, game_model=model,
                       game_model_spec=model_spec, normalize=True, metadata={"method": "test"})
  return path, explainer, model


def test_load_contract_and_efficiency(saved):
  path, explainer, model = saved
  loaded = amortize.load(path)
  assert (loaded.num_features, loaded.num_classes, loaded.normalize) == (5, 3, True)
  assert loaded.metadata == {"method": "test"}
  x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
  phi = loaded(x)                                                     # numpy in, jax out
  assert isinstance(phi, jax.Array) and phi.shape == (7, 5, 3)
  np.testing.assert_allclose(loaded(jnp.asarray(x)), phi)
  # Efficiency after normalization: each explanation sums to p(x) - p(reference) per class.
  probs = jax.nn.softmax(model(jnp.asarray(x)), -1)
  null = jax.nn.softmax(model(jnp.full((1, 5), 0.5)), -1)
  np.testing.assert_allclose(phi.sum(1), probs - null, atol=1e-5)
  # The loaded parameters are the saved ones: the normalized raw output of the original module.
  np.testing.assert_allclose(phi, amortize.efficient_normalize(explainer(jnp.asarray(x)), probs, null[0]),
                             atol=1e-5)


def test_load_errors(saved, tmp_path):
  path, _, _ = saved
  with pytest.raises(FileNotFoundError, match="architecture.json"):
    amortize.load(tmp_path)
  with pytest.raises(ValueError, match=r"x must be float\[batch, num_features=5\]"):
    amortize.load(path)(np.ones((2, 4), np.float32))
  with pytest.raises(ValueError, match="kind"):
    amortize.build_module({"kind": "transformer"})
  with pytest.raises(ValueError, match="normalize=True needs"):
    amortize.save(tmp_path / "x", _linear_explainer(), {"kind": "mlp_explainer"}, normalize=True)


def test_surrogate_game_round_trip(tmp_path):
  """A masked-MLP surrogate game (x * m, m) is saved and restored with the explainer; efficiency holds for it."""
  spec = {"kind": "mlp_explainer", "num_features": 4, "hidden_sizes": [8], "num_classes": 1}
  sur_spec = {"kind": "masked_mlp", "num_features": 4, "out_features": 1, "hidden_sizes": [8]}
  surrogate = amortize.build_module(sur_spec, seed=5)
  path = amortize.save(tmp_path / "s", amortize.build_module(spec), spec, game={"removal": "surrogate"},
                       game_model=surrogate, game_model_spec=sur_spec, normalize=True)
  x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
  phi = amortize.load(path)(x)
  ones = jnp.ones(x.shape, bool)
  np.testing.assert_allclose(phi.sum(1), surrogate(jnp.asarray(x), ones) - surrogate(jnp.asarray(x), ~ones),
                             atol=1e-5)
