"""Marginal contributions per second: xattr's vmapped logistic regressions vs scikit-learn fitted in a loop.

Both tools compute Delta = U(D u {z}) - U(D) for the same (z, D) pairs — class-stratified subsets D of breast
cancer's 455 training points with |D| ~ U[100, 400), z outside D — with the same utility (validation neg.
cross-entropy on the 114 held-out rows) of the same model (L2-regularised logistic regression, C = 1 / l2,
unpenalised intercept). xattr draws the subsets on the device and trains them at once with vmap (Newton steps
in lax.scan; ``xattr.valuation.samplers.distributional``, as the driver does); scikit-learn
fits ``LogisticRegression`` twice per pair in a Python loop, as data-valuation libraries do, once with its
defaults (lbfgs, tol 1e-4) and once with the exact Newton solver at a tight tolerance (the same optimum as
xattr). The agreement of the two tools' utilities and contributions is printed next to the speed ratios.

Run:
  python -m tools.bench.valuation                         # prints speedup_vs_sklearn=...x
  python -m tools.bench.valuation --samples=16384 --sklearn_samples=300
"""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from sklearn.linear_model import LogisticRegression as SkLogistic
from sklearn.metrics import log_loss

from tools.bench import timing
from xattr.data import embedded
from xattr.valuation import samplers, utility

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "breast_cancer", "Embedded classification dataset.")
flags.DEFINE_integer("samples", 8192, "(z, D) pairs for xattr.")
flags.DEFINE_integer("sklearn_samples", 240, "The first pairs, also run through scikit-learn (per solver).")
flags.DEFINE_integer("k_min", 100, "Smallest |D|.")
flags.DEFINE_integer("k_max", 400, "|D| < k_max.")
flags.DEFINE_float("l2", 1.0, "L2 penalty on the weights (scikit-learn's C = 1 / l2).")
flags.DEFINE_integer("chunk", 1024, "Pairs per jitted xattr call.")
flags.DEFINE_integer("repeats", 4, "Timed rounds, each xattr on every pair then scikit-learn on its share.")


def make_pairs(labels: np.ndarray, num: int, k_min: int, k_max: int, key: jax.Array):
  """The shared workload: points z and sizes |D|; D for pair i is drawn from fold_in(key, i)."""
  sizes = np.asarray(samplers.sample_sizes(jax.random.fold_in(key, 0), num, k_min, k_max))
  points = np.asarray(jax.random.randint(jax.random.fold_in(key, 1), (num,), 0, len(labels)))
  return points, sizes


def subset_masks(labels: np.ndarray, points, sizes, key: jax.Array) -> np.ndarray:
  """The subsets D that ``samplers.distributional`` draws on the device for these pairs, rebuilt on the host
  (same function, same per-pair keys) for scikit-learn."""
  c = int(labels.max()) + 1
  draw = jax.jit(jax.vmap(lambda i, z, s: samplers.class_balanced_subset(
      jax.random.fold_in(key, i), jnp.asarray(labels), c, exclude=z, size=s)))
  return np.asarray(draw(jnp.arange(len(points), dtype=jnp.uint32), jnp.asarray(points), jnp.asarray(sizes)))


def xattr_contributions(u, points, sizes, key, chunk):
  """Subsets drawn and models trained on the device, vmapped over each chunk of pairs."""
  return samplers.distributional(u, key, points, sizes, chunk_size=chunk, progress=False)


def sklearn_contributions(ds, points, masks, l2, **solver):
  """Delta and U(D) per pair with scikit-learn, fitted from scratch twice per pair (float64 data)."""
  x, y = ds.x_train.astype(np.float64), ds.y_train
  x_val, y_val = ds.x_test.astype(np.float64), ds.y_test
  labels = np.arange(int(y.max()) + 1)

  def utility_of(rows):
    model = SkLogistic(C=1.0 / l2, **solver).fit(x[rows], y[rows])
    return -log_loss(y_val, model.predict_proba(x_val), labels=labels)

  deltas, bases = [], []
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")                 # lbfgs at its defaults often stops at max_iter
    for z, m in zip(points, masks):
      base = utility_of(m)
      with_z = m.copy()
      with_z[z] = True
      deltas.append(utility_of(with_z) - base)
      bases.append(base)
  return np.array(deltas), np.array(bases)


def utility_flops(u) -> float | None:
  """XLA's FLOP count of one utility evaluation U(D) (one training), from a batch of 64 subsets."""
  value = jax.jit(jax.vmap(lambda m: utility.value(u, m)))
  flops = timing.compiled_flops(value, jnp.ones((64, u.num_points), jnp.float32))
  return flops / 64 if flops else None


def main(argv):
  del argv
  ds = embedded.load(FLAGS.dataset)
  u = utility.LogisticRegression.create(ds.x_train, ds.y_train, ds.x_test, ds.y_test, num_classes=ds.num_classes,
                                        l2=FLAGS.l2)
  key = jax.random.key(0)
  points, sizes = make_pairs(ds.y_train, FLAGS.samples, FLAGS.k_min, FLAGS.k_max, key)
  print(f"{ds.name}: pool {len(ds.y_train)}, validation {len(ds.y_test)}, {ds.num_features} features; "
        f"{FLAGS.samples} pairs, |D| ~ U[{FLAGS.k_min}, {FLAGS.k_max}); devices: {jax.devices()}")

  start = time.perf_counter()
  ours = xattr_contributions(u, points, sizes, key, FLAGS.chunk)
  print(f"xattr: first call incl. compilation {time.perf_counter() - start:.1f} s")
  m = min(FLAGS.sklearn_samples, FLAGS.samples)
  masks = subset_masks(ds.y_train, points[:m], sizes[:m], key)
  assert np.array_equal(masks.sum(1), sizes[:m]) and not masks[np.arange(m), points[:m]].any()
  solvers = {"lbfgs (defaults)": {},
             "newton-cholesky (tol 1e-8)": dict(solver="newton-cholesky", tol=1e-8, max_iter=100)}
  # Rounds alternate the tools (xattr on every pair, then each scikit-learn solver on its share of the checked
  # pairs), and the ratios are taken per round: a shared machine's speed drifts over seconds, and a ratio of two
  # rates measured minutes apart would carry that drift.
  rounds = max(1, FLAGS.repeats)
  xattr_rates, rates, deltas = [], {name: [] for name in solvers}, {name: [None] * m for name in solvers}
  for r in range(rounds):
    start = time.perf_counter()
    xattr_contributions(u, points, sizes, key, FLAGS.chunk)
    xattr_rates.append(FLAGS.samples / (time.perf_counter() - start))
    share = np.arange(r, m, rounds)
    for name, solver in solvers.items():
      start = time.perf_counter()
      d, b = sklearn_contributions(ds, points[share], masks[share], FLAGS.l2, **solver)
      rates[name].append(len(share) / (time.perf_counter() - start))
      for i, di, bi in zip(share, d, b):
        deltas[name][i] = (di, bi)
  xattr_rate = float(np.median(xattr_rates))
  print(f"xattr: {xattr_rate:.0f} contributions/s (median of {rounds} rounds: "
        f"{', '.join(f'{x:.0f}' for x in xattr_rates)})")
  print(timing.roofline("xattr valuation (XLA cost analysis counts each Newton loop body once: a lower bound)",
                        2 * FLAGS.samples * utility_flops(u), FLAGS.samples / xattr_rate, timing.gemm_flops_per_s()))
  d_ours, b_ours = ours["neg_ce"][:m], ours["base_neg_ce"][:m]
  ratios = {}
  for name in solvers:
    d, b = (np.array(v) for v in zip(*deltas[name]))
    ratios[name] = float(np.median(np.array(xattr_rates) / np.array(rates[name])))
    print(f"sklearn {name}: {np.median(rates[name]):.1f} contributions/s on the first {m} pairs; agreement with "
          f"xattr: max |U diff| {np.abs(b_ours - b).max():.2e}, max |Delta diff| {np.abs(d_ours - d).max():.2e} "
          f"(mean |Delta| {np.abs(d).mean():.2e}), Delta correlation {np.corrcoef(d_ours, d)[0, 1]:.6f}")
  per_round = lambda name: ", ".join(f"{x / y:.0f}" for x, y in zip(xattr_rates, rates[name]))
  print(f"speedup_vs_sklearn={ratios['lbfgs (defaults)']:.1f}x (median of per-round ratios: "
        f"{per_round('lbfgs (defaults)')})")
  print(f"speedup_vs_sklearn_newton_cholesky={ratios['newton-cholesky (tol 1e-8)']:.1f}x (per round: "
        f"{per_round('newton-cholesky (tol 1e-8)')})")


if __name__ == "__main__":
  app.run(main)
