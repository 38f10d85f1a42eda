"""``training.train`` as one process of several (started by tests/multiprocess.py; see tests/test_multiprocess.py).

  python tests/multiprocess_train_check.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR WORKDIR [crash]

Every process passes the same training data; :func:`xattr.training.train` splits each batch over the global
4-device mesh (each process fills its own devices' rows) and checkpoints to the shared ``WORKDIR``. With
``crash`` the process stops at step 7 of 12 (checkpoints at 3 and 6 written, step 7 lost) and then kills itself
with SIGKILL, as a preempted host would. Writes the final parameters to ``OUT_DIR/process_<id>.npz``.
The test imports :func:`problem`, :func:`train` and :func:`flat_params` to run the same training in one process.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tests import multiprocess
from xattr import training

NUM_STEPS, BATCH, CRASH_AT = 12, 8, 7


def problem() -> tuple[nnx.Module, dict[str, np.ndarray]]:
  """The model and data every process (and the 1-process reference) builds identically."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 5)).astype(np.float32)
  y = (x @ rng.normal(size=(5, 1)) + 0.1 * rng.normal(size=(40, 1))).astype(np.float32)
  model = nnx.Sequential(nnx.Linear(5, 16, rngs=nnx.Rngs(0)), nnx.tanh, nnx.Linear(16, 1, rngs=nnx.Rngs(1)))
  return model, {"x": x, "y": y}


def _loss(model: nnx.Module, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
  return jnp.mean((model(batch["x"]) - batch["y"]) ** 2), {}


def train(workdir: str | None, **kwargs: Any) -> tuple[nnx.Module, training.TrainResult]:
  """The training run of this check (``kwargs`` e.g. ``mesh=None``, ``stop_at=``)."""
  model, data = problem()
  result = training.train(model, _loss, data, optimizer=optax.adam(1e-2), num_steps=NUM_STEPS, batch_size=BATCH,
                          seed=3, workdir=workdir, checkpoint_every=3, progress=False, **kwargs)
  return model, result


def flat_params(model: nnx.Module) -> dict[str, np.ndarray]:
  """The model's parameters as host arrays named by position (replicated, so every process holds them)."""
  return {f"param_{i}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(nnx.state(model, nnx.Param)))}


def main() -> None:
  process_id, num_processes, out_dir, rest = multiprocess.initialize()
  workdir, crash = rest[0], rest[1:] == ["crash"]
  assert jax.process_count() == num_processes and jax.device_count() == 4, (jax.process_count(),
                                                                            jax.device_count())
  model, result = train(workdir, stop_at=CRASH_AT if crash else None)
  if crash:
    os.kill(os.getpid(), signal.SIGKILL)
  resumed = -1 if result.resumed_from is None else result.resumed_from
  np.savez(out_dir / f"process_{process_id}.npz", resumed_from=np.array(resumed), **flat_params(model))
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
