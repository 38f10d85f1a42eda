"""Stage 4 of the ViT Shapley pipeline: score the explainer against ground truth and baselines, write the report.

Every method explains the classifier's predicted class of each test image in patch space. Removal-based
quantities go through the surrogate's game v_x(z) = p_surrogate(target | x_z) (attention masking):
  * ground truth: exact Shapley values by enumeration (<= 20 patches) or KernelSHAP run to convergence;
  * the explainer (one forward pass, efficient normalization with the surrogate's grand and null values);
  * baselines: random, leave-one-out, RISE and KernelSHAP at the same number of game evaluations as RISE
    ("matched compute") on the same game; attention rollout and last-layer attention of the classifier;
    gradient x input, integrated gradients and SmoothGrad of the classifier's target logit, summed per patch.
Metrics: insertion/deletion AUC (:mod:`xattr.evaluation`), sensitivity-n, and error vs the ground truth.
Per-image results are computed in jitted chunks and saved (``workdir/evaluation/``), so a killed evaluation
resumes where it stopped.
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
from absl import logging
from flax import nnx

from xattr import amortize, attributions, chunked, evaluation, games, plots, shapley
from xattr.data import images as image_data
from xattr.models import heads
from xattr.models import vit

GAME_BASELINES = ("random", "leave_one_out", "rise", "kernel_shap")
ATTENTION_BASELINES = ("attention_rollout", "last_layer_attention")
GRADIENT_BASELINES = ("gradient_x_input", "integrated_gradients", "smoothgrad")
BASELINES = GAME_BASELINES + ATTENTION_BASELINES + GRADIENT_BASELINES
SHAPLEY_ESTIMATORS = ("explainer", "kernel_shap")   # methods whose values estimate the Shapley values themselves


def _pure(module: nnx.Module) -> Callable[..., Any]:
  """``module(*args)`` as a pure function of the arguments (state captured once)."""
  graphdef, state = nnx.split(module)
  return lambda *args, **kwargs: nnx.merge(graphdef, state)(*args, **kwargs)


def _pure_method(module: nnx.Module, name: str) -> Callable[..., Any]:
  graphdef, state = nnx.split(module)
  return lambda *args, **kwargs: getattr(nnx.merge(graphdef, state), name)(*args, **kwargs)


def predict_in_batches(fn: Callable[[jax.Array], jax.Array], x: np.ndarray, batch_size: int = 256) -> np.ndarray:
  """``fn`` over ``x`` in fixed-size jitted batches (the last one padded), gathered on the host."""
  fn = jax.jit(fn)
  out = []
  for start in range(0, len(x), batch_size):
    chunk = x[start:start + batch_size]
    pad = batch_size - len(chunk)
    padded = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)]) if pad else chunk
    out.append(np.asarray(fn(padded))[:len(chunk)])
  return np.concatenate(out)


def ground_truth_method(num_patches: int, choice: str) -> str:
  if choice not in ("auto", "exact", "kernel_shap"):
    raise ValueError(f"evaluate.ground_truth must be 'auto', 'exact' or 'kernel_shap', got {choice!r}.")
  if choice == "auto":
    return "exact" if num_patches <= shapley.MAX_EXACT_PLAYERS else "kernel_shap"
  if choice == "exact" and num_patches > shapley.MAX_EXACT_PLAYERS:
    raise ValueError(f"evaluate.ground_truth='exact' needs at most {shapley.MAX_EXACT_PLAYERS} patches, the model "
                     f"has {num_patches}; use 'kernel_shap' (run to convergence).")
  return choice


def sensitivity_sizes(num_patches: int, sizes: tuple[int, ...] | None) -> tuple[int, ...]:
  if sizes:
    return tuple(int(s) for s in sizes)
  fractions = (0.1, 0.25, 0.5, 0.75)
  return tuple(sorted({min(max(1, round(f * num_patches)), num_patches - 1) for f in fractions}))


def make_per_image(config: ml_collections.ConfigDict, classifier: vit.ViT, surrogate: vit.ViT,
                   explainer: heads.ViTExplainer, methods: tuple[str, ...]) -> Callable[..., dict[str, jax.Array]]:
  """``per_image(image, target, key) -> dict`` of attributions, AUCs, curves and sensitivity-n for one image."""
  e = config.evaluate
  p = surrogate.num_patches
  patch = surrogate.config.patch_size
  prefix = classifier.num_prefix_tokens
  probs_fn = lambda xb, mb: jax.nn.softmax(_pure(surrogate)(xb, mb), -1)
  logit_fn = _pure(classifier)
  attention_fn = _pure_method(classifier, "attention_weights")
  explain_fn = _pure(explainer)
  truth = ground_truth_method(p, e.ground_truth)
  sizes = sensitivity_sizes(p, e.sensitivity_sizes)

  def per_image(image: jax.Array, target: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    keys = dict(zip(("random", "rise", "kernel_shap", "smoothgrad", "truth", "sensitivity"),
                    jax.random.split(key, 6)))
    game = games.select(games.surrogate(probs_fn, image), target)          # scalar game: p(target | x_z)
    grand, null = game(jnp.ones((2, p), bool))[0], game(jnp.zeros((2, p), bool))[0]
    attr: dict[str, jax.Array] = {}
    if truth == "exact":
      attr["ground_truth"] = shapley.exact(game, p, batch_size=1024)
    else:
      attr["ground_truth"] = shapley.kernel_shap(game, p, keys["truth"], threshold=e.kernel_shap_threshold,
                                                 max_samples=e.kernel_shap_max_samples).values
    raw = explain_fn(image[None])                                          # [1, P, classes]
    grand_all = probs_fn(image[None], jnp.ones((1, p), bool))
    null_all = probs_fn(image[None], jnp.zeros((1, p), bool))[0]
    attr["explainer"] = amortize.efficient_normalize(raw, grand_all, null_all)[0, :, target]
    for name in methods:
      if name == "random":
        attr[name] = attributions.random(keys["random"], p)
      elif name == "leave_one_out":
        attr[name] = attributions.leave_one_out(game, p)
      elif name == "rise":
        attr[name] = attributions.rise(game, p, keys["rise"], num_masks=e.rise_masks)
      elif name == "kernel_shap":
        attr[name] = attributions.kernel_shap_matched(game, p, keys["kernel_shap"], num_evals=e.kernel_shap_evals,
                                                      exact_a=True)
      elif name in ATTENTION_BASELINES:
        weights = attention_fn(image[None])[:, 0]                          # [depth, heads, T, T]
        fn = attributions.attention_rollout if name == "attention_rollout" else attributions.last_layer_attention
        attr[name] = fn(weights, prefix)
      elif name == "gradient_x_input":
        attr[name] = attributions.gradient_x_input(logit_fn, image, target, players=patch)
      elif name == "integrated_gradients":
        attr[name] = attributions.integrated_gradients(logit_fn, image, target, num_steps=e.ig_steps, players=patch)
      elif name == "smoothgrad":
        attr[name] = attributions.smoothgrad(logit_fn, image, target, keys["smoothgrad"],
                                             num_samples=e.smoothgrad_samples, sigma=e.smoothgrad_sigma,
                                             players=patch)
      else:
        raise ValueError(f"evaluate.baselines: unknown method {name!r}; choose from {BASELINES}.")
    out = {"grand": grand, "null": null, **score(game, attr, keys["sensitivity"])}
    for i, budget in enumerate(e.kernel_shap_budgets):      # how many evaluations KernelSHAP needs for this error
      values = attributions.kernel_shap_matched(game, p, jax.random.fold_in(keys["kernel_shap"], i + 1),
                                                num_evals=budget, exact_a=True)
      out[f"budget/{budget}"] = jnp.abs(values - attr["ground_truth"]).mean()
    return out

  def score(game, attr: dict[str, jax.Array], key: jax.Array) -> dict[str, jax.Array]:
    # All methods' curve coalitions go through ONE game call, and sensitivity-n scores every method on the same
    # random subsets in one more: a few large model calls instead of three per method (and a far smaller program).
    names = list(attr)
    stacked = jnp.stack([attr[n].astype(jnp.float32) for n in names])               # [M, P]
    curve_masks = jnp.stack([jax.vmap(lambda a: evaluation.curve_masks(a, deletion=d))(stacked)
                             for d in (False, True)])                                # [2, M, P + 1, P]
    curves = game(curve_masks.reshape(-1, p)).reshape(2, len(names), p + 1)
    per_method = lambda m: jnp.broadcast_to(game(m)[:, None], (m.shape[0], len(names)))
    sens = evaluation.sensitivity_n(per_method, stacked.T, key, sizes=sizes, num_samples=e.sensitivity_samples)
    out = {}
    for i, name in enumerate(names):
      out[f"attr/{name}"] = stacked[i]
      out[f"insertion/{name}"] = curves[0, i]
      out[f"deletion/{name}"] = curves[1, i]
      out[f"sensitivity/{name}"] = sens[:, i]
    return out

  return per_image


def _fingerprint(config: ml_collections.ConfigDict, methods: tuple[str, ...]) -> str:
  parts = [config.to_dict(), list(methods)]
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _mean_sem(x: np.ndarray) -> tuple[float, float]:
  x = np.asarray(x, np.float64)
  x = x[np.isfinite(x)]
  if x.size == 0:
    return float("nan"), float("nan")
  return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0


def summarize(results: dict[str, np.ndarray], methods: tuple[str, ...]) -> dict[str, dict[str, float]]:
  """Per method: insertion/deletion AUC and sensitivity-n (mean, sem over images) and errors vs ground truth."""
  p = results["attr/ground_truth"].shape[1]
  fractions = np.arange(p + 1) / p
  truth = results["attr/ground_truth"]
  table: dict[str, dict[str, float]] = {}
  for name in ("ground_truth", "explainer", *methods):
    row: dict[str, float] = {}
    for kind in ("insertion", "deletion"):
      aucs = np.trapezoid(results[f"{kind}/{name}"], fractions, axis=1)
      row[f"{kind}_auc"], row[f"{kind}_auc_sem"] = _mean_sem(aucs)
    row["sensitivity_n"], row["sensitivity_n_sem"] = _mean_sem(results[f"sensitivity/{name}"].mean(1))
    if name != "ground_truth":
      err = evaluation.error_metrics(jnp.asarray(results[f"attr/{name}"]), jnp.asarray(truth), top_k=max(1, p // 4),
                                     reduce=False)
      row["correlation"] = float(np.nanmean(np.asarray(err.correlation)))
      row["spearman"] = float(np.nanmean(np.asarray(err.spearman)))
      row["top_quarter_overlap"] = float(np.nanmean(np.asarray(err.top_k_overlap)))
      if name in SHAPLEY_ESTIMATORS:
        row["mae"] = float(np.nanmean(np.asarray(err.mae)))
        row["relative_l2"] = float(np.nanmean(np.asarray(err.relative)))
    table[name] = row
  return table


def budget_to_match(results: dict[str, np.ndarray], budgets: tuple[int, ...], target_mae: float) -> float | None:
  """Evaluations KernelSHAP needs for the explainer's MAE: log-linear interpolation of its mean MAE per budget."""
  maes = np.array([results[f"budget/{b}"].mean() for b in budgets])
  logs = np.log(np.asarray(budgets, np.float64))
  for i, mae in enumerate(maes):
    if mae <= target_mae:
      if i == 0:
        return float(budgets[0]) if mae == target_mae else None   # already better at the smallest budget
      t = (maes[i - 1] - target_mae) / (maes[i - 1] - mae)
      return float(np.exp(logs[i - 1] + t * (logs[i] - logs[i - 1])))
  return float("inf")


def _fmt(row: dict[str, float], key: str) -> str:
  if key not in row or not np.isfinite(row[key]):
    return "–"
  sem = row.get(f"{key}_sem")
  return f"{row[key]:.3f} ± {sem:.3f}" if sem is not None else f"{row[key]:.3f}"


def write_report(path: str, config: ml_collections.ConfigDict, ds: image_data.ImageDataset, summary: dict[str, Any],
                 context: dict[str, Any]) -> None:
  table = summary["methods"]
  lines = [f"# ViT Shapley on {ds.name}", "",
           f"Model `{config.model.name}` at {config.data.image_size}x{config.data.image_size}, "
           f"{context['num_patches']} patches (players). Test accuracy: classifier "
           f"{context['classifier_accuracy']:.4f}, surrogate {context['surrogate_accuracy']:.4f} on full images and "
           f"{context['surrogate_masked_accuracy']:.4f} with half the patches held out (uniform-cardinality masks).",
           "", f"{context['num_images']} test images, each explained for the classifier's predicted class. Ground "
           f"truth: **{context['ground_truth']}** Shapley values of the surrogate game p(target | x_z). Insertion "
           "/ deletion add / remove patches in attribution order through the surrogate (higher / lower is better); "
           "sensitivity-n is the mean Pearson correlation between summed attributions of random patch subsets and "
           f"the drop they cause (sizes {context['sensitivity_sizes']}). Mean ± standard error over images.", "",
           "| method | insertion AUC ↑ | deletion AUC ↓ | sensitivity-n ↑ | corr. with truth | MAE vs truth |",
           "| --- | --- | --- | --- | --- | --- |"]
  for name, row in table.items():
    label = {"ground_truth": f"*{context['ground_truth']} Shapley (reference)*",
             "explainer": "**ViT Shapley explainer**"}.get(name, name.replace("_", " "))
    lines.append(f"| {label} | {_fmt(row, 'insertion_auc')} | {_fmt(row, 'deletion_auc')} | "
                 f"{_fmt(row, 'sensitivity_n')} | {_fmt(row, 'correlation')} | {_fmt(row, 'mae')} |")
  verdict = summary["explainer_beats_baselines"]
  lines += ["", f"Explainer vs every baseline: insertion {'best' if verdict['insertion'] else 'NOT best'}, "
            f"deletion {'best' if verdict['deletion'] else 'NOT best'}"
            + ("" if verdict["insertion"] and verdict["deletion"] else
               f" (beaten by: {', '.join(verdict['beaten_by']) or '–'})") + ".", ""]
  ex = table["explainer"]
  lines += [f"Explainer error vs {context['ground_truth']} values: MAE {ex['mae']:.4f}, relative L2 "
            f"{ex['relative_l2']:.3f}, correlation {ex['correlation']:.3f} (mean |truth| "
            f"{context['mean_abs_truth']:.4f}). KernelSHAP at matched compute ({config.evaluate.kernel_shap_evals} "
            f"evaluations): MAE {table.get('kernel_shap', {}).get('mae', float('nan')):.4f}. The explainer costs one "
            "forward pass per image.", "",
           "Baseline settings: RISE with {0} masks (p = 1/2), KernelSHAP with {1} evaluations (unbiased, paired), "
           "integrated gradients with {2} steps from a black image, SmoothGrad with {3} samples (sigma {4}), "
           "gradients and attention from the classifier.".format(
               config.evaluate.rise_masks, config.evaluate.kernel_shap_evals, config.evaluate.ig_steps,
               config.evaluate.smoothgrad_samples, config.evaluate.smoothgrad_sigma), "",
           budget_sentence(summary["kernel_shap_budget"]), "", "![KernelSHAP error vs evaluations](budget.png)", "",
           "![insertion and deletion curves](curves.png)", "", "![attribution overlays](heatmaps.png)", "",
           "Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in context["timings"].items()), ""]
  with open(path, "w") as f:
    f.write("\n".join(lines))


def budget_sentence(b: dict[str, Any]) -> str:
  needed = b["evaluations_to_match"]
  pairs = ", ".join(f"{n}: {m:.4f}" for n, m in zip(b["budgets"], b["kernel_shap_mae"]))
  if needed is None:
    verdict = f"KernelSHAP is already more accurate than the explainer at {b['budgets'][0]} evaluations."
  elif not np.isfinite(needed):
    verdict = f"KernelSHAP does not reach the explainer's error within {b['budgets'][-1]} evaluations."
  else:
    verdict = f"KernelSHAP needs about **{needed:.0f} model evaluations per image** to match the explainer's error."
  return f"KernelSHAP MAE by evaluations per image ({pairs}); explainer MAE {b['explainer_mae']:.4f}. " + verdict


def beats_baselines(table: dict[str, dict[str, float]], methods: tuple[str, ...]) -> dict[str, Any]:
  ex = table["explainer"]
  beaten = [m for m in methods if table[m]["insertion_auc"] >= ex["insertion_auc"]
            or table[m]["deletion_auc"] <= ex["deletion_auc"]]
  return dict(insertion=all(table[m]["insertion_auc"] < ex["insertion_auc"] for m in methods),
              deletion=all(table[m]["deletion_auc"] > ex["deletion_auc"] for m in methods), beaten_by=beaten)


def evaluate(config: ml_collections.ConfigDict, ds: image_data.ImageDataset, classifier: vit.ViT,
             surrogate: vit.ViT, explainer: heads.ViTExplainer, workdir: str) -> dict[str, Any]:
  """Runs the evaluation stage and writes ``report.md``, ``values.npz``, ``curves.png`` and ``heatmaps.png``."""
  e = config.evaluate
  methods = tuple(e.baselines)
  unknown = [m for m in methods if m not in BASELINES]
  if unknown:
    raise ValueError(f"evaluate.baselines has unknown methods {unknown}; choose from {BASELINES}.")
  n = min(e.num_images, len(ds.x_test))
  x, labels = ds.x_test[:n], ds.y_test[:n]
  t0 = time.perf_counter()
  logits = predict_in_batches(_pure(classifier), x)
  targets = logits.argmax(-1).astype(np.int32)
  per_image = make_per_image(config, classifier, surrogate, explainer, methods)
  fn = jax.jit(jax.vmap(per_image))
  root = jax.random.key(config.seed + 100)
  keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(n))
  results = chunked.map_chunks(lambda a: fn(*a), (x, targets, keys), chunk_size=e.chunk_size,
                               directory=os.path.join(workdir, "evaluation"), tag=_fingerprint(config, methods),
                               desc="evaluate")
  timings = {"evaluate_images": time.perf_counter() - t0}
  # The explainer's own cost, measured separately: one batched forward pass for all images.
  explain = jax.jit(_pure(explainer))
  explain(x).block_until_ready()
  t0 = time.perf_counter()
  explain(x).block_until_ready()
  timings["explainer_forward_all"] = time.perf_counter() - t0

  table = summarize(results, methods)
  verdict = beats_baselines(table, methods)
  p = surrogate.num_patches
  gh, gw = surrogate.grid
  mask_half = np.asarray(jax.vmap(lambda k: jax.random.permutation(k, p) < p // 2)(
      jax.random.split(jax.random.key(config.seed + 7), len(ds.x_test))))
  surrogate_fn = _pure(surrogate)
  context = dict(
      num_patches=p, num_images=n, ground_truth=ground_truth_method(p, e.ground_truth),
      sensitivity_sizes=sensitivity_sizes(p, e.sensitivity_sizes), timings=timings,
      classifier_accuracy=float(np.mean(predict_in_batches(_pure(classifier), ds.x_test).argmax(-1) == ds.y_test)),
      surrogate_accuracy=float(np.mean(predict_in_batches(surrogate_fn, ds.x_test).argmax(-1) == ds.y_test)),
      surrogate_masked_accuracy=float(np.mean(
          predict_in_batches(lambda xb: surrogate_fn(xb, jnp.asarray(mask_half[:len(xb)])), ds.x_test).argmax(-1)
          == ds.y_test)),
      mean_abs_truth=float(np.abs(results["attr/ground_truth"]).mean()))
  budgets = tuple(e.kernel_shap_budgets)
  budget_mae = [float(results[f"budget/{b}"].mean()) for b in budgets]
  summary_budget = dict(budgets=list(budgets), kernel_shap_mae=budget_mae,
                        explainer_mae=table["explainer"]["mae"],
                        evaluations_to_match=budget_to_match(results, budgets, table["explainer"]["mae"]))
  summary = dict(methods=table, explainer_beats_baselines=verdict, kernel_shap_budget=summary_budget,
                 **{k: v for k, v in context.items() if k != "timings"})
  np.savez(os.path.join(workdir, "values.npz"), images=x, labels=labels, targets=targets,
           **{k.replace("/", "__"): v for k, v in results.items()})
  fractions = np.arange(p + 1) / p
  shown = ("ground_truth", "explainer", *methods)
  plots.curves_plot(fractions, {m: {"insertion": results[f"insertion/{m}"], "deletion": results[f"deletion/{m}"]}
                                for m in shown}, os.path.join(workdir, "curves.png"))
  k = min(e.num_heatmaps, n)
  plots.heatmap_grid(x[:k], {m: results[f"attr/{m}"][:k].reshape(k, gh, gw) for m in shown},
                     os.path.join(workdir, "heatmaps.png"),
                     row_titles=[f"label {ds.class_names[labels[i]]} / pred {ds.class_names[targets[i]]}"
                                 for i in range(k)])
  name = "KernelSHAP (unbiased, paired)"
  plots.error_vs_evaluations({name: np.asarray(budgets)}, {name: np.asarray(budget_mae)},
                             os.path.join(workdir, "budget.png"),
                             levels={"ViT Shapley explainer (1 forward pass)": table["explainer"]["mae"]},
                             ylabel=f"MAE vs {context['ground_truth']} Shapley values")
  write_report(os.path.join(workdir, "report.md"), config, ds, summary, context)
  logging.info("evaluation: %s", json.dumps(table, indent=1, default=float))
  return dict(summary, timings=timings)
