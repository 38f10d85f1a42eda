"""The amortization study, stage by stage: error vs model evaluations for per-example estimators, stochastic
amortization (regression onto cheap noisy labels) and FastSHAP, on one or more tabular datasets.

For every dataset of the config, in ``workdir/<dataset>/`` (every stage resumable: checkpoints and saved arrays
are reused while their fingerprints match):

  1. ``model``: an MLP classifier (regressor for diabetes); the game: its class probabilities with held-out
     features at the training mean, or a masked-MLP surrogate (:mod:`xattr.amortization.tabular`);
  2. ground truth on the held-out inputs per target (:func:`xattr.amortization.labels.ground_truth`);
  3. per-example estimators at several budgets (:class:`xattr.amortization.labels.Labels`);
  4. stochastic amortization onto noisy labels of the training inputs, the exact-label floor, FastSHAP
     (:mod:`xattr.amortization.explainers`), each explainer saved for :func:`xattr.amortize.load`;
  5. with ``config.scale.explain_sizes``: the same explainers trained on the first ``n`` training inputs for each
     ``n`` of ``config.scale.train_sizes``, priced by their total compute for explaining N inputs
     (:mod:`xattr.amortization.scale`);
  6. speedups (:mod:`xattr.amortization.costs`), plots, ``report.md`` and ``results.json``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from xattr import amortize, artifacts, data, methods, noisy_labels, parallel, training
from xattr.amortization import costs, explainers, labels, report, scale, tabular

__all__ = ["Study", "prepare", "per_example_rows", "amortized_rows", "exact_floor_rows", "fastshap_rows",
           "scale_rows", "summarize", "run_dataset", "run"]


@dataclasses.dataclass
class Study:
  """One dataset's study: its data, game, ground truth and the labelers built so far (one compiled program per
  (method, budget), shared by the held-out and the training inputs)."""

  config: ml_collections.ConfigDict
  ds: data.Dataset
  game: tabular.Game
  model_metric: float
  mesh: jax.sharding.Mesh
  x_test: np.ndarray
  tag: str
  truth: dict[str, dict[str, Any]]
  workdir: str
  labelers: dict[tuple[str, int], labels.Labels] = dataclasses.field(default_factory=dict)

  @property
  def d(self) -> int:
    return self.ds.num_features

  @property
  def k(self) -> int:
    return tabular.num_outputs(self.ds)

  def labeler(self, method: str, budget: int) -> labels.Labels:
    """The (cached) labeler of ``method`` at ``budget``."""
    if (method, budget) not in self.labelers:
      c = self.config
      self.labelers[(method, budget)] = labels.Labels(
          self.game.game_of_x, self.d, method, budget, folder=os.path.join(self.workdir, "labels"), tag=self.tag,
          mesh=self.mesh, chunk_size=c.chunk_size, batch_size=c.game_batch_size, progress=c.progress)
    return self.labelers[(method, budget)]

  def test_error(self, module: nnx.Module, normalize: bool, target: str) -> dict[str, float]:
    """Held-out errors of an explainer module against ``target``'s ground truth."""
    explain = amortize.Explainer(module, num_features=self.d, num_classes=self.k, normalize=normalize,
                                 value_fn=self.game.value_fn)
    return costs.errors(np.asarray(explain(self.x_test)), self.truth[target]["values"])

  def save_explainer(self, name: str, module: nnx.Module, normalize: bool, **metadata: Any) -> str:
    """Saves an explainer with its game in ``explainers/<name>`` (see :func:`xattr.amortize.save`)."""
    ds = self.ds
    return amortize.save(os.path.join(self.workdir, "explainers", name), module,
                         explainers.explainer_spec(self.config, ds), game=self.game.spec, game_model=self.game.model,
                         game_model_spec=self.game.model_spec, normalize=normalize,
                         metadata=dict(metadata, dataset=ds.name, feature_names=list(ds.feature_names),
                                       class_names=list(tabular.output_names(ds))))


def prepare(config: ml_collections.ConfigDict, dataset: str, workdir: str) -> Study:
  """Data, model (and surrogate), game and ground truth of one dataset."""
  os.makedirs(workdir, exist_ok=True)
  ds = tabular.load_tabular(config, dataset)
  game, metric = tabular.build_game(config, ds, workdir)
  mesh = parallel.make_mesh()
  x_test = ds.x_test[:config.num_test] if config.num_test else ds.x_test
  tag = artifacts.fingerprint(dataset, config.source, config.tfds, config.seed, config.test_fraction, config.model,
                              config.removal, config.surrogate, data=(ds.x_train, ds.y_train))
  truth = labels.ground_truth(config, game.game_of_x, ds.num_features, x_test, mesh, os.path.join(workdir, "truth"),
                              tag)
  return Study(config, ds, game, metric, mesh, x_test, tag, truth, workdir)


def per_example_rows(study: Study) -> list[dict]:
  """One row per (method, budget) of ``config.per_example``: the noisy estimates' held-out error."""
  rows = []
  test_key = jax.random.key(study.config.seed + 10)
  for method, budgets in study.config.per_example.items():
    for budget in budgets:
      lab = study.labeler(method, budget)
      est = lab(study.x_test, test_key, "test")
      rows.append(dict(kind="per-example", method=method, setting=f"budget {budget}", target=lab.target,
                       evals=float(lab.evals), **costs.errors(est, study.truth[lab.target]["values"])))
  return rows


def amortized_rows(study: Study, optimizer: optax.GradientTransformation) -> list[dict]:
  """Stochastic amortization, one row and one saved explainer per setting of ``config.amortize``."""
  rows = []
  ds, train_key = study.ds, jax.random.key(study.config.seed + 20)
  for setting in study.config.amortize:
    method, budget, label_epochs = labels.parse_setting(setting)
    lab = study.labeler(method, budget)
    name = f"{method}_{budget}_x{label_epochs}"
    normalize = lab.target == "shapley"
    module = explainers.train_stochastic(
        study.config, ds, study.game, lambda epoch, lab=lab: lab(ds.x_train, train_key, "train", epoch),
        label_epochs, normalize, os.path.join(study.workdir, "sa", name), optimizer, f"SA {method}:{budget}")
    evals = lab.evals * label_epochs + (1 if normalize else 0)
    rows.append(dict(kind="stochastic amortization", method=method,
                     setting=f"{budget}/label" + (f" x {label_epochs} label epochs" if label_epochs > 1 else ""),
                     target=lab.target, evals=float(evals), label_epochs=label_epochs,
                     **study.test_error(module, normalize, lab.target)))
    study.save_explainer(name, module, normalize, method="stochastic_amortization", labels=method, budget=budget)
  return rows


def exact_floor_rows(study: Study, optimizer: optax.GradientTransformation) -> list[dict]:
  """The same regression onto EXACT Shapley labels (2^d evaluations each): the error no noisy-label explainer of
  this architecture and training set can beat, i.e. what amortization loses to generalization alone."""
  config, ds, d = study.config, study.ds, study.d
  if not config.exact_floor or d > config.truth.max_exact_players:
    return []
  t = config.truth

  def exact_fn(x, key):
    problem = methods.Problem(game=study.game.game_of_x(x), num_players=d)
    return {"values": methods.attribute("exact_shapley", problem, key, batch_size=t.exact_batch_size).values}

  padded, n = parallel.pad_to_multiple(ds.x_train, t.chunk_size)
  exact_train = noisy_labels.generate_cached(
      os.path.join(study.workdir, "truth", "train_shapley.npz"), exact_fn, padded, jax.random.key(0),
      tag=[study.tag, "train", n], mesh=study.mesh, chunk_size=t.chunk_size, progress=config.progress)["values"][:n]
  module = explainers.train_stochastic(config, ds, study.game, lambda epoch: exact_train, 1, True,
                                       os.path.join(study.workdir, "sa", "exact"), optimizer, "exact labels")
  return [dict(kind="exact-label regression (floor)", method="exact", setting=f"2^{d}/label", target="shapley",
               evals=float(2 ** d + 1), **study.test_error(module, True, "shapley"))]


def fastshap_rows(study: Study) -> list[dict]:
  """FastSHAP along training (one row per evaluation point) and its saved explainer; none if num_steps is 0."""
  f = study.config.fastshap
  if not f.num_steps:
    return []
  per_step = f.batch_size * f.num_samples / len(study.ds.x_train)
  evaluate = lambda module, step: {f"test_{m}": v for m, v in study.test_error(module, True, "shapley").items()}
  module, curve = explainers.train_fastshap(study.config, study.ds, study.game,
                                            os.path.join(study.workdir, "fastshap"), evaluate)
  study.save_explainer("fastshap", module, True, method="fastshap")
  return [dict(kind="FastSHAP", method="fastshap", setting=f"{p['step']} steps", target="shapley",
               evals=float(p["step"] * per_step + 2), mae=p["test_mae"], relative_l2=p["test_relative_l2"])
          for p in curve]


def scale_rows(study: Study, optimizer: optax.GradientTransformation) -> list[dict]:
  """``config.scale``: stochastic amortization (``scale.amortize``) and FastSHAP (``scale.fastshap_steps``, its
  final point) trained on the first n training inputs for each n of ``scale.train_sizes``, each row with its
  total training cost (:func:`xattr.amortization.scale.amortized_entry`). None without ``scale.explain_sizes``."""
  s = study.config.get("scale")
  if s is None or not s.explain_sizes:
    return []
  rows = []
  for n in s.train_sizes:
    if n > len(study.ds.x_train):
      raise ValueError(f"config.scale.train_sizes has {n}, more than the {len(study.ds.x_train)} training inputs.")
    config = study.config.copy_and_resolve_references()
    with config.unlocked():
      config.amortize = tuple(s.amortize)
      config.fastshap.num_steps = s.fastshap_steps
      config.fastshap.eval_every = s.fastshap_steps or 1
    ds = dataclasses.replace(study.ds, x_train=study.ds.x_train[:n], y_train=study.ds.y_train[:n])
    sub = dataclasses.replace(study, config=config, ds=ds, workdir=os.path.join(study.workdir, f"scale_{n}"),
                              labelers={})
    for r in amortized_rows(sub, optimizer) + fastshap_rows(sub)[-1:]:
      trained = config.fastshap if r["kind"] == "FastSHAP" else config.explainer
      rows.append(scale.amortized_entry(dict(r, setting=f"{r['setting']}, {n} training inputs"), n,
                                        explainer_rows=trained.num_steps * trained.batch_size))
  return rows


def flops_per_row(study: Study) -> dict[str, float] | None:
  """FLOPs of one game evaluation (the model on one row: baseline removal) and of the explainer on one input;
  None for other removals (a marginal or surrogate game's cost per evaluation is not one model row)."""
  c = study.config
  if c.removal != "baseline":
    return None
  return dict(model=scale.mlp_flops((study.d, *c.model.hidden_sizes, study.k)),
              explainer=scale.mlp_flops((study.d, *c.explainer.hidden_sizes, study.d * study.k)))


def summarize(study: Study, rows: list[dict], scaled: list[dict] | None = None) -> dict[str, Any]:
  """Speedups, the best stochastic-amortization row and the plots of one dataset; returns its summary (with the
  at-scale table when ``scaled`` rows are given)."""
  costs.add_speedups(rows)
  report.plot_errors(rows, ("shapley",), os.path.join(study.workdir, "error_vs_evaluations.png"))
  report.plot_errors(rows, ("banzhaf", "lime"), os.path.join(study.workdir, "other_targets.png"))
  ds = study.ds
  out = dict(rows=rows, best_sa=costs.best_row(rows), n_train=len(ds.x_train), n_test=len(study.x_test), d=study.d,
             k=study.k, task=ds.task, model_metric=study.model_metric,
             truth_how={t: v["how"] for t, v in study.truth.items()})
  if scaled:
    sizes = tuple(study.config.scale.explain_sizes)
    flops = flops_per_row(study)
    entries = scale.at_scale(rows + scaled, sizes, flops)
    out["scale"] = dict(rows=scaled, entries=entries, sizes=sizes, flops=flops,
                        best={n: scale.best_at(entries, n) for n in sizes})
    report.plot_scale(rows, scaled, sizes, os.path.join(study.workdir, "error_vs_total_evaluations.png"))
  return out


def run_dataset(config: ml_collections.ConfigDict, dataset: str, workdir: str) -> dict[str, Any]:
  """Every stage for one dataset; returns its summary (rows of the table) and writes its plots."""
  study = prepare(config, dataset, workdir)
  optimizer = training.optimizer(config.explainer, num_steps=config.explainer.num_steps, schedule="cosine")
  rows = per_example_rows(study) + amortized_rows(study, optimizer) + exact_floor_rows(study, optimizer)
  return summarize(study, rows + fastshap_rows(study), scale_rows(study, optimizer))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every dataset of ``config.datasets`` (or the TFDS dataset); writes ``report.md`` and ``results.json``.

  Returns:
    ``{"summaries": dataset -> summary, "paths": {"report", "results"}, "timings": dataset -> s, "runtime_s"}``.
  """
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
  report.write_report(paths["report"], summaries, config, runtime)
  artifacts.save_json(paths["results"], dict(summaries=summaries, timings=timings, runtime_s=runtime))
  logging.info("wrote %s", ", ".join(paths.values()))
  return dict(summaries=summaries, paths=paths, timings=timings, runtime_s=runtime)
