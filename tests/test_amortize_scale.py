"""Amortization at scale: the cost arithmetic (closed forms) and the synthetic study end to end (smoke config)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from configs.amortize import synthetic
from experiments import amortize as driver
from xattr.amortization import costs, scale

REF = [dict(kind="per-example", method="kernel_shap", target="shapley", evals=e, mae=m)
       for e, m in ((32, 0.1), (512, 0.025))]


def _sa(n_train, mae, label_evals=32):
  row = dict(kind="stochastic amortization", method="kernel_shap", setting="32/label", target="shapley",
             evals=label_evals + 1.0, mae=mae)
  return scale.amortized_entry(row, n_train)


def test_training_cost_and_totals():
  e = _sa(1000, 0.05)
  assert e["train_evals"] == 32_000 and e["explain_evals"] == 1
  assert scale.total_evals(e, 10_000) == 42_000
  fs = scale.amortized_entry(dict(kind="FastSHAP", method="fastshap", target="shapley", evals=66.0), 50)
  assert fs["train_evals"] == 50 * 64 and fs["explain_evals"] == 2


def test_speedup_is_per_example_total_over_amortized_total_and_grows_with_n():
  e = _sa(1000, 0.05)
  entries = scale.at_scale(REF + [e], (1000, 10_000, 100_000))
  per_input = costs.cost_to_reach(np.array([32, 512]), np.array([0.1, 0.025]), 0.05)[0]     # 128 (log-log)
  assert per_input == pytest.approx(128.0)
  for entry in entries:
    n = entry["n_explain"]
    assert entry["per_example_evals"] == pytest.approx(n * 128.0)
    assert entry["amortized_evals"] == 32_000 + n
    assert entry["speedup"] == pytest.approx(n * 128.0 / (32_000 + n))
  speedups = [x["speedup"] for x in entries]
  assert speedups == sorted(speedups) and speedups[-1] < 128     # bounded by the per-input cost at equal error


def test_flops_add_the_explainer_training_and_inference_to_the_model_rows():
  e = scale.amortized_entry(dict(kind="stochastic amortization", method="kernel_shap", setting="32/label",
                                 target="shapley", evals=33.0, mae=0.05), 1000, explainer_rows=500 * 32)
  model, explainer = scale.mlp_flops((16, 64, 64, 2)), scale.mlp_flops((16, 128, 128, 32))
  assert model == 2 * (16 * 64 + 64 * 64 + 64 * 2) and explainer == 2 * (16 * 128 + 128 * 128 + 128 * 32)
  (entry,) = scale.at_scale(REF + [e], (10_000,), dict(model=model, explainer=explainer))
  expected = 32_000 * model + 3 * explainer * 16_000 + 10_000 * (model + explainer)
  assert entry["amortized_flops"] == pytest.approx(expected)
  assert entry["per_example_flops"] == pytest.approx(10_000 * 128.0 * model)
  assert entry["flops_speedup"] == pytest.approx(10_000 * 128.0 * model / expected)
  assert entry["flops_speedup"] < entry["speedup"]             # the explainer's passes only add to its cost
  assert "flops_speedup" not in scale.at_scale(REF + [e], (10_000,))[0]


def test_an_explainer_is_priced_only_at_n_at_least_its_training_set():
  entries = scale.at_scale(REF + [_sa(1000, 0.05), _sa(10_000, 0.03)], (1000, 10_000))
  assert [(x["n_explain"], x["n_train"]) for x in entries] == [(1000, 1000), (10_000, 1000), (10_000, 10_000)]
  assert scale.best_at(entries, 1000)["n_train"] == 1000
  assert scale.best_at(entries, 5) is None


@pytest.mark.slow
def test_synthetic_smoke_study(tmp_path):
  config = synthetic.get_config("smoke")
  out = driver.run(config, str(tmp_path))
  s = out["summaries"]["synthetic"]
  sc = s["scale"]
  assert {r["n_train"] for r in sc["rows"]} == set(config.scale.train_sizes)
  assert {r["kind"] for r in sc["rows"]} == {"stochastic amortization", "FastSHAP"}
  ref = [r for r in s["rows"] if r["kind"] == "per-example" and r["method"] == "kernel_shap"]
  assert len(ref) == len(config.per_example.kernel_shap)
  for e in sc["entries"]:
    assert e["n_train"] <= e["n_explain"]
    per_input = costs.cost_to_reach(np.array([r["evals"] for r in ref]), np.array([r["mae"] for r in ref]),
                                    e["mae"])[0]
    assert e["per_example_evals"] == pytest.approx(e["n_explain"] * per_input)
    assert e["speedup"] == pytest.approx(e["per_example_evals"] / e["amortized_evals"])
    assert e["flops_speedup"] == pytest.approx(e["per_example_flops"] / e["amortized_flops"])   # baseline removal
    assert e["amortized_flops"] > e["amortized_evals"] * sc["flops"]["model"]                   # + explainer passes
  report = open(out["paths"]["report"]).read()
  assert "FLOPs speedup" in report and "amortized_flops_speedup_at_equal_error=" in report
  for n in config.scale.explain_sizes:
    assert f"at N={n}" in report
    assert os.path.exists(os.path.join(str(tmp_path), "synthetic", f"error_vs_total_evaluations_N{n}.png"))
  assert "amortized_speedup_at_equal_error=" in report
  json.load(open(out["paths"]["results"]))


def test_best_prefers_measured_speedups_over_upper_bounds():
  worse_than_smallest_budget = _sa(1000, 0.2)                 # KernelSHAP at 32 already beats it: '<' bound
  good = _sa(1000, 0.05)
  entries = scale.at_scale(REF + [worse_than_smallest_budget, good], (100_000,))
  assert {e["bound"] for e in entries} == {"<", "="}
  assert scale.best_at(entries, 100_000)["mae"] == 0.05
