"""Checks, inside a process with 4 fake CPU devices, that batched explanations do not depend on the device count.

Run by ``tests/test_parallel.py::test_four_devices_match_one`` as

  XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu python tests/multidevice_check.py OUT.npz

It explains a batch of 10 inputs (not a multiple of 4, so padding is exercised) with several estimators on a
4-device mesh (at once and in chunks) and on a 1-device mesh, asserts they agree, and writes the 4-device
results to OUT.npz for the parent process to compare with its own 1-device run. ``CASES`` and ``explain_all``
are imported by the parent so both processes explain exactly the same thing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from xattr import banzhaf, games, parallel, shapley
from tests.four_devices import assert_arrays_same

jax.config.update("jax_default_matmul_precision", "highest")     # as tests/conftest.py does for the parent

D, NUM_INPUTS, NUM_BACKGROUND, HIDDEN, OUTPUTS = 8, 10, 16, 16, 2
KEY = jax.random.key(42)


def _data() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  params = dict(w1=rng.normal(size=(D, HIDDEN)) * 3 / np.sqrt(D), b1=rng.normal(size=HIDDEN) * 0.1,
                w2=rng.normal(size=(HIDDEN, OUTPUTS)) / np.sqrt(HIDDEN), b2=rng.normal(size=OUTPUTS) * 0.1)
  params = {k: v.astype(np.float32) for k, v in params.items()}
  inputs = rng.normal(size=(NUM_INPUTS, D)).astype(np.float32)
  background = rng.normal(size=(NUM_BACKGROUND, D)).astype(np.float32)
  return params, inputs, background


PARAMS, INPUTS, BACKGROUND = _data()


def model(x: jax.Array) -> jax.Array:
  """A fixed 2-layer tanh MLP: float[b, 8] -> float[b, 2].

  The first layer's weights are large enough to saturate tanh: a near-linear model would make paired
  KernelSHAP almost exact, so every input would converge at the first check and the loop lengths would not vary.
  """
  h = jnp.tanh(x @ PARAMS["w1"] + PARAMS["b1"])
  return h @ PARAMS["w2"] + PARAMS["b2"]


def _game(x: jax.Array) -> games.Game:
  return games.marginal(model, x, BACKGROUND)


CASES: dict[str, Callable] = {
    # 256 coalitions on 8 players: KernelSHAP enumerates every size, so this one is exact (std 0).
    "kernel_fixed": lambda x, k: shapley.kernel_shap(_game(x), D, k, num_samples=256, batch_size=64),
    # The same budget, all sampled: the per-example keys matter.
    "kernel_sampled": lambda x, k: shapley.kernel_shap(_game(x), D, k, num_samples=256, batch_size=64,
                                                       enumerate_sizes=0),
    # A tight threshold, so inputs stop after different numbers of batches (one hits max_samples): the
    # vmapped while_loop must give each input its own stopping point on any device count.
    "kernel_converge": lambda x, k: shapley.kernel_shap(_game(x), D, k, num_samples=None, batch_size=64,
                                                        threshold=0.005, max_samples=4096,
                                                        enumerate_sizes=1),
    # One random background row per sampled pair: the per-example keys also draw the rows.
    "kernel_stochastic": lambda x, k: shapley.kernel_shap(games.stochastic_marginal(model, x, BACKGROUND), D, k,
                                                          num_samples=256, batch_size=64, enumerate_sizes=1),
    # Third-order Walsh regression: an eigendecomposition per input, batched across the inputs of a device.
    "odd_kernel_shap": lambda x, k: shapley.odd_kernel_shap(_game(x), D, k, num_samples=128, batch_size=64),
    "kernel_banzhaf": lambda x, k: banzhaf.kernel_banzhaf(_game(x), D, k, num_samples=128, batch_size=64),
    "permutation": lambda x, k: shapley.permutation(_game(x), D, k, num_permutations=32, batch_size=64),
    "msr": lambda x, k: banzhaf.msr(_game(x), D, k, num_samples=256, batch_size=64),
}


def explain_all(mesh: jax.sharding.Mesh, chunk_size: int | None = None,
                cases: tuple[str, ...] = tuple(CASES)) -> dict[str, np.ndarray]:
  """The Estimate fields of ``cases`` as numpy arrays, keyed 'case/field'."""
  out = {}
  for name in cases:
    fn = CASES[name]
    est = parallel.explain_batch(fn, INPUTS, KEY, mesh=mesh, chunk_size=chunk_size, progress=False)
    for field, value in est._asdict().items():
      out[f"{name}/{field}"] = parallel.to_host(value)
  return out


# The odd Walsh fits (heredity scales from a solve, kernels of fifth-order power sums, an n x n eigh) carry float32
# round-off that differs with the XLA layout by up to ~6e-6; a different ridge or prior choice would differ by far
# more than these tolerances.
WALSH = ("odd_kernel_shap/", "kernel_banzhaf/")


def assert_same(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], label: str) -> None:
  """Floats within rtol 1e-5 / atol 1e-6 (the Walsh fits: rtol 1e-4 / atol 2e-5); integers and bools equal."""
  split = lambda d, walsh: {k: v for k, v in d.items() if k.startswith(WALSH) == walsh}
  assert_arrays_same(split(actual, False), split(expected, False), label, leading=NUM_INPUTS)
  assert_arrays_same(split(actual, True), split(expected, True), label, leading=NUM_INPUTS, rtol=1e-4, atol=2e-5)


def _expect_error(fn: Callable[[], object], *fragments: str) -> None:
  try:
    fn()
  except ValueError as e:
    assert all(f in str(e) for f in fragments), (fragments, str(e))
  else:
    raise AssertionError(f"expected a ValueError mentioning {fragments}")


def main(out_path: str) -> None:
  devices = jax.devices()
  assert len(devices) == 4, f"expected 4 fake CPU devices (XLA_FLAGS), got {devices}"

  mesh4 = parallel.make_mesh()
  mesh1 = parallel.make_mesh(devices=devices[:1])
  assert dict(mesh4.shape) == {"data": 4} and dict(mesh1.shape) == {"data": 1}

  # Padding and placement: 10 rows -> 12, three per device, the last two copies of row 9.
  sharded, n = parallel.shard_batch(INPUTS, mesh4)
  assert n == NUM_INPUTS and sharded.shape == (12, D), sharded.shape
  shards = sorted(sharded.addressable_shards, key=lambda s: s.index[0].start)
  assert [s.data.shape for s in shards] == [(3, D)] * 4
  assert len({s.device for s in shards}) == 4
  np.testing.assert_array_equal(np.asarray(shards[-1].data)[1:], INPUTS[[-1, -1]])

  # A single process's local rows are the whole global batch, split over the 4 devices.
  global_batch = parallel.host_local_to_global(INPUTS[:8], mesh4)
  assert global_batch.sharding == parallel.data_sharding(mesh4)
  assert [s.data.shape for s in global_batch.addressable_shards] == [(2, D)] * 4
  np.testing.assert_array_equal(np.asarray(global_batch), INPUTS[:8])

  _expect_error(lambda: parallel.make_mesh(5), "num_devices=5", "4 available")
  _expect_error(lambda: parallel.host_local_to_global(INPUTS, mesh4), "divisible by this process's 4", "got 10")
  _expect_error(lambda: parallel.explain_batch(CASES["msr"], INPUTS, KEY, mesh=mesh4, chunk_size=6),
                "chunk_size must be a multiple", "size 4, got 6")

  four = explain_all(mesh4)
  # Chunks of 4 on 4 devices: 3 sequential steps, the last one padded from 2 rows (two cases, to save time).
  chunked_cases = ("kernel_converge", "msr")
  assert_same(explain_all(mesh4, chunk_size=4, cases=chunked_cases),
              {k: v for k, v in four.items() if k.split("/")[0] in chunked_cases}, "4 devices, chunk_size=4")
  assert_same(explain_all(mesh1), four, "1 device vs 4 devices")
  np.savez(out_path, **four)
  print(f"ok: {len(four)} arrays written to {out_path}")


if __name__ == "__main__":
  main(sys.argv[1])
