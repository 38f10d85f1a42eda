"""Image datasets: embedded digits (shapes, range, stratified deterministic split) and the TFDS path (mock data)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from xattr.data import images


def test_digits_images():
  a = images.load("digits", image_size=32, seed=0)
  b = images.digits(image_size=32, seed=0)
  assert a.x_train.shape == (1437, 32, 32, 1) and a.x_test.shape == (360, 32, 32, 1)
  assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int32
  assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0 and a.x_train.max() > 0.9
  np.testing.assert_array_equal(a.x_test, b.x_test)                 # deterministic
  assert np.bincount(a.y_test, minlength=10).min() >= 35            # stratified: every class in the test split
  # Upsampling keeps the picture: block-averaging back to 8x8 correlates with the original digit.
  from sklearn.datasets import load_digits
  raw = load_digits().images / 16.0
  small = a.x_train[..., 0].reshape(-1, 8, 4, 8, 4).mean((2, 4))
  match = [np.corrcoef(small[0].ravel(), r.ravel())[0, 1] for r in raw]
  assert max(match) > 0.95
  with pytest.raises(ValueError, match="image_size must be an int >= 8"):
    images.digits(image_size=4)


def test_tfds_path_with_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = images.from_tfds("cifar10", data_dir=tmp_path, image_size=16, max_train=5)
  assert ds.x_train.shape == (5, 16, 16, 3) and ds.x_test.shape == (6, 16, 16, 3)
  assert ds.num_classes == 10 and 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


def test_tfds_missing_data_explains_how_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError, match="(?s)must be an existing folder.*never downloads"):
    images.from_tfds("cifar10", data_dir=tmp_path / "nope", image_size=16)
  with pytest.raises(FileNotFoundError, match="not prepared in data_dir"):
    images.from_tfds("cifar10", data_dir=tmp_path, image_size=16)
