"""Amortized explainers of the study: an MLP explainer regressed onto (noisy) labels of the training inputs
(stochastic amortization) or trained with the FastSHAP loss, both with :func:`xattr.training.train` (resumable)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from xattr import amortize, artifacts, data, masks, training
from xattr.amortization.tabular import Game, WithRngs, grand_null, num_outputs

__all__ = ["explainer_spec", "regression_loss_fn", "train_stochastic", "train_fastshap"]


def explainer_spec(config: ml_collections.ConfigDict, ds: data.Dataset) -> dict[str, Any]:
  """The MLP explainer's spec (:func:`xattr.amortize.build_module`) from ``config.explainer``."""
  return dict(kind="mlp_explainer", num_features=ds.num_features, hidden_sizes=list(config.explainer.hidden_sizes),
              num_classes=num_outputs(ds), activation=config.explainer.activation)


def _regression_normalized(model, batch):
  phi = amortize.efficient_normalize(model(batch["x"]), batch["grand"], batch["null"])
  return amortize.regression_loss(phi, batch["labels"], scale=batch["scale"][:, None, None]), {}


def _regression_raw(model, batch):
  return amortize.regression_loss(model(batch["x"]), batch["labels"], scale=batch["scale"][:, None, None]), {}


def regression_loss_fn(normalize: bool) -> Callable:
  """The training loss ``(explainer, batch) -> (loss, {})`` of regression onto ``batch['labels']`` (scaled by
  ``batch['scale']``), after the efficient normalization with ``batch['grand']``/``['null']`` if ``normalize``.

  The same two function objects are returned every time, so the compiled training step is reused.
  """
  return _regression_normalized if normalize else _regression_raw


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
    training.train(explainer, regression_loss_fn(normalize), batch, optimizer=optimizer,
                   num_steps=min((epoch + 1) * steps_per_stage, e.num_steps), batch_size=min(e.batch_size, n),
                   seed=config.seed + 3, workdir=workdir, progress=config.progress,
                   desc=f"{ds.name}: {desc} (label epoch {epoch})")
  return explainer


def train_fastshap(config: ml_collections.ConfigDict, ds: data.Dataset, game: Game, workdir: str,
                   evaluate: Callable[[nnx.Module, int], dict[str, float]]) -> tuple[nnx.Module, list[dict]]:
  """FastSHAP: the explainer trained with the FastSHAP loss on ``num_samples`` paired Shapley-kernel masks per input;
  ``evaluate`` is called every ``eval_every`` steps (the error-vs-cost curve, saved point by point in
  ``workdir/curve.json``, so a resumed or re-run training keeps the points already taken)."""
  f = config.fastshap
  d, k = ds.num_features, num_outputs(ds)
  wrapper = WithRngs(amortize.build_module(explainer_spec(config, ds), seed=config.seed + 4), config.seed + 5)
  grand, null = grand_null(game, ds.x_train)
  value_fn, s = game.value_fn, f.num_samples

  def loss_fn(w, batch):
    b = batch["x"].shape[0]
    z = jax.vmap(lambda kk: masks.shapley_kernel(kk, d, s, paired=True))(jax.random.split(w.rngs.masks(), b))
    values = value_fn(jnp.repeat(batch["x"], s, axis=0), z.reshape(b * s, d)).reshape(b, s, k)
    return amortize.fastshap_loss(w.module(batch["x"]), z, values, batch["null"], batch["grand"]), {}

  curve_path = os.path.join(workdir, "curve.json")
  saved_curve = lambda: {int(p["step"]): p for p in artifacts.load_json(curve_path) or []}

  def eval_fn(w, step):
    out = evaluate(w.module, step)
    points = saved_curve()
    points[step] = {"step": step, **out}
    artifacts.save_json(curve_path, [points[i] for i in sorted(points)])
    return out

  training.train(wrapper, loss_fn, dict(x=ds.x_train, grand=grand, null=np.broadcast_to(null, grand.shape)),
                 optimizer=training.optimizer(f, num_steps=f.num_steps, schedule="cosine"), num_steps=f.num_steps,
                 batch_size=min(f.batch_size, len(ds.x_train)), seed=config.seed + 4, workdir=workdir, eval_fn=eval_fn,
                 eval_every=f.eval_every, progress=config.progress, desc=f"{ds.name}: FastSHAP")
  curve = [p for step, p in sorted(saved_curve().items()) if step <= f.num_steps]
  return wrapper.module, curve
