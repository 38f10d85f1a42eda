"""Checks, inside a process with 4 fake CPU devices, that the attribution job's store does not depend on the devices.

Run by ``tests/test_attribute_driver.py::test_four_devices_match_one`` as

  XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
      python tests/multidevice_attribute_check.py OUT.npz

It runs the smoke breast-cancer job (KernelSHAP, 12 examples in chunks of 4 rows: 1 row per device) over the 4
devices and writes the stored arrays; the parent compares them with its own 1-device run of the same job (one run
here instead of two keeps the test within its time budget). The MLP is restored from ``<OUT folder>/model`` when
the parent put one there (else trained here, from the same seed).
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs.attribute import breast_cancer  # noqa: E402
from experiments import attribute  # noqa: E402
from xattr import outputs, parallel  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def smoke_config(model_dir: str):
  config = breast_cancer.get_config("smoke")
  config.model.workdir = model_dir
  return config


def run_on(mesh: jax.sharding.Mesh, workdir: str, model_dir: str) -> dict[str, np.ndarray]:
  """The job's stored arrays (and fingerprint) after a run on ``mesh``."""
  out = attribute.run(smoke_config(model_dir), workdir, mesh=mesh)
  reader = outputs.open(out["paths"]["store"])
  assert reader.complete
  arrays = {name: np.asarray(reader[name]) for name in reader.keys()}
  arrays["fingerprint"] = np.array(reader.fingerprint)
  return arrays


def main(out_path: str) -> None:
  assert jax.device_count() == 4, f"expected 4 fake devices, got {jax.device_count()}"
  model_dir = os.path.join(os.path.dirname(out_path), "model")
  with tempfile.TemporaryDirectory() as tmp:
    four = run_on(parallel.make_mesh(4), os.path.join(tmp, "four"), model_dir)
  assert four["values"].shape == (12, 30, 2) and np.isfinite(four["values"]).all()
  np.savez(out_path, **four)


if __name__ == "__main__":
  main(sys.argv[1])
