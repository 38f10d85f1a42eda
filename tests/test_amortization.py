"""The amortization study's library (xattr.amortization): data paths, settings, ground-truth methods, costs and
speedups, and the report. The stages end to end are tested through the driver (tests/test_amortize_driver.py)."""

import os

import numpy as np
import pytest

from configs.amortize import diabetes, tfds as tfds_config
from xattr import amortization, methods
from xattr.amortization import costs, labels, report


def test_regression_and_tfds_data_paths(tmp_path):
  import tensorflow_datasets as tfds

  ds = amortization.load_tabular(diabetes.get_config("smoke"), "diabetes")
  assert ds.task == "regression" and amortization.num_outputs(ds) == 1 and abs(float(ds.y_train.mean())) < 1e-5
  config = tfds_config.get_config("smoke")
  config.tfds.data_dir = str(tmp_path)          # xattr.data.from_tfds reads a prepared folder (mocked here)
  with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = amortization.load_tabular(config, "tfds")
  assert ds.x_train.shape == (24, 4) and ds.x_test.shape == (6, 4) and amortization.num_outputs(ds) == 3
  np.testing.assert_allclose(ds.x_train.mean(0), 0, atol=1e-5)


def test_bad_sources_are_named(tmp_path):
  config = diabetes.get_config("smoke")
  config.source = "csv"
  with pytest.raises(ValueError, match="config.source must be 'embedded', 'synthetic' or 'tfds', got 'csv'"):
    amortization.load_tabular(config, "diabetes")
  config = tfds_config.get_config("smoke")
  with pytest.raises(FileNotFoundError, match="data_dir"):
    amortization.load_tabular(config, "tfds")


def test_cost_to_reach_bounds_and_settings():
  costs_, errs = np.array([32, 128, 512]), np.array([0.1, 0.05, 0.02])
  assert amortization.cost_to_reach(costs_, errs, 0.01) == (512.0, ">")
  assert amortization.cost_to_reach(costs_, errs, 0.2) == (32.0, "<")
  cost, rel = amortization.cost_to_reach(costs_, errs, 0.05)
  assert rel == "=" and cost == pytest.approx(128.0)
  assert amortization.parse_setting("lime:32") == ("lime", 32, 1)
  with pytest.raises(ValueError, match="method:budget"):
    amortization.parse_setting("shap:32")
  with pytest.raises(ValueError, match="method:budget"):
    amortization.parse_setting("rise:32")                  # a label method without a ground-truth target


def test_study_methods_are_the_registry_names():
  assert amortization.study_methods() == ("kernel_shap", "shapley", "odd_kernel_shap", "permutation",
                                          "banzhaf_msr", "kernel_banzhaf", "banzhaf", "lime")
  assert set(costs.REFERENCE.values()) <= set(methods.names())
  for target, (exact, sampled, _, _) in labels.TRUTH.items():
    assert methods.get(sampled).target == target and (exact is None or methods.get(exact).target == target)
  assert labels.truth_method("banzhaf", 30, max_exact_players=16, samples=64, batch_size=8) == (
      "banzhaf_msr", {"num_samples": 64, "batch_size": 8}, "MSR, 64 samples")
  with pytest.raises(ValueError, match="target must be one of"):
    labels.truth_method("owen", 3, max_exact_players=16, samples=64, batch_size=8)


def _rows():
  per = [dict(kind="per-example", method="kernel_shap", setting=f"budget {e}", target="shapley", evals=float(e),
              mae=m, relative_l2=m) for e, m in ((32, 0.1), (128, 0.05), (512, 0.02))]
  sa = [dict(kind="stochastic amortization", method="kernel_shap", setting="32/label", target="shapley", evals=4.0,
             mae=0.05, relative_l2=0.3, label_epochs=1),
        dict(kind="stochastic amortization", method="lime", setting="32/label", target="lime", evals=4.0, mae=0.1,
             relative_l2=0.3, label_epochs=1),
        dict(kind="exact-label regression (floor)", method="exact", setting="2^4/label", target="shapley",
             evals=17.0, mae=0.01, relative_l2=0.1)]
  return per + sa


def test_speedups_and_best_row():
  rows = costs.add_speedups(_rows())
  sa = rows[3]
  assert sa["speedup"] == pytest.approx(128.0 / 4.0) and sa["bound"] == "="
  assert np.isnan(rows[4]["speedup"]) and rows[4]["bound"] == "?"         # no per-example LIME rows
  assert rows[5]["bound"] == ">" and rows[5]["speedup"] == pytest.approx(512 / 17)
  best = costs.best_row(rows)
  assert best["label"] == "kernel_shap 32/label" and costs.best_row(rows, target="banzhaf") is None
  assert "per-example" not in {r["kind"] for r in rows if "speedup" in r}
  with pytest.raises(ValueError, match="relation must be one of"):
    costs.bound_text("~")
  with pytest.raises(ValueError, match="estimate must have the shape of truth"):
    costs.errors(np.zeros((2, 3)), np.zeros((2, 4)))


def test_report_and_plots(tmp_path):
  rows = costs.add_speedups(_rows())
  summary = dict(rows=rows, best_sa=costs.best_row(rows), n_train=10, n_test=4, d=4, k=1, task="classification",
                 model_metric=0.9, truth_how={"shapley": "exact enumeration"})
  assert report.plot_errors(rows, ("shapley",), str(tmp_path / "toy" / "error_vs_evaluations.png")) is not None
  assert report.plot_errors(rows, ("banzhaf",), str(tmp_path / "none.png")) is None
  config = diabetes.get_config("smoke")
  path = amortization.write_report(str(tmp_path / "report.md"), {"toy": summary}, config, 1.0)
  text = open(path).read()
  assert "## Headline" in text and "| toy | kernel_shap 32/label | 4 | 0.05 | 32.0x | yes | 0.01 | >=512 |" in text
  assert "![toy](toy/error_vs_evaluations.png)" in text and "other_targets.png" in text
  assert os.path.getsize(tmp_path / "toy" / "error_vs_evaluations.png") > 0
  assert amortization.headline_line("toy", summary["best_sa"]).endswith("speedup_vs_kernel_shap=32.0x")
