"""Train an MLP on a bundled tabular dataset, explain its test set with KernelSHAP, and check against exact values.

  python -m experiments.explain_tabular --config=configs/explain_tabular/breast_cancer.py --workdir=runs/explain_tabular

Steps (every one resumable from ``workdir``):
  1. train a Flax NNX MLP classifier with :func:`xattr.training.train` (Orbax checkpoints in workdir/checkpoints);
  2. explain the test inputs: KernelSHAP on the marginal game of the class *probabilities* (model_fn applies the
     softmax; the game averages probabilities over a seeded background sample of training rows, link=identity,
     as shap's KernelExplainer does). The game is vector-valued, so one set of coalition evaluations explains
     every class at once; values have shape [inputs, features, classes] and each class's values sum to
     p_class(x) - mean_background p_class. (For two classes the second is minus the first.) Inputs go through
     ``jit(vmap(kernel_shap))`` chunk by chunk; finished chunks are saved in workdir/explanations;
  3. error vs exact: on the first ``exact.num_inputs`` test inputs, restrict the game to ``exact.players``
     (the other features always present), enumerate the exact values and compare KernelSHAP with the main run's
     settings: mean absolute error, relative L2 error, correlation and calibration of the reported std;
  4. write values.npz, summary.png, bar.png, exact_comparison.npz and report.md.
"""

from __future__ import annotations

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
from xattr import chunked, data, games, models, plots, shapley, training



def _fingerprint(*parts: Any) -> str:
  """Short hash of the settings a saved chunk depends on (stale chunks from other settings are recomputed)."""
  text = json.dumps([p.to_dict() if isinstance(p, ml_collections.ConfigDict) else p for p in parts],
                    sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _kernel_shap_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  e = config.explain
  return dict(num_samples=e.num_samples, batch_size=e.batch_size, paired=e.paired, exact_a=e.exact_a,
              threshold=e.threshold, max_samples=e.max_samples, enumerate_sizes=e.enumerate_sizes)


def explain_in_chunks(explain: Callable[[jax.Array, jax.Array], Any], inputs: np.ndarray, keys: jax.Array, *,
                      chunk_size: int, directory: str | None = None, tag: str = "",
                      desc: str = "explain") -> dict[str, np.ndarray]:
  """``explain(x_chunk, key_chunk)`` over the inputs with :func:`xattr.chunked.map_chunks` (saved, resumable)."""
  return chunked.map_chunks(lambda a: explain(jnp.asarray(a[0]), a[1]), (inputs, keys), chunk_size=chunk_size,
                            directory=directory, tag=tag, desc=desc)


def error_metrics(estimate: np.ndarray, std: np.ndarray, exact: np.ndarray) -> dict[str, float]:
  """Errors of an estimate against exact values (any matching shapes; computed over all entries).

  mae: mean |est - exact|; relative_l2: mean over inputs of ||est - exact|| / ||exact|| (flattened per input);
  correlation: Pearson over all entries; within_2std: fraction of entries with |est - exact| <= 2 std (+ 1e-6,
  float32 round-off, which matters where the estimate is exact and reports std 0).
  """
  err = estimate - exact
  per_input = np.linalg.norm(err.reshape(len(err), -1), axis=1) / np.maximum(
      np.linalg.norm(exact.reshape(len(exact), -1), axis=1), 1e-12)
  return dict(mae=float(np.abs(err).mean()), relative_l2=float(per_input.mean()),
              correlation=float(np.corrcoef(estimate.ravel(), exact.ravel())[0, 1]),
              within_2std=float(np.mean(np.abs(err) <= 2 * std + 1e-6)), max_abs_error=float(np.abs(err).max()),
              mean_std=float(std.mean()))


def _train_classifier(config, ds, workdir):
  model = models.MLP(ds.num_features, config.model.hidden_sizes, ds.num_classes,
                     activation=config.model.activation, rngs=nnx.Rngs(config.seed))

  def loss_fn(m, batch):
    logits = m(batch["x"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}

  x_test, y_test = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)

  def eval_fn(m, step):
    return {"test_accuracy": float(jnp.mean(jnp.argmax(m(x_test), -1) == y_test))}

  t = config.train
  result = training.train(
      model, loss_fn, {"x": ds.x_train, "y": ds.y_train},
      optimizer=optax.adamw(t.learning_rate, weight_decay=t.weight_decay), num_steps=t.num_steps,
      batch_size=t.batch_size, seed=config.seed, workdir=workdir, checkpoint_every=t.checkpoint_every,
      keep_checkpoints=t.keep_checkpoints, eval_fn=eval_fn, eval_every=t.eval_every, log_every=t.log_every)
  return model, result


def _write_report(path, config, ds, out, settings, timings):
  e, ex = config.explain, config.exact
  m = out["metrics"]
  cls = ds.class_names[e.plot_class]
  lines = [
      f"# KernelSHAP explanations: {ds.name}",
      "",
      f"- Data: {ds.name}, {ds.x_train.shape[0]} train / {ds.x_test.shape[0]} test rows, {ds.num_features} "
      f"features (standardized with train statistics), classes {list(ds.class_names)}.",
      f"- Model: MLP hidden={tuple(config.model.hidden_sizes)} ({config.model.activation}), "
      f"{config.train.num_steps} AdamW steps, batch {config.train.batch_size}.",
      f"- **Test accuracy: {out['accuracy']:.4f}**",
      f"- Game: marginal (interventional) removal over {e.background_size} seeded training rows; the game is the "
      f"vector of class probabilities (explained for every class at once; values sum to p(x) - E_bg[p]).",
      f"- KernelSHAP: {', '.join(f'{k}={v}' for k, v in settings.items())} (num_samples=None: sample until "
      f"max std / range < threshold).",
      f"- Explained {m['num_explained']} test inputs: mean num_evals {m['mean_num_evals']:.0f} "
      f"(min {m['min_num_evals']}, max {m['max_num_evals']}), converged {m['converged_fraction']:.0%}, "
      f"max efficiency gap {m['max_efficiency_gap']:.2e}.",
      f"- Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()),
      "",
      f"## Error vs exact Shapley values ({len(ex.players)}-feature subset problem)",
      "",
      f"First {m['exact_num_inputs']} test inputs; players = features {list(ex.players)}, the other "
      f"{ds.num_features - len(ex.players)} features always present; exact values by enumerating all "
      f"2^{len(ex.players)} coalitions; KernelSHAP with the settings above and enumerate_sizes="
      f"{ex.enumerate_sizes} (so it samples rather than enumerating the small game) "
      f"(mean num_evals {m['exact_mean_num_evals']:.0f}, of 2^{len(ex.players)} = {2 ** len(ex.players)}).",
      "",
      "| metric | value |",
      "|---|---|",
  ]
  for name, label in [("mae", "mean absolute error"), ("max_abs_error", "max absolute error"),
                      ("relative_l2", "relative L2 error (mean over inputs)"), ("correlation", "correlation"),
                      ("within_2std", "fraction within 2 reported std (calibration; ~0.95 ideal)"),
                      ("mean_std", "mean reported std"), ("mean_abs_exact", "mean |exact value|")]:
    lines.append(f"| {label} | {m['exact_' + name]:.4g} |")
  lines += [
      "",
      "## Plots",
      "",
      f"Class shown: {cls!r} (index {e.plot_class}).",
      "",
      "- [summary.png](summary.png): beeswarm, features sorted by mean |value|, color = standardized feature value",
      "- [bar.png](bar.png): mean |value| per feature",
      "",
      "![summary](summary.png)",
      "",
      "![bar](bar.png)",
      "",
      "Arrays: values.npz (values [inputs, features, classes], std, num_evals, converged, x, feature_names, "
      "class_names, predictions, labels, background); exact_comparison.npz.",
      "",
  ]
  with open(path, "w") as f:
    f.write("\n".join(lines))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the whole job; returns paths, metrics and the explained model function."""
  os.makedirs(workdir, exist_ok=True)
  timings: dict[str, float] = {}
  ds = data.load_embedded(config.dataset, seed=config.seed, test_fraction=config.test_fraction)
  if ds.task != "classification":
    raise ValueError(f"explain_tabular trains a classifier; dataset {config.dataset!r} is a {ds.task} task.")
  d = ds.num_features

  t0 = time.perf_counter()
  model, _ = _train_classifier(config, ds, workdir)
  timings["train"] = time.perf_counter() - t0
  predict = jax.jit(models.model_fn(model, postprocess="softmax"))
  # The games use a copy that folds vmap into the batch (one 2-D matmul instead of 3-D ones: ~4x faster on CPU).
  model_fn = models.model_fn(model, postprocess="softmax", fold_vmap=True)
  probs = np.asarray(predict(jnp.asarray(ds.x_test)))
  accuracy = float(np.mean(probs.argmax(-1) == ds.y_test))
  logging.info("test accuracy %.4f", accuracy)

  e = config.explain
  rng = np.random.default_rng(config.seed)
  background = ds.x_train[np.sort(rng.choice(len(ds.x_train), e.background_size, replace=False))]
  bg = jnp.asarray(background)
  settings = _kernel_shap_settings(config)
  root = jax.random.key(config.seed)

  def over_chunk(explain_one):
    # jit(vmap) over groups of vmap_size inputs, looped over the chunk: in convergence mode a vmapped while_loop
    # runs until its slowest input converges, so small groups waste less on CPU; on an accelerator use
    # vmap_size = chunk_size.
    return jax.jit(lambda xs, keys: jax.lax.map(lambda a: explain_one(*a), (xs, keys), batch_size=e.vmap_size))

  def kernel_shap_chunk(game_of_x, num_players, **overrides):
    kwargs = {**settings, **overrides}
    return over_chunk(lambda x, key: shapley.kernel_shap(game_of_x(x), num_players, key, **kwargs))

  num_inputs = len(ds.x_test) if e.num_inputs is None else min(e.num_inputs, len(ds.x_test))
  x_explain = ds.x_test[:num_inputs]
  t0 = time.perf_counter()
  est = explain_in_chunks(
      kernel_shap_chunk(lambda x: games.marginal(model_fn, x, bg), d), x_explain,
      jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(root, 1), i))(jnp.arange(num_inputs)),
      chunk_size=e.chunk_size, directory=os.path.join(workdir, "explanations"),
      tag=_fingerprint(config.dataset, config.seed, config.test_fraction, config.model, config.train, settings,
                       e.background_size, e.chunk_size),
      desc="kernel_shap")
  timings["explain"] = time.perf_counter() - t0
  if not np.all(np.isfinite(est["values"])):
    raise FloatingPointError("KernelSHAP returned non-finite values; see the game and sampling settings.")
  null = np.asarray(predict(bg)).mean(0)
  gap = np.abs(est["values"].sum(1) - (probs[:num_inputs] - null)).max()

  ex = config.exact
  players = list(ex.players)
  n_exact = min(ex.num_inputs, num_inputs)
  t0 = time.perf_counter()

  def restricted(xi):
    return games.restrict(games.marginal(model_fn, xi, bg), players, d)

  exact_fn = over_chunk(lambda xi, key: {"values": shapley.exact(restricted(xi), len(players),
                                                                  batch_size=ex.batch_size)})
  exact_keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(root, 2), i))(jnp.arange(n_exact))
  exact_vals = explain_in_chunks(exact_fn, x_explain[:n_exact], exact_keys, chunk_size=ex.chunk_size,
                                 desc="exact")["values"]
  # Sample as the main run does (which enumerates only the extreme sizes at 30 features): left to itself,
  # KernelSHAP would enumerate a 12-player game completely and the comparison would say nothing.
  subset_estimator = kernel_shap_chunk(restricted, len(players), enumerate_sizes=ex.enumerate_sizes)
  sub = explain_in_chunks(subset_estimator, x_explain[:n_exact], exact_keys,
                          chunk_size=ex.chunk_size, desc="kernel_shap (subset)")
  timings["exact_comparison"] = time.perf_counter() - t0
  errors = error_metrics(sub["values"], sub["std"], exact_vals)
  errors["mean_abs_exact"] = float(np.abs(exact_vals).mean())
  logging.info("error vs exact: %s", errors)

  metrics = dict(accuracy=accuracy, num_explained=num_inputs, mean_num_evals=float(est["num_evals"].mean()),
                 min_num_evals=int(est["num_evals"].min()), max_num_evals=int(est["num_evals"].max()),
                 converged_fraction=float(est["converged"].mean()), max_efficiency_gap=float(gap),
                 exact_num_inputs=n_exact, exact_mean_num_evals=float(sub["num_evals"].mean()),
                 **{f"exact_{k}": v for k, v in errors.items()})
  paths = {name: os.path.join(workdir, name) for name in
           ("values.npz", "exact_comparison.npz", "summary.png", "bar.png", "report.md", "metrics.json")}
  np.savez(paths["values.npz"], values=est["values"], std=est["std"], num_evals=est["num_evals"],
           converged=est["converged"], x=x_explain, x_raw=ds.unstandardize(x_explain),
           feature_names=np.array(ds.feature_names), class_names=np.array(ds.class_names),
           predictions=probs[:num_inputs], labels=ds.y_test[:num_inputs], background=background)
  np.savez(paths["exact_comparison.npz"], exact=exact_vals, values=sub["values"], std=sub["std"],
           num_evals=sub["num_evals"], players=np.array(players), x=x_explain[:n_exact])
  cls = e.plot_class
  title = f"{ds.name}: p({ds.class_names[cls]})"
  plots.summary_plot(est["values"][:, :, cls], x_explain, ds.feature_names, paths["summary.png"], title=title)
  plots.bar_plot(est["values"][:, :, cls], ds.feature_names, paths["bar.png"], title=title)
  _write_report(paths["report.md"], config, ds, dict(accuracy=accuracy, metrics=metrics), settings, timings)
  with open(paths["metrics.json"], "w") as f:
    json.dump(dict(metrics, timings=timings), f, indent=2)
  logging.info("wrote %s", ", ".join(paths.values()))
  return dict(paths=paths, metrics=metrics, accuracy=accuracy, timings=timings, model_fn=predict,
              background=background)


def _run_and_report(config: ml_collections.ConfigDict, workdir: str) -> None:
  out = run(config, workdir)
  print(f"test accuracy {out['accuracy']:.4f}; report: {out['paths']['report.md']}")


if __name__ == "__main__":
  cli.main(_run_and_report, config_example="configs/explain_tabular/breast_cancer.py",
           workdir_help="Directory for checkpoints, explanations, plots and the report.")
