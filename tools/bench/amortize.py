"""Amortized explainers: training throughput and per-explanation latency vs per-example KernelSHAP, one process.

On breast cancer (30 features) with the amortization study's MLP and baseline-removal game of the class
probabilities, this measures
  * FastSHAP training throughput: (inputs x coalitions) per second through a full training step (game
    evaluations, explainer forward/backward, Adam), jitted, after compilation;
  * stochastic-amortization training throughput: inputs per second of regression onto precomputed labels;
  * per-explanation latency of the trained explainer (one forward pass + normalization) vs KernelSHAP with
    ``--samples`` coalitions per input (jit(vmap) over the same inputs), both after compilation.

Run:
  python -m tools.bench.amortize                      # prints speedup_vs_kernel_shap=...x
  python -m tools.bench.amortize --inputs=256 --samples=2048
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax import nnx

from tools.bench.timing import median_time
from xattr import amortize, masks, shapley, training
from xattr.amortization import tabular
from xattr.data import embedded

FLAGS = flags.FLAGS
flags.DEFINE_integer("inputs", 114, "Inputs explained for the latency comparison (the test split's size).")
flags.DEFINE_integer("samples", 512, "KernelSHAP coalitions per input (paired).")
flags.DEFINE_integer("fastshap_samples", 32, "FastSHAP coalitions per input and step.")
flags.DEFINE_integer("batch_size", 64, "Training batch (inputs per step).")
flags.DEFINE_integer("steps", 50, "Timed training steps.")
flags.DEFINE_integer("repeats", 5, "Timed repeats of each explanation run (median reported).")


def main(argv: list[str]) -> None:
  del argv
  ds = embedded.load("breast_cancer")
  d, k = ds.num_features, 2
  model = amortize.build_module({"kind": "mlp", "in_features": d, "hidden_sizes": [32], "out_features": k})
  game = {"removal": "baseline", "reference": np.zeros(d), "postprocess": "softmax"}
  value_fn = amortize.masked_value_fn(game, model)
  spec = {"kind": "mlp_explainer", "num_features": d, "hidden_sizes": [128, 128], "num_classes": k}
  explainer = amortize.build_module(spec)
  graphdef, params = nnx.split(explainer)
  opt = training.optimizer({"learning_rate": 1e-3})      # constant-rate Adam(W, no decay)
  x = jnp.asarray(ds.x_train[:FLAGS.batch_size])
  ones = jnp.ones(x.shape, bool)
  grand, null = value_fn(x, ones), value_fn(x[:1], ~ones[:1])[0]
  s = FLAGS.fastshap_samples

  def fastshap_loss(p, key):
    b = x.shape[0]
    z = jax.vmap(lambda kk: masks.shapley_kernel(kk, d, s))(jax.random.split(key, b))
    values = value_fn(jnp.repeat(x, s, axis=0), z.reshape(b * s, d)).reshape(b, s, k)
    return amortize.fastshap_loss(nnx.merge(graphdef, p)(x), z, values, null, grand)

  labels = jnp.asarray(np.random.default_rng(0).normal(size=(x.shape[0], d, k)), jnp.float32)

  def regression_loss(p, key):
    del key
    phi = amortize.efficient_normalize(nnx.merge(graphdef, p)(x), grand, null)
    return amortize.regression_loss(phi, labels)

  def throughput(loss):
    @jax.jit
    def steps(p, o, key):
      def body(carry, kk):
        p, o = carry
        g = jax.grad(loss)(p, kk)
        u, o = opt.update(g, o, p)
        return (optax.apply_updates(p, u), o), None
      (p, o), _ = jax.lax.scan(body, (p, o), jax.random.split(key, FLAGS.steps))
      return p
    seconds = median_time(lambda: steps(params, opt.init(params), jax.random.key(1)), 2)
    return FLAGS.steps * x.shape[0] / seconds

  fs_inputs = throughput(fastshap_loss)
  sa_inputs = throughput(regression_loss)
  print(f"FastSHAP training: {fs_inputs:,.0f} inputs/s x {s} coalitions = {fs_inputs * s:,.0f} inputs x masks/s "
        f"(batch {x.shape[0]}, d={d}, explainer 2x128)")
  print(f"stochastic amortization training (precomputed labels): {sa_inputs:,.0f} inputs/s")

  xs = jnp.asarray(np.resize(ds.x_test, (FLAGS.inputs, d)))
  explain = amortize.Explainer(explainer, num_features=d, num_classes=k, normalize=True, value_fn=value_fn)
  game_of_x = tabular.game_of_x(value_fn, d)
  ks = jax.jit(jax.vmap(lambda xi, kk: shapley.kernel_shap(game_of_x(xi), d, kk,
                                                          num_samples=FLAGS.samples, batch_size=512).values))
  keys = jax.random.split(jax.random.key(2), FLAGS.inputs)
  t_amortized = median_time(lambda: explain(xs), FLAGS.repeats) / FLAGS.inputs
  t_kernel = median_time(lambda: ks(xs, keys), FLAGS.repeats) / FLAGS.inputs
  print(f"per explanation: amortized explainer {t_amortized * 1e6:.1f} us, KernelSHAP ({FLAGS.samples} coalitions) "
        f"{t_kernel * 1e6:.1f} us ({FLAGS.inputs} inputs, after compilation)")
  print(f"speedup_vs_kernel_shap={t_kernel / t_amortized:.1f}x (latency per explanation); model evaluations per "
        f"explanation: 1 (grand, for the normalization) vs {FLAGS.samples + 2}")


if __name__ == "__main__":
  app.run(main)
