"""The amortization driver end to end (smoke config): table rows, plots, saved explainers that load, resume,
and the FastSHAP driver's dispatch. (The data paths, costs and settings are tested in tests/test_amortization.py.)"""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from configs.amortize import wine
from configs.fastshap import digits as fastshap_digits
from configs.fastshap import wine as fastshap_wine
from experiments import amortize as driver
from experiments import fastshap
from xattr import amortization, amortize

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
  configured = set(config.per_example)
  assert configured <= set(amortization.study_methods())
  for method in configured:
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
  ds = amortization.load_tabular(config, "wine")
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


def test_fastshap_driver_dispatch(monkeypatch, tmp_path):
  from xattr import vit_shapley

  calls = []
  monkeypatch.setattr(vit_shapley, "run_pipeline", lambda config, workdir: calls.append((config, workdir)) or {"ok": 1})
  config = fastshap_digits.get_config("smoke")
  assert fastshap.run(config, str(tmp_path)) == {"ok": 1} and calls[0][0] is config.vit
  config = fastshap_wine.get_config("smoke")
  assert config.amortize == () and tuple(config.truth.targets) == ("shapley",)
  config.fastshap.num_steps = 0
  with pytest.raises(ValueError, match="num_steps must be > 0"):
    fastshap.run(config, str(tmp_path))
