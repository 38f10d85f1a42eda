"""Jobs across several JAX processes (2 processes x 2 fake CPU devices, gloo collectives on loopback).

Each test starts its processes through tests/multiprocess.py, which bounds them in time and kills them all on
failure; results are compared with the same computation in this (1-device) process.
"""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests import multiprocess
from tests import multiprocess_train_check as train_check
from tests.four_devices import assert_arrays_same

pytestmark = pytest.mark.slow


def _load(path) -> dict[str, np.ndarray]:
  with np.load(path) as f:
    return dict(f)


def _params(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {k: v for k, v in out.items() if k.startswith("param_")}


def test_harness_reports_failures_and_kills_on_timeout(tmp_path):
  finished = multiprocess.wait(multiprocess.start("no_such_check.py", tmp_path), timeout=30)
  assert all(f.returncode not in (0, None) for f in finished)
  text = multiprocess.describe(finished)
  assert "process 1: exit code" in text and "no_such_check.py" in text
  procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
           for _ in range(2)]
  finished = multiprocess.wait(procs, timeout=1)
  assert [f.returncode for f in finished] == [-signal.SIGKILL] * 2


def test_training_two_processes_equals_one_and_resumes_after_both_are_killed(tmp_path):
  model, _ = train_check.train(None, mesh=None)
  reference = train_check.flat_params(model)

  whole = tmp_path / "whole"
  multiprocess.run_processes("multiprocess_train_check.py", whole, args=[whole / "workdir"])
  outs = [_load(whole / f"process_{i}.npz") for i in range(2)]
  assert_arrays_same(_params(outs[0]), _params(outs[1]), "process 0 vs 1", rtol=0, atol=0)
  assert_arrays_same(_params(outs[0]), reference, "2 processes x 2 devices vs 1 device", rtol=1e-5, atol=1e-6)
  # One checkpoint directory per saved step, written once (not once per process).
  assert sorted(os.listdir(whole / "workdir" / "checkpoints")) == ["12", "9"]

  killed = tmp_path / "killed"
  finished = multiprocess.wait(multiprocess.start("multiprocess_train_check.py", killed,
                                                  args=[killed / "workdir", "crash"]), timeout=240)
  assert all(f.returncode == -signal.SIGKILL for f in finished), multiprocess.describe(finished)
  assert not list(killed.glob("process_*.npz"))
  multiprocess.run_processes("multiprocess_train_check.py", killed, args=[killed / "workdir"])
  resumed = [_load(killed / f"process_{i}.npz") for i in range(2)]
  assert [int(r["resumed_from"]) for r in resumed] == [6, 6]
  assert_arrays_same(_params(resumed[0]), _params(outs[0]), "resumed vs uninterrupted", rtol=0, atol=0)


def test_explanations_rollouts_and_valuation_samples_two_processes_equal_one(tmp_path):
  from tests import multiprocess_cores_check
  from xattr import parallel
  import jax

  one = multiprocess_cores_check.compute(parallel.make_mesh(devices=jax.devices("cpu")[:1]))
  multiprocess.run_processes("multiprocess_cores_check.py", tmp_path, timeout=400)
  outs = [_load(tmp_path / f"process_{i}.npz") for i in range(2)]
  assert_arrays_same(outs[0], outs[1], "process 0 vs 1", rtol=0, atol=0)
  assert_arrays_same(outs[0], one, "2 processes x 2 devices vs 1 device")


def _stored(path) -> dict[str, np.ndarray]:
  from xattr import outputs
  reader = outputs.open(str(path))
  return {name: np.asarray(reader[name]) for name in reader.keys()}


def test_attribution_job_across_processes_resumes_after_a_kill(tmp_path):
  model_dir = str(tmp_path / "model")
  # The reference: one process with 2 devices (each process below also explains on its own 2 devices, so every
  # chunk runs the same program and the stores can be compared bit for bit). It also trains the smoke MLP.
  ref = tmp_path / "ref"
  multiprocess.run_processes("multiprocess_attribute_check.py", ref, num_processes=1, devices_per_process=2,
                             args=[ref / "w", model_dir])
  expected = _stored(ref / "w" / "attributions")

  two = tmp_path / "two"
  multiprocess.run_processes("multiprocess_attribute_check.py", two, args=[two / "w", model_dir])
  assert [(two / f"process_{i}.done").read_text() for i in range(2)] == ["3", "3"]     # 6 chunks, half each
  assert_arrays_same(_stored(two / "w" / "attributions"), expected, "2 processes vs 1", rtol=0, atol=0)
  assert os.path.exists(two / "w" / "report.md")

  killed = tmp_path / "killed"
  finished = multiprocess.wait(multiprocess.start("multiprocess_attribute_check.py", killed,
                                                  args=[killed / "w", model_dir, "kill"]), timeout=240)
  assert finished[1].returncode == -signal.SIGKILL, multiprocess.describe(finished)
  done = sorted(os.listdir(killed / "w" / "attributions" / "done"))
  assert 1 <= len([d for d in done if d[:-5].isdigit()]) < 6, done
  multiprocess.run_processes("multiprocess_attribute_check.py", killed, args=[killed / "w", model_dir])
  markers = [d for d in os.listdir(killed / "w" / "attributions" / "done") if d[:-5].isdigit()]
  assert sorted(markers) == [f"{c:08d}.json" for c in range(6)]
  assert_arrays_same(_stored(killed / "w" / "attributions"), expected, "resumed vs uninterrupted", rtol=0, atol=0)
