"""End-to-end smoke run of the dynamic feature selection driver (as a command), resuming, and configs.

The problem loading (TFDS data, costs) is tested in test_selection_problem.py."""

import json
import os

import numpy as np
import pytest

from configs.dfs import breast_cancer, digits, digits_groups, digits_vit
from configs.dfs import oracle as oracle_config
from experiments import dfs
from tests import driver_process
from xattr.selection import problem

pytestmark = pytest.mark.slow
@pytest.fixture(scope="module")
def launched(tmp_path_factory):
  """Starts the documented command on the digits and oracle smoke configs, both at once, each in its own process
  (their persistent compilation caches let later stages and seeds reuse programs without touching this process's
  JAX configuration). The first tests below only request this fixture, so they run while the drivers work."""
  workdirs = {name: str(tmp_path_factory.mktemp(name)) for name in ("digits", "oracle")}
  procs = {name: driver_process.launch("dfs", f"configs/dfs/{name}.py:smoke", workdirs[name], fast_compile=True)
           for name in workdirs}
  yield {name: (workdirs[name], procs[name]) for name in workdirs}
  for proc in procs.values():
    driver_process.stop(proc)


@pytest.fixture(scope="module")
def runs(launched):
  return {name: (workdir, driver_process.finish(proc)) for name, (workdir, proc) in launched.items()}


@pytest.fixture(scope="module")
def smoke(runs):
  workdir, stdout = runs["digits"]
  return digits.get_config("smoke"), workdir, stdout


# --- while the drivers run --------------------------------------------------------------------------------------

def test_configs(launched):
  for module, players in ((digits, 64), (digits_groups, 16), (breast_cancer, 30), (oracle_config, 12),
                          (digits_vit, 16)):
    config = module.get_config()
    assert "python -m experiments.dfs" in module.__doc__
    assert config.max_features <= players and len(config.seeds) == 5
    assert len(module.get_config("smoke").seeds) in (1, 2)
    with pytest.raises(ValueError, match="Unknown config argument"):
      module.get_config("tiny")
  assert digits_groups.get_config().patch_size == 2
  assert breast_cancer.get_config("costs").costs == "random"
  config = digits.get_config("smoke")
  with config.unlocked():
    config.patch_size = 3
  with pytest.raises(ValueError, match="must be divisible by patch_size 3"):
    problem.load(config, 0)


# --- the drivers' outputs ---------------------------------------------------------------------------------------

def test_oracle_run_recovers_the_closed_form_order(runs):
  """GDFS and DIME, trained by the driver on the oracle problem, make the closed-form greedy CMI selections."""
  workdir, _ = runs["oracle"]
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  agreement = summary["oracle_agreement"]
  for m in ("gdfs", "dime", "random", "static"):
    print(f"{m}: fraction of test samples whose first t selections equal the oracle's: "
          + ", ".join(f"t={t + 1}: {a:.3f}" for t, a in enumerate(agreement[m])))
  for m in ("gdfs", "dime"):
    assert agreement[m][0] >= 0.95 and agreement[m][1] >= 0.9, (m, agreement[m])
  # The baselines cannot: the second selection depends on the value of x_0.
  assert agreement["static"][1] < 0.6 and agreement["random"][1] < 0.1
  # Pretraining worked: with every feature, the masked predictor is near the Bayes accuracy (1 - 0.05 at least).
  assert summary["full_metric"] > 0.9
  # DIME's CMI estimates are close to the exact CMI (nats), with x_0 selected and without.
  print(f"DIME CMI estimate error (nats): {summary['dime_oracle_cmi_error']}")
  assert max(summary["dime_oracle_cmi_error"]) < 0.05
  report = open(os.path.join(workdir, "report.md")).read()
  assert "Oracle check" in report and "| dime |" in report


def test_outputs_and_report(smoke):
  config, workdir, stdout = smoke
  assert "report:" in stdout and "beats baselines" in stdout
  for name in ("report.md", "summary.json", "metric_vs_features.png", "metric_vs_cost.png", "selection_order.png",
               "seed_0/results.npz", "seed_1/results.npz"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  report = open(os.path.join(workdir, "report.md")).read()
  for text in ("accuracy vs number of features", "| features | gdfs | dime | random | static | cae |",
               "margin over the best baseline", "dime (penalized)", "gdfs (confidence)", "selection_order.png"):
    assert text in report, text
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  k = config.max_features
  for m in ("gdfs", "dime", "random", "static"):
    assert len(summary[m]["mean"]) == len(summary[m]["std"]) == k + 1
    assert all(0 <= v <= 1 for v in summary[m]["mean"])
    assert summary[m]["cost"] == pytest.approx(list(range(k + 1)))          # uniform costs: cost = #features
  assert summary["cae"]["budgets"] == [2] and summary["metric"] == "accuracy"
  assert summary["full_metric"] > 0.4
  assert set(summary["small_budget_check"]) == {"gdfs", "dime"}


def test_per_seed_results_are_valid_selections(smoke):
  config, workdir, _ = smoke
  for seed in config.seeds:
    with np.load(os.path.join(workdir, f"seed_{seed}", "results.npz")) as r:
      assert r["labels"].shape == (config.num_test,)
      for m in ("gdfs", "dime", "random", "static"):
        order = r[f"{m}/order"]
        assert order.shape == (config.num_test, config.max_features)
        assert all(len(set(row)) == len(row) for row in order.tolist()), m
      assert (r["static/order"] == r["static/ranking"][None]).all()         # one order for everyone
      assert len(r["dime/penalized_cost"]) == len(config.sweeps.penalties)
      assert (r["dime/confidence_cost"] <= config.max_features).all()
  # Seeds differ (their own splits and training).
  with np.load(os.path.join(workdir, "seed_0", "results.npz")) as a, \
       np.load(os.path.join(workdir, "seed_1", "results.npz")) as b:
    assert not np.array_equal(a["gdfs/order"], b["gdfs/order"])


def test_rerun_reuses_saved_results(smoke):
  config, workdir, _ = smoke
  stamps = {s: os.path.getmtime(os.path.join(workdir, f"seed_{s}", "results.npz")) for s in config.seeds}
  before = json.load(open(os.path.join(workdir, "summary.json")))
  config = digits.get_config("smoke")
  with config.unlocked():
    config.compilation_cache = False          # not part of the results' fingerprint: still reused
  out = dfs.run(config, workdir)
  for s, t in stamps.items():
    assert os.path.getmtime(os.path.join(workdir, f"seed_{s}", "results.npz")) == t
  assert out["summary"]["gdfs"] == before["gdfs"] and out["summary"]["cae"] == before["cae"]


