"""Checks, inside a process with 4 fake CPU devices, that data-valuation samples do not depend on the device count.

Run by ``tests/test_valuation_driver.py::test_valuation_four_devices_match_one`` as

  XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
      python tests/multidevice_valuation_check.py OUT.npz

It draws distributional marginal contributions (21 samples in chunks of 8: not a multiple of the chunk, so
padding is exercised) and TMC orderings on a 4-device mesh and writes them to OUT.npz for the parent to compare
with its own 1-device run. ``compute`` is imported by the parent so both processes compute exactly the same
thing.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

from xattr.valuation import samplers, utility
from tests.four_devices import assert_arrays_same

jax.config.update("jax_default_matmul_precision", "highest")     # as tests/conftest.py does for the parent

KEY = jax.random.key(11)
NUM_SAMPLES = 21


def _utility() -> utility.LogisticRegression:
  rng = np.random.default_rng(0)
  x = rng.normal(size=(60, 4)).astype(np.float32)
  y = (x @ np.array([1.0, -1.0, 0.5, 0.0]) + 0.5 * rng.normal(size=60) > 0).astype(np.int32)
  return utility.LogisticRegression.create(x[:40], y[:40], x[40:], y[40:], num_classes=2)


def compute(mesh: jax.sharding.Mesh, chunk_size: int = 8) -> dict[str, np.ndarray]:
  u = _utility()
  points = np.arange(NUM_SAMPLES) % u.num_points
  sizes = np.asarray(samplers.sample_sizes(jax.random.key(1), NUM_SAMPLES, 10, 30))
  out = samplers.distributional(u, KEY, points, sizes, mesh=mesh, chunk_size=chunk_size, progress=False)
  out = {f"distributional/{k}": v for k, v in out.items()}
  out["tmc"] = samplers.tmc(u, KEY, 3, mesh=mesh, chunk_size=4 * chunk_size, progress=False)
  return out


def assert_same(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], label: str) -> None:
  """Floats within 1e-5 (relative) / 1e-6 (absolute); integers exactly equal."""
  assert_arrays_same(actual, expected, label)


def main(out_path: str) -> None:
  from xattr import parallel

  devices = jax.devices()
  assert len(devices) == 4, f"expected 4 fake CPU devices (XLA_FLAGS), got {devices}"
  # The parent compares with its own 1-device run (chunking is covered there), so one program per sampler here.
  four = compute(parallel.make_mesh())
  assert np.ptp(four["distributional/neg_ce"]) > 0 and np.abs(four["tmc"]).max() > 0
  np.savez(out_path, **four)
  print(f"ok: {len(four)} arrays written to {out_path}")


if __name__ == "__main__":
  main(sys.argv[1])
