"""ViT Shapley end to end: classifier -> surrogate -> explainer -> evaluation, each stage resumable.

  python -m experiments.vit_shapley --config=configs/vit_shapley/digits.py --workdir=runs/vit_shapley

Stages (``workdir/<stage>/`` holds each one's Orbax checkpoints; a finished stage is restored, not retrained):
  1. ``classifier``: a masked ViT trained with cross-entropy (AdamW, warmup + cosine, gradient clipping).
  2. ``surrogate``: a copy of the classifier fine-tuned to match the classifier's class probabilities when
     patches are held out (uniform-cardinality masks, ``num_masks`` per image, KL to the classifier on the full
     image). Held-out patches are removed by attention masking, so the surrogate defines the game
     v_x(z) = p_surrogate(y | x_z) that every method below explains.
  3. ``explainer``: :class:`xattr.models.heads.ViTExplainer` (backbone initialised from the surrogate, one extra
     block, per-patch MLP head, tanh) trained with the FastSHAP loss on ``num_samples`` paired Shapley-kernel
     masks per image, the surrogate frozen inside the same model (``training.train(trainable=...)``).
  4. ``evaluate``: on test images, the explainer's values for the classifier's predicted class vs exact Shapley
     values of the surrogate game (enumeration when the patch count allows, else converged KernelSHAP), and
     insertion/deletion AUC and sensitivity-n of the explainer vs the baselines. Writes ``report.md``,
     ``metrics.json``, ``values.npz`` and ``heatmaps.png``.
"""

from __future__ import annotations

import functools
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
from experiments.vit_shapley_eval import predict_in_batches
from experiments import vit_shapley_eval
from xattr import amortize, masks, training
from xattr.data import images as image_data
from xattr.models import heads
from xattr.models import vit


STAGES = ("classifier", "surrogate", "explainer", "evaluate")


# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------

class WithMaskRngs(nnx.Module):
  """A model plus the random stream its training loss draws masks from (checkpointed with it)."""

  def __init__(self, model: nnx.Module, seed: int):
    self.model = model
    self.rngs = nnx.Rngs(masks=seed)


class ExplainerTraining(nnx.Module):
  """The explainer being trained next to the frozen surrogate whose game it learns."""

  def __init__(self, explainer: heads.ViTExplainer, surrogate: vit.ViT, seed: int):
    self.explainer = explainer
    self.surrogate = surrogate
    self.rngs = nnx.Rngs(masks=seed)


EXPLAINER_TRAINABLE = nnx.All(nnx.Param, nnx.PathContains("explainer"))


def make_optimizer(opt: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
  """AdamW with linear warmup, cosine decay to ``lr * final_lr_fraction`` and global-norm clipping."""
  warmup = min(int(opt.warmup_steps), max(num_steps - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(0.0, opt.learning_rate, warmup, max(num_steps, warmup + 1),
                                                end_value=opt.learning_rate * opt.final_lr_fraction)
  return optax.chain(optax.clip_by_global_norm(opt.grad_clip),
                     optax.adamw(schedule, b1=0.9, b2=0.999, weight_decay=opt.weight_decay))


def _train(model: nnx.Module, loss_fn, train_data, opt: ml_collections.ConfigDict, workdir: str, desc: str, *,
           seed: int, eval_fn=None, trainable=nnx.Param) -> training.TrainResult:
  return training.train(model, loss_fn, train_data, optimizer=make_optimizer(opt, opt.num_steps),
                        num_steps=opt.num_steps, batch_size=opt.batch_size, seed=seed, workdir=workdir,
                        checkpoint_every=opt.checkpoint_every, eval_fn=eval_fn, eval_every=opt.eval_every,
                        log_every=opt.log_every, desc=desc, trainable=trainable,
                        mesh=training.data_mesh(opt.batch_size))      # strict: a batch that does not split fails


def _accuracy(model: vit.ViT, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
  graphdef, state = nnx.split(model)
  if mask is None:
    logits = predict_in_batches(lambda xb: nnx.merge(graphdef, state)(xb), x)
  else:
    logits = predict_in_batches(lambda xb: nnx.merge(graphdef, state)(xb, mask[:len(xb)]), x)
  return float(np.mean(np.argmax(logits, -1) == y))


# ---------------------------------------------------------------------------------------------------------------
# Stages 1-3: training
# ---------------------------------------------------------------------------------------------------------------

def train_classifier(config: ml_collections.ConfigDict, ds: image_data.ImageDataset, model_config: vit.ViTConfig,
                     workdir: str) -> vit.ViT:
  """Stage 1: cross-entropy training (or fine-tuning from ``model.init_from``) of the ViT to explain."""
  model = vit.ViT(model_config, rngs=nnx.Rngs(config.seed))
  if config.model.init_from:
    init_from_pretrained(model, config.model.init_from)

  def loss_fn(m, batch):
    logits = m(batch["x"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}

  def eval_fn(m, step):
    return {"test_accuracy": _accuracy(m, ds.x_test, ds.y_test)}

  _train(model, loss_fn, {"x": ds.x_train, "y": ds.y_train}, config.classifier, os.path.join(workdir, "classifier"),
         "classifier", seed=config.seed, eval_fn=eval_fn)
  return model


def init_from_pretrained(model: vit.ViT, path: str) -> None:
  """Copies pretrained weights into ``model`` (all but the head, which is new for the dataset's classes).

  ``path``: a big_vision ``.npz``, a timm ``.safetensors`` file, or a folder written by
  ``python -m xattr.models.convert``. Position embeddings are resized to the model's grid when needed.
  """
  from xattr.models import convert

  cfg = model.config
  kwargs = dict(image_size=cfg.image_size, dtype=cfg.dtype, removal=cfg.removal, num_heads=cfg.num_heads)
  if os.path.isdir(path):
    pretrained = convert.load_checkpoint(path, **kwargs)
  else:
    pretrained = convert.load(path, skip_head=True, num_classes=cfg.num_classes, **kwargs)
  params = {k: v for k, v in convert.model_params(pretrained).items() if not k.startswith("head/")}
  try:
    convert.set_params(model, params, strict=False)
  except (KeyError, ValueError) as err:
    raise ValueError(f"model.init_from={path!r} does not fit model.name={cfg.width}-wide, {cfg.depth}-deep "
                     f"config: {err} Set model.name (and overrides) to the checkpoint's architecture.") from err
  logging.info("classifier initialised from %s (%d tensors, head left fresh)", path, len(params))


def _repeat(x: jax.Array, n: int) -> jax.Array:
  """[B, ...] -> [B * n, ...], each row repeated n times in a row."""
  return jnp.repeat(x, n, axis=0)


def surrogate_loss(model: vit.ViT, images: jax.Array, target_probs: jax.Array, key: jax.Array,
                   num_masks: int) -> jax.Array:
  """KL(classifier(x) || surrogate(x, z)) averaged over ``num_masks`` uniform-cardinality masks per image."""
  b = images.shape[0]
  z = masks.uniform_cardinality(key, model.num_patches, b * num_masks)
  logits = model(_repeat(images, num_masks), z).reshape(b, num_masks, -1)
  return amortize.surrogate_kl_loss(logits, target_probs[:, None, :])


def train_surrogate(config: ml_collections.ConfigDict, ds: image_data.ImageDataset, classifier: vit.ViT,
                    workdir: str) -> vit.ViT:
  """Stage 2: the classifier fine-tuned to behave like itself under attention-masked patch removal."""
  graphdef, state = nnx.split(classifier)
  teacher = lambda xb: jax.nn.softmax(nnx.merge(graphdef, state)(xb), -1)
  probs = predict_in_batches(teacher, ds.x_train)
  wrapper = WithMaskRngs(nnx.clone(classifier), seed=config.seed + 1)
  num_masks = config.surrogate.num_masks
  eval_masks = np.asarray(masks.uniform_cardinality(jax.random.key(config.seed + 2), classifier.num_patches,
                                                    len(ds.x_test)))

  def loss_fn(m, batch):
    loss = surrogate_loss(m.model, batch["x"], batch["probs"], m.rngs.masks(), num_masks)
    return loss, {}

  def eval_fn(m, step):
    return {"test_accuracy": _accuracy(m.model, ds.x_test, ds.y_test),
            "test_accuracy_masked": _accuracy(m.model, ds.x_test, ds.y_test, eval_masks)}

  _train(wrapper, loss_fn, {"x": ds.x_train, "probs": probs}, config.surrogate, os.path.join(workdir, "surrogate"),
         "surrogate", seed=config.seed + 1, eval_fn=eval_fn)
  return wrapper.model


def explainer_loss(explainer: heads.ViTExplainer, surrogate: vit.ViT, images: jax.Array, key: jax.Array,
                   num_samples: int) -> jax.Array:
  """FastSHAP loss of the explainer on ``num_samples`` paired Shapley-kernel masks per image.

  Game values are the surrogate's class probabilities; grand (all patches) is computed per image and null (no
  patch: only the CLS token is seen, so it does not depend on the image) from the first image.
  """
  b, p = images.shape[0], surrogate.num_patches
  keys = jax.random.split(key, b)
  z = jax.vmap(lambda k: masks.shapley_kernel(k, p, num_samples, paired=True))(keys)      # [B, S, P]
  probs = lambda x, m: jax.nn.softmax(surrogate(x, m), -1)
  values = jax.lax.stop_gradient(probs(_repeat(images, num_samples), z.reshape(b * num_samples, p)))
  values = values.reshape(b, num_samples, -1)
  grand = jax.lax.stop_gradient(probs(images, jnp.ones((b, p), bool)))
  null = jax.lax.stop_gradient(probs(images[:1], jnp.zeros((1, p), bool))[0])
  return amortize.fastshap_loss(explainer(images), z, values, null, grand)


def build_explainer(config: ml_collections.ConfigDict, surrogate: vit.ViT, num_classes: int) -> heads.ViTExplainer:
  e = config.explainer
  return heads.ViTExplainer(nnx.clone(surrogate), num_classes, extra_blocks=e.extra_blocks,
                            hidden_sizes=tuple(e.head_hidden_sizes), rngs=nnx.Rngs(config.seed + 3))


def train_explainer(config: ml_collections.ConfigDict, ds: image_data.ImageDataset, surrogate: vit.ViT,
                    workdir: str) -> heads.ViTExplainer:
  """Stage 3: FastSHAP training of the ViT explainer against the frozen surrogate."""
  wrapper = ExplainerTraining(build_explainer(config, surrogate, ds.num_classes), nnx.clone(surrogate),
                              seed=config.seed + 4)
  num_samples = config.explainer.num_samples
  val_x = ds.x_test[:config.explainer.num_validation]
  val_key = jax.random.key(config.seed + 5)       # fixed masks: the validation loss is comparable across steps

  def loss_fn(m, batch):
    return explainer_loss(m.explainer, m.surrogate, batch["x"], m.rngs.masks(), num_samples), {}

  validation_loss = nnx.jit(functools.partial(explainer_loss, num_samples=num_samples))

  def eval_fn(m, step):
    return {"validation_loss": float(validation_loss(m.explainer, m.surrogate, val_x, val_key))}

  _train(wrapper, loss_fn, {"x": ds.x_train}, config.explainer, os.path.join(workdir, "explainer"), "explainer",
         seed=config.seed + 4, eval_fn=eval_fn, trainable=EXPLAINER_TRAINABLE)
  return wrapper.explainer


# ---------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------

def load_data(config: ml_collections.ConfigDict) -> image_data.ImageDataset:
  d = config.data
  if d.name == "digits":
    return image_data.load("digits", image_size=d.image_size, seed=config.seed)
  return image_data.from_tfds(d.name, data_dir=d.data_dir, image_size=d.image_size, train_split=d.train_split,
                              test_split=d.test_split, max_train=d.max_train, max_test=d.max_test)


def model_config(config: ml_collections.ConfigDict, ds: image_data.ImageDataset) -> vit.ViTConfig:
  overrides = dict(config.model.overrides.to_dict()) if config.model.get("overrides") else {}
  return vit.config(config.model.name, image_size=config.data.image_size, num_channels=ds.image_shape[-1],
                    num_classes=ds.num_classes, dtype=jnp.dtype(config.model.dtype), **overrides)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every stage (finished ones are restored from ``workdir``) and returns the evaluation metrics."""
  os.makedirs(workdir, exist_ok=True)
  timings: dict[str, float] = {}
  start = time.perf_counter()
  ds = load_data(config)
  cfg = model_config(config, ds)
  logging.info("data %s: train %s, test %s; model %s", ds.name, ds.x_train.shape, ds.x_test.shape, cfg)
  classifier = train_classifier(config, ds, cfg, workdir)
  timings["classifier_s"] = time.perf_counter() - start
  surrogate = train_surrogate(config, ds, classifier, workdir)
  timings["surrogate_s"] = time.perf_counter() - start - sum(timings.values())
  explainer = train_explainer(config, ds, surrogate, workdir)
  timings["explainer_s"] = time.perf_counter() - start - sum(timings.values())
  metrics = vit_shapley_eval.evaluate(config, ds, classifier, surrogate, explainer, workdir)
  timings["evaluate_s"] = time.perf_counter() - start - sum(timings.values())
  metrics["timings"] = timings
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2, default=float)
  print(f"report: {os.path.join(workdir, 'report.md')}")
  return metrics


if __name__ == "__main__":
  cli.main(run, config_example="configs/vit_shapley/digits.py",
           workdir_help="Directory for checkpoints, results, plots and the report.")
