"""A feature selection problem from a config: splits, standardization, TFDS images, groups, costs, errors."""

import numpy as np
import pytest

from configs.dfs import digits, digits_vit
from configs.dfs import oracle as oracle_config
from xattr.selection import problem


def test_tfds_data_source(tmp_path):
  import tensorflow_datasets as tfds
  config = digits.get_config("smoke")
  with config.unlocked():
    config.dataset, config.data_dir, config.tfds_limit, config.patch_size = "tfds:mnist", str(tmp_path), 40, 4
  with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
    p = problem.load(config, seed=0)
  assert p.image_shape == (28, 28) and p.num_features == 784 and p.num_players == 49
  assert len(p.train["y"]) + len(p.val["y"]) == 40 and len(p.test["y"]) == 40
  assert p.test_images.shape == (40, 28, 28)
  assert 0.0 <= p.train["x"].min() and p.train["x"].max() <= 1.0
  assert p.num_classes <= 10 and p.groups.shape == (49, 784)


def test_costs():
  costs = problem.costs("random", 12)
  assert costs.shape == (12,) and 0.5 <= costs.min() and costs.max() <= 2.0
  np.testing.assert_array_equal(costs, problem.costs("random", 12))         # the problem's costs, not the seed's
  np.testing.assert_array_equal(problem.costs("uniform", 5), np.ones(5))
  with pytest.raises(ValueError, match="config.costs must be 'uniform' or 'random'"):
    problem.costs("free", 5)


def test_embedded_splits_are_seeded_and_standardized():
  config = digits.get_config("smoke")
  a, b = problem.load(config, 0), problem.load(config, 1)
  assert a.num_players == a.num_features == 64 and a.groups is None and a.num_classes == 10
  assert len(a.test["y"]) == config.num_test and a.test_images.shape == (config.num_test, 8, 8)
  assert a.train["x"].dtype == np.float32 and a.train["y"].dtype == np.int32
  np.testing.assert_allclose(a.train["x"].mean(0), 0.0, atol=0.3)            # training statistics (before the split)
  assert not np.array_equal(a.val["y"], b.val["y"])
  np.testing.assert_array_equal(problem.load(config, 0).val["x"], a.val["x"])


def test_oracle_and_vit_problems():
  p = problem.load(oracle_config.get_config("smoke"), 0)
  assert p.num_players == 12 and p.num_classes == 4 and p.image_shape is None and p.test_images is None
  v = problem.load(digits_vit.get_config("smoke"), 0)
  assert v.train["x"].shape[1:] == (8, 8, 1) and v.num_players == 16


@pytest.mark.parametrize("module, changes, message", [
    (digits, {"patch_size": 3}, "must be divisible by patch_size 3"),
    (oracle_config, {"patch_size": 2}, "patch_size=2 needs an image dataset"),
    (digits, {"model.kind": "cnn"}, "config.model.kind must be 'mlp' or 'vit', got 'cnn'"),
    (digits_vit, {"patch_size": 4}, "model.kind='vit' needs an image dataset and patch_size equal"),
    (digits, {"costs": "free"}, "config.costs must be 'uniform' or 'random', got 'free'"),
])
def test_errors(module, changes, message):
  config = module.get_config("smoke")
  with config.unlocked():
    for name, value in changes.items():
      section, _, field = name.rpartition(".")
      (config[section] if section else config)[field] = value
  with pytest.raises(ValueError, match=message):
    problem.load(config, 0)
