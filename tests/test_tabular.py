"""xattr.tabular: error metrics, background sampling, and a finished classifier restored rather than retrained."""

import numpy as np
import pytest

from configs.explain_tabular import breast_cancer
from xattr import data, tabular, training


def test_error_metrics():
  exact = np.array([[1.0, -1.0], [2.0, 0.5]])
  m = tabular.error_metrics(exact + 0.1, np.full_like(exact, 0.1), exact)
  assert m["mae"] == pytest.approx(0.1) and m["within_2std"] == 1.0 and m["correlation"] > 0.99
  with pytest.raises(ValueError, match=r"same shape.*\(2, 2\).*\(2,\)"):
    tabular.error_metrics(exact, exact, exact[0])


def test_background_sample_is_seeded_sorted_and_checked():
  x = np.arange(20.0)[:, None]
  a = tabular.background_sample(x, 5, seed=3)
  np.testing.assert_array_equal(a, tabular.background_sample(x, 5, seed=3))
  assert a.shape == (5, 1) and np.all(np.diff(a[:, 0]) > 0) and len(np.unique(a)) == 5
  with pytest.raises(ValueError, match=r"background size.*\[1, 20\].*21"):
    tabular.background_sample(x, 21, seed=0)


def test_train_then_restore_without_training(tmp_path, monkeypatch):
  config = breast_cancer.get_config("smoke")
  config.train.update(num_steps=4, eval_every=2, checkpoint_every=2, log_every=2)
  ds = data.load_embedded(config.dataset, seed=config.seed, test_fraction=config.test_fraction)
  model = tabular.train_classifier(config, ds, str(tmp_path), progress=False)
  assert training.latest_step(str(tmp_path)) == 4

  def no_training(*args, **kwargs):
    raise AssertionError("a finished run must be restored, not trained")

  monkeypatch.setattr(training, "train", no_training)
  again = tabular.train_classifier(config, ds, str(tmp_path))
  np.testing.assert_array_equal(np.asarray(again(ds.x_test[:4])), np.asarray(model(ds.x_test[:4])))
  config.model.hidden_sizes = (32,)
  with pytest.raises(ValueError, match="does not fit"):
    tabular.train_classifier(config, ds, str(tmp_path))
