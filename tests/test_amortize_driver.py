"""The amortization driver end to end (smoke config): table rows, plots, saved explainers that load, resume,
the TFDS and regression data paths, and the FastSHAP driver's dispatch."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from configs.amortize import diabetes, tfds as tfds_config, wine
from configs.fastshap import digits as fastshap_digits
from configs.fastshap import wine as fastshap_wine
from experiments import amortize as driver
from experiments import fastshap
from xattr import amortize, noisy_labels

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  config = wine.get_config("smoke")
  workdir = str(tmp_path_factory.mktemp("amortize"))
  return config, workdir, driver.run(config, workdir)


def test_outputs_and_table(smoke):
  config, workdir, out = smoke
  s = out["summaries"]["wine"]
  kinds = {(r["kind"], r["method"]) for r in s["rows"]}
  for method in noisy_labels.METHODS:
    assert ("per-example", method) in kinds and ("stochastic amortization", method) in kinds
  assert ("FastSHAP", "fastshap") in kinds
  assert all(np.isfinite(r["mae"]) and r["mae"] > 0 for r in s["rows"])
  ks = {r["evals"]: r["mae"] for r in s["rows"] if r["kind"] == "per-example" and r["method"] == "kernel_shap"}
  assert ks[128.0] < ks[32.0]                                   # more coalitions, smaller error vs exact values
  assert s["truth_how"]["shapley"] == "exact enumeration"
  for name in ("report.md", "results.json", "wine/error_vs_evaluations.png", "wine/other_targets.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  report = open(os.path.join(workdir, "report.md")).read()
  assert "## Headline" in report and "speedup" in report and "| wine |" in report
  assert json.load(open(os.path.join(workdir, "results.json")))["summaries"]["wine"]["d"] == 13


def test_saved_explainers_load_and_are_efficient(smoke):
  config, workdir, out = smoke
  folder = os.path.join(workdir, "wine", "explainers")
  ds = driver.load_tabular(config, "wine")
  x = ds.x_test[:5]
  for name in ("kernel_shap_32_x1", "fastshap"):
    explainer = amortize.load(os.path.join(folder, name))
    assert (explainer.num_features, explainer.num_classes, explainer.normalize) == (13, 3, True)
    phi = explainer(x)
    assert phi.shape == (5, 13, 3)
    ones = jnp.ones(x.shape, bool)
    gap = explainer.value_fn(jnp.asarray(x), ones) - explainer.value_fn(jnp.asarray(x), ~ones)
    np.testing.assert_allclose(phi.sum(1), gap, atol=1e-5)            # efficiency after normalization
  lime_explainer = amortize.load(os.path.join(folder, "lime_32_x1"))   # LIME labels: no efficiency constraint
  assert not lime_explainer.normalize and lime_explainer.metadata["labels"] == "lime"


def test_rerun_reuses_everything(smoke):
  config, workdir, out = smoke
  labels = os.path.join(workdir, "wine", "labels")
  mtimes = {f: os.stat(os.path.join(labels, f)).st_mtime_ns for f in os.listdir(labels)}
  again = driver.run(config, workdir)
  assert {f: os.stat(os.path.join(labels, f)).st_mtime_ns for f in os.listdir(labels)} == mtimes
  first, second = out["summaries"]["wine"]["rows"], again["summaries"]["wine"]["rows"]
  assert [(r["kind"], r["setting"]) for r in first] == [(r["kind"], r["setting"]) for r in second]
  np.testing.assert_allclose([r["mae"] for r in second], [r["mae"] for r in first], rtol=1e-6)


def test_regression_and_tfds_data_paths():
  import tensorflow_datasets as tfds

  ds = driver.load_tabular(diabetes.get_config("smoke"), "diabetes")
  assert ds.task == "regression" and driver.num_outputs(ds) == 1 and abs(float(ds.y_train.mean())) < 1e-5
  config = tfds_config.get_config("smoke")
  with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = driver.load_tabular(config, "tfds")
  assert ds.x_train.shape == (24, 4) and ds.x_test.shape == (6, 4) and driver.num_outputs(ds) == 3
  np.testing.assert_allclose(ds.x_train.mean(0), 0, atol=1e-5)


def test_cost_to_reach_bounds_and_settings():
  costs, errs = np.array([32, 128, 512]), np.array([0.1, 0.05, 0.02])
  assert driver.cost_to_reach(costs, errs, 0.01) == (512.0, ">")
  assert driver.cost_to_reach(costs, errs, 0.2) == (32.0, "<")
  cost, rel = driver.cost_to_reach(costs, errs, 0.05)
  assert rel == "=" and cost == pytest.approx(128.0)
  assert driver.parse_setting("lime:32") == ("lime", 32, 1)
  with pytest.raises(ValueError, match="method:budget"):
    driver.parse_setting("shap:32")


def test_fastshap_driver_dispatch(monkeypatch, tmp_path):
  from experiments import vit_shapley

  calls = []
  monkeypatch.setattr(vit_shapley, "run", lambda config, workdir: calls.append((config, workdir)) or {"ok": 1})
  config = fastshap_digits.get_config("smoke")
  assert fastshap.run(config, str(tmp_path)) == {"ok": 1} and calls[0][0] is config.vit
  config = fastshap_wine.get_config("smoke")
  assert config.amortize == () and tuple(config.truth.targets) == ("shapley",)
  config.fastshap.num_steps = 0
  with pytest.raises(ValueError, match="num_steps must be > 0"):
    fastshap.run(config, str(tmp_path))
