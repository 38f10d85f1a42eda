"""KernelSHAP throughput and accuracy: xattr vs shap.KernelExplainer, same model, same data, one process.

Both explain the positive-class probability of the same Flax MLP (trained here on scikit-learn's breast cancer
data) with marginal removal over the same 64 background rows, 2048 paired coalitions per input and no L1
feature selection. Errors are measured against a high-sample reference (65,536 coalitions per input).

Equal error: a budget sweep of xattr's KernelSHAP on the exact marginal game and on the stochastic marginal game
(``rows`` random background rows per sampled pair, 1 and 16 by default, instead of all 64), each point timed;
the time each variant needs for shap's mean absolute error at ``--samples`` (log-log interpolated between its
sweep points) gives ``speedup_vs_shap_at_equal_error`` = shap's wall time / the fastest variant's time.

Run (needs the `bench` extra: pip install -e '.[bench]'):
  python -m tools.bench.kernel_shap                      # 100 inputs, prints speedup_vs_shap=...x
  python -m tools.bench.kernel_shap --hidden=16 --inputs=50
  python -m tools.bench.kernel_shap --sweep=                # matched samples only, no equal-error sweep
"""

from __future__ import annotations

import logging
import time
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax import nnx

from tools.bench import timing
from xattr import games, shapley
from xattr.amortization import costs
from xattr.data import embedded
from xattr.models import MLP, model_fn

FLAGS = flags.FLAGS
flags.DEFINE_integer("inputs", 100, "Test inputs to explain.")
flags.DEFINE_integer("samples", 2048, "Coalitions per input (paired) for both tools.")
flags.DEFINE_integer("background", 64, "Background rows for marginal removal.")
flags.DEFINE_integer("batch_size", 1024, "xattr coalitions per game call.")
flags.DEFINE_list("hidden", ["64", "64"], "MLP hidden sizes (the demo model's by default).")
flags.DEFINE_integer("train_steps", 500, "Full-batch Adam steps to train the model.")
flags.DEFINE_integer("reference_samples", 2 ** 16, "Coalitions per input for the reference values.")
flags.DEFINE_integer("repeats", 3, "Timed repeats of the xattr run (median reported).")
flags.DEFINE_bool("shap", True, "Also run shap.KernelExplainer (needs the `bench` extra).")
flags.DEFINE_list("sweep", ["256", "512", "1024", "2048", "4096", "8192", "16384"],
                  "Coalition budgets of the equal-error sweep (empty: no sweep).")
flags.DEFINE_list("stochastic_rows", ["1", "16"], "Background rows per coalition of the stochastic games swept.")
flags.DEFINE_bool("odd", True, "Also sweep shapley.odd_kernel_shap (third-order interactions) on the exact game.")
flags.DEFINE_bool("fold_vmap", True, "Fold the vmapped input axis into the model's rows (fast batched MLP on CPU).")


def train(data: embedded.Dataset, hidden: tuple[int, ...], steps: int) -> MLP:
  """Full-batch Adam on cross-entropy; small and deterministic."""
  net = MLP(data.x_train.shape[1], hidden, len(data.class_names), rngs=nnx.Rngs(0))
  opt = nnx.Optimizer(net, optax.adam(1e-2), wrt=nnx.Param)
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

  @nnx.jit
  def step(net, opt):
    loss_fn = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(net)
    opt.update(net, grads)
    return loss

  for _ in range(steps):
    step(net, opt)
  return net


def explain_all(f, x: jax.Array, background: jax.Array, num_samples: int, batch_size: int, key: jax.Array,
                game=games.marginal, estimator=shapley.kernel_shap):
  """jit(vmap) of ``estimator`` (KernelSHAP by default) over inputs, one key per input (fold_in of its index)."""
  d = x.shape[1]

  def one(xi, ki):
    return estimator(game(f, xi, background), d, ki, num_samples=num_samples, batch_size=batch_size).values

  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(x.shape[0]))
  return jax.jit(jax.vmap(one)), keys


def timed(fn, *args) -> tuple[np.ndarray, float]:
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return np.asarray(out), time.perf_counter() - start


def errors(values: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
  """Mean absolute error, and mean relative L2 error per input."""
  mae = float(np.abs(values - reference).mean())
  rel = float(np.mean(np.linalg.norm(values - reference, axis=1) / np.linalg.norm(reference, axis=1)))
  return mae, rel


def sweep(f, x: jax.Array, background: jax.Array, reference: np.ndarray, budgets: list[int],
          batch_size: int) -> list[tuple[str, int, float, float]]:
  """(game, budget, seconds, mae) per point: each compiled once, then timed once (its second call)."""
  points = []
  variants = [("marginal", games.marginal, shapley.kernel_shap)] + [
      (f"stochastic_marginal(rows={r})", partial(games.stochastic_marginal, rows=int(r)), shapley.kernel_shap)
      for r in FLAGS.stochastic_rows]
  if FLAGS.odd:
    variants.append(("odd_kernel_shap, marginal", games.marginal, shapley.odd_kernel_shap))
  for name, game, estimator in variants:
    for budget in budgets:
      print(f"  sweep {name:>30} samples={budget:>6}: compiling", flush=True)
      run, keys = explain_all(f, x, background, budget, min(batch_size, budget), jax.random.key(1), game, estimator)
      timed(run, x, keys)
      values, seconds = timed(run, x, keys)
      mae = errors(values, reference)[0]
      points.append((name, budget, seconds, mae))
      print(f"  sweep {name:>30} samples={budget:>6}: {seconds:7.3f} s  mae={mae:.2e}")
  return points


def equal_error(points: list[tuple[str, int, float, float]], target: float) -> tuple[str, float, str] | None:
  """The variant that reaches mae ``target`` fastest: (name, seconds, relation), the seconds interpolated
  log-log on that variant's (seconds, mae) curve ('=': interpolated, '<': its cheapest point already does);
  None if no variant reaches it within the sweep."""
  best = None
  for name in dict.fromkeys(p[0] for p in points):
    curve = [(s, mae) for n, _, s, mae in points if n == name]
    seconds, relation = costs.cost_to_reach(np.array([c[0] for c in curve]), np.array([c[1] for c in curve]),
                                            target)
    if relation != ">" and (best is None or seconds < best[1]):
      best = (name, seconds, relation)
  return best


def main(argv):
  del argv
  data = embedded.load("breast_cancer", seed=0)
  hidden = tuple(int(h) for h in FLAGS.hidden)
  net = train(data, hidden, FLAGS.train_steps)
  accuracy = float((np.asarray(net(jnp.asarray(data.x_test))).argmax(1) == data.y_test).mean())
  # The positive-class probability, as one row-wise function: the same function serves both tools.
  prob = model_fn(net, postprocess=lambda y: jax.nn.softmax(y)[..., 1], fold_vmap=FLAGS.fold_vmap)
  f = prob
  rng = np.random.default_rng(0)
  background = data.x_train[rng.choice(len(data.x_train), FLAGS.background, replace=False)]
  n = min(FLAGS.inputs, len(data.x_test))
  x = data.x_test[:n]
  print(f"model: MLP{hidden} test accuracy {accuracy:.3f}; {n} inputs x {FLAGS.samples} coalitions x "
        f"{FLAGS.background} background rows; {jax.device_count()} {jax.default_backend()} device(s)")

  run, keys = explain_all(f, jnp.asarray(x), jnp.asarray(background), FLAGS.samples, FLAGS.batch_size,
                          jax.random.key(0))
  _, compile_s = timed(run, jnp.asarray(x), keys)
  times = []
  for _ in range(FLAGS.repeats):
    ours, seconds = timed(run, jnp.asarray(x), keys)
    times.append(seconds)
  xattr_s = float(np.median(times))
  print(f"xattr: {xattr_s:.3f} s ({1e3 * xattr_s / n:.2f} ms/input; first call incl. compile {compile_s:.2f} s)")
  sizes = (data.x_train.shape[1], *hidden, 2)
  row_flops = 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))         # one model row (matmuls only)
  print(timing.roofline("xattr kernel_shap (model matmuls)", n * FLAGS.samples * FLAGS.background * row_flops,
                        xattr_s, timing.gemm_flops_per_s()))

  ref_run, ref_keys = explain_all(f, jnp.asarray(x), jnp.asarray(background), FLAGS.reference_samples, 4096,
                                  jax.random.key(12345))
  reference, ref_s = timed(ref_run, jnp.asarray(x), ref_keys)
  mae, rel = errors(ours, reference)
  print(f"reference: {FLAGS.reference_samples} coalitions/input ({ref_s:.1f} s)")
  print(f"xattr error vs reference: mae={mae:.2e} rel_l2={rel:.3f}")

  shap_s = shap_mae = None
  if FLAGS.shap:
    shap_s, shap_mae = run_shap(f, background, x, reference)
  if shap_mae is not None:                    # without shap installed the sweep still runs, with no target
    print(f"error_ratio_xattr_over_shap={mae / shap_mae:.2f}")
    print(f"speedup_vs_shap={shap_s / xattr_s:.1f}x")
  budgets = [int(b) for b in FLAGS.sweep]
  if not budgets:
    return
  what = f"target: shap's mae {shap_mae:.2e} at nsamples={FLAGS.samples}" if shap_mae else "no shap: no target"
  print(f"equal-error sweep ({what}):")
  points = sweep(f, jnp.asarray(x), jnp.asarray(background), reference, budgets, FLAGS.batch_size)
  if shap_mae is None:
    return
  best = equal_error(points, shap_mae)
  if best is None:
    print(f"speedup_vs_shap_at_equal_error=not reached (no sweep point reaches mae {shap_mae:.2e}; "
          f"extend --sweep)")
    return
  name, seconds, relation = best
  print(f"xattr at equal error: {name} game, {seconds:.3f} s (log-log interpolated on its sweep; "
        f"{'<=' if relation == '<' else '~'})")
  print(f"speedup_vs_shap_at_equal_error={'>=' if relation == '<' else ''}{shap_s / seconds:.1f}x")


def run_shap(f, background: np.ndarray, x: np.ndarray, reference: np.ndarray) -> tuple[float | None, float | None]:
  """shap.KernelExplainer on the same function, background and inputs: (seconds, mae), or Nones without shap."""
  try:
    import shap
  except ImportError:
    print("shap is not installed: pip install -e '.[bench]' to compare")
    return None, None
  # absl turns on INFO logging, and shap logs per input at that level: keep shap at its usual quiet default.
  logging.getLogger("shap").setLevel(logging.WARNING)
  f_jit = jax.jit(f)
  f_numpy = lambda a: np.asarray(f_jit(jnp.asarray(a, jnp.float32)))
  explainer = shap.KernelExplainer(f_numpy, background)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    theirs = np.asarray(explainer.shap_values(x, nsamples=FLAGS.samples, l1_reg=False, silent=True))
    shap_s = time.perf_counter() - start
  shap_mae, shap_rel = errors(theirs, reference)
  n = len(x)
  print(f"shap {shap.__version__}: {shap_s:.3f} s ({1e3 * shap_s / n:.2f} ms/input)")
  print(f"shap error vs reference: mae={shap_mae:.2e} rel_l2={shap_rel:.3f}")
  return shap_s, shap_mae

if __name__ == "__main__":
  app.run(main)
