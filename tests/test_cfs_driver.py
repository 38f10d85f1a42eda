"""The contrastive feature selection driver end to end: the grassy-digits smoke run (as a command) beats the
unsupervised baselines at k = 20, writes its report, reuses and recomputes saved results; user files; configs."""

import json
import os

import numpy as np
import pytest

from configs.cfs import files as files_config
from configs.cfs import grassy_digits, linear
from experiments import cfs as cfs_driver
from tests import driver_process
from xattr.cfs import benchmark

@pytest.fixture(scope="module")
def launched(tmp_path_factory):
  """Starts the documented smoke command in its own process; the first tests only request this fixture."""
  workdir = str(tmp_path_factory.mktemp("cfs_grassy"))
  proc = driver_process.launch("cfs", "configs/cfs/grassy_digits.py:smoke", workdir)
  yield workdir, proc
  driver_process.stop(proc)


@pytest.fixture(scope="module")
def smoke(launched):
  workdir, proc = launched
  return workdir, driver_process.finish(proc)


def test_configs(launched):
  for module in (grassy_digits, linear):
    config = module.get_config()
    assert "python -m experiments.cfs" in module.__doc__
    assert len(config.seeds) == 5 and tuple(config.model.hidden_sizes) == (512, 512)
    assert config.model.code_size == 20 and config.train.learning_rate == 1e-3 and config.train.batch_size == 128
    assert set(config.methods) == set(benchmark.METHODS)
    assert len(module.get_config("smoke").seeds) == 1
    with pytest.raises(ValueError, match="Unknown config argument"):
      module.get_config("tiny")
  assert tuple(grassy_digits.get_config().budgets) == (5, 10, 20, 40)


def test_user_files_without_labels(launched, tmp_path):
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "target.npz", x=rng.normal(size=(60, 6)) * [1, 1, 1, 4, 1, 1])
  np.savez(tmp_path / "background.npz", x=rng.normal(size=(50, 6)))
  config = files_config.get_config("nolabels")
  config.data.target_path, config.data.background_path = str(tmp_path / "target.npz"), str(tmp_path / "background.npz")
  config.methods, config.budgets, config.seeds = ("variance", "pca", "laplacian"), (1, 2), (0,)
  config.compilation_cache, config.progress = False, False
  out = cfs_driver.run(config, str(tmp_path / "run"))
  report = open(out["paths"]["report.md"]).read()
  assert "Selected features at k = 2" in report and "| variance | x3, " in report
  assert out["summary"]["selected"]["variance"][0] == 3
  config.data.background_path = str(tmp_path / "missing.npz")
  with pytest.raises(FileNotFoundError, match="background_path must be an existing"):
    cfs_driver.run(config, str(tmp_path / "run2"))


@pytest.mark.slow
def test_smoke_run_beats_unsupervised_baselines_at_k20(smoke):
  workdir, stdout = smoke
  assert "report:" in stdout
  for name in ("report.md", "summary.json", "accuracy_vs_k.png", "selected_pixels.png", "seed_0/results.npz"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert summary["budgets"] == [20]
  acc = {m: v["mean"][0] for m, v in summary["accuracy"].items()}
  ink = {m: v["mean"][0] for m, v in summary["ink_overlap"].items()}
  print("accuracy at k = 20:", acc, "ink overlap:", ink)
  for baseline in ("cae", "laplacian", "variance", "pca"):
    assert acc["cfs"] > acc[baseline] + 0.1, (baseline, acc)
    assert ink["cfs"] > ink[baseline], (baseline, ink)
  assert summary["full_accuracy"] > 0.8
  report = open(os.path.join(workdir, "report.md")).read()
  for text in ("**Verdict: yes** — cfs beats every unsupervised baseline", "| k | cfs | cae | laplacian |",
               "selected_pixels.png", "digit-ink region"):
    assert text in report, text


@pytest.mark.slow
def test_rerun_reuses_saved_results(smoke):
  workdir, _ = smoke
  path = os.path.join(workdir, "seed_0", "results.npz")
  stamp = os.path.getmtime(path)
  before = json.load(open(os.path.join(workdir, "summary.json")))
  config = grassy_digits.get_config("smoke")
  config.compilation_cache = False          # not part of the results' fingerprint: still reused
  out = cfs_driver.run(config, workdir)
  assert os.path.getmtime(path) == stamp
  assert out["summary"]["accuracy"] == before["accuracy"]
  # (A selection killed mid-training resumes bitwise: tests/test_cfs.py::test_killed_selection_resumes_...)
