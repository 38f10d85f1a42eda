"""One seed of a contrastive feature selection benchmark: data from the config, every method, every budget k.

Data (``config.dataset``): ``"linear"`` (:func:`xattr.data.contrastive.linear_gaussian`, the salient features
known exactly), ``"grassy_digits"`` (:func:`~xattr.data.contrastive.grassy_digits`, digit-ink region and digit
labels known) or ``"files"`` (:func:`~xattr.data.contrastive.load_files`: a user's target/background files);
``config.data`` holds the generator's or loader's arguments. Each seed draws its own data (linear), split and
textures (grassy) and training randomness.

Methods (:data:`METHODS`): ``cfs`` (background autoencoder + stochastic gates), ``cfs_concrete`` (+ Concrete
top-k layer), ``cfs_joint`` (the joint variant, gates), ``no_background`` (the ablation), ``stg`` (supervised
gates, needs labels), ``cae``, ``laplacian``, ``variance``, ``pca``. Ranking methods run once and give every
budget as a prefix of their ranking; the Concrete ones (``cfs_concrete``, ``cae``) train one model per budget.

Scores per method and budget: ``recovery`` (fraction of the true salient features among the selected, out of
min(k, #salient)), ``ink_overlap`` (fraction of selected pixels inside the digit-ink region) and ``accuracy`` of a
classifier (an MLP through :func:`xattr.training.train`) trained on the selected features of the target rows and
tested on held-out target rows.

The results are one array bundle per seed (``<workdir>/seed_<s>/results.npz``) saved through
:func:`xattr.artifacts.compute_or_load` under a fingerprint of the config (less :data:`NOT_RESULTS`), the seed,
the data and the library source it depends on (:data:`MODULES`); training checkpoints live beside it, so an
interrupted seed resumes.

Example:
  >>> from xattr.cfs import benchmark
  >>> sorted(benchmark.RUNNERS) == sorted(benchmark.METHODS)
  True
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from xattr import artifacts, models, training
from xattr.cfs import baselines
from xattr.cfs import core
from xattr.data import contrastive
from xattr.models import MLP
from xattr.selection import predictor as predictor_lib

__all__ = ["METHODS", "UNSUPERVISED", "NEEDS_LABELS", "NOT_RESULTS", "MODULES", "Context", "background_model",
           "load_data",
           "classifier_accuracy", "scores_for", "RUNNERS", "run_seed", "run_seeds"]

METHODS = ("cfs", "cfs_concrete", "cfs_joint", "no_background", "stg", "cae", "laplacian", "variance", "pca")
UNSUPERVISED = ("cae", "laplacian", "variance", "pca")            # target-only, no labels
NEEDS_LABELS = ("stg",)
NOT_RESULTS = ("progress", "compilation_cache", "seeds", "plots")
# (The data enter the fingerprint by their arrays; the report is not part of the results.)
MODULES = ("xattr.cfs.model", "xattr.cfs.core", "xattr.cfs.baselines", "xattr.cfs.benchmark", "xattr.training",
           "xattr.models", "xattr.selection.baselines", "xattr.selection.predictor", "xattr.parallel", "xattr._checks")


class Context(NamedTuple):
  """What every method of one seed shares."""

  config: Any
  data: contrastive.ContrastiveData
  seed: int
  workdir: str
  cache: dict[str, Any]             # the seed's background autoencoder, trained once for every CFS selection


def background_model(ctx: Context) -> Any:
  """The seed's background autoencoder (trained on first use, checkpointed in ``<seed>/background``)."""
  if "background" not in ctx.cache:
    s = core.settings(**{k: v for k, v in _neural(ctx.config).items() if k != "progress"})
    ctx.cache["background"], _ = core.train_background(
        jax.random.fold_in(jax.random.key(ctx.seed), 0), ctx.data.background, s,
        workdir=_wd(ctx, "background"), progress=ctx.config.progress)
  return ctx.cache["background"]


def load_data(config: Any, seed: int) -> contrastive.ContrastiveData:
  """The seed's dataset named by ``config.dataset``, built from ``config.data``.

  Example:
    >>> import ml_collections
    >>> c = ml_collections.ConfigDict({"dataset": "linear", "data": {"num_target": 20, "num_background": 20}})
    >>> load_data(c, 0).target.shape
    (20, 60)
  """
  kwargs = config.data.to_dict() if hasattr(config.data, "to_dict") else dict(config.data)
  if config.dataset == "linear":
    return contrastive.linear_gaussian(seed=seed, **kwargs)
  if config.dataset == "grassy_digits":
    return contrastive.grassy_digits(seed=seed, **kwargs)
  if config.dataset == "files":
    if not kwargs.get("target_path") or not kwargs.get("background_path"):
      raise ValueError("config.data.target_path and config.data.background_path must name the user's files for "
                       f"dataset 'files', got {kwargs.get('target_path')!r} and {kwargs.get('background_path')!r}.")
    return contrastive.load_files(seed=seed, **kwargs)
  raise ValueError(f"config.dataset must be 'linear', 'grassy_digits' or 'files', got {config.dataset!r}.")


def _classifier_loss(net: MLP, batch):
  logits = net(batch["x"])
  return predictor_lib.cross_entropy(logits, batch["y"]).mean(), {}


def classifier_accuracy(key: jax.Array, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                        y_test: np.ndarray, section: Any, *, num_classes: int) -> float:
  """Test accuracy of an MLP classifier trained on ``x_train`` (features standardized with its statistics).

  ``section``: ``hidden_sizes``, ``num_steps``, ``batch_size``, ``learning_rate`` (a config section or dict).

  Example:
    >>> x = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32); y = (x[:, 0] > 0).astype(np.int32)
    >>> section = {"hidden_sizes": (16,), "num_steps": 200, "batch_size": 64, "learning_rate": 1e-2}
    >>> classifier_accuracy(jax.random.key(0), x, y, x, y, section, num_classes=2) > 0.9   # doctest: +SKIP
    True
  """
  get = section.get if hasattr(section, "get") else lambda k: getattr(section, k)
  mean, std = x_train.mean(0), x_train.std(0)
  std = np.where(std > 0, std, 1.0)
  norm = lambda a: ((a - mean) / std).astype(np.float32)
  init_key, order_key = jax.random.split(key)
  net = MLP(x_train.shape[1], tuple(get("hidden_sizes")), num_classes, rngs=nnx.Rngs(params=init_key))
  training.train(net, _classifier_loss, {"x": norm(x_train), "y": y_train.astype(np.int32)},
                 optimizer=training.optimizer({"learning_rate": get("learning_rate")}), num_steps=get("num_steps"),
                 batch_size=min(get("batch_size"), len(x_train)), seed=int(jax.random.randint(order_key, (), 0, 2 ** 30)),
                 progress=False, desc="cfs classifier")
  f = models.functional(net)
  logits = jax.jit(f.apply)(f.state, jnp.asarray(norm(x_test)))
  return float(np.mean(np.asarray(logits).argmax(-1) == y_test))


def scores_for(ctx: Context, key: jax.Array, indices: np.ndarray) -> dict[str, float]:
  """``recovery``, ``ink_overlap`` and ``accuracy`` of one selection (NaN where the data do not define them)."""
  data, config = ctx.data, ctx.config
  features = np.asarray(indices)
  out = {"recovery": np.nan, "ink_overlap": np.nan, "accuracy": np.nan}
  if data.salient is not None:
    out["recovery"] = len(set(features.tolist()) & set(data.salient.tolist())) / min(len(features), len(data.salient))
  if data.ink is not None:
    out["ink_overlap"] = float(np.mean(data.ink[features]))
  if data.target_labels is not None and data.test is not None:
    out["accuracy"] = classifier_accuracy(key, data.target[:, features], data.target_labels, data.test[:, features],
                                          data.test_labels, config.classifier, num_classes=data.num_classes)
  return out


def _neural(config: Any) -> dict[str, Any]:
  t = config.train
  return dict(hidden_sizes=tuple(config.model.hidden_sizes), code_size=config.model.code_size,
              learning_rate=t.learning_rate, batch_size=t.batch_size, background_steps=t.background_steps,
              selector_steps=t.selector_steps, sigma=config.gates.sigma, progress=config.progress)


def _concrete(config: Any) -> dict[str, Any]:
  c = config.concrete
  return dict(_neural(config), selector="concrete", selector_steps=c.num_steps,
              start_temperature=c.start_temperature, end_temperature=c.end_temperature)


def _ranking_runner(fit: Callable[[Context, jax.Array, int], core.Selection]):
  """A method that ranks once: every budget is a prefix of its top-K."""
  def run(ctx: Context, key: jax.Array) -> dict[int, np.ndarray]:
    top = fit(ctx, key, max(ctx.config.budgets)).indices
    return {k: top[:k] for k in ctx.config.budgets}
  return run


def _per_budget_runner(fit: Callable[[Context, jax.Array, int, str], core.Selection]):
  """A method that trains one model per budget (exactly k features each)."""
  def run(ctx: Context, key: jax.Array) -> dict[int, np.ndarray]:
    return {k: fit(ctx, jax.random.fold_in(key, k), k, f"_k{k}").indices for k in ctx.config.budgets}
  return run


def _wd(ctx: Context, name: str) -> str:
  return os.path.join(ctx.workdir, name)


RUNNERS: dict[str, Callable[[Context, jax.Array], dict[int, np.ndarray]]] = {
    "cfs": _ranking_runner(lambda ctx, key, k: core.select(
        key, ctx.data.target, ctx.data.background, num_features=k, penalty=ctx.config.gates.penalty,
        background_model=background_model(ctx), workdir=_wd(ctx, "cfs"), **_neural(ctx.config))),
    "cfs_joint": _ranking_runner(lambda ctx, key, k: core.select(
        key, ctx.data.target, ctx.data.background, num_features=k, joint=True, penalty=ctx.config.gates.penalty,
        workdir=_wd(ctx, "cfs_joint"), **_neural(ctx.config))),
    "no_background": _ranking_runner(lambda ctx, key, k: baselines.no_background(
        key, ctx.data.target, num_features=k, penalty=ctx.config.gates.penalty, workdir=_wd(ctx, "no_background"),
        **_neural(ctx.config))),
    "stg": _ranking_runner(lambda ctx, key, k: baselines.stg(
        key, ctx.data.target, ctx.data.target_labels, num_features=k, penalty=ctx.config.gates.stg_penalty,
        workdir=_wd(ctx, "stg"), **_neural(ctx.config))),
    "cfs_concrete": _per_budget_runner(lambda ctx, key, k, tag: core.select(
        key, ctx.data.target, ctx.data.background, num_features=k, workdir=_wd(ctx, "cfs_concrete" + tag),
        background_model=background_model(ctx), **_concrete(ctx.config))),
    "cae": _per_budget_runner(lambda ctx, key, k, tag: baselines.cae(
        key, ctx.data.target, num_features=k, workdir=_wd(ctx, "cae" + tag), **_concrete(ctx.config))),
    **{name: _ranking_runner(lambda ctx, key, k, fn=fn: fn(ctx.data.target, num_features=k))
       for name, fn in baselines.RANKINGS.items()},
}


def _check(config: Any, data: contrastive.ContrastiveData) -> None:
  for method in config.methods:
    if method not in METHODS:
      raise ValueError(f"config.methods entries must be in {METHODS}, got {method!r}.")
    if method in NEEDS_LABELS and data.target_labels is None:
      raise ValueError(f"method {method!r} needs target labels; dataset {data.name!r} has none (drop it from "
                       "config.methods).")
  budgets = list(config.budgets)
  if not budgets or min(budgets) < 1 or max(budgets) > data.num_features:
    raise ValueError(f"config.budgets must be k values in [1, {data.num_features}] (the number of features), got "
                     f"{budgets}.")


def _compute(ctx: Context) -> dict[str, np.ndarray]:
  config, data = ctx.config, ctx.data
  key = jax.random.key(ctx.seed)
  budgets = list(config.budgets)
  res: dict[str, Any] = {"budgets": np.array(budgets)}
  timings = {}
  for method in config.methods:
    t0 = time.perf_counter()
    chosen = RUNNERS[method](ctx, jax.random.fold_in(key, 1 + METHODS.index(method)))
    timings[method] = time.perf_counter() - t0
    selected = np.full((len(budgets), max(budgets)), -1, np.int32)
    metrics = {"recovery": [], "ink_overlap": [], "accuracy": []}
    for i, k in enumerate(budgets):
      selected[i, :k] = chosen[k]
      for name, v in scores_for(ctx, jax.random.fold_in(key, 1000 + k), chosen[k]).items():
        metrics[name].append(v)
    res[f"{method}/selected"] = selected
    res.update({f"{method}/{name}": np.array(v, np.float64) for name, v in metrics.items()})
    logging.info("seed %d: %s done in %.1f s", ctx.seed, method, timings[method])
  if data.target_labels is not None and data.test is not None:
    everything = np.arange(data.num_features)
    res["full_accuracy"] = np.array(scores_for(ctx, jax.random.fold_in(key, 999), everything)["accuracy"])
  res["timings"] = np.array(json.dumps(timings))
  return res


def run_seed(config: Any, seed: int, workdir: str) -> dict[str, np.ndarray]:
  """One seed's results (computed, or loaded if saved under the same fingerprint); checkpoints in
  ``workdir/seed_<seed>``.

  Example:
    >>> import ml_collections, tempfile
    >>> c = ml_collections.ConfigDict({"dataset": "linear", "data": {"num_target": 64, "num_background": 64},
    ...                                "methods": ("variance",), "budgets": (5, 10), "progress": False})
    >>> run_seed(c, 0, tempfile.mkdtemp())["variance/selected"].shape
    (2, 10)
  """
  data = load_data(config, seed)
  _check(config, data)
  settings = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  settings = {k: v for k, v in settings.items() if k not in NOT_RESULTS}
  arrays = [a for a in (data.target, data.background, data.target_labels, data.test, data.test_labels) if a is not None]
  fp = artifacts.fingerprint(settings, seed, data=arrays, modules=MODULES)
  folder = os.path.join(workdir, f"seed_{seed}")
  return artifacts.compute_or_load(os.path.join(folder, "results.npz"), fp,
                                   lambda: _compute(Context(config, data, seed, folder, {})))


def run_seeds(config: Any, workdir: str) -> list[dict[str, np.ndarray]]:
  """:func:`run_seed` for every seed of ``config.seeds``, in order."""
  return [run_seed(config, int(s), workdir) for s in config.seeds]
