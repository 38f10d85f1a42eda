"""The stages of a data-valuation study with individualized scaling laws, each saved and resumable.

A :class:`Study` bundles what every stage needs: the config, the working directory, the pool, its utility, the
device mesh and the root key. The stages, in order (each loads its saved result when its fingerprint matches,
so a killed job resumes; networks resume from their Orbax checkpoints):

1. :func:`main_samples` — for every pool point ``samples_per_point`` marginal contributions
   Delta = U(D u {z}) - U(D), |D| = k ~ U[k_min, k_max), D stratified by class (block-wise, resumable);
   :func:`solver_check` re-solves the first ones with 40 Newton steps;
2. :func:`ground_truth` — many samples with sizes spread evenly over [k_min, k_max) for a random subset of
   points; their mean is the distributional value psi(z) = E_k E_D Delta;
3. :func:`fit_estimators` — at each budget b (each point's first b samples): the per-point MC mean, the maximum
   likelihood scaling law, the amortized scaling-law network and the stochastic-amortization value network;
4. :func:`pool_baselines` — leave-one-out, Data Banzhaf (MSR), TMC Data Shapley and its value network;
5. :func:`score` — valuation accuracy against the ground truth and mislabeled-point detection AUROC.

Point addition is in :mod:`xattr.valuation.addition`, outputs in :mod:`xattr.valuation.report`.

Example:
  >>> import tempfile
  >>> from configs.valuation import breast_cancer
  >>> config = breast_cancer.get_config("smoke")
  >>> study = Study.create(config, tempfile.mkdtemp())
  >>> samples = main_samples(study, progress=False)
  >>> samples.deltas.shape
  (80, 8)
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import logging
from scipy import stats
from sklearn import metrics

from xattr import artifacts, parallel
from xattr.valuation import amortized, blocks, pool as pool_lib, samplers, scaling, utility

__all__ = ["DEPENDS_ON", "SAMPLES_DEPEND_ON", "METHODS", "Study", "Samples", "Scores", "Timings", "check_budgets",
           "draw_sizes", "main_samples", "solver_check",
           "ground_truth", "fit_law", "network_settings", "fit_estimators", "pool_baselines", "baseline_aurocs",
           "accuracy_metrics", "auroc", "score"]

# The xattr code the saved results depend on (the import closure of this module and of
# xattr.valuation.addition; tests/test_valuation_study.py checks it): editing one of these recomputes them, editing
# another module (or the report code) does not.
DEPENDS_ON = ("xattr._checks", "xattr._enumerate", "xattr._loop", "xattr.artifacts", "xattr.banzhaf",
              "xattr.data.embedded", "xattr.data.scaling_pool", "xattr.data.source", "xattr.estimate", "xattr.linalg",
              "xattr.masks", "xattr.models",
              "xattr.parallel", "xattr.training", "xattr.valuation.addition", "xattr.valuation.amortized",
              "xattr.valuation.blocks", "xattr.valuation.pool", "xattr.valuation.samplers", "xattr.valuation.scaling",
              "xattr.valuation.study", "xattr.valuation.utility", "xattr.walsh")
# The samples (the costly stages) depend on less: their fingerprints ignore the estimators' code.
SAMPLES_DEPEND_ON = (*blocks.SAMPLING_MODULES, "xattr.valuation.blocks", "xattr.valuation.pool",
                     "xattr.valuation.study", "xattr.artifacts")
METHODS = {"mc": "MC mean", "mle": "MLE scaling law", "amortized": "amortized scaling law (NLL)",
           "value_net": "stochastic amortization (MSE)"}
LAW_FIELDS = ("c", "alpha", "sigma", "beta")


def check_budgets(sampling: Any) -> None:
  """Raises unless every budget lies in [1, samples_per_point]."""
  if sampling.samples_per_point < max(sampling.budgets) or min(sampling.budgets) < 1:
    raise ValueError(f"sampling.budgets must lie in [1, samples_per_point={sampling.samples_per_point}], got "
                     f"{sampling.budgets}.")


@dataclasses.dataclass(frozen=True)
class Study:
  """What every stage of a valuation study needs.

  Attributes:
    config: the valuation config (``configs/valuation/base.py``).
    workdir: where the stages save their results.
    pool: the training pool.
    utility: U(D) on the pool.
    mesh: the device mesh the samplers shard over.
    key: the root PRNG key (``jax.random.key(config.seed)``); stage i uses ``fold_in(key, i)``.
  """

  config: Any
  workdir: str
  pool: pool_lib.Pool
  utility: utility.Utility
  mesh: jax.sharding.Mesh
  key: jax.Array

  @classmethod
  def create(cls, config: Any, workdir: str | os.PathLike, *, mesh: jax.sharding.Mesh | None = None) -> Study:
    """Checks the budgets, loads the pool, builds the utility and the mesh (default: all devices)."""
    check_budgets(config.sampling)
    pool = pool_lib.load_pool(config)
    u = pool_lib.make_utility(config.model, pool, seed=config.seed)
    return cls(config, os.fspath(workdir), pool, u, parallel.make_mesh() if mesh is None else mesh,
               jax.random.key(config.seed))

  @property
  def num_points(self) -> int:
    return len(self.pool.y)

  def settings(self) -> dict[str, Any]:
    """The settings every result depends on: data, model, metric and the size distribution of the subsets."""
    c, s = self.config, self.config.sampling
    synthetic = c.synthetic.to_dict() if c.source == "synthetic" else None
    return dict(source=c.source, dataset=c.dataset, npz_path=c.npz_path, tfds=c.tfds.to_dict(), seed=c.seed,
                test_fraction=c.test_fraction, pca_dims=c.pca_dims, max_pool=c.max_pool, label_noise=c.label_noise,
                model=c.model.to_dict(), metric=c.metric, k_min=s.k_min, k_max=s.k_max, balance=s.balance,
                synthetic=synthetic, size_distribution=s.size_distribution)

  def fingerprint(self, *parts: Any, modules: tuple[str, ...] = DEPENDS_ON) -> str:
    """:func:`xattr.artifacts.fingerprint` of the settings, ``parts``, the pool's arrays and the library code
    the results depend on (``modules``)."""
    return artifacts.fingerprint(self.settings(), *parts, data=self.pool.arrays, modules=modules)

  def path(self, *names: str) -> str:
    return os.path.join(self.workdir, *names)


class Samples(NamedTuple):
  """Marginal contributions, one row per valued point.

  Attributes:
    points: int32[P] the valued points.
    sizes: float64[P, S] subset sizes k.
    deltas: float64[P, S] contributions (of the config's metric).
    seconds: compute time of the samples (compilation included).
  """

  points: np.ndarray
  sizes: np.ndarray
  deltas: np.ndarray
  seconds: float

  @property
  def values(self) -> np.ndarray:
    """float64[P]: the mean contribution of each point."""
    return self.deltas.mean(1)

  @property
  def standard_errors(self) -> np.ndarray:
    return self.deltas.std(1, ddof=1) / np.sqrt(self.deltas.shape[1])

  @property
  def count(self) -> int:
    return int(self.deltas.size)

  def near_mask(self, size: float, ratio: float = 1.25) -> np.ndarray:
    """bool[P, S]: the samples with k within a factor ``ratio`` of ``size``."""
    return np.abs(np.log(self.sizes / size)) < np.log(ratio)

  def near(self, size: float, ratio: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Each point's mean contribution over its samples with k within a factor ``ratio`` of ``size``, and its
    standard error (mean 0 and se inf without such samples, NaN se with one).

    Example:
      >>> t = Samples(np.arange(1), np.array([[10.0, 11.0, 30.0]]), np.array([[1.0, 3.0, 9.0]]), 0.0)
      >>> [v.tolist() for v in t.near(10)]
      [[2.0], [1.0]]
    """
    near = self.near_mask(size, ratio)
    count = near.sum(1)
    mean = (self.deltas * near).sum(1) / np.maximum(count, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
      var = (((self.deltas - mean[:, None]) ** 2) * near).sum(1) / (count - 1)
      se = np.where(count > 0, np.sqrt(var / count), np.inf)
    return mean, se


def _draw(study: Study, stream: int, points: np.ndarray, per_point: int, sizes: np.ndarray, name: str, desc: str,
          progress: bool, *parts: Any) -> tuple[Samples, dict[str, np.ndarray]]:
  s = study.config.sampling
  flat_points = np.repeat(points, per_point)
  out = blocks.sample_in_blocks(study.utility, jax.random.fold_in(study.key, stream), flat_points, sizes,
                                np.arange(len(flat_points)), directory=study.path("samples", name),
                                fingerprint=study.fingerprint(*parts, modules=SAMPLES_DEPEND_ON),
                                block_size=s.block_size, balance=s.balance, mesh=study.mesh,
                                chunk_size=s.chunk_size, desc=desc, progress=progress)
  shape = (len(points), per_point)
  deltas = out[study.config.metric].reshape(shape).astype(np.float64)
  return Samples(points, out["size"].reshape(shape).astype(np.float64), deltas, out[blocks.SECONDS]), out


SIZE_DISTRIBUTIONS = ("uniform", "log-uniform")


def draw_sizes(key: jax.Array, num: int, k_min: int, k_max: int, distribution: str = "uniform") -> np.ndarray:
  """int32[num] subset sizes in [k_min, k_max): uniform (:func:`~xattr.valuation.samplers.sample_sizes`), or
  log-uniform (floor of exp(U[log k_min, log k_max)): as many samples per octave at small k as at large k, for
  laws fitted over a wide range).

  Example:
    >>> k = draw_sizes(jax.random.key(0), 10000, 20, 200, "log-uniform")
    >>> bool(k.min() >= 20 and k.max() < 200), round(float(np.mean(k < 63)), 1)
    (True, 0.5)
  """
  if distribution not in SIZE_DISTRIBUTIONS:
    raise ValueError(f"sampling.size_distribution must be one of {SIZE_DISTRIBUTIONS}, got {distribution!r}.")
  if distribution == "uniform":
    return np.asarray(samplers.sample_sizes(key, num, k_min, k_max))
  u = np.asarray(jax.random.uniform(key, (num,), minval=np.log(k_min), maxval=np.log(k_max)), np.float64)
  return np.clip(np.floor(np.exp(u)), k_min, k_max - 1).astype(np.int32)


def main_samples(study: Study, *, progress: bool = True) -> Samples:
  """``samples_per_point`` distributional samples of every pool point (key streams 10: sizes, drawn by
  ``sampling.size_distribution``; 1: subsets)."""
  s, n = study.config.sampling, study.num_points
  sizes = draw_sizes(jax.random.fold_in(study.key, 10), n * s.samples_per_point, s.k_min, s.k_max,
                     s.size_distribution)
  parts = (s.samples_per_point,) + ((s.size_distribution,) if s.size_distribution != "uniform" else ())
  samples, _ = _draw(study, 1, np.arange(n, dtype=np.int32), s.samples_per_point, sizes, "main", "main samples",
                     progress, *parts)
  return samples


def solver_check(study: Study, samples: Samples) -> dict[str, float] | None:
  """The first ``config.solver_check`` main samples again with 40 Newton steps (logistic utilities; else None).

  Returns the number of samples, the largest contribution error and that error relative to std(Delta); warns
  when it exceeds 5% (the configured step counts do not reach the optimum).
  """
  config, u = study.config, study.utility
  if not config.solver_check or config.model.kind != "logistic":
    return None
  s = config.sampling
  m = min(config.solver_check, samples.count)
  exact = dataclasses.replace(u, newton_steps=40, chord_steps=0, add_newton_steps=40, add_chord_steps=0)
  points, sizes = np.repeat(samples.points, samples.deltas.shape[1])[:m], samples.sizes.ravel()[:m].astype(np.int32)
  fp = study.fingerprint(s.samples_per_point, m, modules=SAMPLES_DEPEND_ON)
  ref = artifacts.compute_or_load(
      study.path("samples", "solver_check.npz"), fp,
      lambda: samplers.distributional(exact, jax.random.fold_in(study.key, 1), points, sizes, ids=np.arange(m),
                                      balance=s.balance, mesh=study.mesh, chunk_size=s.chunk_size, progress=False))
  err = float(np.abs(ref[config.metric] - samples.deltas.ravel()[:m].astype(np.float32)).max())
  check = dict(samples=m, max_delta_error=err, relative_to_delta_std=err / float(samples.deltas.std()))
  if check["relative_to_delta_std"] > 0.05:
    logging.warning("the configured Newton steps leave errors of %.2g (%.0f%% of std(Delta)) against 40 steps: "
                    "raise config.model.newton_steps / add_newton_steps", err, 100 * check["relative_to_delta_std"])
  return check


def ground_truth(study: Study, *, progress: bool = True) -> Samples:
  """``truth.samples_per_point`` samples (sizes spread evenly in k or log k by ``truth.spacing``, key stream 2) of
  ``truth.num_points`` random points (all of them when it is at least the pool)."""
  s, tr, n = study.config.sampling, study.config.truth, study.num_points
  rng = np.random.default_rng([study.config.seed, 2])
  points = np.sort(rng.choice(n, min(tr.num_points, n), replace=False)).astype(np.int32)
  sizes = np.tile(blocks.even_sizes(tr.samples_per_point, s.k_min, s.k_max, tr.spacing), len(points))
  parts = (tr.samples_per_point, points.tolist()) + ((tr.spacing,) if tr.spacing != "linear" else ())
  samples, _ = _draw(study, 2, points, tr.samples_per_point, sizes, "truth", "ground-truth samples", progress,
                     *parts)
  return samples


def fit_law(mle: Any, sizes: np.ndarray, deltas: np.ndarray, mask: np.ndarray | None = None) -> scaling.ScalingFit:
  """:func:`xattr.valuation.scaling.mle_fit` with the settings of an ``mle`` config section."""
  return scaling.mle_fit(sizes, deltas, mask, alpha_range=mle.alpha_range, beta_range=mle.beta_range,
                         grid=tuple(mle.grid), levels=mle.levels)


def network_settings(a: Any, seed: int) -> dict[str, Any]:
  """Keyword arguments of the amortized networks from an ``amortized`` config section."""
  return dict(hidden_sizes=a.hidden_sizes, num_steps=a.num_steps, batch_size=a.batch_size,
              learning_rate=a.learning_rate, weight_decay=a.weight_decay, seed=seed,
              holdout_fraction=a.holdout_fraction, eval_every=a.eval_every)


def _budget_estimates(study: Study, samples: Samples, b: int, nets: str) -> dict[str, np.ndarray]:
  config, s = study.config, study.config.sampling
  features, kwargs = study.pool.features, network_settings(config.amortized, config.seed)
  pts = np.repeat(np.arange(study.num_points), b)
  k, d = samples.sizes[:, :b], samples.deltas[:, :b]
  # All samples with a mask: one shape, so one compilation serves every budget.
  ml = fit_law(config.mle, samples.sizes, samples.deltas, np.arange(s.samples_per_point)[None, :] < b)
  am = amortized.fit_scaling_network(features, pts, k.ravel(), d.ravel(),
                                     variance_weighting=config.amortized.variance_weighting,
                                     workdir=os.path.join(nets, f"scaling_b{b}"), **kwargs)
  vn = amortized.fit_value_network(features, pts, d.ravel(), workdir=os.path.join(nets, f"value_b{b}"), **kwargs)
  out = dict(mc=d.mean(1), value_net=vn, mle=scaling.distributional_value(ml.c, ml.alpha, s.k_min, s.k_max),
             amortized=scaling.distributional_value(am.c, am.alpha, s.k_min, s.k_max))
  out.update({f"mle_{f}": getattr(ml, f) for f in LAW_FIELDS})
  out.update({f"amortized_{f}": getattr(am, f) for f in LAW_FIELDS})
  ll = scaling.loglog_fit(k, d, num_bins=int(np.clip(b // 4, 2, 8)))
  out.update(loglog_c=ll.c, loglog_alpha=ll.alpha)
  return out


def fit_estimators(study: Study, samples: Samples) -> dict[int, dict[str, np.ndarray]]:
  """Per budget b: every estimator of :data:`METHODS` from each point's first b samples, both fitted laws
  (``mle_c``, ``mle_alpha``, ..., ``amortized_beta``) and the log-log regression's ``loglog_c``, ``loglog_alpha``
  (NaN where fewer than two bins of the point's samples have a mean of its sign). Networks are checkpointed under
  ``nets/<fingerprint>``."""
  config = study.config
  fp = study.fingerprint(config.sampling.samples_per_point, config.mle, config.amortized)
  nets = study.path("nets", fp)
  return {b: artifacts.compute_or_load(study.path("estimates", f"budget_{b:05d}.npz"), fp,
                                       lambda b=b: _budget_estimates(study, samples, b, nets))
          for b in config.sampling.budgets}


def _baselines(study: Study) -> dict[str, np.ndarray]:
  config, u, s, n = study.config, study.utility, study.config.sampling, study.num_points
  out = {"loo": samplers.leave_one_out(u, metric=config.metric, mesh=study.mesh, chunk_size=s.chunk_size)}
  if config.banzhaf_samples:
    est = samplers.data_banzhaf(u, jax.random.fold_in(study.key, 4), config.banzhaf_samples, metric=config.metric)
    out["banzhaf"] = np.asarray(est.values, np.float64)
  if config.tmc.num_permutations:
    deep = dataclasses.replace(u, newton_steps=config.tmc.newton_steps) if config.model.kind == "logistic" else u
    rows = samplers.tmc(deep, jax.random.fold_in(study.key, 3), config.tmc.num_permutations, metric=config.metric,
                        mesh=study.mesh, chunk_size=s.chunk_size)
    out["tmc_rows"] = rows
    out["tmc"] = rows.mean(0)
    nets = study.path("nets", study.fingerprint(config.tmc, config.amortized), "value_tmc")
    out["tmc_net"] = amortized.fit_value_network(study.pool.features, np.tile(np.arange(n), len(rows)), rows.ravel(),
                                                 workdir=nets, **network_settings(config.amortized, config.seed))
  return out


def pool_baselines(study: Study) -> dict[str, np.ndarray]:
  """Values of every pool point by leave-one-out (``loo``), Data Banzhaf (``banzhaf``, key stream 4; if
  ``banzhaf_samples``), TMC Data Shapley (``tmc``, its orderings ``tmc_rows``, key stream 3) and the value network
  trained on the orderings (``tmc_net``; if ``tmc.num_permutations``)."""
  config = study.config
  return artifacts.compute_or_load(study.path("estimates", "baselines.npz"),
                                   study.fingerprint(config.tmc, config.amortized, config.banzhaf_samples),
                                   lambda: _baselines(study))


def auroc(values: np.ndarray, flipped: np.ndarray) -> float:
  """AUROC of flagging flipped labels by low value (NaN values count as 0; NaN if all or none are flipped).

  Example:
    >>> auroc(np.array([0.1, 0.2, -1.0, 0.3]), np.array([False, False, True, False]))
    1.0
  """
  if flipped.all() or not flipped.any():
    return float("nan")
  return float(metrics.roc_auc_score(flipped, -np.nan_to_num(values)))


def baseline_aurocs(values: dict[str, np.ndarray], flipped: np.ndarray, config: Any
                    ) -> dict[str, tuple[float, str]]:
  """Baseline name -> (detection AUROC, its cost in fits) for the values of :func:`pool_baselines`."""
  n = len(flipped)
  out = {"leave-one-out": (auroc(values["loo"], flipped), f"{n + 1} fits")}
  if "banzhaf" in values:
    out["Data Banzhaf (MSR)"] = (auroc(values["banzhaf"], flipped), f"{config.banzhaf_samples} fits")
  if "tmc" in values:
    p = config.tmc.num_permutations
    out["TMC Data Shapley"] = (auroc(values["tmc"], flipped), f"{p} perms, {p * (n + 1)} fits")
    out["TMC + stochastic amortization"] = (auroc(values["tmc_net"], flipped), "same fits")
  return out


def accuracy_metrics(estimate: np.ndarray, truth: np.ndarray) -> dict[str, float]:
  """Errors of value estimates against ground truth: RMSE / std(truth), Pearson and Spearman correlation.

  Example:
    >>> m = accuracy_metrics(np.array([1.0, 2.0, 3.5]), np.array([1.0, 2.0, 3.0]))
    >>> round(m["nrmse"], 3), round(m["spearman"], 3)
    (0.354, 1.0)
  """
  err = estimate - truth
  return dict(nrmse=float(np.sqrt(np.mean(err ** 2)) / truth.std()),
              pearson=float(np.corrcoef(estimate, truth)[0, 1]),
              spearman=float(stats.spearmanr(estimate, truth).statistic))


class Scores(NamedTuple):
  """Per method and budget: accuracy against the ground truth and detection AUROC.

  Attributes:
    accuracy: method -> budget -> :func:`accuracy_metrics`.
    auroc: method -> budget -> AUROC of flagging flipped labels (all pool points).
    noise_floor: the ground truth's own noise, RMS standard error / std(true values) (an RMSE floor).
  """

  accuracy: dict[str, dict[int, dict[str, float]]]
  auroc: dict[str, dict[int, float]]
  noise_floor: float


def score(estimates: dict[int, dict[str, np.ndarray]], truth: Samples, flipped: np.ndarray) -> Scores:
  """:class:`Scores` of the estimates of :func:`fit_estimators` (every method of :data:`METHODS`)."""
  budgets = list(estimates)
  psi = truth.values
  return Scores({m: {b: accuracy_metrics(estimates[b][m][truth.points], psi) for b in budgets} for m in METHODS},
                {m: {b: auroc(estimates[b][m], flipped) for b in budgets} for m in METHODS},
                float(np.sqrt(np.mean(truth.standard_errors ** 2)) / psi.std()))


class Timings:
  """Wall-clock seconds per stage, in the order the stages ran, and the total since creation."""

  def __init__(self):
    self.start = time.perf_counter()
    self.seconds: dict[str, float] = {}

  def time(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, its wall time recorded under ``name``."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    self.seconds[name] = time.perf_counter() - t0
    return out

  def total(self) -> dict[str, float]:
    """The stage times and ``total`` (now minus creation)."""
    self.seconds["total"] = time.perf_counter() - self.start
    return dict(self.seconds)
