"""Checks, inside a process with 4 fake CPU devices, that noisy attribution labels do not depend on the device count.

Run by ``tests/test_noisy_labels.py::test_labels_four_devices_match_one`` as

  XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
      python tests/multidevice_amortize_check.py OUT.npz

It labels 10 inputs (not a multiple of 4, so padding is exercised) with the Shapley noisy-label methods
(KernelSHAP and permutation sampling: the sharding path is the same for every method, and each extra method costs
a compilation in both processes) on a 4-device mesh, in chunks of 4, and writes the labels to OUT.npz for the
parent to compare with its own 1-device run. ``compute`` is imported by the parent so both processes compute the
same thing.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from xattr import games, noisy_labels
from tests.four_devices import assert_arrays_same

jax.config.update("jax_default_matmul_precision", "highest")     # as tests/conftest.py does for the parent

D, NUM_INPUTS, BUDGET = 6, 10, 48
METHODS = ("kernel_shap", "permutation")
KEY = jax.random.key(5)


def _data() -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  w = (rng.normal(size=(D, 3)) * 2).astype(np.float32)
  return w, rng.normal(size=(NUM_INPUTS, D)).astype(np.float32)


W, INPUTS = _data()


def _game_of_x(x: jax.Array) -> games.Game:
  """Class probabilities of a softmax-linear model, held-out features at 0: a non-additive game."""
  return games.baseline(lambda b: jax.nn.softmax(jnp.tanh(b) @ W, axis=-1), x, jnp.zeros(D))


def labeler(method: str):
  return noisy_labels.labeler(_game_of_x, method, D, BUDGET, batch_size=32)


def compute(mesh: jax.sharding.Mesh, chunk_size: int = 4) -> dict[str, np.ndarray]:
  out = {}
  for method in METHODS:
    label = labeler(method)
    res = noisy_labels.generate(label, INPUTS, KEY, mesh=mesh, chunk_size=chunk_size, progress=False)
    out.update({f"{method}/{k}": v for k, v in res.items()})
  return out


def assert_same(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], label: str) -> None:
  """Floats within 1e-5 (relative) / 1e-5 (absolute: LIME's solve differs by ~1e-6 between the layouts, labels
  themselves vary by ~1e-2 between keys); integers exactly equal."""
  assert_arrays_same(actual, expected, label, atol=1e-5)


def main(out_path: str) -> None:
  from xattr import parallel

  devices = jax.devices()
  assert len(devices) == 4, f"expected 4 fake CPU devices (XLA_FLAGS), got {devices}"
  four = compute(parallel.make_mesh())
  assert all(np.ptp(four[f"{m}/values"]) > 0 for m in METHODS)
  np.savez(out_path, **four)
  print(f"ok: {len(four)} arrays written to {out_path}")


if __name__ == "__main__":
  main(sys.argv[1])
