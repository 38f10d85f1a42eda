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


def assert_arrays_same(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], label: str, *,
                       rtol: float = 1e-5, atol: float = 1e-6, leading: int | None = None,
                       leading_skip: str | None = None) -> None:
  """Same keys and shapes; floats within (rtol, atol), integers and bools exactly equal.

  Args:
    leading: if given, every array's leading axis must have this size (one row per input)...
    leading_skip: ...except the keys starting with this prefix.
  """
  assert sorted(actual) == sorted(expected), (label, sorted(actual), sorted(expected))
  for k, e in expected.items():
    a = actual[k]
    assert a.shape == e.shape, (label, k, a.shape, e.shape)
    if leading is not None and not (leading_skip and k.startswith(leading_skip)):
      assert a.shape[0] == leading, (label, k, a.shape, leading)
    if np.issubdtype(e.dtype, np.floating):
      np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f"{label}: {k}")
    else:
      np.testing.assert_array_equal(a, e, err_msg=f"{label}: {k}")
