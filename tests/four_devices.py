"""Runs a check script in a subprocess with 4 fake CPU devices while the parent computes its 1-device answer.

Every ``tests/multidevice_*_check.py`` script takes an output path, asserts its own 4-device vs 1-device
agreement and writes its 4-device results there; :func:`compare_with_one_device` returns both sides so the test
can compare them (and assert that the comparison is meaningful).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Callable

import jax
import numpy as np

from xattr import parallel

ROOT = pathlib.Path(__file__).resolve().parents[1]


def compare_with_one_device(script: str, out_path: os.PathLike, compute: Callable[[jax.sharding.Mesh], dict],
                            *, timeout: float = 300) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """Returns ``(one, four)``: ``compute`` on a 1-CPU-device mesh here, and the arrays ``script`` saved.

  Args:
    script: file name in tests/, run as ``python tests/<script> <out_path>``.
    out_path: where the subprocess writes its ``.npz``.
    compute: the parent's computation on a mesh, run while the subprocess works.
    timeout: seconds to wait for the subprocess.
  """
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip(),
             # The script's own folder heads sys.path; the repository root makes experiments/ and configs/ importable.
             PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])))
  proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / script), str(out_path)], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    # CPU also when a GPU is present, so that the numerics are comparable with the fake CPU devices.
    one = compute(parallel.make_mesh(devices=jax.devices("cpu")[:1]))
    stdout, stderr = proc.communicate(timeout=timeout)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.communicate()
  assert proc.returncode == 0, f"{script} failed.\nstdout:\n{stdout}\nstderr:\n{stderr[-5000:]}"
  with np.load(out_path) as f:
    four = dict(f)
  return one, four
