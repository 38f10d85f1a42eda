"""Checks, inside a process with 4 fake CPU devices, that the sharded greedy rollout does not depend on device count.

Run by ``tests/test_selection_multidevice.py`` as

  XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
      python tests/multidevice_selection_check.py OUT.npz

It runs GDFS-style (policy logits) and DIME-style (CMI per unit cost, with costs, per-sample cost budgets,
penalties and confidence thresholds) rollouts of fixed networks over a batch of 10 inputs (not a multiple of 4,
so padding is exercised) on a 4-device mesh, asserts they agree with the unsharded kernel, and writes the
4-device results to OUT.npz for the parent process to compare with its own 1-device run. ``rollouts`` is
imported by the parent so both processes compute exactly the same thing.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xattr import parallel
from xattr.selection import dime, gdfs, predictor, rollout
from tests.four_devices import assert_arrays_same

jax.config.update("jax_default_matmul_precision", "highest")     # as tests/conftest.py does for the parent

D, CLASSES, NUM_INPUTS, STEPS = 12, 3, 10, 6


def _setup():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(NUM_INPUTS, D)).astype(np.float32)
  costs = rng.uniform(0.5, 2.0, D).astype(np.float32)
  per_sample = dict(budget=rng.integers(1, STEPS + 1, NUM_INPUTS).astype(np.int32),
                    cost_budget=rng.uniform(1.0, 6.0, NUM_INPUTS).astype(np.float32),
                    penalty=rng.uniform(0.0, 0.3, NUM_INPUTS).astype(np.float32),
                    confidence=rng.uniform(0.6, 0.99, NUM_INPUTS).astype(np.float32))
  # Fixed networks: the same initialization in every process.
  pred = predictor.masked_fn(predictor.MaskedMLP(D, CLASSES, (16,), rngs=nnx.Rngs(1)))
  sel = predictor.masked_fn(predictor.MaskedMLP(D, D, (16,), rngs=nnx.Rngs(2)))
  return x, costs, per_sample, pred, sel


X, COSTS, PER_SAMPLE, PRED, SEL = _setup()


def rollouts(mesh: jax.sharding.Mesh | None) -> dict[str, np.ndarray]:
  """Both rollouts' fields keyed 'case/field'; mesh None runs the unsharded kernel."""
  cases = {
      "gdfs": (gdfs.predict_fn(PRED.apply), gdfs.score_fn(SEL.apply), {"predictor": PRED.params, "policy": SEL.params},
               dict(budget=PER_SAMPLE["budget"])),
      "dime": (dime.predict_fn(PRED.apply), dime.score_fn(SEL.apply, "bounded"),
               {"predictor": PRED.params, "value": SEL.params, "costs": jnp.asarray(COSTS)},
               dict(costs=jnp.asarray(COSTS), cost_budget=PER_SAMPLE["cost_budget"], penalty=PER_SAMPLE["penalty"],
                    confidence=PER_SAMPLE["confidence"])),
  }
  out = {}
  for name, (predict, score, params, rules) in cases.items():
    if mesh is None:
      result = rollout.greedy(predict, score, params, X, num_players=D, num_steps=STEPS, **rules)
    else:
      result = rollout.greedy_sharded(predict, score, params, X, num_players=D, num_steps=STEPS, mesh=mesh, **rules)
    for field, value in result._asdict().items():
      out[f"{name}/{field}"] = parallel.to_host(value)
  return out


def assert_same(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], label: str) -> None:
  """Selections exactly equal; logits and costs within float32 round-off."""
  assert_arrays_same(actual, expected, label, leading=NUM_INPUTS)


def main(out_path: str) -> None:
  devices = jax.devices()
  assert len(devices) == 4, f"expected 4 fake CPU devices (XLA_FLAGS), got {devices}"
  mesh4 = parallel.make_mesh()
  four = rollouts(mesh4)
  # The work really is split: the padded batch of 12 rows lies on 4 devices.
  sharded = rollout.greedy_sharded(gdfs.predict_fn(PRED.apply), gdfs.score_fn(SEL.apply),
                                   {"predictor": PRED.params, "policy": SEL.params}, X, num_players=D,
                                   num_steps=STEPS, mesh=mesh4)
  assert len(sharded.order.sharding.device_set) == 4, sharded.order.sharding
  # (The parent compares with its own 1-device mesh.)
  assert_same(rollouts(None), four, "unsharded kernel vs 4 devices")
  # The stopping rules did bind (otherwise the comparison would be weaker than it looks).
  assert np.ptp(four["gdfs/num_selected"]) > 0 and np.ptp(four["dime/num_selected"]) > 0
  np.savez(out_path, **four)
  print(f"ok: {len(four)} arrays written to {out_path}")


if __name__ == "__main__":
  main(sys.argv[1])
