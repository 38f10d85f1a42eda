"""A dynamic feature selection study: per seed, pretrain a masked predictor, run every method, score its curves.

For one seed (:func:`run_seed`; its own split, initialization and training randomness):

  1. pretrain a masked predictor on uniform-cardinality masks (:func:`predictor.pretrain`);
  2. train each method of :data:`METHODS` and select features for the test set with the jit-compiled greedy
     rollout: ``gdfs`` (policy network; fine-tunes a copy of the predictor), ``dime`` (value network; its own
     copy), ``random`` (a random order per sample) and ``static`` (a greedy forward-selection ranking on validation
     data), both with the pretrained predictor, and ``cae`` (a Concrete selector per budget, with its own
     fine-tuned predictor copy);
  3. score accuracy (AUROC for binary labels) after 0..K selections, and the (average cost, metric) points of the
     per-sample stopping rules: DIME's penalized rule over a grid of lambdas, and the confidence threshold for
     GDFS and DIME. On the oracle problem also: how often the first selections match the closed-form order, and
     DIME's CMI estimation error.

The results are one array bundle per seed (``<workdir>/seed_<s>/results.npz``), saved through
:func:`xattr.artifacts.compute_or_load` under a fingerprint of the config (less :data:`NOT_RESULTS`), the seed,
the problem's data and the source of the library modules it depends on (:data:`MODULES`): a rerun reuses them,
an interrupted one resumes its training stages from their checkpoints.

Example (every method has a runner; a result's fingerprint ignores the settings that do not change it):
  >>> from xattr.selection import study
  >>> sorted(study.RUNNERS) == sorted(study.METHODS)
  True
  >>> "progress" in study.NOT_RESULTS and "xattr.selection" in study.MODULES
  True

``tests/test_selection_study.py`` runs :func:`run_seed` on a tiny config.
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

from xattr import artifacts
from xattr.models import vit
from xattr.selection import baselines, dime, evaluation, gdfs, oracle, predictor
from xattr.selection import problem as problem_lib
from xattr.selection import rollout

__all__ = ["METHODS", "MAX_IMAGES", "NOT_RESULTS", "MODULES", "Context", "network", "fingerprint",
           "dynamic_results", "fixed_results", "oracle_cmi_error", "oracle_agreement", "RUNNERS", "run_seed",
           "run_seeds"]

METHODS = ("gdfs", "dime", "random", "static", "cae")
MAX_IMAGES = 32           # test images kept per seed for the selection-order picture
# Settings that do not change results: a run resumed with other values reuses what is saved.
NOT_RESULTS = ("progress", "compilation_cache", "seeds", "plots", "report_budgets", "small_budgets")
# The library code a seed's results depend on (its source is part of the results' fingerprint).
MODULES = ("xattr.selection", "xattr.training", "xattr.parallel", "xattr.models", "xattr.masks", "xattr.data",
           "xattr._checks")


class Context(NamedTuple):
  """What every method of one seed shares: the config, the problem, the pretrained predictor and the seed folder."""

  config: Any
  problem: problem_lib.Problem
  metric: str
  seed: int
  base: nnx.Module                  # the pretrained masked predictor (methods that fine-tune clone it)
  base_fn: predictor.MaskedFn
  workdir: str


def network(config: Any, problem: problem_lib.Problem, out_features: int, seed: int) -> nnx.Module:
  """A masked MLP on ``[x * m, m]``, or (``config.model.kind == 'vit'``) a masked ViT whose patches are the players."""
  if config.model.kind == "vit":
    cfg = vit.config(config.model.vit, image_size=problem.image_shape, num_channels=1, num_classes=out_features)
    return predictor.MaskedViT(vit.ViT(cfg, rngs=nnx.Rngs(seed)))
  return predictor.MaskedMLP(problem.num_features, out_features, tuple(config.model.hidden_sizes),
                             groups=problem.groups, activation=config.model.activation, rngs=nnx.Rngs(seed))


def fingerprint(config: Any, seed: int, problem: problem_lib.Problem) -> str:
  """The fingerprint of one seed's results: settings (less :data:`NOT_RESULTS`), seed, data and library code.

  Example:
    >>> import numpy as np
    >>> p = problem_lib.Problem({"x": np.zeros((2, 1))}, {}, {}, 2, None, np.ones(1), None, None)
    >>> fingerprint({"max_features": 3, "progress": True}, 0, p) == fingerprint({"max_features": 3}, 0, p)
    True
    >>> fingerprint({"max_features": 3}, 0, p) == fingerprint({"max_features": 3}, 1, p)
    False
  """
  settings = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  settings = {k: v for k, v in settings.items() if k not in NOT_RESULTS}
  data = [problem.train, problem.val, problem.test, problem.costs, problem.groups]
  return artifacts.fingerprint(settings, seed, data=[d for d in data if d is not None], modules=MODULES)


def dynamic_results(name: str, predict: rollout.PredictFn, score: rollout.ScoreFn, params: Any,
                    ctx: Context, with_penalty: bool) -> dict[str, np.ndarray]:
  """Curves over budgets 0..K, average cost per budget, and the stopping-rule sweeps of a dynamic method."""
  problem, config = ctx.problem, ctx.config
  x, y = problem.test["x"], problem.test["y"]
  costs = jnp.asarray(problem.costs)
  # Both rules always present (with values that never trigger when unused): one compiled rollout for all runs.
  off = dict(penalty=-3e38, confidence=2.0)
  run = lambda **rules: rollout.greedy(predict, score, params, x, num_players=problem.num_players,
                                       num_steps=config.max_features, costs=costs, **{**off, **rules})
  res = {f"{name}/{k}": v for k, v in evaluation.rollout_scores(run(), y, problem.costs, ctx.metric).items()}
  sweeps = {"confidence": [run(confidence=c) for c in config.sweeps.confidences]}
  if with_penalty:
    sweeps["penalized"] = [run(penalty=lam) for lam in config.sweeps.penalties]
  for rule, outs in sweeps.items():
    points = np.array([evaluation.stopping_point(o, y, ctx.metric) for o in outs])
    res[f"{name}/{rule}_cost"], res[f"{name}/{rule}_metric"] = points[:, 0], points[:, 1]
  return res


def fixed_results(name: str, scores: jax.Array, ctx: Context) -> dict[str, np.ndarray]:
  """Curves of the pretrained predictor selecting by fixed per-sample ``scores`` (highest first)."""
  out = baselines.fixed_rollout(ctx.base_fn.apply, ctx.base_fn.params, ctx.problem.test["x"], scores,
                                num_players=ctx.problem.num_players, num_steps=ctx.config.max_features)
  scored = evaluation.rollout_scores(out, ctx.problem.test["y"], ctx.problem.costs, ctx.metric)
  return {f"{name}/{k}": v for k, v in scored.items()}


def oracle_cmi_error(config: Any, problem: problem_lib.Problem, pred: predictor.MaskedFn,
                     value: predictor.MaskedFn, scaling: str) -> np.ndarray:
  """Mean |DIME's CMI estimate - exact CMI| over unselected features, with nothing selected and with x_0 selected."""
  spec, x = problem_lib.oracle_spec(config), jnp.asarray(problem.test["x"])
  estimate = jax.jit(lambda m: dime.cmi_estimate(value.apply(value.params, x, m), pred.apply(pred.params, x, m),
                                                 scaling))
  errors = []
  for first in (False, True):
    mask = jnp.zeros(x.shape, bool).at[:, 0].set(first)
    err = np.abs(np.asarray(estimate(mask) - oracle.cmi(x, mask, spec)))
    errors.append(float(err[~np.asarray(mask)].mean()))
  return np.array(errors)


def _run_gdfs(ctx: Context, key: jax.Array) -> dict[str, np.ndarray]:
  config, problem, p = ctx.config, ctx.problem, ctx.problem.num_players
  pred, policy = nnx.clone(ctx.base), network(config, problem, p, ctx.seed + 1000)
  g = config.gdfs
  out = gdfs.train(key, pred, policy, problem.train, problem.val, num_steps=config.max_features,
                   steps_per_stage=g.steps_per_stage, batch_size=g.batch_size, temperatures=tuple(g.temperatures),
                   learning_rate=g.learning_rate, workdir=os.path.join(ctx.workdir, "gdfs"), progress=config.progress)
  pf, sf = predictor.masked_fn(pred), predictor.masked_fn(policy)
  res = {"gdfs/val_losses": np.array(out.val_losses)}
  res.update(dynamic_results("gdfs", gdfs.predict_fn(pf.apply), gdfs.score_fn(sf.apply),
                             {"predictor": pf.params, "policy": sf.params}, ctx, with_penalty=False))
  return res


def _run_dime(ctx: Context, key: jax.Array) -> dict[str, np.ndarray]:
  config, problem, p = ctx.config, ctx.problem, ctx.problem.num_players
  pred, value = nnx.clone(ctx.base), network(config, problem, p, ctx.seed + 2000)
  dc = config.dime
  costs = None if config.costs == "uniform" else problem.costs
  out = dime.train(key, pred, value, problem.train, problem.val, num_steps=config.max_features,
                   steps_per_block=dc.steps_per_block, batch_size=dc.batch_size, epsilon=dc.epsilon,
                   decay=dc.decay, min_epsilon=dc.min_epsilon, patience=dc.patience, max_blocks=dc.max_blocks,
                   scaling=dc.scaling, costs=costs, learning_rate=dc.learning_rate,
                   workdir=os.path.join(ctx.workdir, "dime"), progress=config.progress)
  res = {"dime/val_losses": np.array(out.val_losses), "dime/epsilons": np.array(out.epsilons)}
  pf, vf = predictor.masked_fn(pred), predictor.masked_fn(value)
  params = {"predictor": pf.params, "value": vf.params, "costs": jnp.asarray(problem.costs)}
  res.update(dynamic_results("dime", dime.predict_fn(pf.apply), dime.score_fn(vf.apply, dc.scaling), params, ctx,
                             with_penalty=True))
  if config.dataset == "oracle":
    res["dime/oracle_cmi_error"] = oracle_cmi_error(config, problem, pf, vf, dc.scaling)
  return res


def _run_random(ctx: Context, key: jax.Array) -> dict[str, np.ndarray]:
  return fixed_results("random", baselines.random_scores(key, len(ctx.problem.test["y"]), ctx.problem.num_players),
                       ctx)


def _run_static(ctx: Context, key: jax.Array) -> dict[str, np.ndarray]:
  del key   # deterministic
  p, val = ctx.problem.num_players, ctx.problem.val
  ranking = baselines.static_greedy_ranking(ctx.base_fn.apply, ctx.base_fn.params, val["x"], val["y"],
                                            num_players=p, num_steps=ctx.config.max_features)
  res = {"static/ranking": np.asarray(ranking)}
  res.update(fixed_results("static", baselines.ranking_scores(ranking, p), ctx))
  return res


def _run_cae(ctx: Context, key: jax.Array) -> dict[str, np.ndarray]:
  config, problem, c = ctx.config, ctx.problem, ctx.config.cae
  x, y = problem.test["x"], problem.test["y"]
  budgets = [b for b in c.budgets if b <= config.max_features]
  metrics, accs, costs = [], [], []
  for b in budgets:
    pred = nnx.clone(ctx.base)
    chosen = baselines.train_cae(jax.random.fold_in(key, b), pred, problem.train, num_selected=b,
                                 num_steps=c.num_steps, batch_size=c.batch_size, learning_rate=c.learning_rate,
                                 start_temperature=c.start_temperature, end_temperature=c.end_temperature,
                                 workdir=os.path.join(ctx.workdir, f"cae_{b}"), progress=config.progress)
    mask = np.zeros((len(y), problem.num_players), bool)
    mask[:, chosen] = True
    pf = predictor.masked_fn(pred)
    logits = np.asarray(pf.apply(pf.params, x, mask))
    metrics.append(evaluation.score(logits, y, ctx.metric))
    accs.append(evaluation.score(logits, y, "accuracy"))
    costs.append(float(problem.costs[chosen].sum()))
  return {"cae/budgets": np.array(budgets), "cae/metric": np.array(metrics), "cae/accuracy": np.array(accs),
          "cae/cost": np.array(costs)}


# Method name -> ``(context, key) -> results`` (keys prefixed with the name). Each method's key is
# ``fold_in(key(seed), 1 + METHODS.index(name))``.
RUNNERS: dict[str, Callable[[Context, jax.Array], dict[str, np.ndarray]]] = {
    "gdfs": _run_gdfs, "dime": _run_dime, "random": _run_random, "static": _run_static, "cae": _run_cae}


def oracle_agreement(config: Any, problem: problem_lib.Problem, res: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """``<method>/oracle_agreement``: fraction of test samples whose first t selections equal the closed-form
  greedy order, t = 1..min(order length, K), for each method with an order in ``res``."""
  reference = oracle.closed_form_order(problem.test["x"], problem_lib.oracle_spec(config))
  steps = list(range(1, min(reference.shape[1], config.max_features) + 1))
  out = {}
  for method in ("gdfs", "dime", "random", "static"):
    if f"{method}/order" in res:
      agree = oracle.first_selection_agreement(res[f"{method}/order"], reference, steps)
      out[f"{method}/oracle_agreement"] = np.array([agree[t] for t in steps])
  return out


def _check(config: Any, problem: problem_lib.Problem) -> None:
  for method in config.methods:
    if method not in METHODS:
      raise ValueError(f"config.methods entries must be in {METHODS}, got {method!r}.")
  k, p = config.max_features, problem.num_players
  if not 1 <= k <= p:
    raise ValueError(f"config.max_features must lie in [1, {p}] (the number of players), got {k}.")


def _compute(config: Any, problem: problem_lib.Problem, seed: int, workdir: str) -> dict[str, np.ndarray]:
  metric = config.metric or evaluation.default_metric(problem.num_classes)
  key = jax.random.key(seed)
  t0 = time.perf_counter()
  base = network(config, problem, problem.num_classes, seed)
  pc = config.pretrain
  predictor.pretrain(jax.random.fold_in(key, 0), base, problem.train, num_steps=pc.num_steps,
                     batch_size=pc.batch_size, learning_rate=pc.learning_rate, weight_decay=pc.weight_decay,
                     workdir=os.path.join(workdir, "pretrain"), progress=config.progress)
  timings = {"pretrain": time.perf_counter() - t0}
  ctx = Context(config, problem, metric, seed, base, predictor.masked_fn(base), workdir)
  x, y = problem.test["x"], problem.test["y"]
  full = ctx.base_fn.apply(ctx.base_fn.params, x, np.ones((len(y), problem.num_players), bool))
  res: dict[str, Any] = {"labels": y, "costs": problem.costs,
                         "full_metric": np.array(evaluation.score(np.asarray(full), y, metric))}
  for method in config.methods:
    t0 = time.perf_counter()
    res.update(RUNNERS[method](ctx, jax.random.fold_in(key, 1 + METHODS.index(method))))
    timings[method] = time.perf_counter() - t0
    logging.info("seed %d: %s done in %.1f s", seed, method, timings[method])
  if config.dataset == "oracle":
    res.update(oracle_agreement(config, problem, res))
  res["timings"] = np.array(json.dumps(timings))
  res["metric_name"] = np.array(metric)
  if problem.test_images is not None:
    res["test_images"] = problem.test_images[:MAX_IMAGES]
  return res


def run_seed(config: Any, seed: int, workdir: str) -> dict[str, np.ndarray]:
  """Trains and evaluates every method of ``config.methods`` for one seed, or loads its saved results.

  Args:
    config: a ``configs/dfs`` config.
    seed: the seed (split, initialization, training randomness).
    workdir: the seed's folder: training checkpoints (``pretrain/``, ``gdfs/``, ``dime/``, ``cae_<b>/``) and
      ``results.npz``.

  Returns:
    name -> array: per method ``<m>/curve`` (metric after 0..K selections), ``<m>/accuracy``, ``<m>/cost``,
    ``<m>/order``, the stopping-rule sweeps ``<m>/<rule>_cost|_metric``, CAE's ``cae/budgets|metric|accuracy|
    cost``; and ``labels``, ``costs``, ``full_metric``, ``timings`` (JSON), ``metric_name``, ``test_images``.

  Raises:
    ValueError: an unknown method in ``config.methods``, or ``max_features`` outside [1, number of players].
  """
  problem = problem_lib.load(config, seed)
  _check(config, problem)
  path = os.path.join(workdir, "results.npz")
  fp = fingerprint(config, seed, problem)
  saved = artifacts.load(path, fp)
  if saved is not None:
    logging.info("seed %d: reusing %s", seed, path)
    return saved
  os.makedirs(workdir, exist_ok=True)
  return artifacts.compute_or_load(path, fp, lambda: _compute(config, problem, seed, workdir))


def run_seeds(config: Any, workdir: str) -> list[dict[str, np.ndarray]]:
  """:func:`run_seed` for each of ``config.seeds``, in ``<workdir>/seed_<s>``."""
  return [run_seed(config, int(seed), os.path.join(workdir, f"seed_{seed}")) for seed in config.seeds]
