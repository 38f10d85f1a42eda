"""End-to-end smoke run of the robustness driver (as a command), its outputs, the rerun reusing results, configs."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs.robustness import breast_cancer, digits, gaussian, wine
from xattr.robustness import pipeline
from xattr.robustness import problem as problem_lib

pytestmark = pytest.mark.slow
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("robustness"))
  # Compilation dominates these tiny runs: XLA's backend optimizations are switched off.
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip())
  proc = subprocess.run([sys.executable, "-m", "experiments.robustness",
                         "--config=configs/robustness/gaussian.py:smoke", f"--workdir={workdir}"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
  return workdir, proc.stdout


def test_configs():
  for module, players in ((gaussian, 6), (breast_cancer, 10), (wine, 7), (digits, 8)):
    config = module.get_config()
    assert "python -m experiments.robustness" in module.__doc__
    prob = problem_lib.load(config)
    assert prob.groups.shape == (players, prob.x_train.shape[1]) and prob.groups.sum(0).max() == 1
    assert module.get_config("smoke").num_inputs < config.num_inputs
    with pytest.raises(ValueError, match="Unknown config argument"):
      module.get_config("tiny")
  with pytest.raises(ValueError, match="players must be"):
    problem_lib.player_groups("rows:3", 30)


def test_outputs_report_and_verdicts(smoke):
  workdir, stdout = smoke
  assert "report:" in stdout and "input bounds hold: True; model bounds hold: True" in stdout
  for name in ("report.md", "summary.json", "results.npz", "input_perturbation.png", "model_perturbation.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  report = open(os.path.join(workdir, "report.md")).read()
  for text in ("**Verdict: yes** — every measured input-perturbation change", "Lipschitz regularisation shrinks",
               "conditional/surrogate removal", "| technique | C used |", "Tightness"):
    assert text in report, text
  s = json.load(open(os.path.join(workdir, "summary.json")))
  assert s["input"]["holds"] and s["model"]["holds"]
  assert set(s["lipschitz"]) == {"plain", "spectral", "retrained"}
  for v in s["lipschitz"].values():
    assert v["lower"] <= v["upper"] * (1 + 1e-5)
  assert s["lipschitz"]["spectral"]["upper"] <= 2 ** 0.5 / 4 * (1 + 1e-5)         # two layers with cap 1
  # The pair agrees on the data exactly, and conditional removal (exact Gaussian) is there.
  assert s["pair"]["on_data_max_difference"] == 0 and "conditional" in s["pair"]["change"]
  with np.load(os.path.join(workdir, "results.npz")) as r:
    assert r["input/plain/surrogate/pgd"].shape == (4, 2, 4)                      # inputs x eps x techniques


def test_rerun_reuses_saved_results(smoke):
  workdir, _ = smoke
  path = os.path.join(workdir, "results.npz")
  stamp = os.path.getmtime(path)
  config = gaussian.get_config("smoke")
  with config.unlocked():
    config.progress = True                    # not part of the results' fingerprint: still reused
  out = pipeline.run(config, workdir)
  assert os.path.getmtime(path) == stamp and out["summary"]["input"]["holds"]
