"""Greedy selection throughput: one jit-compiled lax.scan vs a step-by-step Python loop over the same networks.

The original PyTorch GDFS/DIME code selects features in a Python loop: every step calls the selector network,
masks the selected features, takes the argmax, updates the mask and calls the predictor, each a separate
dispatch. The peer here is that structure with the very same (jit-compiled) networks, so the ratio measures
what compiling the whole rollout into one ``lax.scan`` saves. Both must select the same features.

Also reported: training-step throughput of GDFS and DIME (steps/s and selections/s) through the shared loop.

Run:
  python -m tools.bench.dfs                        # digits, 64 pixels, T = 20, batches of 1, 32 and 360
  python -m tools.bench.dfs --steps=10 --hidden=64,64
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from tools.bench.timing import median_time
from xattr.data import embedded
from xattr.selection import dime, gdfs, predictor, rollout

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 20, "Selections per rollout (T).")
flags.DEFINE_list("batches", ["1", "32", "360"], "Rollout batch sizes.")
flags.DEFINE_list("hidden", ["128", "128"], "Hidden sizes of the predictor and the policy.")
flags.DEFINE_integer("repeats", 5, "Timed repeats (median reported).")
flags.DEFINE_integer("train_steps", 100, "Timed training steps per method.")
flags.DEFINE_bool("train", True, "Also time GDFS and DIME training steps.")


def python_loop(predict_j, score_j, params, x, num_players: int, num_steps: int):
  """The original code's structure: one dispatch per network call and per mask operation, every step."""
  mask = jnp.zeros((x.shape[0], num_players), bool)
  order = []
  for _ in range(num_steps):
    logits = predict_j(params, x, mask)
    scores = score_j(params, x, mask, logits)
    choice = jnp.argmax(jnp.where(mask, -jnp.inf, scores), axis=-1)
    mask = mask | jax.nn.one_hot(choice, mask.shape[-1], dtype=bool)
    order.append(choice)
  return jnp.stack(order, 1), predict_j(params, x, mask)


def main(argv):
  del argv
  ds = embedded.load("digits", seed=0)
  d, t = ds.num_features, FLAGS.steps
  hidden = tuple(int(h) for h in FLAGS.hidden)
  pred = predictor.MaskedMLP(d, 10, hidden, rngs=nnx.Rngs(0))
  policy = predictor.MaskedMLP(d, d, hidden, rngs=nnx.Rngs(1))
  pf, sf = predictor.masked_fn(pred), predictor.masked_fn(policy)
  predict, score = gdfs.predict_fn(pf.apply), gdfs.score_fn(sf.apply)
  params = {"predictor": pf.params, "policy": sf.params}
  predict_j, score_j = jax.jit(predict), jax.jit(score)
  print(f"device: {jax.devices()[0].device_kind}, digits {d} pixels, hidden {hidden}, T = {t}")
  for batch in (int(b) for b in FLAGS.batches):
    x = jnp.asarray(np.resize(ds.x_test, (batch, d)))
    scan_s = median_time(lambda: rollout.greedy(predict, score, params, x, num_players=d, num_steps=t).order,
                          FLAGS.repeats)
    loop_s = median_time(lambda: python_loop(predict_j, score_j, params, x, d, t)[0], FLAGS.repeats)
    scan_order = np.asarray(rollout.greedy(predict, score, params, x, num_players=d, num_steps=t).order)
    np.testing.assert_array_equal(scan_order, np.asarray(python_loop(predict_j, score_j, params, x, d, t)[0]))
    rate = lambda s: batch * t / s
    print(f"batch {batch:4d}: jit scan {scan_s * 1e3:8.2f} ms ({rate(scan_s):,.0f} sample-steps/s), python loop "
          f"{loop_s * 1e3:8.2f} ms ({rate(loop_s):,.0f} sample-steps/s)  speedup_vs_python_loop="
          f"{loop_s / scan_s:.1f}x")

  if FLAGS.train:
    data = {"x": ds.x_train, "y": ds.y_train}
    n = FLAGS.train_steps
    for name in ("gdfs", "dime"):
      def once(steps, name=name):
        p = predictor.MaskedMLP(d, 10, hidden, rngs=nnx.Rngs(0))
        s = predictor.MaskedMLP(d, d, hidden, rngs=nnx.Rngs(1))
        t0 = time.perf_counter()
        if name == "gdfs":
          gdfs.train(jax.random.key(0), p, s, data, data, num_steps=t, steps_per_stage=steps, batch_size=128,
                     temperatures=(1.0,), progress=False)
        else:
          dime.train(jax.random.key(0), p, s, data, data, num_steps=t, steps_per_block=steps, batch_size=128,
                     max_blocks=1, progress=False)
        return time.perf_counter() - t0
      overhead = once(1)                          # compilation, validation rollout
      per_step = (once(n + 1) - overhead) / n
      print(f"{name} training: {1 / per_step:,.1f} steps/s, {128 * t / per_step:,.0f} selections/s "
            f"(batch 128, K = {t}; compile + validation {overhead:.1f} s)")


if __name__ == "__main__":
  app.run(main)
