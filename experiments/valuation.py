"""Data valuation with individualized scaling laws: samples, estimators, ground truth and three applications.

  python -m experiments.valuation --config=configs/valuation/breast_cancer.py --workdir=runs/valuation

Steps (each saves its output in ``workdir`` and is skipped when that output exists with the same settings, so
a killed run resumes; networks resume from Orbax checkpoints):
  1. data: a pool of training points (embedded scikit-learn data, precomputed embeddings from an .npz, or a
     TFDS dataset), a fraction of their labels flipped, and a validation set; U(D) = validation neg.
     cross-entropy of a model trained on D (logistic regression by Newton steps, or a small MLP);
  2. distributional samples: for every pool point, ``samples_per_point`` marginal contributions
     Delta = U(D u {z}) - U(D) with |D| = k ~ U[k_min, k_max) and D stratified by class (vmapped training,
     sharded over devices, saved in blocks);
  3. ground truth: many samples with sizes spread evenly over [k_min, k_max) for a random subset of points;
     their mean is the distributional value psi(z) = E_k E_D Delta;
  4. estimators at each budget b (each point's first b samples): per-point Monte Carlo mean, maximum likelihood
     scaling law (psi from c k^-alpha averaged over k), the amortized scaling-law network (Gaussian NLL) and the
     stochastic-amortization value network (MSE onto single samples);
  5. baselines on the whole pool: TMC Data Shapley (no truncation) with its stochastic-amortization network,
     Data Banzhaf (MSR) and leave-one-out;
  6. applications: valuation accuracy vs ground truth per budget; mislabeled-point detection AUROC; point
     addition at a small vs a large dataset size (top points by the fitted law at each size);
  7. outputs: points.csv (per-point c, alpha, sigma, beta and values), accuracy.png, mislabeled.png,
     addition.png, scaling_curves.png, params.png, metrics.json and report.md.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import logging
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats
from sklearn import decomposition, metrics, model_selection

from experiments import cli
from xattr import data as data_lib
from xattr import parallel
from xattr.valuation import amortized, samplers, scaling, utility


METHODS = {"mc": "MC mean", "mle": "MLE scaling law", "amortized": "amortized scaling law (NLL)",
           "value_net": "stochastic amortization (MSE)"}


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Pool:
  """The training pool (labels possibly corrupted) and the validation set U scores on."""

  name: str
  x: np.ndarray
  y: np.ndarray
  y_clean: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  num_classes: int

  @property
  def flipped(self) -> np.ndarray:
    return self.y != self.y_clean

  @property
  def features(self) -> np.ndarray:
    """Inputs of the amortized networks: the point's features and its (possibly wrong) one-hot label."""
    return np.concatenate([self.x, np.eye(self.num_classes, dtype=np.float32)[self.y]], 1)


def _load_tfds(t: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
  """Features (flattened) and labels of two splits of a TFDS dataset, read with tfds.data_source (TF-free)."""
  import tensorflow_datasets as tfds          # heavy import, only on this path

  if not t.name:
    raise ValueError("source='tfds' needs config.tfds.name (and usually config.tfds.data_dir).")
  builder = tfds.builder(t.name, data_dir=t.data_dir)
  num_classes = int(builder.info.features[t.label_key].num_classes)

  def read(split, limit):
    source = tfds.data_source(t.name, split=split, data_dir=t.data_dir)
    n = min(len(source), int(limit))
    rows = [source[i] for i in range(n)]
    x = np.stack([np.asarray(r[t.feature_key], np.float32).reshape(-1) for r in rows])
    return x, np.array([int(r[t.label_key]) for r in rows], np.int32)

  x_train, y_train = read(t.train_split, t.max_train)
  x_val, y_val = read(t.val_split, t.max_val)
  return x_train, y_train, x_val, y_val, num_classes


def _standardize(x_train: np.ndarray, x_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  mean, scale = x_train.mean(0), x_train.std(0)
  scale = np.where(scale > 0, scale, 1.0)
  return ((x_train - mean) / scale).astype(np.float32), ((x_val - mean) / scale).astype(np.float32)


def load_pool(config: ml_collections.ConfigDict) -> Pool:
  """Loads the data, caps and projects the pool, and flips ``label_noise`` of its labels (seeded)."""
  if config.source == "embedded":
    ds = data_lib.load_embedded(config.dataset, seed=config.seed, test_fraction=config.test_fraction)
    if ds.task != "classification":
      raise ValueError(f"experiments.valuation values points of a classification pool; {config.dataset!r} is a "
                       f"{ds.task} task (use xattr.valuation.RidgeRegression with the samplers directly).")
    x, y, x_val, y_val, c, name = ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.num_classes, ds.name
  elif config.source == "npz":
    if not config.npz_path:
      raise ValueError("source='npz' needs config.npz_path (arrays x_train, y_train, x_val, y_val).")
    with np.load(config.npz_path) as f:
      x, y, x_val, y_val = (np.asarray(f[k]) for k in ("x_train", "y_train", "x_val", "y_val"))
    x, x_val = _standardize(x.reshape(len(x), -1).astype(np.float32), x_val.reshape(len(x_val), -1).astype(np.float32))
    y, y_val = y.astype(np.int32), y_val.astype(np.int32)
    c, name = int(max(y.max(), y_val.max()) + 1), os.path.basename(config.npz_path)
  elif config.source == "tfds":
    x, y, x_val, y_val, c = _load_tfds(config.tfds)
    x, x_val = _standardize(x, x_val)
    name = config.tfds.name
  else:
    raise ValueError(f"config.source must be 'embedded', 'npz' or 'tfds', got {config.source!r}.")
  if config.max_pool and config.max_pool < len(x):
    x, _, y, _ = model_selection.train_test_split(x, y, train_size=config.max_pool, random_state=config.seed,
                                                  stratify=y)
  if config.pca_dims:
    pca = decomposition.PCA(config.pca_dims, whiten=True, random_state=config.seed).fit(x)
    x, x_val = pca.transform(x).astype(np.float32), pca.transform(x_val).astype(np.float32)
  rng = np.random.default_rng([config.seed, 1])
  y_clean = y.astype(np.int32)
  flip = rng.choice(len(y), int(round(config.label_noise * len(y))), replace=False)
  y_noisy = y_clean.copy()
  y_noisy[flip] = (y_clean[flip] + rng.integers(1, c, len(flip))) % c
  return Pool(name, x.astype(np.float32), y_noisy, y_clean, x_val.astype(np.float32), y_val.astype(np.int32), c)


def make_utility(config: ml_collections.ConfigDict, pool: Pool) -> utility.Utility:
  m = config.model
  if m.kind == "logistic":
    return utility.LogisticRegression.create(
        pool.x, pool.y, pool.x_val, pool.y_val, num_classes=pool.num_classes, l2=m.l2, newton_steps=m.newton_steps,
        chord_steps=m.chord_steps, add_newton_steps=m.add_newton_steps, add_chord_steps=m.add_chord_steps)
  if m.kind == "mlp":
    return utility.MLPClassifier.create(pool.x, pool.y, pool.x_val, pool.y_val, num_classes=pool.num_classes,
                                        hidden_sizes=m.hidden_sizes, learning_rate=m.learning_rate,
                                        num_steps=m.num_steps, seed=config.seed)
  raise ValueError(f"config.model.kind must be 'logistic' or 'mlp', got {m.kind!r}.")


# ---------------------------------------------------------------------------------------------------------------
# Cached stages
# ---------------------------------------------------------------------------------------------------------------

def fingerprint(*parts: Any) -> str:
  """Short hash of the settings an output depends on (outputs saved under other settings are recomputed)."""
  text = json.dumps([p.to_dict() if isinstance(p, ml_collections.ConfigDict) else p for p in parts],
                    sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(path: str, tag: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Loads ``path`` if it holds arrays saved with ``tag``; else computes, saves (write + rename) and returns."""
  if os.path.exists(path):
    with np.load(path) as f:
      if str(f["tag"]) == tag:
        return {k: f[k] for k in f.files if k != "tag"}
  out = {k: np.asarray(v) for k, v in compute().items()}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez(tmp, tag=np.array(tag), **out)
  os.replace(tmp, path)
  return out


def sample_in_blocks(u, key, points, sizes, ids, *, directory: str, tag: str, config, mesh, desc: str):
  """Distributional samples for (points, sizes, ids), computed and saved block by block (resumable)."""
  s = config.sampling
  parts = []
  n = len(points)
  for start in tqdm.trange(0, n, s.block_size, desc=desc, unit="block", dynamic_ncols=True,
                           disable=n <= s.block_size):
    sl = slice(start, min(start + s.block_size, n))

    def compute(sl=sl):
      t0 = time.perf_counter()
      out = samplers.distributional(u, key, points[sl], sizes[sl], ids=ids[sl], balance=s.balance, mesh=mesh,
                                    chunk_size=s.chunk_size, progress=True)
      return {**out, "seconds": np.array([time.perf_counter() - t0])}     # kept: the rate survives a resume

    parts.append(cached(os.path.join(directory, f"block_{start:09d}.npz"), tag, compute))
  out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "seconds"}
  out["seconds"] = float(sum(p.get("seconds", np.zeros(1)).sum() for p in parts))
  return out


def even_sizes(num: int, k_min: int, k_max: int) -> np.ndarray:
  """Sizes spread evenly over [k_min, k_max): the ground truth's stratified stand-in for k ~ U[k_min, k_max)."""
  return (k_min + np.floor((np.arange(num) + 0.5) * (k_max - k_min) / num)).astype(np.int32)


# ---------------------------------------------------------------------------------------------------------------
# Metrics and plots
# ---------------------------------------------------------------------------------------------------------------

def accuracy_metrics(estimate: np.ndarray, truth: np.ndarray) -> dict[str, float]:
  """Errors of value estimates against ground truth: RMSE / std(truth), Pearson and Spearman correlation."""
  err = estimate - truth
  return dict(nrmse=float(np.sqrt(np.mean(err ** 2)) / truth.std()),
              pearson=float(np.corrcoef(estimate, truth)[0, 1]),
              spearman=float(stats.spearmanr(estimate, truth).statistic))


def auroc(values: np.ndarray, flipped: np.ndarray) -> float:
  """AUROC of flagging flipped labels by low value (NaN values count as 0)."""
  if flipped.all() or not flipped.any():
    return float("nan")
  return float(metrics.roc_auc_score(flipped, -np.nan_to_num(values)))


def _figure(ncols: int = 1, size=(5.5, 4.0)) -> tuple[Figure, Any]:
  fig = Figure(figsize=(size[0] * ncols, size[1]))
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, ncols)
  return fig, axes


def _save(fig: Figure, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return path


def plot_accuracy(path, budgets, acc) -> str:
  fig, (a1, a2) = _figure(2)
  for m, label in METHODS.items():
    a1.plot(budgets, [acc[m][b]["nrmse"] for b in budgets], "o-", label=label)
    a2.plot(budgets, [acc[m][b]["spearman"] for b in budgets], "o-", label=label)
  for ax, yl in ((a1, "RMSE / std(true values)"), (a2, "Spearman correlation with truth")):
    ax.set_xscale("log", base=2)
    ax.set_xlabel("samples per point (budget)")
    ax.set_ylabel(yl)
    ax.grid(alpha=0.3)
  a1.set_yscale("log")
  a1.legend(fontsize=8)
  a1.set_title("valuation error vs ground truth")
  a2.set_title("ranking agreement")
  return _save(fig, path)


def plot_mislabeled(path, budgets, aurocs, baselines) -> str:
  fig, ax = _figure(1, (6.5, 4.2))
  for m, label in METHODS.items():
    ax.plot(budgets, [aurocs[m][b] for b in budgets], "o-", label=label)
  styles = iter(["--", ":", "-.", (0, (5, 1))])
  for name, (value, cost) in baselines.items():
    ax.axhline(value, ls=next(styles, "--"), color="gray", lw=1)
    ax.text(budgets[0], value, f" {name} ({cost})", fontsize=7, va="bottom")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("samples per point (budget)")
  ax.set_ylabel("AUROC (flipped labels flagged by low value)")
  ax.set_title("mislabeled-point detection")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  return _save(fig, path)


def addition_verdict(matched_minus_other: dict[str, dict[str, dict[str, float]]], sizes) -> str:
  """One sentence per ranking rule: does the ranking made for the base size beat the other size's ranking there?

  The claim "the best points to add depend on the dataset size" holds for a rule when its size-matched ranking
  gains more than the other size's ranking at both sizes (paired difference above two standard errors).
  """
  sentences = []
  for name, paired in matched_minus_other.items():
    wins = [paired[str(k)]["mean"] > 2 * paired[str(k)]["se"] for k in sizes]
    losses = [paired[str(k)]["mean"] < -2 * paired[str(k)]["se"] for k in sizes]
    if all(wins):
      sentences.append(f"{name}: the size-matched ranking wins at both sizes, so the best points to add depend on "
                       "the dataset size.")
    else:
      detail = ", ".join(f"k={k}: {'wins' if w else 'loses' if l else 'ties'}" for k, w, l in zip(sizes, wins, losses))
      sentences.append(f"{name}: the size-matched ranking does not win at both sizes ({detail}); on this data the "
                       "size dependence is not demonstrated by this rule.")
  return "**Verdict.** " + " ".join(sentences)


def plot_addition(path, result, sizes) -> str:
  fig, ax = _figure(1, (6.5, 4.2))
  rules = list(result[sizes[0]].keys())
  width = 0.8 / len(rules)
  for j, rule in enumerate(rules):
    means = [result[k][rule]["mean"] for k in sizes]
    ses = [result[k][rule]["se"] for k in sizes]
    ax.bar(np.arange(len(sizes)) + (j - (len(rules) - 1) / 2) * width, means, width, yerr=ses, label=rule,
           capsize=3)
  ax.set_xticks(np.arange(len(sizes)), [f"base size k = {k}" for k in sizes])
  ax.set_ylabel("utility gain U(D u S) - U(D)")
  ax.set_title("point addition at a small and a large base size")
  ax.axhline(0, color="k", lw=0.5)
  ax.legend(fontsize=8)
  return _save(fig, path)


def plot_scaling_curves(path, examples, k_range) -> str:
  cols = min(3, len(examples))
  rows = -(-len(examples) // cols)
  fig = Figure(figsize=(4.2 * cols, 3.4 * rows))
  FigureCanvasAgg(fig)
  axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
  grid = np.geomspace(*k_range, 50)
  for ax, ex in zip(axes, examples):
    sign = ex["sign"]
    good = ex["bin_mean"] * sign > 0
    ax.errorbar(ex["bin_k"][good], sign * ex["bin_mean"][good], yerr=ex["bin_se"][good], fmt="o", ms=4,
                label="binned mean (ground-truth samples)")
    for name, (c, a), style in (("MLE on ground-truth samples", ex["truth_law"], "-"),
                                ("amortized (max budget)", ex["amortized_law"], "--")):
      if np.isfinite(c) and c * sign > 0:
        ax.plot(grid, sign * scaling.law(c, a, grid), style, label=f"{name}: alpha={a:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    flag = " (flipped label)" if ex["flipped"] else ""
    ax.set_title(f"point {ex['point']}{flag}{'' if sign > 0 else ', -Delta shown'}", fontsize=9)
    ax.set_xlabel("dataset size k")
    ax.set_ylabel("E[Delta | k]" if sign > 0 else "-E[Delta | k]")
    ax.legend(fontsize=6)
  for ax in axes[len(examples):]:
    ax.set_visible(False)
  return _save(fig, path)


def plot_params(path, fit: scaling.ScalingFit, flipped: np.ndarray, title: str) -> str:
  fig, ax = _figure(1, (5.5, 4.2))
  for mask, label, color in ((~flipped, "clean label", "tab:blue"), (flipped, "flipped label", "tab:red")):
    ax.scatter(np.sign(fit.c[mask]) * np.log10(np.abs(fit.c[mask]) + 1e-30), fit.alpha[mask], s=8, alpha=0.6,
               label=label, color=color)
  ax.set_xlabel("sign(c) log10 |c|")
  ax.set_ylabel("alpha")
  ax.set_title(title)
  ax.legend(fontsize=8)
  return _save(fig, path)


# ---------------------------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------------------------

def _binned(sizes, deltas, num_bins=8):
  edges = np.geomspace(sizes.min(), sizes.max() + 1, num_bins + 1)
  idx = np.clip(np.searchsorted(edges, sizes, side="right") - 1, 0, num_bins - 1)
  k = np.array([np.exp(np.log(sizes[idx == b]).mean()) for b in range(num_bins)])
  mean = np.array([deltas[idx == b].mean() for b in range(num_bins)])
  se = np.array([deltas[idx == b].std(ddof=1) / np.sqrt((idx == b).sum()) for b in range(num_bins)])
  return k, mean, se


def _sample_bases(rng, labels, exclude, size, repeats):
  """``repeats`` class-stratified subsets (proportional) of ``size`` pool points outside ``exclude``."""
  allowed = np.setdiff1d(np.arange(len(labels)), exclude)
  out = np.zeros((repeats, len(labels)), bool)
  for r in range(repeats):
    _, chosen = model_selection.train_test_split(allowed, test_size=size, stratify=labels[allowed],
                                                 random_state=int(rng.integers(2 ** 31)))
    out[r, chosen] = True
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the whole job; returns output paths, metrics and timings."""
  os.makedirs(workdir, exist_ok=True)
  timings: dict[str, float] = {}
  t_start = time.perf_counter()
  s, tr = config.sampling, config.truth
  pool = load_pool(config)
  n = len(pool.y)
  u = make_utility(config, pool)
  mesh = parallel.make_mesh()
  root = jax.random.key(config.seed)
  if s.samples_per_point < max(s.budgets) or min(s.budgets) < 1:
    raise ValueError(f"sampling.budgets must lie in [1, samples_per_point={s.samples_per_point}], got {s.budgets}.")
  data_tag = [config.source, config.dataset, config.npz_path, config.tfds, config.seed, config.test_fraction,
              config.pca_dims, config.max_pool, config.label_noise, config.model, config.metric, s.k_min, s.k_max,
              s.balance]
  logging.info("pool: %d points (%d flipped), %d features, %d classes; validation: %d rows", n,
               pool.flipped.sum(), pool.x.shape[1], pool.num_classes, len(pool.y_val))

  # -- distributional samples --------------------------------------------------------------------------------
  t0 = time.perf_counter()
  S = s.samples_per_point
  main_points = np.repeat(np.arange(n, dtype=np.int32), S)
  main_sizes = np.asarray(samplers.sample_sizes(jax.random.fold_in(root, 10), n * S, s.k_min, s.k_max))
  main = sample_in_blocks(u, jax.random.fold_in(root, 1), main_points, main_sizes, np.arange(n * S),
                          directory=os.path.join(workdir, "samples", "main"), tag=fingerprint(data_tag, S),
                          config=config, mesh=mesh, desc="main samples")
  timings["samples"] = time.perf_counter() - t0
  deltas = main[config.metric].reshape(n, S).astype(np.float64)
  sizes = main["size"].reshape(n, S).astype(np.float64)
  solver_check = None
  if config.solver_check and config.model.kind == "logistic":
    # The first samples again with 40 Newton steps: the configured step counts must reach the same optimum.
    m = min(config.solver_check, n * S)
    exact = dataclasses.replace(u, newton_steps=40, chord_steps=0, add_newton_steps=40, add_chord_steps=0)
    ref = cached(os.path.join(workdir, "samples", "solver_check.npz"), fingerprint(data_tag, S, m),
                 lambda: samplers.distributional(exact, jax.random.fold_in(root, 1), main_points[:m], main_sizes[:m],
                                                 ids=np.arange(m), balance=s.balance, mesh=mesh,
                                                 chunk_size=s.chunk_size, progress=False))
    err = float(np.abs(ref[config.metric] - main[config.metric][:m]).max())
    solver_check = dict(samples=m, max_delta_error=err, relative_to_delta_std=err / float(deltas.std()))
    if solver_check["relative_to_delta_std"] > 0.05:
      logging.warning("the configured Newton steps leave errors of %.2g (%.0f%% of std(Delta)) against 40 steps: "
                      "raise config.model.newton_steps / add_newton_steps", err, 100 * err / deltas.std())

  t0 = time.perf_counter()
  rng = np.random.default_rng([config.seed, 2])
  truth_points = np.sort(rng.choice(n, min(tr.num_points, n), replace=False)).astype(np.int32)
  T = tr.samples_per_point
  truth = sample_in_blocks(u, jax.random.fold_in(root, 2), np.repeat(truth_points, T),
                           np.tile(even_sizes(T, s.k_min, s.k_max), len(truth_points)),
                           np.arange(len(truth_points) * T), directory=os.path.join(workdir, "samples", "truth"),
                           tag=fingerprint(data_tag, T, truth_points.tolist()), config=config, mesh=mesh,
                           desc="ground-truth samples")
  timings["ground_truth"] = time.perf_counter() - t0
  num_contributions = len(main_points) + len(truth_points) * T
  truth_deltas = truth[config.metric].reshape(len(truth_points), T).astype(np.float64)
  truth_sizes = truth["size"].reshape(len(truth_points), T).astype(np.float64)
  psi_true = truth_deltas.mean(1)
  psi_true_se = truth_deltas.std(1, ddof=1) / np.sqrt(T)

  # -- estimators per budget -----------------------------------------------------------------------------------
  t0 = time.perf_counter()
  a = config.amortized
  features = pool.features
  net_kwargs = dict(hidden_sizes=a.hidden_sizes, num_steps=a.num_steps, batch_size=a.batch_size,
                    learning_rate=a.learning_rate, weight_decay=a.weight_decay, seed=config.seed,
                    holdout_fraction=a.holdout_fraction, eval_every=a.eval_every)
  estimates: dict[int, dict[str, np.ndarray]] = {}
  for b in s.budgets:
    def compute(b=b):
      pts = np.repeat(np.arange(n), b)
      k, d = sizes[:, :b], deltas[:, :b]
      # All samples with a mask: one shape, so one compilation serves every budget.
      ml = scaling.mle_fit(sizes, deltas, np.arange(S)[None, :] < b, alpha_range=config.mle.alpha_range,
                           beta_range=config.mle.beta_range, grid=tuple(config.mle.grid), levels=config.mle.levels)
      am = amortized.fit_scaling_network(features, pts, k.ravel(), d.ravel(), variance_weighting=a.variance_weighting,
                                         workdir=os.path.join(workdir, "nets", f"scaling_b{b}"), **net_kwargs)
      vn = amortized.fit_value_network(features, pts, d.ravel(), workdir=os.path.join(workdir, "nets", f"value_b{b}"),
                                       **net_kwargs)
      out = dict(mc=d.mean(1), value_net=vn,
                 mle=scaling.distributional_value(ml.c, ml.alpha, s.k_min, s.k_max),
                 amortized=scaling.distributional_value(am.c, am.alpha, s.k_min, s.k_max))
      out.update({f"mle_{f}": getattr(ml, f) for f in ("c", "alpha", "sigma", "beta")})
      out.update({f"amortized_{f}": getattr(am, f) for f in ("c", "alpha", "sigma", "beta")})
      return out

    estimates[b] = cached(os.path.join(workdir, "estimates", f"budget_{b:05d}.npz"),
                          fingerprint(data_tag, S, config.mle, config.amortized), compute)
  timings["estimators"] = time.perf_counter() - t0

  # -- baselines on the whole pool -------------------------------------------------------------------------------
  t0 = time.perf_counter()
  baselines: dict[str, tuple[float, str]] = {}

  def pool_baselines():
    out = {"loo": samplers.leave_one_out(u, metric=config.metric, mesh=mesh, chunk_size=s.chunk_size)}
    if config.banzhaf_samples:
      est = samplers.data_banzhaf(u, jax.random.fold_in(root, 4), config.banzhaf_samples, metric=config.metric)
      out["banzhaf"] = np.asarray(est.values, np.float64)
    if config.tmc.num_permutations:
      deep = dataclasses.replace(u, newton_steps=config.tmc.newton_steps) if config.model.kind == "logistic" else u
      rows = samplers.tmc(deep, jax.random.fold_in(root, 3), config.tmc.num_permutations, metric=config.metric,
                          mesh=mesh, chunk_size=s.chunk_size)
      out["tmc_rows"] = rows
      out["tmc"] = rows.mean(0)
      out["tmc_net"] = amortized.fit_value_network(
          features, np.tile(np.arange(n), len(rows)), rows.ravel(),
          workdir=os.path.join(workdir, "nets", "value_tmc"), **net_kwargs)
    return out

  pool_values = cached(os.path.join(workdir, "estimates", "baselines.npz"),
                       fingerprint(data_tag, config.tmc, config.amortized, config.banzhaf_samples),
                       pool_baselines)
  baselines["leave-one-out"] = (auroc(pool_values["loo"], pool.flipped), f"{n + 1} fits")
  if "banzhaf" in pool_values:
    baselines["Data Banzhaf (MSR)"] = (auroc(pool_values["banzhaf"], pool.flipped), f"{config.banzhaf_samples} fits")
  if "tmc" in pool_values:
    p = config.tmc.num_permutations
    baselines["TMC Data Shapley"] = (auroc(pool_values["tmc"], pool.flipped), f"{p} perms, {p * (n + 1)} fits")
    baselines["TMC + stochastic amortization"] = (auroc(pool_values["tmc_net"], pool.flipped), "same fits")
  timings["baselines"] = time.perf_counter() - t0

  # -- applications --------------------------------------------------------------------------------------------
  t0 = time.perf_counter()
  budgets = list(s.budgets)
  acc = {m: {b: accuracy_metrics(estimates[b][m][truth_points], psi_true) for b in budgets} for m in METHODS}
  aurocs = {m: {b: auroc(estimates[b][m], pool.flipped) for b in budgets} for m in METHODS}
  noise_floor = float(np.sqrt(np.mean(psi_true_se ** 2)) / psi_true.std())

  best = estimates[budgets[-1]]
  if config.addition.law not in ("mle", "amortized"):
    raise ValueError(f"config.addition.law must be 'mle' or 'amortized', got {config.addition.law!r}.")
  law_c, law_alpha = best[f"{config.addition.law}_c"], best[f"{config.addition.law}_alpha"]
  ad = config.addition
  small, large = ad.small, ad.large
  order = {k: np.argsort(-scaling.law(law_c, law_alpha, k)) for k in (small, large)}
  # Ground-truth values near each size (mean Delta of the ground-truth samples with k within 25% of it): the
  # same choice made with accurate per-size values, among the ground-truth points only.
  near = {k: np.abs(np.log(truth_sizes / k)) < np.log(1.25) for k in (small, large)}
  local = {k: (truth_deltas * near[k]).sum(1) / np.maximum(near[k].sum(1), 1) for k in (small, large)}
  truth_order = {k: truth_points[np.argsort(-local[k])] for k in (small, large)}
  num_truth = min(ad.num_added, len(truth_points) // 2)
  chosen = {f"top by law at k={small}": order[small][:ad.num_added],
            f"top by law at k={large}": order[large][:ad.num_added],
            f"top by ground truth at k={small}": truth_order[small][:num_truth],
            f"top by ground truth at k={large}": truth_order[large][:num_truth],
            "random": np.random.default_rng([config.seed, 5]).choice(n, ad.num_added, replace=False)}
  truth_rank_corr = float(stats.spearmanr(local[small], local[large]).statistic)
  union = np.unique(np.concatenate(list(chosen.values())))
  if large + len(union) > n:
    raise ValueError(f"addition.large + the added points ({large} + {len(union)}) exceed the pool of {n}; lower "
                     f"addition.large or addition.num_added.")

  def addition():
    rng_add = np.random.default_rng([config.seed, 6])
    out = {}
    for k in (small, large):
      bases = _sample_bases(rng_add, pool.y, union, k, ad.repeats)
      masks = [bases] + [bases | np.isin(np.arange(n), idx)[None] for idx in chosen.values()]
      vals = samplers.evaluate(u, np.concatenate(masks), mesh=mesh, chunk_size=s.chunk_size, progress=False)
      out[f"k{k}"] = vals[config.metric].reshape(len(masks), ad.repeats)
    return out

  add_vals = cached(os.path.join(workdir, "estimates", "addition.npz"),
                    fingerprint(data_tag, ad, budgets[-1], config.amortized, config.mle, S, tr), addition)
  add_result, add_paired = {}, {}
  for k in (small, large):
    v = add_vals[f"k{k}"]
    gains = v[1:] - v[0]
    add_result[k] = {rule: dict(mean=float(g.mean()), se=float(g.std(ddof=1) / np.sqrt(len(g))))
                     for rule, g in zip(chosen, gains)}
    # Paired over the same base datasets: (ranking at this size) - (ranking at the other size).
    for name, (a, b) in (("law", (0, 1)), ("ground truth", (2, 3))):
      own, other = (gains[a], gains[b]) if k == small else (gains[b], gains[a])
      add_paired.setdefault(name, {})[k] = dict(mean=float((own - other).mean()),
                                                se=float((own - other).std(ddof=1) / np.sqrt(len(own))))
  rank_corr = float(stats.spearmanr(scaling.law(law_c, law_alpha, small),
                                    scaling.law(law_c, law_alpha, large)).statistic)
  overlap = int(len(np.intersect1d(chosen[f"top by law at k={small}"], chosen[f"top by law at k={large}"])))
  timings["applications"] = time.perf_counter() - t0

  # -- outputs -------------------------------------------------------------------------------------------------
  t0 = time.perf_counter()
  names = ("report.md", "points.csv", "metrics.json", "accuracy.png", "mislabeled.png", "addition.png",
           "scaling_curves.png", "params.png")
  paths = {name: os.path.join(workdir, name) for name in names}
  truth_fit = scaling.mle_fit(truth_sizes, truth_deltas, alpha_range=config.mle.alpha_range,
                              beta_range=config.mle.beta_range, grid=tuple(config.mle.grid), levels=config.mle.levels)
  # The clearest values (|psi| / se) among clean-label and among flipped-label ground-truth points, half each.
  clarity = np.abs(psi_true / np.maximum(psi_true_se, 1e-30))
  flipped_truth = pool.flipped[truth_points]
  half = config.num_example_points // 2
  ex_idx = np.concatenate([np.flatnonzero(~flipped_truth)[np.argsort(-clarity[~flipped_truth])][:half],
                           np.flatnonzero(flipped_truth)[np.argsort(-clarity[flipped_truth])]])
  ex_idx = np.concatenate([ex_idx, np.argsort(-clarity)])
  ex_idx = ex_idx[np.sort(np.unique(ex_idx, return_index=True)[1])][:config.num_example_points]
  examples = []
  for i in ex_idx:
    k_b, m_b, se_b = _binned(truth_sizes[i], truth_deltas[i])
    z = int(truth_points[i])
    examples.append(dict(point=z, flipped=bool(pool.flipped[z]), sign=1.0 if psi_true[i] >= 0 else -1.0,
                         bin_k=k_b, bin_mean=m_b, bin_se=se_b, truth_law=(truth_fit.c[i], truth_fit.alpha[i]),
                         amortized_law=(best["amortized_c"][z], best["amortized_alpha"][z])))
  plot_accuracy(paths["accuracy.png"], budgets, acc)
  plot_mislabeled(paths["mislabeled.png"], budgets, aurocs, baselines)
  plot_addition(paths["addition.png"], add_result, (small, large))
  plot_scaling_curves(paths["scaling_curves.png"], examples, (s.k_min, s.k_max))
  plot_params(paths["params.png"], scaling.ScalingFit(law_c, law_alpha, best[f"{config.addition.law}_sigma"],
                                                      best[f"{config.addition.law}_beta"], np.full(n, np.nan)),
              pool.flipped,
              f"per-point scaling laws ({config.addition.law}, budget {budgets[-1]})")
  write_points_csv(paths["points.csv"], pool, best, pool_values, truth_points, psi_true, psi_true_se,
                   budgets[-1])
  timings["outputs"] = time.perf_counter() - t0
  timings["total"] = time.perf_counter() - t_start
  sampling_time = main["seconds"] + truth["seconds"]          # compute time of the blocks, compilation included
  summary = dict(
      pool=n, flipped=int(pool.flipped.sum()), features=int(pool.x.shape[1]), classes=pool.num_classes,
      solver_check=solver_check,
      validation=len(pool.y_val), devices=int(mesh.size), contributions=int(num_contributions),
      contributions_per_second=float(num_contributions / sampling_time) if sampling_time > 1.0 else None,
      accuracy={m: {str(b): v for b, v in acc[m].items()} for m in METHODS}, truth_noise_floor=noise_floor,
      auroc={m: {str(b): v for b, v in aurocs[m].items()} for m in METHODS},
      baselines={k: v[0] for k, v in baselines.items()},
      addition={str(k): v for k, v in add_result.items()},
      addition_matched_minus_other={r: {str(k): v for k, v in d.items()} for r, d in add_paired.items()},
      addition_rank_correlation=rank_corr, addition_truth_rank_correlation=truth_rank_corr,
      addition_overlap=overlap, timings=timings)
  with open(paths["metrics.json"], "w") as f:
    json.dump(summary, f, indent=2)
  write_report(paths["report.md"], config, pool, summary, budgets, acc, aurocs, baselines, add_result, chosen,
               (small, large), truth_points)
  logging.info("wrote %s", ", ".join(paths.values()))
  return dict(paths=paths, metrics=summary, estimates=estimates, truth_points=truth_points, psi_true=psi_true,
              pool=pool, timings=timings)


def write_points_csv(path, pool, best, pool_values, truth_points, psi_true, psi_true_se, budget):
  truth_of = dict(zip(truth_points.tolist(), zip(psi_true.tolist(), psi_true_se.tolist())))
  cols = ["point", "label", "clean_label", "flipped", "mc_mean", "mle_c", "mle_alpha", "mle_sigma", "mle_beta",
          "amortized_c", "amortized_alpha", "amortized_sigma", "amortized_beta", "psi_mle", "psi_amortized",
          "psi_value_net", "tmc_shapley", "tmc_net", "banzhaf", "loo", "psi_true", "psi_true_se"]
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow([f"# budget {budget} samples per point; psi = distributional value; empty psi_true: no ground truth"])
    w.writerow(cols)
    for i in range(len(pool.y)):
      t = truth_of.get(i, (None, None))
      row = [i, int(pool.y[i]), int(pool.y_clean[i]), int(pool.flipped[i]), best["mc"][i], best["mle_c"][i],
             best["mle_alpha"][i], best["mle_sigma"][i], best["mle_beta"][i], best["amortized_c"][i],
             best["amortized_alpha"][i], best["amortized_sigma"][i], best["amortized_beta"][i], best["mle"][i],
             best["amortized"][i], best["value_net"][i],
             pool_values["tmc"][i] if "tmc" in pool_values else None,
             pool_values["tmc_net"][i] if "tmc_net" in pool_values else None,
             pool_values["banzhaf"][i] if "banzhaf" in pool_values else None, pool_values["loo"][i], t[0], t[1]]
      w.writerow(["" if v is None else (f"{float(v):.6g}" if isinstance(v, (float, np.floating)) else v)
                  for v in row])


def write_report(path, config, pool, summary, budgets, acc, aurocs, baselines, add_result, chosen, sizes,
                 truth_points):
  s, tr = config.sampling, config.truth
  rate = summary["contributions_per_second"]
  lines = [
      f"# Data valuation with individualized scaling laws: {pool.name}",
      "",
      f"- Pool: {summary['pool']} training points, {summary['features']} features, {summary['classes']} classes; "
      f"**{summary['flipped']} labels flipped** (label_noise={config.label_noise}). Validation: "
      f"{summary['validation']} rows.",
      f"- Utility U(D): validation {config.metric} of {config.model.kind} "
      + (f"regression (L2 = {config.model.l2}, sklearn's C = {1 / config.model.l2:g}; Newton steps in lax.scan)"
         if config.model.kind == "logistic" else f"MLP {tuple(config.model.hidden_sizes)}, "
         f"{config.model.num_steps} full-batch Adam steps")
      + ", trained with vmap over subsets given as 0/1 weights on the pool.",
      f"- Distributional samples: Delta = U(D u {{z}}) - U(D), |D| = k ~ U[{s.k_min}, {s.k_max}), D stratified by "
      f"class ({s.balance}) and without z; {s.samples_per_point} per point. Ground truth: {tr.samples_per_point} "
      f"samples (sizes spread evenly over the range) for {tr.num_points} random points; its own noise is "
      f"{summary['truth_noise_floor']:.3f} std(true values) (RMSE floor).",
      *([f"- Solver check: on {summary['solver_check']['samples']} samples the contributions differ from a "
         f"40-Newton-step solve by at most {summary['solver_check']['max_delta_error']:.2g} "
         f"({100 * summary['solver_check']['relative_to_delta_std']:.3f}% of std(Delta))."]
        if summary["solver_check"] else []),
      f"- {summary['contributions']} marginal contributions on {summary['devices']} device(s)"
      + (f", **{rate:.0f} contributions/s** (two trainings each)." if rate else "."),
      f"- Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in summary["timings"].items()),
      "",
      "## Valuation accuracy vs ground truth",
      "",
      "Distributional value psi(z) = E_k E_D Delta, estimated from each point's first b samples. RMSE is divided by "
      "the spread of the true values; the amortized models are trained on all points' samples at that budget.",
      "",
      "| method | " + " | ".join(f"b={b}" for b in budgets) + " |",
      "|---|" + "---|" * len(budgets),
  ]
  for m, label in METHODS.items():
    lines.append(f"| {label} (RMSE/std) | " + " | ".join(f"{acc[m][b]['nrmse']:.3f}" for b in budgets) + " |")
  for m, label in METHODS.items():
    lines.append(f"| {label} (Spearman) | " + " | ".join(f"{acc[m][b]['spearman']:.3f}" for b in budgets) + " |")
  lines += ["", "![accuracy](accuracy.png)", "", "## Mislabeled-point detection", "",
            "AUROC of flagging the flipped labels by low estimated value (all pool points).", "",
            "| method | " + " | ".join(f"b={b}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
  for m, label in METHODS.items():
    lines.append(f"| {label} | " + " | ".join(f"{aurocs[m][b]:.3f}" for b in budgets) + " |")
  lines += ["", "| baseline | AUROC | cost |", "|---|---|---|"]
  lines += [f"| {k} | {v:.3f} | {c} |" for k, (v, c) in baselines.items()]
  small, large = sizes
  lines += ["", "![mislabeled](mislabeled.png)", "", "## Point addition at a small vs a large dataset size", "",
            f"Add the {config.addition.num_added} points with the highest predicted contribution c k^-alpha "
            f"({config.addition.law} fit, budget {budgets[-1]}) to {config.addition.repeats} random "
            f"class-stratified base datasets of size k (drawn outside every candidate set; the same bases for every "
            f"rule). The rankings at k={small} and k={large} have Spearman correlation "
            f"{summary['addition_rank_correlation']:.3f}; "
            f"their top-{config.addition.num_added} sets share {summary['addition_overlap']} points.", "",
            "| rule | " + " | ".join(f"gain at k={k} (mean +- se)" for k in sizes) + " |", "|---|---|---|"]
  for rule in chosen:
    lines.append(f"| {rule} | " + " | ".join(
        f"{add_result[k][rule]['mean']:.5f} +- {add_result[k][rule]['se']:.5f}" for k in sizes) + " |")
  for name, paired in summary["addition_matched_minus_other"].items():
    lines.append(f"| **{name}: size-matched ranking minus the other size's** (paired) | " + " | ".join(
        f"**{paired[str(k)]['mean']:+.5f} +- {paired[str(k)]['se']:.5f}**" for k in sizes) + " |")
  lines += ["", addition_verdict(summary["addition_matched_minus_other"], sizes)]
  lines += ["", f"Among the {len(truth_points)} ground-truth points, the mean contribution near k={small} and near "
            f"k={large} (samples within 25% of the size) have Spearman correlation "
            f"{summary['addition_truth_rank_correlation']:.3f}; the 'ground truth' rules choose "
            f"{min(config.addition.num_added, len(truth_points) // 2)} of those points by it."]
  lines += ["", "![addition](addition.png)", "", "## Scaling curves and per-point laws", "",
            "Binned means of ground-truth samples with the MLE law fitted to them and the amortized law "
            f"(budget {budgets[-1]}); points with the clearest values among the ground-truth points.", "",
            "![scaling curves](scaling_curves.png)", "", "![params](params.png)", "",
            "Per-point table: [points.csv](points.csv) (c, alpha, sigma, beta from MLE and the amortized network, "
            "values from every estimator, TMC Data Shapley, Data Banzhaf, leave-one-out, and ground truth where "
            "computed). All numbers: [metrics.json](metrics.json).", ""]
  with open(path, "w") as f:
    f.write("\n".join(lines))


def _run_and_report(config: ml_collections.ConfigDict, workdir: str) -> None:
  out = run(config, workdir)
  m = out["metrics"]
  b = str(max(config.sampling.budgets))
  print(f"AUROC (amortized, b={b}) {m['auroc']['amortized'][b]:.3f}; report: {out['paths']['report.md']}")


if __name__ == "__main__":
  cli.main(_run_and_report, config_example="configs/valuation/breast_cancer.py",
           workdir_help="Directory for samples, checkpoints, plots and the report.")
