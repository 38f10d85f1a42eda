"""Dynamic feature selection: GDFS and DIME against random, static-ranking and CAE-style baselines.

  python -m experiments.dfs --config=configs/dfs/digits.py --workdir=runs/dfs_digits

For every seed (each its own train/validation/test split and initialization), resumable from ``workdir``:
  1. pretrain a masked predictor on uniform-cardinality masks (:func:`xattr.selection.predictor.pretrain`);
  2. train each method and select features for the test set with the jit-compiled greedy rollout:
     ``gdfs`` (policy network; fine-tunes a copy of the predictor), ``dime`` (value network; its own copy),
     ``random`` (a random order per sample) and ``static`` (a greedy forward-selection ranking on validation
     data), both with the pretrained predictor, and ``cae`` (a Concrete selector layer per budget, with its own
     fine-tuned predictor copy);
  3. score accuracy (AUROC for binary labels) after 0..K selections, and the (average cost, metric) points of
     the per-sample stopping rules: DIME's penalized rule over a grid of lambdas, and the confidence
     threshold for GDFS and DIME. Results go to ``workdir/seed_<s>/results.npz`` (skipped when present).
Then the seeds are summarized (mean and standard deviation) into ``metric_vs_features.png``,
``metric_vs_cost.png``, ``selection_order.png``, ``report.md`` and ``summary.json``.

Data: ``config.dataset`` names an embedded scikit-learn dataset ('digits', 'breast_cancer', ...), 'oracle' (the
synthetic problem with a closed-form greedy order, :mod:`xattr.selection.oracle`; the report then also gives
how often each method's first selections match it), or 'tfds:<name>' for an image dataset read from
``config.data_dir`` with ``tfds.data_source`` (nothing is downloaded; pixels become features).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from experiments import cli
from xattr import data as data_lib
from xattr import masks
from xattr.models import vit
from xattr.selection import baselines, dime, evaluation, gdfs, oracle, plots, predictor, rollout


METHODS = ("gdfs", "dime", "random", "static", "cae")
_MAX_IMAGES = 32          # test images kept per seed for the selection-order picture


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------

class Problem(NamedTuple):
  """One seed's data and the selection problem's structure."""

  train: dict[str, np.ndarray]
  val: dict[str, np.ndarray]
  test: dict[str, np.ndarray]
  num_classes: int
  groups: np.ndarray | None         # bool[num_players, num_features] or None (players = features)
  costs: np.ndarray                 # float32[num_players]
  image_shape: tuple[int, int] | None
  test_images: np.ndarray | None    # float[n_test, H, W] for pictures (original units)

  @property
  def num_features(self) -> int:
    return int(np.prod(self.train["x"].shape[1:]))

  @property
  def num_players(self) -> int:
    return self.num_features if self.groups is None else self.groups.shape[0]


def _split_validation(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
  rng = np.random.default_rng([seed, 1])
  perm = rng.permutation(len(x))
  n_val = max(1, int(round(fraction * len(x))))
  val, train = perm[:n_val], perm[n_val:]
  return {"x": x[train], "y": y[train]}, {"x": x[val], "y": y[val]}


def _load_tfds(name: str, data_dir: str | None, limit: int | None) -> tuple[np.ndarray, ...]:
  import tensorflow_datasets as tfds   # only needed for this option

  def read(split: str):
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    n = len(source) if limit is None else min(limit, len(source))
    records = [source[i] for i in range(n)]       # host-side decoding, once per run
    images = np.stack([np.asarray(r["image"], np.float32) for r in records])
    labels = np.array([int(r["label"]) for r in records], np.int32)
    return images[..., 0] if images.ndim == 4 else images, labels

  train_images, train_labels = read("train")
  test_images, test_labels = read("test")
  return train_images, train_labels, test_images, test_labels


def load_problem(config: ml_collections.ConfigDict, seed: int) -> Problem:
  """The seed's splits (features standardized with training statistics), groups and costs."""
  name = config.dataset
  image_shape = None
  if name == "oracle":
    spec = _oracle_spec(config)
    key = jax.random.fold_in(jax.random.key(seed), 7)
    x_train, y_train = oracle.sample(jax.random.fold_in(key, 0), spec, config.oracle.num_train)
    x_test, y_test = oracle.sample(jax.random.fold_in(key, 1), spec, config.oracle.num_test)
    num_classes, test_images = oracle.NUM_CLASSES, None
  elif name.startswith("tfds:"):
    tr_img, y_train, te_img, y_test = _load_tfds(name[5:], config.data_dir, config.tfds_limit)
    image_shape = tuple(tr_img.shape[1:3])
    scale = max(float(tr_img.max()), 1.0)
    x_train = tr_img.reshape(len(tr_img), -1) / scale
    x_test = te_img.reshape(len(te_img), -1) / scale
    test_images = te_img / scale
    num_classes = int(max(y_train.max(), y_test.max())) + 1
  else:
    ds = data_lib.load_embedded(name, seed=seed, test_fraction=config.test_fraction)
    if ds.task != "classification":
      raise ValueError(f"dfs needs a classification dataset; {name!r} is a {ds.task} task.")
    x_train, y_train, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    num_classes = ds.num_classes
    if name == "digits":
      image_shape = (8, 8)
      test_images = ds.unstandardize(x_test).reshape(-1, 8, 8)
    else:
      test_images = None
  train, val = _split_validation(np.asarray(x_train, np.float32), np.asarray(y_train, np.int32),
                                 config.val_fraction, seed)
  test = {"x": np.asarray(x_test, np.float32), "y": np.asarray(y_test, np.int32)}
  if config.num_test is not None:
    test = {k: v[:config.num_test] for k, v in test.items()}
    test_images = None if test_images is None else test_images[:config.num_test]
  groups = None
  if config.patch_size:
    if image_shape is None:
      raise ValueError(f"patch_size={config.patch_size} needs an image dataset, got {name!r}.")
    groups = masks.patch_groups(image_shape, config.patch_size)
  num_players = train["x"].shape[1] if groups is None else groups.shape[0]
  if config.model.kind == "vit":
    # The ViT sees images [N, H, W, 1]; its patches are the players (and the groups of the pictures).
    vit_patch = vit.config(config.model.vit, image_size=image_shape).patch_size if image_shape else None
    if image_shape is None or vit_patch != config.patch_size:
      raise ValueError(f"model.kind='vit' needs an image dataset and patch_size equal to the ViT's patch size "
                       f"({config.model.vit!r}); got dataset {name!r}, patch_size={config.patch_size}.")
    for split in (train, val, test):
      split["x"] = split["x"].reshape(-1, *image_shape, 1)
  elif config.model.kind != "mlp":
    raise ValueError(f"config.model.kind must be 'mlp' or 'vit', got {config.model.kind!r}.")
  costs = _costs(config.costs, num_players)
  return Problem(train, val, test, num_classes, groups, costs, image_shape, test_images)


def _costs(kind: str, num_players: int) -> np.ndarray:
  if kind == "uniform":
    return np.ones(num_players, np.float32)
  if kind == "random":
    # Fixed across seeds (the problem's costs, not a source of seed variance).
    return np.random.default_rng(12345).uniform(0.5, 2.0, num_players).astype(np.float32)
  raise ValueError(f"config.costs must be 'uniform' or 'random', got {kind!r}.")


# ---------------------------------------------------------------------------------------------------------------
# One seed
# ---------------------------------------------------------------------------------------------------------------

def _network(config, problem: Problem, out_features: int, seed: int) -> nnx.Module:
  """A masked MLP on [x * m, m], or a masked ViT on images whose patches are the players."""
  if config.model.kind == "vit":
    cfg = vit.config(config.model.vit, image_size=problem.image_shape, num_channels=1, num_classes=out_features)
    return predictor.MaskedViT(vit.ViT(cfg, rngs=nnx.Rngs(seed)))
  return predictor.MaskedMLP(problem.num_features, out_features, tuple(config.model.hidden_sizes),
                             groups=problem.groups, activation=config.model.activation, rngs=nnx.Rngs(seed))


# Settings that do not change results: a run resumed with other values reuses what is saved.
_NOT_RESULTS = ("progress", "compilation_cache", "seeds", "plots", "report_budgets", "small_budgets")


def _fingerprint(config: ml_collections.ConfigDict, seed: int) -> str:
  """Short hash of the settings a seed's results depend on (stale results from other settings are recomputed)."""
  settings = {k: v for k, v in config.to_dict().items() if k not in _NOT_RESULTS}
  text = json.dumps([settings, seed], sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _rollout_points(out: rollout.Rollout, labels: np.ndarray, metric: str) -> tuple[float, float]:
  cost = float(np.mean(np.asarray(out.cost)))
  return cost, evaluation.score(np.asarray(out.logits), labels, metric)


def _dynamic_results(name: str, predict, score, params, problem: Problem, config, metric: str,
                     with_penalty: bool) -> dict[str, np.ndarray]:
  """Curve over budgets 0..K, average cost per budget, and the stopping-rule sweeps of a dynamic method."""
  k, p = config.max_features, problem.num_players
  x, y = problem.test["x"], problem.test["y"]
  costs = jnp.asarray(problem.costs)
  # Both rules always present (with values that never trigger when unused): one compiled rollout for all runs.
  off = dict(penalty=-3e38, confidence=2.0)
  run = lambda **rules: rollout.greedy(predict, score, params, x, num_players=p, num_steps=k, costs=costs,
                                       **{**off, **rules})
  out = run()
  order = np.asarray(out.order)
  step_cost = np.concatenate([np.zeros((len(y), 1)), np.cumsum(np.where(order >= 0, problem.costs[order], 0.0), 1)],
                             axis=1)
  res = {f"{name}/curve": evaluation.budget_curve(np.asarray(out.step_logits), y, metric),
         f"{name}/accuracy": evaluation.budget_curve(np.asarray(out.step_logits), y, "accuracy"),
         f"{name}/cost": step_cost.mean(0), f"{name}/order": order}
  sweeps = {"confidence": [run(confidence=c) for c in config.sweeps.confidences]}
  if with_penalty:
    sweeps["penalized"] = [run(penalty=lam) for lam in config.sweeps.penalties]
  for rule, outs in sweeps.items():
    points = np.array([_rollout_points(o, y, metric) for o in outs])
    res[f"{name}/{rule}_cost"], res[f"{name}/{rule}_metric"] = points[:, 0], points[:, 1]
  return res


def _fixed_results(name: str, predict, params, scores, problem: Problem, config, metric: str):
  k, p = config.max_features, problem.num_players
  x, y = problem.test["x"], problem.test["y"]
  out = baselines.fixed_rollout(predict, params, x, scores, num_players=p, num_steps=k)
  order = np.asarray(out.order)
  step_cost = np.concatenate([np.zeros((len(y), 1)), np.cumsum(np.where(order >= 0, problem.costs[order], 0.0), 1)],
                             axis=1)
  return {f"{name}/curve": evaluation.budget_curve(np.asarray(out.step_logits), y, metric),
          f"{name}/accuracy": evaluation.budget_curve(np.asarray(out.step_logits), y, "accuracy"),
          f"{name}/cost": step_cost.mean(0), f"{name}/order": order}


def _oracle_spec(config: ml_collections.ConfigDict) -> oracle.Spec:
  return oracle.Spec(tuple(config.oracle.flips_a), tuple(config.oracle.flips_b), config.oracle.num_distractors)


def _oracle_cmi_error(config, problem: Problem, pred: predictor.MaskedFn, value: predictor.MaskedFn,
                      scaling: str) -> np.ndarray:
  """Mean |DIME's CMI estimate - exact CMI| over unselected features, with nothing selected and with x_0 selected."""
  spec, x = _oracle_spec(config), jnp.asarray(problem.test["x"])
  estimate = jax.jit(lambda m: dime.cmi_estimate(value.apply(value.params, x, m), pred.apply(pred.params, x, m),
                                                 scaling))
  errors = []
  for first in (False, True):
    mask = jnp.zeros(x.shape, bool).at[:, 0].set(first)
    err = np.abs(np.asarray(estimate(mask) - oracle.cmi(x, mask, spec)))
    errors.append(float(err[~np.asarray(mask)].mean()))
  return np.array(errors)


def run_seed(config: ml_collections.ConfigDict, seed: int, workdir: str) -> dict[str, np.ndarray]:
  """Trains and evaluates every method for one seed; results are cached in ``workdir/results.npz``."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "results.npz")
  tag = _fingerprint(config, seed)
  if os.path.exists(path):
    with np.load(path) as saved:
      if str(saved["tag"]) == tag:
        logging.info("seed %d: reusing %s", seed, path)
        return {k: saved[k] for k in saved.files if k != "tag"}
  problem = load_problem(config, seed)
  metric = config.metric or evaluation.default_metric(problem.num_classes)
  k, p = config.max_features, problem.num_players
  if not 1 <= k <= p:
    raise ValueError(f"config.max_features must lie in [1, {p}] (the number of players), got {k}.")
  key = jax.random.key(seed)
  timings: dict[str, float] = {}
  t0 = time.perf_counter()

  base = _network(config, problem, problem.num_classes, seed)
  pc = config.pretrain
  predictor.pretrain(jax.random.fold_in(key, 0), base, problem.train, num_steps=pc.num_steps,
                     batch_size=pc.batch_size, learning_rate=pc.learning_rate, weight_decay=pc.weight_decay,
                     workdir=os.path.join(workdir, "pretrain"), progress=config.progress)
  timings["pretrain"] = time.perf_counter() - t0
  base_fn = predictor.masked_fn(base)
  res: dict[str, np.ndarray] = {"labels": problem.test["y"], "costs": problem.costs}
  res["full_metric"] = np.array(evaluation.score(
      np.asarray(base_fn.apply(base_fn.params, problem.test["x"], np.ones((len(problem.test["y"]), p), bool))),
      problem.test["y"], metric))

  for method in config.methods:
    if method not in METHODS:
      raise ValueError(f"config.methods entries must be in {METHODS}, got {method!r}.")
    t0 = time.perf_counter()
    mkey = jax.random.fold_in(key, 1 + METHODS.index(method))
    if method == "gdfs":
      pred, policy = nnx.clone(base), _network(config, problem, p, seed + 1000)
      g = config.gdfs
      out = gdfs.train(mkey, pred, policy, problem.train, problem.val, num_steps=k, steps_per_stage=g.steps_per_stage,
                       batch_size=g.batch_size, temperatures=tuple(g.temperatures), learning_rate=g.learning_rate,
                       workdir=os.path.join(workdir, "gdfs"), progress=config.progress)
      res["gdfs/val_losses"] = np.array(out.val_losses)
      pf, sf = predictor.masked_fn(pred), predictor.masked_fn(policy)
      res.update(_dynamic_results("gdfs", gdfs.predict_fn(pf.apply), gdfs.score_fn(sf.apply),
                                  {"predictor": pf.params, "policy": sf.params}, problem, config, metric,
                                  with_penalty=False))
    elif method == "dime":
      pred, value = nnx.clone(base), _network(config, problem, p, seed + 2000)
      dc = config.dime
      costs = None if config.costs == "uniform" else problem.costs
      out = dime.train(mkey, pred, value, problem.train, problem.val, num_steps=k,
                       steps_per_block=dc.steps_per_block, batch_size=dc.batch_size, epsilon=dc.epsilon,
                       decay=dc.decay, min_epsilon=dc.min_epsilon, patience=dc.patience, max_blocks=dc.max_blocks,
                       scaling=dc.scaling, costs=costs, learning_rate=dc.learning_rate,
                       workdir=os.path.join(workdir, "dime"), progress=config.progress)
      res["dime/val_losses"], res["dime/epsilons"] = np.array(out.val_losses), np.array(out.epsilons)
      pf, vf = predictor.masked_fn(pred), predictor.masked_fn(value)
      params = {"predictor": pf.params, "value": vf.params, "costs": jnp.asarray(problem.costs)}
      res.update(_dynamic_results("dime", dime.predict_fn(pf.apply), dime.score_fn(vf.apply, dc.scaling), params,
                                  problem, config, metric, with_penalty=True))
      if config.dataset == "oracle":
        res["dime/oracle_cmi_error"] = _oracle_cmi_error(config, problem, pf, vf, dc.scaling)
    elif method == "random":
      scores = baselines.random_scores(mkey, len(problem.test["y"]), p)
      res.update(_fixed_results("random", base_fn.apply, base_fn.params, scores, problem, config, metric))
    elif method == "static":
      ranking = baselines.static_greedy_ranking(base_fn.apply, base_fn.params, problem.val["x"], problem.val["y"],
                                                num_players=p, num_steps=k)
      res["static/ranking"] = np.asarray(ranking)
      res.update(_fixed_results("static", base_fn.apply, base_fn.params, baselines.ranking_scores(ranking, p),
                                problem, config, metric))
    elif method == "cae":
      budgets = [b for b in config.cae.budgets if b <= k]
      metrics, accs, costs = [], [], []
      c = config.cae
      for b in budgets:
        pred = nnx.clone(base)
        chosen = baselines.train_cae(jax.random.fold_in(mkey, b), pred, problem.train, num_selected=b,
                                     num_steps=c.num_steps, batch_size=c.batch_size, learning_rate=c.learning_rate,
                                     start_temperature=c.start_temperature, end_temperature=c.end_temperature,
                                     workdir=os.path.join(workdir, f"cae_{b}"), progress=config.progress)
        mask = np.zeros((len(problem.test["y"]), p), bool)
        mask[:, chosen] = True
        pf = predictor.masked_fn(pred)
        logits = np.asarray(pf.apply(pf.params, problem.test["x"], mask))
        metrics.append(evaluation.score(logits, problem.test["y"], metric))
        accs.append(evaluation.score(logits, problem.test["y"], "accuracy"))
        costs.append(float(problem.costs[chosen].sum()))
      res.update({"cae/budgets": np.array(budgets), "cae/metric": np.array(metrics),
                  "cae/accuracy": np.array(accs), "cae/cost": np.array(costs)})
    timings[method] = time.perf_counter() - t0
    logging.info("seed %d: %s done in %.1f s", seed, method, timings[method])

  if config.dataset == "oracle":
    spec = _oracle_spec(config)
    reference = oracle.closed_form_order(problem.test["x"], spec)
    steps = list(range(1, min(reference.shape[1], k) + 1))
    for method in ("gdfs", "dime", "random", "static"):
      if f"{method}/order" in res:
        agree = oracle.first_selection_agreement(res[f"{method}/order"], reference, steps)
        res[f"{method}/oracle_agreement"] = np.array([agree[t] for t in steps])
  res["timings"] = np.array(json.dumps(timings))
  res["metric_name"] = np.array(metric)
  if problem.test_images is not None:
    res["test_images"] = problem.test_images[:_MAX_IMAGES]
  tmp = path + ".tmp.npz"
  np.savez(tmp, tag=np.array(tag), **res)
  os.replace(tmp, path)
  return res


# ---------------------------------------------------------------------------------------------------------------
# Summary over seeds
# ---------------------------------------------------------------------------------------------------------------

Curves = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]      # name -> (x, mean, std)


def _aggregate(config: ml_collections.ConfigDict, per_seed: list[dict[str, np.ndarray]]
               ) -> tuple[Curves, Curves, dict[str, Any]]:
  """Metric curves vs number of features and vs average cost, mean and std over seeds."""
  budgets = np.arange(config.max_features + 1)
  by_features, by_cost, summary = {}, {}, {}
  for m in config.methods:
    fixed = m == "cae"                                     # one model per budget, trained budgets only
    x = per_seed[0]["cae/budgets"] if fixed else budgets
    mean, std = evaluation.mean_std([r[f"{m}/metric" if fixed else f"{m}/curve"] for r in per_seed])
    cost = np.mean([r[f"{m}/cost"] for r in per_seed], 0)
    by_features[m], by_cost[m] = (x, mean, std), (cost, mean, std)
    summary[m] = {"budgets": x.tolist(), "mean": mean.tolist(), "std": std.tolist(), "cost": cost.tolist()}
  for m, rule in (("dime", "penalized"), ("dime", "confidence"), ("gdfs", "confidence")):
    if f"{m}/{rule}_cost" in per_seed[0]:
      cost = np.mean([r[f"{m}/{rule}_cost"] for r in per_seed], 0)
      mean, std = evaluation.mean_std([r[f"{m}/{rule}_metric"] for r in per_seed])
      by_cost[f"{m} ({rule})"] = (cost, mean, std)
      summary[f"{m} ({rule})"] = {"cost": cost.tolist(), "mean": mean.tolist(), "std": std.tolist()}
  return by_features, by_cost, summary


def _at(curve: tuple[np.ndarray, np.ndarray, np.ndarray], budgets: list[int], missing: float = np.nan):
  """(mean, std) of a curve at the given budgets (``missing`` where the curve has no point)."""
  x = list(np.asarray(curve[0]).tolist())
  pick = lambda values: np.array([values[x.index(b)] if b in x else missing for b in budgets])
  return pick(curve[1]), pick(curve[2])


def _small_budget_check(config, by_features: Curves) -> dict[str, Any]:
  """Margin of GDFS and DIME over the best baseline (random, static, CAE) at each small budget."""
  small = [b for b in config.small_budgets if b <= config.max_features]
  baselines_ = [by_features[b] for b in ("random", "static", "cae") if b in by_features]
  if not baselines_:
    return {}
  best = np.max([_at(c, small, missing=-np.inf)[0] for c in baselines_], axis=0)
  verdict = {}
  for m in ("gdfs", "dime"):
    if m in by_features:
      margins = _at(by_features[m], small)[0] - best
      verdict[m] = {"budgets": small, "margin_over_best_baseline": margins.tolist(),
                    "beats_baselines": bool(np.all(margins > 0))}
  return verdict


def _write_report(path: str, config, problem: Problem, summary: dict[str, Any], by_features: Curves,
                  by_cost: Curves, title: str, label: str, cost_label: str, has_picture: bool) -> None:
  k = config.max_features
  rows = [b for b in config.report_budgets if b <= k]
  table = evaluation.markdown_table(rows, {m: _at(c, rows) for m, c in by_features.items()},
                                    row_label="groups" if problem.groups is not None else "features")
  players = (f" in {problem.num_players} groups of {config.patch_size}x{config.patch_size} pixels"
             if problem.groups is not None else "")
  lines = [f"# Dynamic feature selection: {title}", "",
           f"- Data: {config.dataset}, {problem.num_features} features{players}, {problem.num_classes} classes; "
           f"{len(problem.train['y'])} train / {len(problem.val['y'])} validation / {len(problem.test['y'])} test "
           f"rows per seed (seeded splits).",
           f"- Metric: {label} on the test split; mean ± std over seeds {list(config.seeds)}. With all features the "
           f"pretrained masked predictor reaches {summary['full_metric']:.3f}.",
           f"- Costs: {config.costs}. Rollouts: one jit-compiled lax.scan of {k} steps per method and seed.",
           "", f"## {label} vs number of {'groups' if problem.groups is not None else 'features'}", "", table, "",
           "![metric vs features](metric_vs_features.png)", ""]
  if summary["small_budget_check"]:
    lines += ["## Small budgets: margin over the best baseline (random, static, CAE)", ""]
    for m, v in summary["small_budget_check"].items():
      margins = ", ".join(f"{b}: {x:+.3f}" for b, x in zip(v["budgets"], v["margin_over_best_baseline"]))
      lines.append(f"- **{m}** {'beats' if v['beats_baselines'] else 'does NOT beat'} every baseline at budgets "
                   f"{v['budgets']} ({margins}).")
    lines.append("")
  lines += [f"## {label} vs {cost_label}", "",
            "Fixed budgets for every method, plus per-sample stopping: DIME's penalized rule "
            f"(lambda in {list(config.sweeps.penalties)}) and the confidence rule (threshold in "
            f"{list(config.sweeps.confidences)}) for GDFS and DIME.", "", "![metric vs cost](metric_vs_cost.png)", ""]
  for name in [n for n in by_cost if "(" in n]:
    cost, mean, _ = by_cost[name]
    lines.append(f"- {name}: " + ", ".join(f"{c:.2f} -> {mu:.3f}" for c, mu in zip(cost, mean)))
  if has_picture:
    lines += ["", f"## Selection order (seed {config.seeds[0]}, first {config.plots.order_steps} selections)", "",
              "![selection order](selection_order.png)"]
  if "oracle_agreement" in summary:
    steps = len(next(iter(summary["oracle_agreement"].values())))
    lines += ["", "## Oracle check: first selections equal to the closed-form greedy CMI order", "",
              "| method | " + " | ".join(f"first {t}" for t in range(1, steps + 1)) + " |",
              "|---" * (1 + steps) + "|"]
    lines += [f"| {m} | " + " | ".join(f"{a:.3f}" for a in agree) + " |"
              for m, agree in summary["oracle_agreement"].items()]
    if "dime_oracle_cmi_error" in summary:
      e0, e1 = summary["dime_oracle_cmi_error"]
      lines += ["", f"DIME's CMI estimates vs the exact CMI (mean absolute error over unselected features, nats): "
                    f"{e0:.4f} with nothing selected, {e1:.4f} with x_0 selected (exact first-step CMI: log 2 = "
                    f"0.693 for x_0)."]
  timings = ", ".join(f"{name} {v:.1f}" for name, v in summary["timings_mean_s"].items())
  lines += ["", f"Mean time per seed (s): {timings}", ""]
  with open(path, "w") as f:
    f.write("\n".join(lines))


def summarize(config: ml_collections.ConfigDict, per_seed: list[dict[str, np.ndarray]], workdir: str,
              problem: Problem) -> dict[str, Any]:
  """Plots, markdown report and a JSON summary of the seeds' results."""
  metric = str(per_seed[0]["metric_name"])
  by_features, by_cost, curves = _aggregate(config, per_seed)
  summary: dict[str, Any] = {"metric": metric, "seeds": list(config.seeds), **curves}
  summary["small_budget_check"] = _small_budget_check(config, by_features)
  summary["full_metric"] = float(np.mean([r["full_metric"] for r in per_seed]))
  timings = [json.loads(str(r["timings"])) for r in per_seed]
  summary["timings_mean_s"] = {name: float(np.mean([t[name] for t in timings])) for name in timings[0]}
  if "dime/oracle_cmi_error" in per_seed[0]:
    summary["dime_oracle_cmi_error"] = np.mean([r["dime/oracle_cmi_error"] for r in per_seed], 0).tolist()
  agreeing = [m for m in METHODS if f"{m}/oracle_agreement" in per_seed[0]]
  if agreeing:
    summary["oracle_agreement"] = {m: np.mean([r[f"{m}/oracle_agreement"] for r in per_seed], 0).tolist()
                                   for m in agreeing}

  label = "AUROC" if metric == "auroc" else "accuracy"
  cost_label = "average number of features" if config.costs == "uniform" else "average cost"
  groups = f" ({config.patch_size}x{config.patch_size} groups)" if config.patch_size else ""
  model = ", masked ViT" if config.model.kind == "vit" else ""
  title = f"{config.dataset}{groups}{model}: {len(per_seed)} seeds"
  path = lambda name: os.path.join(workdir, name)
  xlabel = "number of selected features" if problem.groups is None else "number of selected groups"
  paths = {"metric_vs_features.png": plots.curves_plot(by_features, path("metric_vs_features.png"), xlabel=xlabel,
                                                       ylabel=label, title=title),
           "metric_vs_cost.png": plots.curves_plot(by_cost, path("metric_vs_cost.png"), xlabel=cost_label,
                                                   ylabel=label, title=title)}
  r0, n = per_seed[0], config.plots.num_images
  orders = {m: r0[f"{m}/order"][:n] for m in ("gdfs", "dime", "static") if f"{m}/order" in r0}
  if "test_images" in r0 and problem.image_shape is not None and orders:
    paths["selection_order.png"] = plots.order_plot(
        r0["test_images"][:n], orders, path("selection_order.png"), groups=problem.groups,
        num_steps=config.plots.order_steps, labels=[f"y={y}" for y in r0["labels"][:n]])
  paths["report.md"], paths["summary.json"] = path("report.md"), path("summary.json")
  _write_report(paths["report.md"], config, problem, summary, by_features, by_cost, title, label, cost_label,
                "selection_order.png" in paths)
  with open(paths["summary.json"], "w") as f:
    json.dump(summary, f, indent=2)
  return dict(paths=paths, summary=summary)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every seed (resumably) and writes the summary; returns paths and the summary dict."""
  os.makedirs(workdir, exist_ok=True)
  if config.compilation_cache:
    # Every training stage, block and seed compiles the same programs: a persistent cache serves all but the
    # first (and later runs), which on CPU is most of the wall time of small models.
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(os.path.join(workdir, "jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  per_seed = []
  for seed in config.seeds:
    per_seed.append(run_seed(config, int(seed), os.path.join(workdir, f"seed_{seed}")))
  return summarize(config, per_seed, workdir, load_problem(config, int(config.seeds[0])))


def _run_and_report(config: ml_collections.ConfigDict, workdir: str) -> None:
  t0 = time.perf_counter()
  out = run(config, workdir)
  print(f"done in {time.perf_counter() - t0:.0f} s; report: {out['paths']['report.md']}")
  for m, v in out["summary"].get("small_budget_check", {}).items():
    print(f"{m}: beats baselines at budgets {v['budgets']}: {v['beats_baselines']} "
          f"(margins {np.round(v['margin_over_best_baseline'], 3).tolist()})")


if __name__ == "__main__":
  cli.main(_run_and_report, config_example="configs/dfs/digits.py",
           workdir_help="Directory for checkpoints, per-seed results, plots and report.")
