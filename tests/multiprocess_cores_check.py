"""Batched explanations, DFS rollouts and valuation samples as one process of two (see tests/test_multiprocess.py).

  python tests/multiprocess_cores_check.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR

Runs the same computations as the 4-fake-device checks (``tests/multidevice_*_check.py``), on a mesh over the 4
devices of 2 processes, and writes each process's host copy of the results to ``OUT_DIR/process_<id>.npz`` for the
test to compare with its own 1-device run.
"""

from __future__ import annotations

import jax
import numpy as np

from tests import multiprocess
from xattr import parallel

CASES = ("kernel_converge", "permutation")     # a vmapped while_loop and a scan (the others add compile time only)


def compute(mesh: jax.sharding.Mesh) -> dict[str, np.ndarray]:
  """Every result keyed '<check>/<name>' (host numpy arrays)."""
  # Imported here: these modules build their fixed inputs with JAX at import, which must come after the
  # distributed runtime is up.
  from tests import multidevice_check, multidevice_selection_check, multidevice_valuation_check

  out = {f"explain/{k}": v for k, v in multidevice_check.explain_all(mesh, cases=CASES).items()}
  out.update({f"rollout/{k}": v for k, v in multidevice_selection_check.rollouts(mesh).items()})
  out.update({f"valuation/{k}": v for k, v in multidevice_valuation_check.compute(mesh).items()})
  return out


def main() -> None:
  process_id, num_processes, out_dir, _ = multiprocess.initialize()
  assert jax.process_count() == num_processes and jax.device_count() == 4
  np.savez(out_dir / f"process_{process_id}.npz", **compute(parallel.make_mesh()))
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
