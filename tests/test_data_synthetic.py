"""xattr.data.synthetic: seeded, the promised correlation and label model, and usable as the amortization source."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from xattr.amortization import tabular
from xattr.data import synthetic


def test_same_seed_same_rows_other_seed_other_rows():
  a = synthetic.tabular(num_rows=500, num_features=6, seed=3).read_all()
  b = synthetic.tabular(num_rows=500, num_features=6, seed=3).read_all()
  c = synthetic.tabular(num_rows=500, num_features=6, seed=4).read_all()
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.allclose(a[0], c[0])


def test_ar1_correlation_and_unit_variance():
  x, _ = synthetic.tabular(num_rows=50_000, num_features=5, rho=0.6, seed=0).read_all()
  corr = np.corrcoef(x.T)
  for lag in (1, 2):
    np.testing.assert_allclose(np.diag(corr, lag), 0.6 ** lag, atol=0.02)
  np.testing.assert_allclose(x.var(0), 1.0, atol=0.03)


def test_labels_follow_the_logit():
  """Bucketed by the generative logit, the positive rate matches the sigmoid."""
  x, y = synthetic.tabular(num_rows=100_000, num_features=8, seed=1).read_all()
  z = synthetic.logit(x)
  for lo, hi in ((-6, -2), (-1, 1), (2, 6)):
    sel = (z > lo) & (z < hi)
    expected = (1 / (1 + np.exp(-z[sel]))).mean()
    assert abs(y[sel].mean() - expected) < 0.02, (lo, hi, y[sel].mean(), expected)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="rho must be in"):
    synthetic.tabular(num_rows=10, rho=1.0)
  with pytest.raises(ValueError, match="num_features"):
    synthetic.tabular(num_rows=10, num_features=1)


def test_amortization_source_synthetic_is_a_standardized_split():
  config = ml_collections.ConfigDict(dict(source="synthetic", seed=0, test_fraction=0.25,
                                          synthetic=dict(num_rows=400, num_features=6, rho=0.5)))
  ds = tabular.load_tabular(config, "synthetic")
  assert ds.x_train.shape == (300, 6) and ds.x_test.shape == (100, 6)
  np.testing.assert_allclose(ds.x_train.mean(0), 0.0, atol=1e-5)
  assert tabular.output_names(ds) == ("negative", "positive")
