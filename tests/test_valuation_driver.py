"""The data-valuation driver end to end (smoke config) and its resumability; 4 fake devices vs 1.

The driver's pieces are tested where they live: tests/test_valuation_pool.py (inputs), test_valuation_blocks.py
(resumable sampling), test_valuation_study.py, test_valuation_addition.py and test_valuation_report.py.
"""

import csv
import json
import os

import numpy as np
import pytest

from configs.valuation import breast_cancer, digits, synthetic, wine
from experiments import valuation
from tests.four_devices import compare_with_one_device
from xattr.valuation import study


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("valuation"))
  config = breast_cancer.get_config("smoke")
  return config, workdir, valuation.run(config, workdir)


@pytest.mark.slow
def test_outputs_report_and_metrics(smoke):
  config, workdir, out = smoke
  for name in ("report.md", "points.csv", "metrics.json", "accuracy.png", "mislabeled.png", "addition.png",
               "selection.png", "crossings.png", "scaling_curves.png", "params.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  report = open(out["paths"]["report.md"]).read()
  for text in ("Valuation accuracy vs ground truth", "Mislabeled-point detection", "Size-aware selection",
               "TMC Data Shapley", "leave-one-out", "contributions/s", "accuracy.png", "scaling_curves.png",
               "**Verdict.**"):
    assert text in report, text
  m = json.load(open(out["paths"]["metrics.json"]))
  budgets = [str(b) for b in config.sampling.budgets]
  for method in study.METHODS:
    assert sorted(m["auroc"][method]) == sorted(budgets)
    assert all(0.0 <= m["auroc"][method][b] <= 1.0 for b in budgets)
    assert all(np.isfinite(m["accuracy"][method][b]["nrmse"]) for b in budgets)
  pool = out["pool"]
  assert m["pool"] == config.max_pool and m["flipped"] == round(config.label_noise * config.max_pool)
  assert m["contributions"] == config.max_pool * config.sampling.samples_per_point + (
      config.truth.num_points * config.truth.samples_per_point)
  # Detection works even at smoke budgets: flipped labels have lower MC values than clean ones.
  best = out["estimates"][config.sampling.budgets[-1]]
  assert best["mc"][pool.flipped].mean() < best["mc"][~pool.flipped].mean()
  with open(out["paths"]["points.csv"]) as f:
    rows = list(csv.reader(f))[2:]
  assert len(rows) == config.max_pool
  truth_rows = [r for r in rows if r[-2] != ""]
  assert len(truth_rows) == config.truth.num_points


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_saved_stages(smoke):
  config, workdir, out = smoke
  blocks = sorted(os.listdir(os.path.join(workdir, "samples", "main")))
  assert len(blocks) > 1
  os.remove(os.path.join(workdir, "samples", "main", blocks[-1]))       # as if killed while sampling
  os.remove(os.path.join(workdir, "estimates", f"budget_{config.sampling.budgets[-1]:05d}.npz"))
  stamps = {b: os.path.getmtime(os.path.join(workdir, "samples", "main", b)) for b in blocks[:-1]}
  again = valuation.run(config, workdir)
  for b, t in stamps.items():
    assert os.path.getmtime(os.path.join(workdir, "samples", "main", b)) == t
  for budget in config.sampling.budgets:
    for key, value in out["estimates"][budget].items():
      np.testing.assert_allclose(again["estimates"][budget][key], value, rtol=1e-6, atol=1e-12, err_msg=key)
  assert again["metrics"]["auroc"] == out["metrics"]["auroc"]


def test_configs():
  for module in (breast_cancer, wine, digits, synthetic):
    config = module.get_config()
    smoke_config = module.get_config("smoke")
    assert "python -m experiments.valuation" in module.__doc__
    assert smoke_config.sampling.samples_per_point < config.sampling.samples_per_point
    assert max(config.sampling.budgets) <= config.sampling.samples_per_point
    with pytest.raises(ValueError, match="smoke"):
      module.get_config("tiny")
  assert digits.get_config().pca_dims == 16


@pytest.mark.multidevice
def test_valuation_four_devices_match_one(tmp_path):
  from tests import multidevice_valuation_check as check

  one, four = compare_with_one_device("multidevice_valuation_check.py", tmp_path / "four.npz", check.compute)
  check.assert_same(one, four, "parent 1 device vs subprocess 4 devices")
  assert np.abs(one["tmc"]).max() > 0
