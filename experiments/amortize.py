"""Amortized feature attribution on tabular data: error vs model evaluations for per-example estimators, FastSHAP
and stochastic amortization (regression onto cheap noisy labels).

  python -m experiments.amortize --config=configs/amortize/headline.py --workdir=runs/amortize

For every dataset of the config (embedded scikit-learn data, or a TFDS dataset read with ``tfds.data_source``), in
``workdir/<dataset>/`` (every stage resumable: checkpoints and saved arrays are reused):
  1. ``model``: an MLP classifier (regressor for diabetes) trained with :func:`xattr.training.train`;
  2. the game v_x(z): the model's class probabilities (regression output) with held-out features at the training
     mean (``removal='baseline'``), or a masked-MLP surrogate on [x * m, m] trained with KL (MSE) to the model
     under uniform-cardinality masks (``removal='surrogate'``);
  3. ground truth on the held-out inputs, for each target: Shapley values (exact enumeration when d <= 16, else
     KernelSHAP with a large budget), Banzhaf values (exact, else MSR with a large budget), the LIME solution
     (LIME with a large budget);
  4. per-example estimators on the held-out inputs at several budgets (KernelSHAP, permutation sampling, MSR
     Banzhaf, LIME) with :mod:`xattr.noisy_labels` (jit(vmap), sharded);
  5. stochastic amortization: noisy labels of the TRAINING inputs (each label type, several budgets; saved once and
     reused, or regenerated per label epoch), regression of an MLP explainer onto them, error on held-out inputs;
  6. FastSHAP: an MLP explainer trained with the FastSHAP loss (paired Shapley-kernel masks), evaluated along
     training;
  7. ``report.md``, ``results.json``, ``error_vs_evaluations.png`` (Shapley targets) and ``other_targets.png``.

Cost accounting (x axis, "model evaluations per explained input"): a per-example estimator pays its budget for
every input; an amortized explainer pays its training evaluations divided by the number of training inputs (the
inputs it explains at that price; new inputs then cost one evaluation, the grand value for the efficient
normalization). The speedup of an amortized explainer is the KernelSHAP (resp. MSR, LIME) cost that reaches the
same held-out error, interpolated on the per-example curve, divided by the explainer's cost.
"""

from __future__ import annotations

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
import optax
from absl import logging
from flax import nnx

from experiments import cli
from xattr import amortize, banzhaf, data, games, lime, masks, noisy_labels, parallel, plots, shapley, training
from xattr.models import rowwise

SHAPLEY_METHODS = ("kernel_shap", "permutation")


# ---------------------------------------------------------------------------------------------------------------
# Data, model and game
# ---------------------------------------------------------------------------------------------------------------

def num_outputs(ds: data.Dataset) -> int:
  """Model outputs: one per class, or a single prediction for regression."""
  return ds.num_classes or 1


def output_names(ds: data.Dataset) -> tuple[str, ...]:
  """Names of the model outputs (saved with explainers): the class names, or ``('prediction',)``."""
  return ds.class_names or ("prediction",)


def _load_tfds(t: ml_collections.ConfigDict, seed: int, test_fraction: float) -> data.Dataset:
  """A TFDS tabular dataset (vector feature + class label) read with ``tfds.data_source`` (TF-free, no download)."""
  import tensorflow_datasets as tfds          # heavy import, only on this path

  if not t.name:
    raise ValueError("source='tfds' needs config.tfds.name (and config.tfds.data_dir).")
  builder = tfds.builder(t.name, data_dir=t.data_dir)
  label = builder.info.features[t.label_key]
  source = tfds.data_source(t.name, split=t.split, data_dir=t.data_dir)
  n = min(len(source), int(t.max_examples))
  rows = [source[i] for i in range(n)]
  x = np.stack([np.asarray(r[t.feature_key], np.float32).reshape(-1) for r in rows])
  y = np.array([int(r[t.label_key]) for r in rows], np.int32)
  order = np.random.default_rng(seed).permutation(n)
  cut = n - max(1, int(round(test_fraction * n)))
  tr, te = order[:cut], order[cut:]
  mean, scale = x[tr].mean(0), x[tr].std(0)
  scale = np.where(scale > 0, scale, 1.0)
  std = lambda a: ((a - mean) / scale).astype(np.float32)
  names = tuple(getattr(label, "names", None) or map(str, range(label.num_classes)))
  return data.Dataset(t.name, "classification", std(x[tr]), y[tr], std(x[te]), y[te],
                      tuple(f"x{i}" for i in range(x.shape[1])), names, mean, scale)


def load_tabular(config: ml_collections.ConfigDict, dataset: str) -> data.Dataset:
  """``config.source='embedded'``: a bundled scikit-learn dataset (regression targets standardized too);
  ``'tfds'``: ``config.tfds``."""
  if config.source == "tfds":
    return _load_tfds(config.tfds, config.seed, config.test_fraction)
  if config.source != "embedded":
    raise ValueError(f"config.source must be 'embedded' or 'tfds', got {config.source!r}.")
  ds = data.load_embedded(dataset, seed=config.seed, test_fraction=config.test_fraction)
  if ds.task == "classification":
    return ds
  mu, sd = ds.y_train.mean(), ds.y_train.std()
  return dataclasses.replace(ds, y_train=(ds.y_train - mu) / sd, y_test=(ds.y_test - mu) / sd)


def _optimizer(lr: float, num_steps: int, weight_decay: float) -> optax.GradientTransformation:
  return optax.adamw(optax.cosine_decay_schedule(lr, max(int(num_steps), 1)), weight_decay=weight_decay)


def train_model(config: ml_collections.ConfigDict, ds: data.Dataset, workdir: str,
                ) -> tuple[nnx.Module, dict[str, Any], float]:
  """The MLP to explain (cross-entropy, or MSE on the standardized target); returns it, its spec and its held-out
  accuracy (R^2 for regression)."""
  m = config.model
  spec = dict(kind="mlp", in_features=ds.num_features, hidden_sizes=list(m.hidden_sizes), out_features=num_outputs(ds),
              activation=m.activation)
  model = amortize.build_module(spec, seed=config.seed)
  classification = ds.task == "classification"

  def loss_fn(net, batch):
    out = net(batch["x"])
    if classification:
      return optax.softmax_cross_entropy_with_integer_labels(out, batch["y"]).mean(), {}
    return jnp.mean((out[:, 0] - batch["y"]) ** 2), {}

  training.train(model, loss_fn, {"x": ds.x_train, "y": ds.y_train},
                 optimizer=_optimizer(m.learning_rate, m.num_steps, m.weight_decay), num_steps=m.num_steps,
                 batch_size=min(m.batch_size, len(ds.x_train)), seed=config.seed,
                 workdir=os.path.join(workdir, "model"),
                 progress=config.progress, desc=f"{ds.name}: model")
  out = np.asarray(model(jnp.asarray(ds.x_test)))
  metric = (float(np.mean(out.argmax(-1) == ds.y_test)) if classification
            else float(1 - np.mean((out[:, 0] - ds.y_test) ** 2) / np.var(ds.y_test)))
  return model, spec, metric


class _WithRngs(nnx.Module):
  """A module plus the random stream its training loss draws masks from (checkpointed with it)."""

  def __init__(self, module: nnx.Module, seed: int):
    self.module = module
    self.rngs = nnx.Rngs(masks=seed)


def train_surrogate(config: ml_collections.ConfigDict, ds: data.Dataset, model: nnx.Module, post: str,
                    workdir: str) -> tuple[nnx.Module, dict[str, Any]]:
  """Masked MLP on [x * m, m] matching the model under uniform-cardinality masks (KL; MSE for regression)."""
  s = config.surrogate
  d, k = ds.num_features, num_outputs(ds)
  spec = dict(kind="masked_mlp", num_features=d, out_features=k, hidden_sizes=list(s.hidden_sizes),
              activation=config.model.activation)
  wrapper = _WithRngs(amortize.build_module(spec, seed=config.seed + 1), config.seed + 2)
  targets = np.asarray(model(jnp.asarray(ds.x_train)))
  if post == "softmax":
    targets = np.asarray(jax.nn.softmax(targets, -1))
  num_masks = s.num_masks

  def loss_fn(w, batch):
    b = batch["x"].shape[0]
    z = masks.uniform_cardinality(w.rngs.masks(), d, b * num_masks)
    out = w.module(jnp.repeat(batch["x"], num_masks, axis=0), z).reshape(b, num_masks, k)
    if post == "softmax":
      return amortize.surrogate_kl_loss(out, batch["target"][:, None, :]), {}
    return amortize.surrogate_mse_loss(out, batch["target"][:, None, :]), {}

  training.train(wrapper, loss_fn, {"x": ds.x_train, "target": targets},
                 optimizer=_optimizer(s.learning_rate, s.num_steps, 0.0), num_steps=s.num_steps,
                 batch_size=min(s.batch_size, len(ds.x_train)), seed=config.seed + 1,
                 workdir=os.path.join(workdir, "surrogate"), progress=config.progress, desc=f"{ds.name}: surrogate")
  return wrapper.module, spec


@dataclasses.dataclass
class Game:
  """The explained game: its saved form (spec, model) and the functions the estimators and losses call."""

  spec: dict[str, Any]
  model: nnx.Module
  model_spec: dict[str, Any]
  value_fn: Callable[[jax.Array, jax.Array], jax.Array]          # (x [B, d], mask [B, d]) -> [B, k]
  game_of_x: Callable[[jax.Array], Callable[[jax.Array], jax.Array]]


def build_game(config: ml_collections.ConfigDict, ds: data.Dataset, workdir: str) -> tuple[Game, float]:
  """Trains the model (and surrogate) and returns the game with the model's held-out accuracy / R^2."""
  model, model_spec, metric = train_model(config, ds, workdir)
  post = "softmax" if ds.task == "classification" else "identity"
  if config.removal == "baseline":
    # Standardized features: the training mean is 0, so 'held out' = replaced by the mean.
    spec = dict(removal="baseline", reference=[0.0] * ds.num_features, postprocess=post)
  elif config.removal == "surrogate":
    model, model_spec = train_surrogate(config, ds, model, post, workdir)
    spec = dict(removal="surrogate", postprocess=post)
  else:
    raise ValueError(f"config.removal must be 'baseline' or 'surrogate', got {config.removal!r}.")
  value_fn = amortize.masked_value_fn(spec, model)
  d = ds.num_features
  # vmap over inputs folds into one 2-D matmul batch (several times faster on CPU than batched matmuls).
  folded = rowwise(lambda xm: value_fn(xm[:, :d], xm[:, d:] > 0.5))
  masked = lambda xb, m: folded(jnp.concatenate([xb, m.astype(xb.dtype)], axis=-1))
  return Game(spec, model, model_spec, value_fn, lambda x: games.surrogate(masked, x)), metric


# ---------------------------------------------------------------------------------------------------------------
# Labels, ground truth, per-example estimators
# ---------------------------------------------------------------------------------------------------------------

def _fingerprint(*parts: Any) -> str:
  text = json.dumps([p.to_dict() if isinstance(p, ml_collections.ConfigDict) else p for p in parts], sort_keys=True,
                    default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _pad_rows(x: np.ndarray, multiple: int) -> np.ndarray:
  """Rows repeated up to a multiple of ``multiple``, so every call has the chunk's shape (one compile)."""
  extra = -len(x) % multiple
  return np.concatenate([x, np.repeat(x[-1:], extra, 0)]) if extra else x


class Labels:
  """Noisy labels of one (method, budget), cached per split and label epoch; one compiled program for all."""

  def __init__(self, game: Game, d: int, method: str, budget: int, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh, folder: str, tag: str):
    self.method, self.budget, self.mesh, self.folder, self.tag = method, budget, mesh, folder, tag
    self.chunk = config.chunk_size
    self.batch_size = config.game_batch_size
    self.label = noisy_labels.labeler(game.game_of_x, method, d, budget, batch_size=config.game_batch_size)
    self.evals = noisy_labels.evaluations_per_label(method, d, budget)
    self.progress = config.progress

  def __call__(self, x: np.ndarray, key: jax.Array, split: str, epoch: int = 0) -> np.ndarray:
    n = len(x)
    path = os.path.join(self.folder, f"{self.method}_{self.budget}_{split}_{epoch}.npz")
    out = noisy_labels.generate_cached(path, self.label, _pad_rows(x, self.chunk),
                                       noisy_labels.epoch_key(key, epoch), tag=[self.tag, n], mesh=self.mesh,
                                       chunk_size=self.chunk, progress=self.progress)
    return out["values"][:n]


def ground_truth(config: ml_collections.ConfigDict, game: Game, d: int, x: np.ndarray, mesh, folder: str,
                 tag: str) -> dict[str, dict[str, Any]]:
  """Target values on ``x`` for 'shapley', 'banzhaf' and 'lime', and how each was obtained."""
  t = config.truth
  enumerable = d <= t.max_exact_players
  bs = config.game_batch_size

  def estimators():
    yield "shapley", ("exact enumeration" if enumerable else f"KernelSHAP, {t.kernel_shap_samples} samples"), (
        (lambda x, k: {"values": shapley.exact(game.game_of_x(x), d, batch_size=t.exact_batch_size)}) if enumerable
        else (lambda x, k: {"values": shapley.kernel_shap(game.game_of_x(x), d, k, num_samples=t.kernel_shap_samples,
                                                         batch_size=t.exact_batch_size).values}))
    yield "banzhaf", ("exact enumeration" if enumerable else f"MSR, {t.msr_samples} samples"), (
        (lambda x, k: {"values": banzhaf.exact(game.game_of_x(x), d, batch_size=t.exact_batch_size)}) if enumerable
        else (lambda x, k: {"values": banzhaf.msr(game.game_of_x(x), d, k, num_samples=t.msr_samples,
                                                 batch_size=t.exact_batch_size).values}))
    yield "lime", f"LIME, {t.lime_samples} samples", (
        lambda x, k: {"values": lime.lime(game.game_of_x(x), d, k, num_samples=t.lime_samples, batch_size=bs).values})

  out = {}
  for i, (target, how, fn) in enumerate(estimators()):
    if target not in t.targets:
      continue
    values = noisy_labels.generate_cached(os.path.join(folder, f"truth_{target}.npz"), fn, _pad_rows(x, t.chunk_size),
                                          jax.random.key(config.seed + 100 + i), tag=[tag, target, t.to_dict(), len(x)],
                                          mesh=mesh, chunk_size=t.chunk_size, progress=config.progress)["values"]
    out[target] = dict(values=values[:len(x)], how=how)
  return out


def errors(estimate: np.ndarray, truth: np.ndarray) -> dict[str, float]:
  """Mean absolute error over all entries, and the mean over inputs of ||est - truth|| / ||truth||."""
  err = estimate - truth
  rel = np.linalg.norm(err.reshape(len(err), -1), axis=1) / np.maximum(
      np.linalg.norm(truth.reshape(len(truth), -1), axis=1), 1e-12)
  return dict(mae=float(np.abs(err).mean()), relative_l2=float(rel.mean()))


# ---------------------------------------------------------------------------------------------------------------
# Amortized explainers
# ---------------------------------------------------------------------------------------------------------------

def _regression_normalized(model, batch):
  phi = amortize.efficient_normalize(model(batch["x"]), batch["grand"], batch["null"])
  return amortize.regression_loss(phi, batch["labels"], scale=batch["scale"][:, None, None]), {}


def _regression_raw(model, batch):
  return amortize.regression_loss(model(batch["x"]), batch["labels"], scale=batch["scale"][:, None, None]), {}


def explainer_spec(config: ml_collections.ConfigDict, ds: data.Dataset) -> dict[str, Any]:
  return dict(kind="mlp_explainer", num_features=ds.num_features, hidden_sizes=list(config.explainer.hidden_sizes),
              num_classes=num_outputs(ds), activation=config.explainer.activation)


def grand_null(game: Game, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  xj = jnp.asarray(x)
  ones = jnp.ones(xj.shape, bool)
  return np.asarray(game.value_fn(xj, ones)), np.asarray(game.value_fn(xj[:1], ~ones[:1]))[0]


def train_stochastic(config: ml_collections.ConfigDict, ds: data.Dataset, game: Game,
                     get_labels: Callable[[int], np.ndarray], label_epochs: int, normalize: bool, workdir: str,
                     optimizer: optax.GradientTransformation, desc: str) -> nnx.Module:
  """Regression of an MLP explainer onto (noisy) labels of the training inputs, ``get_labels(epoch)`` for each of
  ``label_epochs`` stages (fresh labels per stage; 1 = labels drawn once and reused for every epoch)."""
  e = config.explainer
  explainer = amortize.build_module(explainer_spec(config, ds), seed=config.seed + 3)
  grand, null = grand_null(game, ds.x_train)
  steps_per_stage = -(-e.num_steps // label_epochs)
  for epoch in range(label_epochs):
    y = get_labels(epoch)
    n = len(y)
    batch = dict(x=ds.x_train, labels=y, grand=grand, null=np.broadcast_to(null, grand.shape),
                 scale=np.full(n, max(float(np.std(y)), 1e-6), np.float32))
    training.train(explainer, _regression_normalized if normalize else _regression_raw, batch, optimizer=optimizer,
                   num_steps=min((epoch + 1) * steps_per_stage, e.num_steps), batch_size=min(e.batch_size, n),
                   seed=config.seed + 3, workdir=workdir, progress=config.progress,
                   desc=f"{ds.name}: {desc} (label epoch {epoch})")
  return explainer


def train_fastshap(config: ml_collections.ConfigDict, ds: data.Dataset, game: Game, workdir: str,
                   evaluate: Callable[[nnx.Module, int], dict[str, float]]) -> tuple[nnx.Module, list[dict]]:
  """FastSHAP: the explainer trained with the FastSHAP loss on ``num_samples`` paired Shapley-kernel masks per input;
  ``evaluate`` is called every ``eval_every`` steps (the error-vs-cost curve)."""
  f = config.fastshap
  d, k = ds.num_features, num_outputs(ds)
  wrapper = _WithRngs(amortize.build_module(explainer_spec(config, ds), seed=config.seed + 4), config.seed + 5)
  grand, null = grand_null(game, ds.x_train)
  value_fn, s = game.value_fn, f.num_samples

  def loss_fn(w, batch):
    b = batch["x"].shape[0]
    z = jax.vmap(lambda kk: masks.shapley_kernel(kk, d, s, paired=True))(jax.random.split(w.rngs.masks(), b))
    values = value_fn(jnp.repeat(batch["x"], s, axis=0), z.reshape(b * s, d)).reshape(b, s, k)
    return amortize.fastshap_loss(w.module(batch["x"]), z, values, batch["null"], batch["grand"]), {}

  # The curve is saved point by point: a resumed (or finished, re-run) training keeps the points already taken.
  curve_path = os.path.join(workdir, "curve.json")

  def saved_curve() -> dict[int, dict]:
    if not os.path.exists(curve_path):
      return {}
    with open(curve_path) as fh:
      return {int(p["step"]): p for p in json.load(fh)}

  def eval_fn(w, step):
    out = evaluate(w.module, step)
    points = saved_curve()
    points[step] = {"step": step, **out}
    os.makedirs(workdir, exist_ok=True)
    with open(curve_path + ".tmp", "w") as fh:
      json.dump([points[k] for k in sorted(points)], fh)
    os.replace(curve_path + ".tmp", curve_path)
    return out

  training.train(wrapper, loss_fn, dict(x=ds.x_train, grand=grand, null=np.broadcast_to(null, grand.shape)),
                 optimizer=_optimizer(f.learning_rate, f.num_steps, f.weight_decay), num_steps=f.num_steps,
                 batch_size=min(f.batch_size, len(ds.x_train)), seed=config.seed + 4, workdir=workdir, eval_fn=eval_fn,
                 eval_every=f.eval_every, progress=config.progress, desc=f"{ds.name}: FastSHAP")
  curve = [p for step, p in sorted(saved_curve().items()) if step <= f.num_steps]
  return wrapper.module, curve


# ---------------------------------------------------------------------------------------------------------------
# Cost to reach an error, report
# ---------------------------------------------------------------------------------------------------------------

def cost_to_reach(costs: np.ndarray, errs: np.ndarray, target: float) -> tuple[float, str]:
  """Per-example cost at which a per-example curve reaches ``target`` error (log-log interpolation).

  Returns (cost, relation): '=' interpolated; '>' the curve never gets there (cost is its largest budget, a lower
  bound); '<' its smallest budget already does (an upper bound).

  Example:
    >>> cost, relation = cost_to_reach(np.array([10, 100]), np.array([1.0, 0.1]), 0.316)
    >>> round(cost, 1), relation
    (31.6, '=')
  """
  order = np.argsort(costs)
  c, e = np.asarray(costs, float)[order], np.minimum.accumulate(np.asarray(errs, float)[order])
  if target < e[-1]:
    return float(c[-1]), ">"
  if target >= e[0]:
    return float(c[0]), "<"
  i = int(np.argmax(e <= target))
  t = (np.log(target) - np.log(e[i - 1])) / (np.log(e[i]) - np.log(e[i - 1]))
  return float(np.exp(np.log(c[i - 1]) + t * (np.log(c[i]) - np.log(c[i - 1])))), "="


_REFERENCE = {"shapley": "kernel_shap", "banzhaf": "banzhaf_msr", "lime": "lime"}
_BOUND = {"=": "", ">": ">=", "<": "<=", "?": "no reference "}


def speedup(rows: list[dict], row: dict) -> tuple[float, str]:
  """Cost the per-example reference estimator (KernelSHAP for Shapley targets) needs for ``row``'s error, divided by
  ``row``'s cost, and the bound direction."""
  ref = [r for r in rows if r["kind"] == "per-example" and r["method"] == _REFERENCE[row["target"]]]
  if not ref:
    return float("nan"), "?"
  c, rel = cost_to_reach(np.array([r["evals"] for r in ref]), np.array([r["mae"] for r in ref]), row["mae"])
  return c / row["evals"], rel


def write_report(path: str, summaries: dict[str, dict], config: ml_collections.ConfigDict, runtime: float) -> None:
  lines = ["# Amortized attribution: error vs model evaluations", "",
           f"Datasets: {', '.join(summaries)}; removal: {config.removal}; this invocation took {runtime:.0f} s (stages "
           f"already in the work directory are reused, not recomputed).",
           "", "Cost = model evaluations per explained input (per-example: its budget; amortized: training "
           "evaluations / training inputs, + 1 for the grand value when normalized). Error = mean absolute error "
           "on held-out inputs vs the target's ground truth. Speedup = per-example reference cost (KernelSHAP for "
           "Shapley targets, MSR for Banzhaf, LIME for LIME) at the same error / the method's cost; '>=' means the "
           "reference never reached that error within its largest budget. The exact-label regression row (d <= 16) "
           "trains the same explainer on exact Shapley values of the training inputs: its held-out error is the floor "
           "of every noisy-label explainer (generalization from the training inputs alone).", "", "## Headline", "",
           "| dataset | best stochastic amortization (Shapley target) | its evals/input | its MAE | "
           "speedup_vs_kernel_shap | >= 10x? | exact-label floor MAE | KernelSHAP evals for the floor |",
           "|---|---|---|---|---|---|---|---|"]
  for name, s in summaries.items():
    best = s["best_sa"]
    if best is None:
      lines.append(f"| {name} | - | - | - | - | - | - | - |")
      continue
    floor = [r for r in s["rows"] if r["method"] == "exact"]
    floor_text = (f"{floor[0]['mae']:.4g} | {_BOUND[floor[0]['bound']]}{floor[0]['speedup'] * floor[0]['evals']:.0f}"
                  if floor else "- | -")
    lines.append(f"| {name} | {best['label']} | {best['evals']:.0f} | {best['mae']:.4g} | "
                 f"{_BOUND[best['bound']]}{best['speedup']:.1f}x | {'yes' if best['speedup'] >= 10 else 'no'} | "
                 f"{floor_text} |")
  for name, s in summaries.items():
    lines += ["", f"## {name}", "",
              f"{s['n_train']} training / {s['n_test']} held-out inputs, {s['d']} features, {s['k']} output(s); model "
              f"held-out {'accuracy' if s['task'] == 'classification' else 'R^2'} {s['model_metric']:.3f}. Ground "
              f"truth: " + "; ".join(f"{t}: {h}" for t, h in s["truth_how"].items()) + ".", "",
              "| kind | method | setting | target | evals/input | MAE | rel. L2 | speedup vs per-example reference |",
              "|---|---|---|---|---|---|---|---|"]
    for r in s["rows"]:
      sp = "" if r["kind"] == "per-example" else f"{_BOUND[r['bound']]}{r['speedup']:.2f}x"
      lines.append(f"| {r['kind']} | {r['method']} | {r['setting']} | {r['target']} | {r['evals']:.0f} | "
                   f"{r['mae']:.4g} | {r['relative_l2']:.3f} | {sp} |")
    lines += ["", f"![{name}]({name}/error_vs_evaluations.png)"]
    if any(r["target"] != "shapley" for r in s["rows"]):
      lines += ["", f"![{name}: Banzhaf and LIME targets]({name}/other_targets.png)"]
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def _plot(rows: list[dict], targets: tuple[str, ...], path: str) -> None:
  evals, errs, levels = {}, {}, {}
  for r in rows:
    if r["target"] not in targets:
      continue
    if r["method"] == "exact":
      levels["exact-label floor"] = r["mae"]
      continue
    name = r["method"] if r["kind"] == "per-example" else f"{r['kind']} {r['method']}"
    if r.get("label_epochs", 1) > 1:
      name += " (fresh labels per stage)"
    evals.setdefault(name, []).append(r["evals"])
    errs.setdefault(name, []).append(r["mae"])
  if not evals:
    return
  for name in evals:
    order = np.argsort(evals[name])
    evals[name], errs[name] = np.asarray(evals[name])[order], np.asarray(errs[name])[order]
  plots.error_vs_evaluations(evals, errs, path, levels=levels,
                             xlabel="model evaluations per explained input")


# ---------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------

def parse_setting(setting: str) -> tuple[str, int, int]:
  """'method:budget[:label_epochs]' -> (method, budget, label_epochs).

  Example:
    >>> parse_setting("kernel_shap:64:4")
    ('kernel_shap', 64, 4)
  """
  parts = setting.split(":")
  if len(parts) not in (2, 3) or parts[0] not in noisy_labels.METHODS:
    raise ValueError(f"an amortize setting must be 'method:budget[:label_epochs]' with method in "
                     f"{noisy_labels.METHODS}, got {setting!r}.")
  return parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else 1


def run_dataset(config: ml_collections.ConfigDict, dataset: str, workdir: str) -> dict[str, Any]:
  """Every stage for one dataset; returns its summary (rows of the table) and writes its plots."""
  os.makedirs(workdir, exist_ok=True)
  ds = load_tabular(config, dataset)
  d, k = ds.num_features, num_outputs(ds)
  game, metric = build_game(config, ds, workdir)
  mesh = parallel.make_mesh()
  x_test = ds.x_test[:config.num_test] if config.num_test else ds.x_test
  tag = _fingerprint(dataset, config.source, config.tfds, config.seed, config.test_fraction, config.model,
                     config.removal, config.surrogate)
  truth = ground_truth(config, game, d, x_test, mesh, os.path.join(workdir, "truth"), tag)
  rows: list[dict] = []
  label_dir = os.path.join(workdir, "labels")
  labelers: dict[tuple[str, int], Labels] = {}

  def labels_for(method, budget):
    if (method, budget) not in labelers:
      labelers[(method, budget)] = Labels(game, d, method, budget, config, mesh, label_dir, tag)
    return labelers[(method, budget)]

  test_key, train_key = jax.random.key(config.seed + 10), jax.random.key(config.seed + 20)
  for method, budgets in config.per_example.items():
    for budget in budgets:
      lab = labels_for(method, budget)
      target = noisy_labels.TARGETS[method]
      est = lab(x_test, test_key, "test")
      rows.append(dict(kind="per-example", method=method, setting=f"budget {budget}", target=target,
                       evals=float(lab.evals), **errors(est, truth[target]["values"])))

  def test_error(module, normalize, target):
    explain = amortize.Explainer(module, num_features=d, num_classes=k, normalize=normalize, value_fn=game.value_fn)
    return errors(np.asarray(explain(x_test)), truth[target]["values"])

  e = config.explainer
  optimizer = _optimizer(e.learning_rate, e.num_steps, e.weight_decay)
  explainer_dir = os.path.join(workdir, "explainers")
  for setting in config.amortize:
    method, budget, label_epochs = parse_setting(setting)
    lab = labels_for(method, budget)
    name = f"{method}_{budget}_x{label_epochs}"
    target = noisy_labels.TARGETS[method]
    normalize = target == "shapley"
    module = train_stochastic(config, ds, game, lambda epoch: lab(ds.x_train, train_key, "train", epoch), label_epochs,
                              normalize, os.path.join(workdir, "sa", name), optimizer, f"SA {method}:{budget}")
    evals = lab.evals * label_epochs + (1 if normalize else 0)
    rows.append(dict(kind="stochastic amortization", method=method,
                     setting=f"{budget}/label" + (f" x {label_epochs} label epochs" if label_epochs > 1 else ""),
                     target=target, evals=float(evals), label_epochs=label_epochs,
                     **test_error(module, normalize, target)))
    amortize.save(os.path.join(explainer_dir, name), module, explainer_spec(config, ds), game=game.spec,
                  game_model=game.model, game_model_spec=game.model_spec, normalize=normalize,
                  metadata=dict(method="stochastic_amortization", labels=method, budget=budget, dataset=ds.name,
                                feature_names=list(ds.feature_names), class_names=list(output_names(ds))))

  if config.exact_floor and d <= config.truth.max_exact_players:
    # The same regression onto EXACT Shapley labels (2^d evaluations each): the error no noisy-label explainer of
    # this architecture and training set can beat, i.e. what amortization loses to generalization alone.
    exact_fn = lambda x, k: {"values": shapley.exact(game.game_of_x(x), d, batch_size=config.truth.exact_batch_size)}
    exact_train = noisy_labels.generate_cached(
        os.path.join(workdir, "truth", "train_shapley.npz"), exact_fn, _pad_rows(ds.x_train, config.truth.chunk_size),
        jax.random.key(0), tag=[tag, "train", len(ds.x_train)], mesh=mesh, chunk_size=config.truth.chunk_size,
        progress=config.progress)["values"][:len(ds.x_train)]
    module = train_stochastic(config, ds, game, lambda epoch: exact_train, 1, True,
                              os.path.join(workdir, "sa", "exact"), optimizer, "exact labels")
    rows.append(dict(kind="exact-label regression (floor)", method="exact", setting=f"2^{d}/label",
                     target="shapley", evals=float(2 ** d + 1), **test_error(module, True, "shapley")))

  if config.fastshap.num_steps:
    f = config.fastshap
    per_step = f.batch_size * f.num_samples / len(ds.x_train)

    def evaluate(module, step):
      return {f"test_{m}": v for m, v in test_error(module, True, "shapley").items()}

    module, curve = train_fastshap(config, ds, game, os.path.join(workdir, "fastshap"), evaluate)
    for point in curve:
      rows.append(dict(kind="FastSHAP", method="fastshap", setting=f"{point['step']} steps", target="shapley",
                       evals=float(point["step"] * per_step + 2), mae=point["test_mae"],
                       relative_l2=point["test_relative_l2"]))
    amortize.save(os.path.join(explainer_dir, "fastshap"), module, explainer_spec(config, ds), game=game.spec,
                  game_model=game.model, game_model_spec=game.model_spec, normalize=True,
                  metadata=dict(method="fastshap", dataset=ds.name, feature_names=list(ds.feature_names),
                                class_names=list(output_names(ds))))

  for r in rows:
    if r["kind"] != "per-example":
      r["speedup"], r["bound"] = speedup(rows, r)
  sa = [r for r in rows if r["kind"] == "stochastic amortization" and r["target"] == "shapley"]
  best = max(sa, key=lambda r: (r["speedup"], r["bound"] == ">"), default=None)
  if best is not None:
    best = dict(best, label=f"{best['method']} {best['setting']}")
  _plot(rows, ("shapley",), os.path.join(workdir, "error_vs_evaluations.png"))
  _plot(rows, ("banzhaf", "lime"), os.path.join(workdir, "other_targets.png"))
  return dict(rows=rows, best_sa=best, n_train=len(ds.x_train), n_test=len(x_test), d=d, k=k, task=ds.task,
              model_metric=metric, truth_how={t: v["how"] for t, v in truth.items()})


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every dataset of ``config.datasets``; writes report.md and results.json; returns the summaries."""
  os.makedirs(workdir, exist_ok=True)
  start = time.perf_counter()
  summaries, timings = {}, {}
  for dataset in config.datasets:
    t0 = time.perf_counter()
    name = config.tfds.name if config.source == "tfds" else dataset
    summaries[name] = run_dataset(config, dataset, os.path.join(workdir, name))
    timings[name] = time.perf_counter() - t0
  runtime = time.perf_counter() - start
  paths = dict(report=os.path.join(workdir, "report.md"), results=os.path.join(workdir, "results.json"))
  write_report(paths["report"], summaries, config, runtime)
  with open(paths["results"], "w") as f:
    json.dump(dict(summaries=summaries, timings=timings, runtime_s=runtime), f, indent=2, default=float)
  logging.info("wrote %s", ", ".join(paths.values()))
  return dict(summaries=summaries, paths=paths, timings=timings, runtime_s=runtime)


def _run_and_report(config: ml_collections.ConfigDict, workdir: str) -> None:
  out = run(config, workdir)
  for name, s in out["summaries"].items():
    b = s["best_sa"]
    if b is not None:
      print(f"{name}: best stochastic amortization {b['label']}: mae={b['mae']:.4g} at {b['evals']:.0f} evals/input, "
            f"speedup_vs_kernel_shap={_BOUND[b['bound']]}{b['speedup']:.1f}x")
  print(f"runtime {out['runtime_s']:.0f} s; report: {out['paths']['report']}")


if __name__ == "__main__":
  cli.main(_run_and_report, config_example="configs/amortize/headline.py",
           workdir_help="Directory for models, labels, explainers, plots and the report.")
