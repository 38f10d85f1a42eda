"""Checks, inside a process with 4 fake CPU devices, that victim training on shortcut data does not depend on the
device count.

Run by ``tests/test_shortcuts_driver.py`` as

  XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
      python tests/multidevice_shortcuts_check.py OUT.npz

It builds a one-pixel shortcut, applies it, and trains a small CNN victim with the augmentation defence (its
random crops and noise drawn from the model's ``nnx.Rngs``) through ``training.train`` data-parallel over the 4
devices; and writes the final parameters and test logits to OUT.npz
for the parent to compare with its own 1-device run. :func:`compute` is imported by the parent so both processes
compute exactly the same thing.
"""

from __future__ import annotations

import sys

import jax
import ml_collections
import numpy as np
from flax import nnx

from xattr import parallel, shortcuts
from xattr.shortcuts import victims

jax.config.update("jax_default_matmul_precision", "highest")     # as tests/conftest.py does for the parent

# A ConfigDict, not a dict subclass with __getattr__: doctest collection probes attributes such as __wrapped__.
SECTION = ml_collections.ConfigDict(dict(num_steps=12, batch_size=16, learning_rate=3e-3))
DEFENCE = shortcuts.Defence("augment", crop_padding=2, noise_std=0.05)


def _data():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(40, 16, 16, 1)).astype(np.float32)
  y = rng.integers(0, 4, 40)
  sc = shortcuts.patches(jax.random.key(0), 4, (16, 16, 1), size=1)
  return shortcuts.apply(x, y, sc), y


def compute(mesh: jax.sharding.Mesh) -> dict[str, np.ndarray]:
  """Final parameters (flattened leaves) and test logits of the victim trained on ``mesh``."""
  x, y = _data()
  model = victims.build("cnn", (16, 16, 1), 4, seed=0, cnn_channels=(4, 8), cnn_hidden=16)
  victims.train(model, x, y, section=SECTION, defence=DEFENCE, seed=3, mesh=mesh)
  leaves = jax.tree.leaves(nnx.state(model.net))
  out = {f"param_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
  out["logits"] = victims.predict(model, x[:8], batch_size=8)
  return out


def main(out_path: str) -> None:
  devices = jax.devices()
  assert len(devices) == 4, f"expected 4 fake CPU devices (XLA_FLAGS), got {devices}"
  mesh4 = parallel.make_mesh()
  assert parallel.axis_size(mesh4, "data") == 4
  four = compute(mesh4)
  # (The parent compares with its own 1-device mesh.)
  assert all(np.isfinite(v).all() for v in four.values())
  np.savez(out_path, **four)
  print(f"ok: {len(four)} arrays written to {out_path}")


if __name__ == "__main__":
  main(sys.argv[1])
