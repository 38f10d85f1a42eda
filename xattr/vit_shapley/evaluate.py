"""Stage 4 of ViT Shapley: the explainer scored against ground truth and baselines on test images.

Every method explains the classifier's predicted class of each test image in patch space. Removal-based
quantities go through the surrogate's game v_x(z) = p_surrogate(target | x_z) (attention masking):

  * ground truth: exact Shapley values by enumeration (<= 20 patches) or KernelSHAP run to convergence;
  * the explainer (one forward pass, efficient normalization with the surrogate's grand and null values);
  * baselines, all through :func:`xattr.methods.attribute`: random, leave-one-out, RISE and KernelSHAP at the same
    number of game evaluations as RISE ("matched compute") on the same game; attention rollout and last-layer
    attention of the classifier; vanilla gradients, gradient x input, integrated gradients and SmoothGrad of the
    classifier's target logit, summed per patch; and from the classifier's internals GradCAM (gradient-weighted
    tokens entering the last block), attention x gradient (last block), Chefer et al.'s gradient-weighted
    attention rollout and conservative LRP (:mod:`xattr.attributions`).

Metrics: insertion/deletion AUC (:mod:`xattr.evaluation`), sensitivity-n, and error vs the ground truth.
Per-image results are computed in jitted chunks and saved (``workdir/evaluation/``, fingerprinted by
:mod:`xattr.artifacts`), so a killed evaluation resumes where it stopped.

Example:
  >>> ground_truth_method(16, "auto"), sensitivity_sizes(16, None)
  ('exact', (2, 4, 8, 12))
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from xattr import amortize, artifacts, chunked, evaluation, games, methods, shapley
from xattr.data import images as image_data
from xattr.models import heads, vit
from xattr.models.predict import predict_in_batches

__all__ = ["BASELINES", "SHAPLEY_ESTIMATORS", "Evaluation", "baseline_settings", "ground_truth_method",
           "sensitivity_sizes", "make_per_image", "evaluate_images", "summarize", "budget_to_match",
           "beats_baselines", "context", "budget_summary"]

BASELINES = ("random", "leave_one_out", "rise", "kernel_shap", "attention_rollout", "last_layer_attention",
             "vanilla_gradients", "gradient_x_input", "integrated_gradients", "smoothgrad", "gradcam",
             "attention_x_gradient", "gradient_rollout", "lrp")
SHAPLEY_ESTIMATORS = ("explainer", "kernel_shap")   # methods whose values estimate the Shapley values themselves
_KEYS = ("random", "rise", "kernel_shap", "smoothgrad", "truth", "sensitivity")   # per-image key split, in order


def _pure(module: nnx.Module) -> Callable[..., Any]:
  """``module(*args)`` as a pure function of the arguments (state captured once)."""
  graphdef, state = nnx.split(module)
  return lambda *args, **kwargs: nnx.merge(graphdef, state)(*args, **kwargs)


def _pure_method(module: nnx.Module, name: str) -> Callable[..., Any]:
  graphdef, state = nnx.split(module)
  return lambda *args, **kwargs: getattr(nnx.merge(graphdef, state), name)(*args, **kwargs)


def baseline_settings(e: ml_collections.ConfigDict) -> dict[str, tuple[int | None, dict[str, Any]]]:
  """Per baseline, the ``(budget, settings)`` of its :func:`xattr.methods.attribute` call from ``config.evaluate``.

  KernelSHAP gets ``kernel_shap_evals`` game evaluations (grand and null included) with the unbiased estimator;
  RISE ``rise_masks`` masks; the gradient methods their step and sample counts.

  Example:
    >>> e = ml_collections.ConfigDict(dict(rise_masks=64, kernel_shap_evals=64, ig_steps=32,
    ...                                    smoothgrad_samples=8, smoothgrad_sigma=0.1))
    >>> baseline_settings(e)["kernel_shap"]
    (64, {'exact_a': True})
  """
  return {"random": (None, {}), "leave_one_out": (None, {}), "rise": (None, dict(num_masks=e.rise_masks)),
          "kernel_shap": (e.kernel_shap_evals, dict(exact_a=True)), "attention_rollout": (None, {}),
          "last_layer_attention": (None, {}), "gradient_x_input": (None, {}),
          "integrated_gradients": (None, dict(num_steps=e.ig_steps)),
          "smoothgrad": (None, dict(num_samples=e.smoothgrad_samples, sigma=e.smoothgrad_sigma)),
          **{name: (None, {}) for name in ("vanilla_gradients", "gradcam", "attention_x_gradient", "gradient_rollout",
                                           "lrp")}}


def ground_truth_method(num_patches: int, choice: str) -> str:
  """``'exact'`` or ``'kernel_shap'``: what the ground truth of ``num_patches`` players is (``choice='auto'``:
  enumeration when it is affordable)."""
  if choice not in ("auto", "exact", "kernel_shap"):
    raise ValueError(f"evaluate.ground_truth must be 'auto', 'exact' or 'kernel_shap', got {choice!r}.")
  if choice == "auto":
    return "exact" if num_patches <= shapley.MAX_EXACT_PLAYERS else "kernel_shap"
  if choice == "exact" and num_patches > shapley.MAX_EXACT_PLAYERS:
    raise ValueError(f"evaluate.ground_truth='exact' needs at most {shapley.MAX_EXACT_PLAYERS} patches, the model "
                     f"has {num_patches}; use 'kernel_shap' (run to convergence).")
  return choice


def sensitivity_sizes(num_patches: int, sizes: tuple[int, ...] | None) -> tuple[int, ...]:
  """The subset sizes of sensitivity-n: ``sizes`` if given, else a few across [1, num_patches - 1]."""
  if sizes:
    return tuple(int(s) for s in sizes)
  fractions = (0.1, 0.25, 0.5, 0.75)
  return tuple(sorted({min(max(1, round(f * num_patches)), num_patches - 1) for f in fractions}))


def _check_baselines(names: tuple[str, ...]) -> None:
  unknown = [m for m in names if m not in BASELINES]
  if unknown:
    raise ValueError(f"evaluate.baselines has unknown methods {unknown}; choose from {BASELINES}.")


def make_per_image(config: ml_collections.ConfigDict, classifier: vit.ViT, surrogate: vit.ViT,
                   explainer: heads.ViTExplainer, baselines: tuple[str, ...]) -> Callable[..., dict[str, jax.Array]]:
  """``per_image(image, target, key) -> dict`` of attributions, curves, sensitivity-n and KernelSHAP budget errors
  for one image (jit and vmap it over images)."""
  _check_baselines(baselines)
  e = config.evaluate
  p = surrogate.num_patches
  probs_fn = lambda xb, mb: jax.nn.softmax(_pure(surrogate)(xb, mb), -1)
  attention_fn = _pure_method(classifier, "attention_weights")
  explain_fn = _pure(explainer)
  classifier_graph, classifier_state = nnx.split(classifier)
  truth = ground_truth_method(p, e.ground_truth)
  calls = baseline_settings(e)
  needs_attention = any(methods.get(name).needs == "attention" for name in baselines)

  def per_image(image: jax.Array, target: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    keys = dict(zip(_KEYS, jax.random.split(key, len(_KEYS))))
    game = games.select(games.surrogate(probs_fn, image), target)          # scalar game: p(target | x_z)
    grand, null = game(jnp.ones((2, p), bool))[0], game(jnp.zeros((2, p), bool))[0]
    problem = methods.Problem(game=game, num_players=p, logit_fn=_pure(classifier), x=image, target=target,
                              players=surrogate.config.patch_size, num_prefix_tokens=classifier.num_prefix_tokens,
                              attention=attention_fn(image[None])[:, 0] if needs_attention else None,
                              model=nnx.merge(classifier_graph, classifier_state))
    if truth == "exact":
      truth_est = methods.attribute("exact_shapley", problem, keys["truth"], batch_size=1024)
    else:
      truth_est = methods.attribute("kernel_shap", problem, keys["truth"], threshold=e.kernel_shap_threshold,
                                    max_samples=e.kernel_shap_max_samples)
    attr = {"ground_truth": truth_est.values}
    raw = explain_fn(image[None])                                          # [1, P, classes]
    grand_all = probs_fn(image[None], jnp.ones((1, p), bool))
    null_all = probs_fn(image[None], jnp.zeros((1, p), bool))[0]
    attr["explainer"] = amortize.efficient_normalize(raw, grand_all, null_all)[0, :, target]
    for name in baselines:
      budget, settings = calls[name]
      attr[name] = methods.attribute(name, problem, keys.get(name, keys["random"]), budget=budget,
                                     **settings).values
    out = {"grand": grand, "null": null, **_score(game, attr, keys["sensitivity"], p, e)}
    for i, budget in enumerate(e.kernel_shap_budgets):      # how many evaluations KernelSHAP needs for this error
      values = methods.attribute("kernel_shap", problem, jax.random.fold_in(keys["kernel_shap"], i + 1),
                                 budget=budget, exact_a=True).values
      out[f"budget/{budget}"] = jnp.abs(values - attr["ground_truth"]).mean()
    return out

  return per_image


def _score(game, attr: dict[str, jax.Array], key: jax.Array, p: int, e: ml_collections.ConfigDict
           ) -> dict[str, jax.Array]:
  # All methods' curve coalitions go through ONE game call, and sensitivity-n scores every method on the same
  # random subsets in one more: a few large model calls instead of three per method (and a far smaller program).
  names = list(attr)
  stacked = jnp.stack([attr[n].astype(jnp.float32) for n in names])               # [M, P]
  curve_masks = jnp.stack([jax.vmap(lambda a: evaluation.curve_masks(a, deletion=d))(stacked)
                           for d in (False, True)])                                # [2, M, P + 1, P]
  curves = game(curve_masks.reshape(-1, p)).reshape(2, len(names), p + 1)
  per_method = lambda m: jnp.broadcast_to(game(m)[:, None], (m.shape[0], len(names)))
  sens = evaluation.sensitivity_n(per_method, stacked.T, key, sizes=sensitivity_sizes(p, e.sensitivity_sizes),
                                  num_samples=e.sensitivity_samples)
  out = {}
  for i, name in enumerate(names):
    out[f"attr/{name}"] = stacked[i]
    out[f"insertion/{name}"] = curves[0, i]
    out[f"deletion/{name}"] = curves[1, i]
    out[f"sensitivity/{name}"] = sens[:, i]
  return out


class Evaluation(NamedTuple):
  """What :func:`evaluate_images` returns.

  Attributes:
    results: name -> per-image arrays (``attr/<method>``, ``insertion/<method>``, ``deletion/<method>``,
      ``sensitivity/<method>``, ``budget/<evaluations>``, ``grand``, ``null``).
    images, labels, targets: the explained test images, their labels and the classifier's predicted classes.
    timings: seconds of the per-image evaluation and of the explainer's forward pass over all images.
  """

  results: dict[str, np.ndarray]
  images: np.ndarray
  labels: np.ndarray
  targets: np.ndarray
  timings: dict[str, float]


def evaluate_images(config: ml_collections.ConfigDict, ds: image_data.ImageDataset, classifier: vit.ViT,
                    surrogate: vit.ViT, explainer: heads.ViTExplainer, workdir: str) -> Evaluation:
  """Per-image results of every method on the first ``evaluate.num_images`` test images (resumable chunks)."""
  e = config.evaluate
  baselines = tuple(e.baselines)
  _check_baselines(baselines)
  n = min(e.num_images, len(ds.x_test))
  x, labels = ds.x_test[:n], ds.y_test[:n]
  t0 = time.perf_counter()
  targets = predict_in_batches(_pure(classifier), x).argmax(-1).astype(np.int32)
  fn = jax.jit(jax.vmap(make_per_image(config, classifier, surrogate, explainer, baselines)))
  root = jax.random.key(config.seed + 100)
  keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(n))
  tag = artifacts.fingerprint(config, list(baselines), data={"x": x, "targets": targets})
  results = chunked.map_chunks(lambda a: fn(*a), (x, targets, keys), chunk_size=e.chunk_size,
                               directory=os.path.join(workdir, "evaluation"), tag=tag, desc="evaluate")
  timings = {"evaluate_images": time.perf_counter() - t0}
  # The explainer's own cost, measured separately: one batched forward pass for all images.
  explain = jax.jit(_pure(explainer))
  explain(x).block_until_ready()
  t0 = time.perf_counter()
  explain(x).block_until_ready()
  timings["explainer_forward_all"] = time.perf_counter() - t0
  return Evaluation(results, x, labels, targets, timings)


def _mean_sem(x: np.ndarray) -> tuple[float, float]:
  x = np.asarray(x, np.float64)
  x = x[np.isfinite(x)]
  if x.size == 0:
    return float("nan"), float("nan")
  return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0


def summarize(results: dict[str, np.ndarray], baselines: tuple[str, ...]) -> dict[str, dict[str, float]]:
  """Per method: insertion/deletion AUC and sensitivity-n (mean, sem over images) and errors vs ground truth."""
  p = results["attr/ground_truth"].shape[1]
  fractions = np.arange(p + 1) / p
  truth = results["attr/ground_truth"]
  table: dict[str, dict[str, float]] = {}
  for name in ("ground_truth", "explainer", *baselines):
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
  """Evaluations KernelSHAP needs for the explainer's MAE: log-linear interpolation of its mean MAE per budget.

  Returns None when KernelSHAP is already better at the smallest budget, ``inf`` when it never gets there.

  Example:
    >>> r = {"budget/10": np.array([0.4]), "budget/100": np.array([0.2])}
    >>> round(budget_to_match(r, (10, 100), 0.3), 1), budget_to_match(r, (10, 100), 0.1)
    (31.6, inf)
  """
  maes = np.array([results[f"budget/{b}"].mean() for b in budgets])
  logs = np.log(np.asarray(budgets, np.float64))
  for i, mae in enumerate(maes):
    if mae <= target_mae:
      if i == 0:
        return float(budgets[0]) if mae == target_mae else None   # already better at the smallest budget
      t = (maes[i - 1] - target_mae) / (maes[i - 1] - mae)
      return float(np.exp(logs[i - 1] + t * (logs[i] - logs[i - 1])))
  return float("inf")


def beats_baselines(table: dict[str, dict[str, float]], baselines: tuple[str, ...]) -> dict[str, Any]:
  """Whether the explainer has the best insertion (highest) and deletion (lowest) AUC, and who beats it."""
  ex = table["explainer"]
  beaten = [m for m in baselines if table[m]["insertion_auc"] >= ex["insertion_auc"]
            or table[m]["deletion_auc"] <= ex["deletion_auc"]]
  return dict(insertion=all(table[m]["insertion_auc"] < ex["insertion_auc"] for m in baselines),
              deletion=all(table[m]["deletion_auc"] > ex["deletion_auc"] for m in baselines), beaten_by=beaten)


def _accuracy(fn: Callable[[jax.Array], jax.Array], ds: image_data.ImageDataset) -> float:
  return float(np.mean(predict_in_batches(fn, ds.x_test).argmax(-1) == ds.y_test))


def context(config: ml_collections.ConfigDict, ds: image_data.ImageDataset, classifier: vit.ViT, surrogate: vit.ViT,
            ev: Evaluation) -> dict[str, Any]:
  """What the report says about the setting: patches, images, ground truth, accuracies (full test set)."""
  e = config.evaluate
  p = surrogate.num_patches
  mask_half = np.asarray(jax.vmap(lambda k: jax.random.permutation(k, p) < p // 2)(
      jax.random.split(jax.random.key(config.seed + 7), len(ds.x_test))))
  surrogate_fn = _pure(surrogate)
  return dict(
      num_patches=p, num_images=len(ev.images), ground_truth=ground_truth_method(p, e.ground_truth),
      sensitivity_sizes=sensitivity_sizes(p, e.sensitivity_sizes), timings=ev.timings,
      classifier_accuracy=_accuracy(_pure(classifier), ds), surrogate_accuracy=_accuracy(surrogate_fn, ds),
      surrogate_masked_accuracy=_accuracy(lambda xb: surrogate_fn(xb, jnp.asarray(mask_half[:len(xb)])), ds),
      mean_abs_truth=float(np.abs(ev.results["attr/ground_truth"]).mean()))


def budget_summary(results: dict[str, np.ndarray], budgets: tuple[int, ...], explainer_mae: float) -> dict[str, Any]:
  """KernelSHAP's mean MAE per budget and the evaluations it needs to match the explainer's MAE."""
  return dict(budgets=list(budgets), kernel_shap_mae=[float(results[f"budget/{b}"].mean()) for b in budgets],
              explainer_mae=explainer_mae, evaluations_to_match=budget_to_match(results, budgets, explainer_mae))
