"""The ViT Shapley method: the surrogate and explainer losses, explainer construction and the three training stages.

ViT Shapley (Covert et al., 2023) explains a ViT classifier in patch space:

  1. ``classifier``: the ViT to explain, trained with cross-entropy (or fine-tuned from ``model.init_from``).
  2. ``surrogate``: a copy of the classifier fine-tuned to match the classifier's class probabilities when patches
     are held out (uniform-cardinality masks, KL to the classifier on the full image). Held-out patches are removed
     by attention masking, so the surrogate defines the game v_x(z) = p_surrogate(y | x_z).
  3. ``explainer``: :class:`xattr.models.heads.ViTExplainer` (backbone initialised from the surrogate) trained with
     the FastSHAP loss on paired Shapley-kernel masks, the surrogate frozen inside the same model.

Each stage trains with :func:`xattr.training.train` (Orbax checkpoints in ``workdir/<stage>/``: a finished stage is
restored, not retrained) and :func:`xattr.training.optimizer` built from the stage's config section.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from flax import nnx
  >>> from xattr.models import vit
  >>> from xattr.vit_shapley import method
  >>> cfg = vit.config("nano/8", image_size=16, num_channels=1, num_classes=3)
  >>> model = vit.ViT(cfg, rngs=nnx.Rngs(0))
  >>> x = jnp.zeros((2, 16, 16, 1))
  >>> probs = jax.nn.softmax(model(x), -1)
  >>> loss = method.surrogate_loss(model, x, probs, jax.random.key(0), num_masks=2)
  >>> loss.shape
  ()
"""

from __future__ import annotations

import functools
import os
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from xattr import _checks, amortize, masks, training
from xattr.data import images as image_data
from xattr.models import convert, heads, vit
from xattr.models.predict import predict_in_batches

__all__ = ["STAGES", "WithMaskRngs", "ExplainerTraining", "EXPLAINER_TRAINABLE", "load_data", "model_config",
           "build_explainer", "surrogate_loss", "explainer_loss", "train_stage", "accuracy", "train_classifier",
           "train_surrogate", "train_explainer"]

STAGES = ("classifier", "surrogate", "explainer", "evaluate")


class WithMaskRngs(nnx.Module):
  """A model plus the random stream its training loss draws masks from (checkpointed with it).

  Example:
    >>> from xattr.models import vit
    >>> m = WithMaskRngs(vit.ViT(vit.config("nano/8", image_size=16, num_channels=1, num_classes=2),
    ...                          rngs=nnx.Rngs(0)), seed=1)
    >>> m.rngs.masks().shape
    ()
  """

  def __init__(self, model: nnx.Module, seed: int):
    self.model = model
    self.rngs = nnx.Rngs(masks=seed)


class ExplainerTraining(nnx.Module):
  """The explainer being trained next to the frozen surrogate whose game it learns.

  Only the explainer's parameters train (:data:`EXPLAINER_TRAINABLE`); the surrogate sits in the same module so
  one jitted step sees both.
  """

  def __init__(self, explainer: heads.ViTExplainer, surrogate: vit.ViT, seed: int):
    self.explainer = explainer
    self.surrogate = surrogate
    self.rngs = nnx.Rngs(masks=seed)


EXPLAINER_TRAINABLE = nnx.All(nnx.Param, nnx.PathContains("explainer"))


def load_data(config: ml_collections.ConfigDict) -> image_data.ImageDataset:
  """The dataset of ``config.data``: ``'digits'`` (embedded) or a prepared TFDS dataset read from ``data_dir``.

  Example:
    >>> cfg = ml_collections.ConfigDict(dict(seed=0, data=dict(name="digits", image_size=16)))
    >>> load_data(cfg).image_shape
    (16, 16, 1)
  """
  d = config.data
  if d.name == "digits":
    return image_data.load("digits", image_size=d.image_size, seed=config.seed)
  return image_data.from_tfds(d.name, data_dir=d.data_dir, image_size=d.image_size, train_split=d.train_split,
                              test_split=d.test_split, max_train=d.max_train, max_test=d.max_test)


def model_config(config: ml_collections.ConfigDict, image_shape: tuple[int, ...], num_classes: int) -> vit.ViTConfig:
  """The ViT of ``config.model`` for images of ``image_shape`` (H, W, C) and ``num_classes`` classes.

  The image side comes from ``config.data.image_size`` (the size every stage was trained at); ``image_shape``
  gives the channel count and must match that size.

  Example:
    >>> cfg = ml_collections.ConfigDict(dict(data=dict(image_size=32), model=dict(
    ...     name="nano/8", dtype="float32", overrides={})))
    >>> model_config(cfg, (32, 32, 1), 10).num_patches
    16
  """
  shape = tuple(int(s) for s in image_shape)
  size = config.data.image_size
  if len(shape) != 3 or shape[:2] != (size, size):
    raise ValueError(f"image_shape must be (H, W, C) with H = W = config.data.image_size = {size}, got {shape}.")
  _checks.positive_int("num_classes", num_classes)
  overrides = dict(config.model.overrides.to_dict()) if config.model.get("overrides") else {}
  return vit.config(config.model.name, image_size=size, num_channels=shape[-1], num_classes=int(num_classes),
                    dtype=jnp.dtype(config.model.dtype), **overrides)


def build_explainer(config: ml_collections.ConfigDict, surrogate: vit.ViT, num_classes: int) -> heads.ViTExplainer:
  """The explainer of ``config.explainer``: a copy of the surrogate's backbone plus extra blocks and an MLP head."""
  e = config.explainer
  return heads.ViTExplainer(nnx.clone(surrogate), num_classes, extra_blocks=e.extra_blocks,
                            hidden_sizes=tuple(e.head_hidden_sizes), rngs=nnx.Rngs(config.seed + 3))


def _repeat(x: jax.Array, n: int) -> jax.Array:
  """[B, ...] -> [B * n, ...], each row repeated n times in a row."""
  return jnp.repeat(x, n, axis=0)


def surrogate_loss(model: vit.ViT, images: jax.Array, target_probs: jax.Array, key: jax.Array,
                   num_masks: int) -> jax.Array:
  """KL(classifier(x) || surrogate(x, z)) averaged over ``num_masks`` uniform-cardinality masks per image.

  Args:
    model: the surrogate ViT (patches removed by attention masking).
    images: float[B, H, W, C].
    target_probs: float[B, classes], the classifier's probabilities on the full images.
    key: PRNG key for the masks.
    num_masks: masks per image (static).
  """
  b = images.shape[0]
  z = masks.uniform_cardinality(key, model.num_patches, b * num_masks)
  logits = model(_repeat(images, num_masks), z).reshape(b, num_masks, -1)
  return amortize.surrogate_kl_loss(logits, target_probs[:, None, :])


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


def train_stage(model: nnx.Module, loss_fn, train_data, opt: ml_collections.ConfigDict, workdir: str, desc: str, *,
                seed: int, eval_fn=None, trainable=nnx.Param) -> training.TrainResult:
  """:func:`xattr.training.train` with the stage section ``opt`` (optimizer, steps, batch, checkpoint cadence),
  data parallel over all devices (strict: a batch that does not split over them fails)."""
  return training.train(model, loss_fn, train_data, optimizer=training.optimizer(opt, num_steps=opt.num_steps),
                        num_steps=opt.num_steps, batch_size=opt.batch_size, seed=seed, workdir=workdir,
                        checkpoint_every=opt.checkpoint_every, eval_fn=eval_fn, eval_every=opt.eval_every,
                        log_every=opt.log_every, desc=desc, trainable=trainable,
                        mesh=training.data_mesh(opt.batch_size))


def accuracy(model: vit.ViT, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
  """Top-1 accuracy of ``model`` on ``x`` (optionally with the patch ``mask`` applied to every image)."""
  graphdef, state = nnx.split(model)
  if mask is None:
    logits = predict_in_batches(lambda xb: nnx.merge(graphdef, state)(xb), x)
  else:
    logits = predict_in_batches(lambda xb: nnx.merge(graphdef, state)(xb, mask[:len(xb)]), x)
  return float(np.mean(np.argmax(logits, -1) == y))


def train_classifier(config: ml_collections.ConfigDict, ds: image_data.ImageDataset, cfg: vit.ViTConfig,
                     workdir: str) -> vit.ViT:
  """Stage 1: cross-entropy training (or fine-tuning from ``model.init_from``) of the ViT to explain."""
  model = vit.ViT(cfg, rngs=nnx.Rngs(config.seed))
  if config.model.init_from:
    convert.init_from_pretrained(model, config.model.init_from)

  def loss_fn(m, batch):
    logits = m(batch["x"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}

  def eval_fn(m, step):
    return {"test_accuracy": accuracy(m, ds.x_test, ds.y_test)}

  train_stage(model, loss_fn, {"x": ds.x_train, "y": ds.y_train}, config.classifier,
              os.path.join(workdir, "classifier"), "classifier", seed=config.seed, eval_fn=eval_fn)
  return model


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
    return {"test_accuracy": accuracy(m.model, ds.x_test, ds.y_test),
            "test_accuracy_masked": accuracy(m.model, ds.x_test, ds.y_test, eval_masks)}

  train_stage(wrapper, loss_fn, {"x": ds.x_train, "probs": probs}, config.surrogate,
              os.path.join(workdir, "surrogate"), "surrogate", seed=config.seed + 1, eval_fn=eval_fn)
  return wrapper.model


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

  train_stage(wrapper, loss_fn, {"x": ds.x_train}, config.explainer, os.path.join(workdir, "explainer"),
              "explainer", seed=config.seed + 4, eval_fn=eval_fn, trainable=EXPLAINER_TRAINABLE)
  return wrapper.explainer
