"""Embedded (scikit-learn) datasets: deterministic splits, standardized with training statistics."""

import dataclasses

import numpy as np
import pytest
from sklearn import datasets as sk_datasets

from xattr import data


def test_split_is_deterministic_per_seed():
  a = data.load_embedded("breast_cancer", seed=3)
  b = data.load_embedded("breast_cancer", seed=3)
  c = data.load_embedded("breast_cancer", seed=4)
  for field in ("x_train", "y_train", "x_test", "y_test", "mean", "scale"):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
  assert not np.array_equal(a.x_test, c.x_test)


def test_standardized_with_train_statistics():
  ds = data.load_embedded("breast_cancer", seed=0, test_fraction=0.25)
  np.testing.assert_allclose(ds.x_train.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(ds.x_train.std(0), 1.0, atol=1e-4)
  assert np.abs(ds.x_test.mean(0)).max() > 1e-3              # test rows are not re-centred with their own stats
  # Both splits map back to the raw rows with the same (training) statistics: together they are the dataset.
  raw = sk_datasets.load_breast_cancer().data
  back = np.concatenate([ds.unstandardize(ds.x_train), ds.unstandardize(ds.x_test)])
  sort = lambda m: m[np.lexsort(m.T[::-1])]
  np.testing.assert_allclose(sort(back), sort(raw), rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(ds.mean, ds.unstandardize(ds.x_train).mean(0), rtol=1e-4, atol=1e-4)


def test_fields_and_dtypes():
  ds = data.load_embedded("breast_cancer")
  assert ds.task == "classification" and ds.class_names == ("malignant", "benign") and ds.num_classes == 2
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert len(ds.feature_names) == ds.num_features == 30 and ds.feature_names[0] == "mean radius"
  assert len(ds.x_test) == 114                                 # 20% of 569, rounded up
  # Stratified: both splits keep the class balance.
  assert abs(ds.y_train.mean() - ds.y_test.mean()) < 0.02
  with pytest.raises(dataclasses.FrozenInstanceError):
    ds.task = "regression"


@pytest.mark.parametrize("name, task, d", [("wine", "classification", 13), ("digits", "classification", 64),
                                           ("diabetes", "regression", 10)])
def test_other_datasets(name, task, d):
  ds = data.load_embedded(name, seed=1)
  assert ds.task == task and ds.num_features == d and np.all(np.isfinite(ds.x_train))
  assert np.all(np.isfinite(ds.x_test)) and np.all(ds.scale > 0)     # digits has constant pixels
  if task == "regression":
    assert ds.class_names is None and ds.y_train.dtype == np.float32
  else:
    assert ds.y_train.dtype == np.int32 and set(np.unique(ds.y_train)) == set(range(ds.num_classes))


def test_errors():
  with pytest.raises(ValueError, match="breast_cancer, diabetes, digits, wine"):
    data.load_embedded("mnist")
  with pytest.raises(ValueError, match="test_fraction"):
    data.load_embedded("wine", test_fraction=1.5)
