"""Checks, inside a process with 4 fake CPU devices, that MaskEmbed training does not depend on the device count.

Run by ``tests/test_locality.py::test_maskembed_step_on_four_devices_matches_one`` as

  XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
    python tests/multidevice_locality_check.py OUT.npz

It trains a MaskEmbed student + decoder for a few steps with the study's loss (``maskembed.masked_model_loss``)
through ``training.train(mesh=...)`` (batch split over the mesh, parameters replicated), on 4 devices, and writes the
losses and parameters for the parent to compare with its own 1-device run (the parent computes it meanwhile, so
the check costs one extra run, not two).
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))   # the repository root (xattr, tests)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from xattr import locality, maskembed, parallel, training  # noqa: E402
from xattr.models import vit  # noqa: E402
from tests.four_devices import assert_arrays_same  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

CONFIG = vit.config("nano/8", image_size=16, num_channels=1, num_classes=3)
IMAGES = np.random.default_rng(0).random((16, 16, 16, 1)).astype(np.float32)


def train_few_steps(mesh: jax.sharding.Mesh) -> dict[str, np.ndarray]:
  model = locality.MaskEmbed(vit.ViT(CONFIG, rngs=nnx.Rngs(0)), scale=1.5, seed=3, rngs=nnx.Rngs(1))
  # SGD, not Adam: Adam would blow rounding noise in zero-gradient directions (the key bias) up to +-lr.
  tx = optax.MultiSteps(optax.sgd(0.1), every_k_schedule=2)
  result = training.train(model, maskembed.masked_model_loss, {"x": IMAGES}, optimizer=tx, num_steps=4,
                          batch_size=8, log_every=1, progress=False, trainable=locality.TRAINABLE, mesh=mesh)
  params = nnx.state(model, locality.TRAINABLE)
  out = {"losses": np.array([h["train_loss"] for h in result.history])}
  out.update({"/".join(map(str, path)): np.asarray(v) for path, v in nnx.to_flat_state(params)
              if "decoder" in str(path) or "blocks" in str(path)})
  return out


def assert_same(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], label: str) -> None:
  assert len(expected) > 10 and len(expected["losses"]) == 4, (label, len(expected))
  assert_arrays_same(actual, expected, label, rtol=2e-4, atol=2e-5)


def main(out_path: str) -> None:
  assert len(jax.devices()) == 4, f"expected 4 fake CPU devices (XLA_FLAGS), got {jax.devices()}"
  four = train_few_steps(parallel.make_mesh())         # the parent compares with its own 1-device run
  np.savez(out_path, **four)
  print(f"ok: {len(four)} arrays written to {out_path}")


if __name__ == "__main__":
  main(sys.argv[1])
