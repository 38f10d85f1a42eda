"""Checks, inside a process with 4 fake CPU devices, that contrastive feature selection does not depend on the
device count.

Run by ``tests/test_cfs_multidevice.py`` as

  XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu python tests/multidevice_cfs_check.py OUT.npz

It runs :func:`xattr.cfs.select` (background autoencoder, then stochastic gates) on a small
linear-Gaussian problem with every batch split over a 4-device mesh, and writes the selections and gate scores to
OUT.npz for the parent process to compare with its own 1-device run. ``selections`` is imported by the parent so
both processes compute exactly the same thing.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

from xattr import cfs, parallel
from xattr.data import contrastive
from tests.four_devices import assert_arrays_same

jax.config.update("jax_default_matmul_precision", "highest")     # as tests/conftest.py does for the parent

DATA = contrastive.linear_gaussian(seed=0, num_target=512, num_background=512)
SETTINGS = dict(num_features=10, hidden_sizes=(32,), code_size=12, learning_rate=3e-3, batch_size=128,
                background_steps=150, selector_steps=250, penalty=0.05)


def selections(mesh: jax.sharding.Mesh) -> dict[str, np.ndarray]:
  """The selection's indices and gate scores, both phases trained data-parallel over ``mesh``."""
  sel = cfs.select(jax.random.key(0), DATA.target, DATA.background, mesh=mesh, **SETTINGS)
  return {"indices": sel.indices, "scores": sel.scores}


def assert_same(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], label: str) -> None:
  """Selections exactly equal; gate scores within float32 reduction-order round-off."""
  assert_arrays_same(actual, expected, label, rtol=1e-3, atol=1e-4)


def main(out_path: str) -> None:
  devices = jax.devices()
  assert len(devices) == 4, f"expected 4 fake CPU devices (XLA_FLAGS), got {devices}"
  mesh4 = parallel.make_mesh()
  assert dict(mesh4.shape)["data"] == 4, mesh4
  four = selections(mesh4)
  # The comparison means something: training moved the gates far apart (they start within ~0.01 of each other).
  assert np.ptp(four["scores"]) > 0.1
  np.savez(out_path, **four)
  print(f"ok: {len(four)} arrays written to {out_path}")


if __name__ == "__main__":
  main(sys.argv[1])
