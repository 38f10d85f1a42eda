"""Adversarial shortcuts: budgets are never exceeded (randomised property test), apply is deterministic per seed,
generators, defences, error-minimising noise, the attribution check and the data loaders."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import nnx

from configs.shortcuts import tfds as tfds_config
from xattr import shortcuts
from xattr.shortcuts import attribution, defences, study, victims

SHAPE = (8, 8, 1)


def _images(rng, n, shape=SHAPE):
  """Images with many pixels exactly at 0 and 1 (where clipping matters) and the rest uniform."""
  x = rng.uniform(size=(n, *shape)).astype(np.float32)
  x[x < 0.2], x[x > 0.8] = 0.0, 1.0
  return x


def _random_shortcut(rng, k, shape):
  kind = rng.integers(3)
  key = jax.random.key(int(rng.integers(1 << 30)))
  if kind == 0:
    l2 = None if rng.random() < 0.5 else float(rng.uniform(0.01, 0.5))
    return shortcuts.fixed_patterns(key, k, shape, linf=float(rng.uniform(1e-3, 0.3)), l2=l2,
                                    block=int(rng.integers(1, 5)))
  size = int(rng.integers(1, 4))
  return shortcuts.patches(key, k, shape, size=size, linf=None if kind == 1 else float(rng.uniform(1e-3, 0.3)))


def test_budget_never_exceeded_property():
  """40 random generators, budgets and image shapes: every applied change lies within every set bound."""
  rng = np.random.default_rng(0)
  shapes = [(8, 8, 1), (7, 9, 3)]             # few shapes: the random draws compile once per shape
  for trial in range(40):
    shape = shapes[trial % 2]
    k = 4
    sc = _random_shortcut(rng, k, shape)
    x = _images(rng, 16, shape)
    y = rng.integers(0, k, 16)
    out = shortcuts.apply(x, y, sc)          # raises if over budget
    norms = shortcuts.measure(x, out)
    b = sc.budget
    for name, bound in (("linf", b.linf), ("l2", b.l2), ("l0", b.l0)):
      if bound is not None:
        assert norms[name].max() <= bound + 1e-5, (trial, sc.name, name, norms[name].max(), bound)
    assert out.min() >= 0.0 and out.max() <= 1.0
    # The budget binds: the change is not trivially zero.
    assert norms["l0"].max() >= 1, (trial, sc.name)


def test_apply_deterministic_per_seed():
  rng = np.random.default_rng(1)
  x, y = _images(rng, 12), rng.integers(0, 3, 12)
  for make in (lambda key: shortcuts.fixed_patterns(key, 3, SHAPE, linf=8 / 255, block=2),
               lambda key: shortcuts.patches(key, 3, SHAPE, size=2)):
    a, b, c = make(jax.random.key(7)), make(jax.random.key(7)), make(jax.random.key(8))
    np.testing.assert_array_equal(shortcuts.apply(x, y, a), shortcuts.apply(x, y, b))
    assert not np.array_equal(shortcuts.apply(x, y, a), shortcuts.apply(x, y, c))
  # Same class -> same edit; per-class patterns differ between classes.
  sc = shortcuts.fixed_patterns(jax.random.key(0), 3, SHAPE, linf=0.1, block=1)
  half = np.full((2, *SHAPE), 0.5, np.float32)
  same = shortcuts.apply(half, np.array([1, 1]), sc)
  np.testing.assert_array_equal(same[0], same[1])
  assert not np.array_equal(*shortcuts.apply(half, np.array([0, 1]), sc))


def test_apply_rejects_over_budget_and_bad_input():
  delta = np.full((2, *SHAPE), 0.1, np.float32)
  sc = shortcuts.Shortcut.additive("big", delta, shortcuts.Budget(linf=0.05))
  x = np.full((3, *SHAPE), 0.5, np.float32)
  with pytest.raises(ValueError, match=r"exceeds its budget: l_inf .* <= 0.05 .* got 0.1"):
    shortcuts.apply(x, np.zeros(3, int), sc)
  # Clipping counts: at pixel value 1 an upward change of 0.1 is clipped to 0, within budget.
  out = shortcuts.apply(np.ones((1, *SHAPE), np.float32), np.zeros(1, int), sc)
  np.testing.assert_array_equal(out, 1.0)
  l0 = dataclasses.replace(sc, budget=shortcuts.Budget(l0=3))
  with pytest.raises(ValueError, match="l_0"):
    shortcuts.apply(x, np.zeros(3, int), l0)
  with pytest.raises(ValueError, match=r"images must have shape \[N, 8, 8, 1\]"):
    shortcuts.apply(np.zeros((3, 4, 4, 1)), np.zeros(3, int), sc)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
    shortcuts.apply(x, np.array([0, 1, 2]), sc)
  with pytest.raises(ValueError, match=r"images must lie in \[0, 1\]"):
    shortcuts.apply(x + 1, np.zeros(3, int), sc)
  with pytest.raises(ValueError, match="linf must lie in"):
    shortcuts.fixed_patterns(jax.random.key(0), 2, SHAPE, linf=0.0)


def test_patches_locations_values_and_one_pixel():
  sc = shortcuts.patches(jax.random.key(3), 10, (32, 32, 1), size=1, mean_image=np.zeros((32, 32, 1)))
  where = np.argwhere(np.asarray(sc.mask)[..., 0])
  assert len(where) == 10 and len({(r, c) for _, r, c in where}) == 10        # one distinct pixel per class
  assert (np.asarray(sc.value)[np.asarray(sc.mask)] == 1.0).all()              # against a dark mean: white
  out = shortcuts.apply(np.zeros((10, 32, 32, 1), np.float32), np.arange(10), sc)
  assert (shortcuts.measure(np.zeros_like(out), out)["l0"] == 1).all()
  add = shortcuts.patches(jax.random.key(3), 4, (16, 16, 3), size=4, linf=8 / 255)
  assert add.budget == shortcuts.Budget(linf=8 / 255, l0=16)
  assert np.allclose(np.abs(np.asarray(add.delta)).reshape(4, -1).max(1), 8 / 255)


def test_project_and_l2_patterns():
  sc = shortcuts.fixed_patterns(jax.random.key(0), 4, (16, 16, 1), linf=0.1, l2=0.5)
  norms = np.sqrt((np.asarray(sc.delta) ** 2).reshape(4, -1).sum(1))
  np.testing.assert_allclose(norms, 0.5, rtol=1e-5)        # 0.1 * 16 = 1.6 > 0.5: scaled onto the sphere
  d = shortcuts.project(jnp.array([[0.3, -0.4, 0.0]]), linf=0.35, l2=0.1)
  assert float(jnp.abs(d).max()) <= 0.35 and abs(float(jnp.linalg.norm(d)) - 0.1) < 1e-6


def test_modify_is_jittable_and_matches_apply():
  rng = np.random.default_rng(2)
  x, y = _images(rng, 5), rng.integers(0, 3, 5)
  sc = shortcuts.patches(jax.random.key(0), 3, SHAPE, size=2)
  np.testing.assert_array_equal(np.asarray(jax.jit(shortcuts.modify)(x, y, sc)), shortcuts.apply(x, y, sc))


def test_error_minimizing_makes_noise_learnable():
  """Random images, random labels (nothing to learn): after the min-min, a fresh MLP fits the perturbed data in a
  few steps, far better than the clean data; budgets hold, class-wise and per sample."""
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(256, *SHAPE)).astype(np.float32)
  y = rng.integers(0, 4, 256)
  surrogate = shortcuts.MLPNet(SHAPE, 4, (32,), rngs=nnx.Rngs(0))
  section = dict(num_steps=30, batch_size=64, learning_rate=3e-3)
  section = type("S", (dict,), {"__getattr__": dict.__getitem__})(section)

  def fit(images):
    model = victims.build("mlp", SHAPE, 4, seed=1, mlp_hidden=(32,))
    victims.train(model, images, y, section=section)
    return victims.accuracy(model, images, y)

  clean_acc = fit(x)
  for per_sample in (False, True):
    sc = shortcuts.error_minimizing(jax.random.key(0), x, y, 4, surrogate=surrogate, linf=0.1, per_sample=per_sample,
                                    rounds=4, train_steps=10, delta_steps=10, batch_size=64)
    assert sc.delta.shape[0] == (256 if per_sample else 4) and sc.per_sample == per_sample
    xm = shortcuts.apply(x, y, sc)
    assert shortcuts.measure(x, xm)["linf"].max() <= 0.1 + 1e-6
    acc = fit(xm)
    print(f"per_sample={per_sample}: fresh MLP train accuracy {acc:.3f} vs {clean_acc:.3f} on clean")
    assert acc > clean_acc + 0.25
  again = shortcuts.error_minimizing(jax.random.key(0), x, y, 4, surrogate=surrogate, linf=0.1, rounds=4,
                                     train_steps=10, delta_steps=10, batch_size=64)
  first = shortcuts.error_minimizing(jax.random.key(0), x, y, 4, surrogate=surrogate, linf=0.1, rounds=4,
                                     train_steps=10, delta_steps=10, batch_size=64)
  np.testing.assert_array_equal(np.asarray(again.delta), np.asarray(first.delta))
  with pytest.raises(ValueError, match="needs a budget"):
    shortcuts.error_minimizing(jax.random.key(0), x, y, 4, surrogate=surrogate, linf=None)


def test_defences():
  rng = np.random.default_rng(0)
  x = jnp.asarray(_images(rng, 6))
  aug = jax.jit(lambda k, z: defences.augment(k, z, crop_padding=2, flip=True, noise_std=0.1))
  out = aug(jax.random.key(0), x)
  assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
  np.testing.assert_array_equal(out, aug(jax.random.key(0), x))
  flipped = jax.jit(lambda k, z: defences.augment(k, z, crop_padding=0, flip=True))(jax.random.key(1), x)
  assert all(np.array_equal(f, o) or np.array_equal(f, o[:, ::-1]) for f, o in zip(np.asarray(flipped), np.asarray(x)))
  w = jax.random.normal(jax.random.key(1), (64, 3))
  f = lambda z: z.reshape(z.shape[0], -1) @ w
  labels = jnp.array([0, 1, 2, 0, 1, 2])
  adv = jax.jit(lambda k, z: defences.pgd(k, f, z, labels, linf=0.05, steps=5))(jax.random.key(2), x)
  assert float(jnp.abs(adv - x).max()) <= 0.05 + 1e-6
  ce = lambda z: float(-jax.nn.log_softmax(f(z))[jnp.arange(6), labels].mean())
  assert ce(adv) > ce(x)
  with pytest.raises(ValueError, match="adversarial_steps"):
    defences.Defence("bad", adversarial_steps=0)


def test_attribution_mass_concentrates_on_the_shortcut():
  """A model that reads only the shortcut pixel: all Shapley mass on its patch; a model that ignores it: none."""
  changed = np.zeros((2, 8, 8), bool)
  changed[:, 1, 6] = True                       # patch 1 of a 2x2 grid of 4x4 patches
  x = np.random.default_rng(0).uniform(size=(2, 8, 8, 1)).astype(np.float32)
  reads = lambda b: jnp.stack([b[:, 1, 6, 0], -b[:, 1, 6, 0]], -1)
  ignores = lambda b: jnp.stack([b[:, 5, 1, 0] + b[:, 0, 0, 0], -b[:, 5, 1, 0]], -1)
  for fn, want in ((reads, 1.0), (ignores, 0.0)):
    share = attribution.mass_on_shortcut(fn, x, np.array([0, 1]), changed, patch_size=4, key=jax.random.key(0),
                                         method="exact_shapley")
    np.testing.assert_allclose(share, want, atol=1e-6)


def test_single_digit_mosaics_and_victims():
  ds = study.single_digit_mosaics(num_train=30, num_test=12, seed=0)
  assert ds.x_train.shape == (30, 32, 32, 1) and ds.y_test.shape == (12,) and ds.y_train.max() < 10
  for kind in victims.KINDS:
    model = victims.build(kind, (32, 32, 1), 10, seed=0)
    if kind == "cnn":                 # the MLP and the ViT run in the driver and multi-device tests
      assert victims.predict(model, ds.x_test[:3], batch_size=2).shape == (3, 10)
  with pytest.raises(ValueError, match="kind must be one of"):
    victims.build("resnet", (32, 32, 1), 10, seed=0)


def test_tfds_data_and_three_channel_shortcuts(tmp_path):
  config = tfds_config.get_config("smoke")
  with config.unlocked():
    config.data.data_dir = str(tmp_path)
    config.generator.surrogate = "mlp"
    config.mlp.hidden = (8,)
    config.generator.rounds = 1
    config.generator.train_steps = 2
    config.generator.delta_steps = 2
  with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = study.load_data(config)
  assert ds.x_train.shape == (64, 32, 32, 3) and ds.x_test.shape == (32, 32, 32, 3) and ds.num_classes == 10
  for g in study.GENERATORS:
    sc = study.make_shortcut(config, g, 8.0, ds, seed=0)
    rows = np.arange(len(ds.y_train)) if sc.per_sample else None
    out = shortcuts.apply(ds.x_train, ds.y_train, sc, indices=rows)
    assert out.shape == ds.x_train.shape
  with pytest.raises(FileNotFoundError, match="must be an existing folder"):
    with config.unlocked():
      config.data.data_dir = str(tmp_path / "missing")
    study.load_data(config)
