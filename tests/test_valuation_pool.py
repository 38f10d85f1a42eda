"""The valuation pool: embedded, .npz and TFDS inputs, label noise, and the utility built from a config."""

import numpy as np
import pytest

from configs.valuation import breast_cancer
from xattr.valuation import pool as pool_lib
from xattr.valuation import utility


def test_embedding_and_tfds_inputs(tmp_path):
  rng = np.random.default_rng(0)
  path = str(tmp_path / "emb.npz")
  np.savez(path, x_train=rng.normal(size=(50, 6)), y_train=rng.integers(0, 3, 50), x_val=rng.normal(size=(20, 6)),
           y_val=rng.integers(0, 3, 20))
  config = breast_cancer.get_config("smoke")
  config.source, config.npz_path, config.max_pool = "npz", path, None
  pool = pool_lib.load_pool(config)
  assert pool.x.shape == (50, 6) and pool.num_classes == 3 and pool.features.shape == (50, 9)
  assert pool.flipped.sum() == round(0.15 * 50) and np.all(pool.y[pool.flipped] != pool.y_clean[pool.flipped])
  np.testing.assert_allclose(pool.x.mean(0), 0, atol=1e-5)
  assert pool.name == "emb.npz"

  import tensorflow_datasets as tfds
  config = breast_cancer.get_config("smoke")
  config.source, config.max_pool, config.pca_dims = "tfds", None, 5
  config.tfds.name, config.tfds.max_train, config.tfds.max_val = "mnist", 30, 12
  config.tfds.data_dir = str(tmp_path)          # xattr.data.from_tfds reads prepared data from a folder
  with tfds.testing.mock_data(num_examples=40):
    pool = pool_lib.load_pool(config)
  assert pool.x.shape == (30, 5) and pool.x_val.shape == (12, 5) and pool.num_classes == 10


def test_embedded_pool_is_seeded_and_stratified():
  config = breast_cancer.get_config("smoke")
  a, b = pool_lib.load_pool(config), pool_lib.load_pool(config)
  np.testing.assert_array_equal(a.x, b.x)
  np.testing.assert_array_equal(a.y, b.y)
  assert len(a.y) == config.max_pool and a.flipped.sum() == round(config.label_noise * config.max_pool)
  full = np.bincount(a.y_clean) / len(a.y_clean)
  assert np.all(np.abs(full - 0.5) < 0.2)                      # both classes, roughly as in the data


def test_flip_labels_moves_each_chosen_label_to_another_class():
  y = np.arange(100) % 4
  noisy = pool_lib.flip_labels(y, 4, 0.2, seed=3)
  assert (noisy != y).sum() == 20 and noisy.min() >= 0 and noisy.max() < 4
  np.testing.assert_array_equal(noisy, pool_lib.flip_labels(y, 4, 0.2, seed=3))
  with pytest.raises(ValueError, match="label_noise"):
    pool_lib.flip_labels(y, 4, 1.5, seed=0)


def test_make_utility_kinds_and_errors():
  config = breast_cancer.get_config("smoke")
  pool = pool_lib.load_pool(config)
  assert isinstance(pool_lib.make_utility(config.model, pool), utility.LogisticRegression)
  config.model.kind = "mlp"
  assert isinstance(pool_lib.make_utility(config.model, pool, seed=1), utility.MLPClassifier)
  config.model.kind = "forest"
  with pytest.raises(ValueError, match="config.model.kind must be one of .*'forest'"):
    pool_lib.make_utility(config.model, pool)


def test_bad_sources_name_the_field():
  config = breast_cancer.get_config("smoke")
  config.source = "csv"
  with pytest.raises(ValueError, match="config.source must be one of .*'csv'"):
    pool_lib.load_pool(config)
  config.source = "npz"
  with pytest.raises(ValueError, match="config.npz_path"):
    pool_lib.load_pool(config)
  config.source = "tfds"
  with pytest.raises(ValueError, match="config.tfds.name"):
    pool_lib.load_pool(config)
  config = breast_cancer.get_config("smoke")
  config.dataset = "diabetes"
  with pytest.raises(ValueError, match="classification"):
    pool_lib.load_pool(config)
