"""The summary of a feature selection study over seeds: aggregation, small-budget check, report and JSON."""

import json
import os

import numpy as np

from configs.dfs import digits, oracle as oracle_config
from xattr.selection import problem as problem_lib
from xattr.selection import report


def _per_seed(config, seed, num_players=64, num_test=8):
  rng = np.random.default_rng(seed)
  k = config.max_features
  res = {"metric_name": np.array("accuracy"), "full_metric": np.array(0.9),
         "timings": np.array(json.dumps({"pretrain": 1.0, "gdfs": 2.0})), "labels": np.arange(num_test) % 10,
         "test_images": rng.random((num_test, 8, 8))}
  for m in ("gdfs", "dime", "random", "static"):
    res[f"{m}/curve"] = np.linspace(0.1, 0.8 if m in ("gdfs", "dime") else 0.5, k + 1) + 0.01 * seed
    res[f"{m}/cost"] = np.arange(k + 1.0)
    res[f"{m}/order"] = np.stack([rng.permutation(num_players)[:k] for _ in range(num_test)])
  res["cae/budgets"], res["cae/metric"], res["cae/cost"] = np.array([2]), np.array([0.3]), np.array([2.0])
  for m, rule, n in (("dime", "penalized", len(config.sweeps.penalties)),
                     ("dime", "confidence", len(config.sweeps.confidences)),
                     ("gdfs", "confidence", len(config.sweeps.confidences))):
    res[f"{m}/{rule}_cost"], res[f"{m}/{rule}_metric"] = np.linspace(1, k, n), np.linspace(0.2, 0.7, n)
  return res


def test_aggregate_mean_and_std_over_seeds():
  config = digits.get_config("smoke")
  per_seed = [_per_seed(config, 0), _per_seed(config, 1)]
  by_features, by_cost, curves = report.aggregate(config, per_seed)
  x, mean, std = by_features["gdfs"]
  np.testing.assert_array_equal(x, np.arange(config.max_features + 1))
  np.testing.assert_allclose(mean, (per_seed[0]["gdfs/curve"] + per_seed[1]["gdfs/curve"]) / 2)
  np.testing.assert_allclose(std, 0.005)
  assert by_features["cae"][0].tolist() == [2] and curves["cae"]["budgets"] == [2]
  assert {"dime (penalized)", "dime (confidence)", "gdfs (confidence)"} <= set(by_cost)


def test_small_budget_check_and_missing_points():
  config = digits.get_config("smoke")
  by_features, _, _ = report.aggregate(config, [_per_seed(config, 0)])
  check = report.small_budget_check(config, by_features)
  assert set(check) == {"gdfs", "dime"} and check["gdfs"]["beats_baselines"]
  assert check["gdfs"]["budgets"] == list(config.small_budgets)
  assert report.small_budget_check(config, {"gdfs": by_features["gdfs"]}) == {}   # no baseline: no check


def test_write_report_summary_and_figures(tmp_path):
  config = digits.get_config("smoke")
  per_seed = [_per_seed(config, 0), _per_seed(config, 1)]
  out = report.write(config, per_seed, str(tmp_path), problem_lib.load(config, 0))
  for name in ("report.md", "summary.json", "metric_vs_features.png", "metric_vs_cost.png", "selection_order.png"):
    assert os.path.getsize(out["paths"][name]) > 0, name
  text = open(out["paths"]["report.md"]).read()
  for line in ("# Dynamic feature selection: digits: 2 seeds", "## accuracy vs number of features",
               "| features | gdfs | dime | random | static | cae |", "margin over the best baseline",
               "**Verdict: yes** — gdfs beats every baseline at budgets", "dime (penalized): 1.00 -> 0.200",
               "![selection order](selection_order.png)", "Mean time per seed (s): pretrain 1.0, gdfs 2.0"):
    assert line in text, line
  summary = json.load(open(out["paths"]["summary.json"]))
  assert summary == json.loads(json.dumps(out["summary"]))
  assert summary["full_metric"] == 0.9 and summary["metric"] == "accuracy" and summary["seeds"] == [0, 1]


def test_oracle_section(tmp_path):
  config = oracle_config.get_config("smoke")
  res = _per_seed(config, 0, num_players=12)
  del res["test_images"]
  res["gdfs/oracle_agreement"], res["dime/oracle_agreement"] = np.array([1.0, 0.95, 0.5]), np.array([1.0, 0.9, 0.4])
  res["dime/oracle_cmi_error"] = np.array([0.01, 0.02])
  out = report.write(config, [res], str(tmp_path), problem_lib.load(config, 0))
  assert out["summary"]["oracle_agreement"]["gdfs"] == [1.0, 0.95, 0.5]
  text = open(out["paths"]["report.md"]).read()
  assert "Oracle check" in text and "| dime | 1.000 | 0.900 | 0.400 |" in text and "0.0100 with nothing selected" in text
  assert "selection_order.png" not in out["paths"]
