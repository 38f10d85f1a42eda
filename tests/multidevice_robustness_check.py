"""Checks, inside a process with 4 fake CPU devices, that the measured input-perturbation changes (Gaussian and
PGD, through xattr.parallel.explain_batch) do not depend on the device count.

Run by ``tests/test_robustness_multidevice.py`` as

  XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
      python tests/multidevice_robustness_check.py OUT.npz

It measures 10 inputs (not a multiple of 4, so padding is exercised) for baseline and exact-Gaussian conditional
removal of a fixed MLP on a 4-device mesh, asserts they agree with a 1-device mesh, and writes the
4-device results to OUT.npz for the parent to compare with its own 1-device run. ``measure`` is imported by the
parent so both processes compute exactly the same thing.
"""

from __future__ import annotations

import sys

import jax
import numpy as np
from flax import nnx

from tests.four_devices import assert_arrays_same
from xattr import parallel
from xattr.models import MLP
from xattr.robustness import bounds
from xattr.robustness import problem as problem_lib
from xattr.robustness import study

jax.config.update("jax_default_matmul_precision", "highest")     # as tests/conftest.py does for the parent

F, NUM_INPUTS = 4, 10
COV = problem_lib.gaussian_covariance(F, 0.3, 0.9)
_RNG = np.random.default_rng(0)
INPUTS = _RNG.multivariate_normal(np.zeros(F), COV, NUM_INPUTS).astype(np.float32)
PROB = problem_lib.Problem("check", INPUTS, None, None, None, 2, np.eye(F, dtype=bool), np.zeros(F), COV)
REM = study.Removals(PROB, np.zeros(F, np.float32), INPUTS[:6], bounds.gaussian_conditional(np.zeros(F), COV),
                     _RNG.normal(size=(8, F)).astype(np.float32))
NET = MLP(F, (8,), 2, rngs=nnx.Rngs(3))
W, _ = study.technique_stack(("shapley", "banzhaf"), F)


def measure(mesh: jax.sharding.Mesh) -> dict[str, np.ndarray]:
  """``<removal>/{gaussian,pgd}`` float[10, 2, 2] on ``mesh`` (4 inputs per step)."""
  out = lambda xb: jax.nn.softmax(NET(xb), -1)[:, 1]
  tables = {k: v for k, v in REM.tables(out).items() if k != "marginal"}
  return study.input_study(tables, W, INPUTS, jax.random.key(5), np.array([0.1, 0.5]), num_steps=2,
                           mesh=mesh, chunk_size=4)


def main(out_path: str) -> None:
  devices = jax.devices()
  assert len(devices) == 4, f"expected 4 fake CPU devices (XLA_FLAGS), got {devices}"
  four = measure(parallel.make_mesh())
  assert_arrays_same(measure(parallel.make_mesh(devices=devices[:1])), four, "1 vs 4 devices", leading=NUM_INPUTS)
  # The measurements are not trivial: every removal moved, and PGD found more than the random direction somewhere.
  assert all(v.min() > 0 for v in four.values())
  assert any((four[f"{r}/pgd"] > four[f"{r}/gaussian"] + 1e-6).any() for r in ("baseline", "conditional"))
  np.savez(out_path, **four)
  print(f"ok: {len(four)} arrays written to {out_path}")


if __name__ == "__main__":
  main(sys.argv[1])
