"""xattr.models.predict: batched inference with a padded last batch and checked arguments."""

import numpy as np
import pytest

from xattr.models import predict_in_batches


def test_predict_in_batches_pads_and_checks():
  x = np.arange(7.0)[:, None]
  np.testing.assert_array_equal(predict_in_batches(lambda b: b * 3, x, batch_size=3), x * 3)
  with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
    predict_in_batches(lambda b: b, x, batch_size=0)
  with pytest.raises(ValueError, match="non-empty leading"):
    predict_in_batches(lambda b: b, np.zeros((0, 2)))
