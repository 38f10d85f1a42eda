"""The stages of the locality-alignment study: image-level backbone -> MaskEmbed (and a MIM baseline) -> probes.

Per seed, each stage trains with :func:`xattr.training.train` (Orbax checkpoints in ``<workdir>/<stage>/``, data
parallel over ``mesh``), its optimizer built by :func:`xattr.training.optimizer` from the stage's config section
(``num_steps`` optimizer updates of ``accumulate`` micro-batches each):

  1. :func:`train_backbone`: a masked ViT trained on mosaics with IMAGE-level multi-label supervision only (BCE on
     the set of classes present, CLS pooling), optionally from a converted pretrained ViT (``model.init_from``).
  2. :func:`train_maskembed`: MaskEmbed alignment (:class:`xattr.locality.MaskEmbed`) of a copy of the backbone;
     the backbone itself stays the frozen teacher.
  3. :func:`train_mim`: the MIM baseline (:class:`xattr.locality.MIM`, masked patch pixel regression).
  4. :func:`run_probe`: a linear or transformer probe (:class:`xattr.locality.PatchProbe`) on FROZEN tokens,
     macro precision/recall/F1 on the test patches; its result is saved with :mod:`xattr.artifacts`.

Example:
  >>> import ml_collections
  >>> cfg = ml_collections.ConfigDict(dict(num_steps=10, accumulate=2, batch_size=4, learning_rate=1e-3,
  ...     warmup_steps=2, final_lr_fraction=0.1, weight_decay=0.01, grad_clip=1.0, b1=0.9, b2=0.95,
  ...     log_every=5, checkpoint_every=5))
  >>> loop_settings(cfg)["num_steps"]            # micro-batch steps of the loop
  20
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from xattr import artifacts, locality, training
from xattr.data import mosaic
from xattr.models import convert, vit
from xattr.models.predict import predict_in_batches

__all__ = ["BACKBONES", "LABELS", "load_data", "model_config", "alignment_depth", "loop_settings", "train_stage",
           "masked_model_loss", "probe_loss", "features", "train_backbone", "train_maskembed", "train_mim",
           "run_probe"]

BACKBONES = ("backbone", "maskembed", "mim")
LABELS = {"backbone": "image-level backbone (before)", "maskembed": "MaskEmbed (after)",
          "mim": "MIM baseline (pixel regression)"}


def load_data(config: ml_collections.ConfigDict) -> mosaic.MosaicDataset:
  """Digit mosaics (``data.name='mosaic'``, offline) or a prepared TFDS segmentation dataset."""
  d = config.data
  if d.name == "mosaic":
    return mosaic.digit_mosaics(num_train=d.num_train, num_test=d.num_test, grid=d.grid, tile_size=d.tile_size,
                                patch_size=d.patch_size, jitter=d.jitter, empty_prob=d.empty_prob, noise=d.noise,
                                seed=config.data_seed)
  return mosaic.from_tfds_segmentation(d.name, data_dir=d.data_dir, num_classes=d.num_classes,
                                       image_size=d.image_size, patch_size=d.patch_size, max_train=d.num_train,
                                       max_test=d.num_test, ignore_index=d.ignore_index)


def model_config(config: ml_collections.ConfigDict, ds: mosaic.MosaicDataset) -> vit.ViTConfig:
  """The backbone ViT (CLS pooling); its patch size must be the label grid's (``data.patch_size``)."""
  overrides = dict(config.model.overrides.to_dict()) if config.model.get("overrides") else {}
  name = config.model.name
  if int(name.partition("/")[2]) != ds.patch_size:
    raise ValueError(f"model.name={name!r} has patch size {name.partition('/')[2]}, but the labels are on a "
                     f"{ds.patch_size}-pixel patch grid (data.patch_size).")
  return vit.config(name, image_size=ds.x_train.shape[1:3], num_channels=ds.x_train.shape[-1],
                    num_classes=ds.num_classes, dtype=jnp.dtype(config.model.dtype), pool="cls", **overrides)


def alignment_depth(config: ml_collections.ConfigDict, backbone: vit.ViT) -> int:
  """The block whose tokens are aligned and probed: ``maskembed.depth``, by default the penultimate one."""
  return backbone.config.depth - 1 if config.maskembed.depth is None else config.maskembed.depth


def loop_settings(opt: ml_collections.ConfigDict) -> dict[str, Any]:
  """The :func:`xattr.training.train` loop of a stage section: its counts are in micro-batches, so
  ``num_steps`` optimizer updates of ``accumulate`` micro-batches run ``num_steps * accumulate`` loop steps."""
  k = int(opt.get("accumulate", 1))
  return dict(num_steps=opt.num_steps * k, batch_size=opt.batch_size, checkpoint_every=opt.checkpoint_every * k,
              log_every=min(opt.log_every * k, opt.num_steps * k))


def train_stage(model: nnx.Module, loss_fn, data: dict[str, np.ndarray], opt: ml_collections.ConfigDict,
                workdir: str, desc: str, *, seed: int, eval_fn=None, trainable: Any = nnx.Param,
                mesh: jax.sharding.Mesh | str | None = "auto") -> training.TrainResult:
  """:func:`xattr.training.train` of one stage section ``opt``, data-parallel over ``mesh``."""
  return training.train(model, loss_fn, data, optimizer=training.optimizer(opt), seed=seed, workdir=workdir,
                        eval_fn=eval_fn, eval_every=None, desc=desc, trainable=trainable, mesh=mesh,
                        **loop_settings(opt))


def masked_model_loss(m: locality.MaskEmbed | locality.MIM,
                      batch: dict[str, jax.Array]) -> tuple[jax.Array, dict]:
  """``loss_fn(model, batch)`` for :func:`xattr.training.train` on a :class:`xattr.locality.MaskEmbed` or
  :class:`xattr.locality.MIM`; the masks come from the model's RNG stream (the same masks for any device count)."""
  return m.loss(batch["x"], m.rngs.masks())


def probe_loss(m: locality.PatchProbe, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict]:
  """Per-patch, per-class BCE (module level: every probe of one kind shares one compiled step)."""
  return optax.sigmoid_binary_cross_entropy(m(batch["t"]), batch["y"]).mean(), {}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _encode_batch(graphdef: nnx.GraphDef, depth: int, state: nnx.State, x: jax.Array) -> jax.Array:
  return nnx.merge(graphdef, state).encode(x, depth=depth)


@functools.partial(jax.jit, static_argnums=0)
def _probe_batch(graphdef: nnx.GraphDef, state: nnx.State, tokens: jax.Array) -> jax.Array:
  return jax.nn.sigmoid(nnx.merge(graphdef, state)(tokens))


def features(model: nnx.Module, depth: int, x: np.ndarray) -> np.ndarray:
  """Frozen tokens ``[N, T, D]`` at ``depth`` of a ViT, or of the student of a MaskEmbed/MIM model (same
  architecture, so every representation shares one compiled encoder)."""
  vit_model = model if isinstance(model, vit.ViT) else model.student
  graphdef, state = nnx.split(vit_model)
  return predict_in_batches(lambda xb: _encode_batch(graphdef, depth, state, xb), x)


def train_backbone(config: ml_collections.ConfigDict, ds: mosaic.MosaicDataset, cfg: vit.ViTConfig, workdir: str,
                   seed: int, mesh) -> vit.ViT:
  """Stage 1: image-level multi-label supervision (BCE on the classes present), CLS pooling."""
  model = vit.ViT(cfg, rngs=nnx.Rngs(seed))
  if config.model.init_from:
    convert.init_from_pretrained(model, config.model.init_from)

  def loss_fn(m, batch):
    logits = m(batch["x"])
    loss = optax.sigmoid_binary_cross_entropy(logits, batch["y"]).mean()
    return loss, {"accuracy": jnp.mean((logits > 0) == (batch["y"] > 0.5))}

  def eval_fn(m, step):
    graphdef, state = nnx.split(m)
    logits = predict_in_batches(lambda x: nnx.merge(graphdef, state)(x), ds.x_test)
    return {"test_image_f1": locality.macro_scores((logits > 0)[:, None], ds.y_test[:, None])["macro_f1"]}

  train_stage(model, loss_fn, {"x": ds.x_train, "y": ds.y_train.astype(np.float32)}, config.backbone,
              os.path.join(workdir, "backbone"), "backbone", seed=seed, eval_fn=eval_fn, mesh=mesh)
  return model


def train_maskembed(config: ml_collections.ConfigDict, ds: mosaic.MosaicDataset, backbone: vit.ViT, workdir: str,
                    seed: int, mesh) -> locality.MaskEmbed:
  """Stage 2: MaskEmbed alignment of a copy of the backbone (the backbone itself stays the frozen teacher)."""
  a = config.maskembed
  depth = alignment_depth(config, backbone)
  scale = locality.target_scale(backbone, ds.x_train[:a.scale_examples], depth=depth)
  model = locality.MaskEmbed(backbone, depth=depth, decoder_depth=a.decoder_depth, scheme=a.scheme,
                             antithetic=a.antithetic, include_full=a.include_full, scale=scale, seed=seed + 100,
                             rngs=nnx.Rngs(seed + 101))
  val_x, val_key = ds.x_test[:a.num_validation], jax.random.key(seed + 102)
  val_loss = nnx.jit(lambda m, x, k: m.loss(x, k)[1])

  def eval_fn(m, step):
    return {f"val_{k}": float(v) for k, v in val_loss(m, val_x, val_key).items()}

  train_stage(model, masked_model_loss, {"x": ds.x_train}, a, os.path.join(workdir, "maskembed"), "maskembed",
              seed=seed + 100, eval_fn=eval_fn if a.num_validation else None, trainable=locality.TRAINABLE,
              mesh=mesh)
  return model


def train_mim(config: ml_collections.ConfigDict, ds: mosaic.MosaicDataset, backbone: vit.ViT, workdir: str,
              seed: int, mesh) -> locality.MIM:
  """Stage 3: the MIM baseline (masked patch pixel regression) from the same backbone, same budget."""
  a = config.mim
  depth = backbone.config.depth - 1 if a.depth is None else a.depth
  model = locality.MIM(backbone, depth=depth, decoder_depth=a.decoder_depth, seed=seed + 200,
                       rngs=nnx.Rngs(seed + 201))
  train_stage(model, masked_model_loss, {"x": ds.x_train}, a, os.path.join(workdir, "mim"), "mim",
              seed=seed + 200, trainable=locality.TRAINABLE, mesh=mesh)
  return model


def _probe_fingerprint(config: ml_collections.ConfigDict, name: str, kind: str, seed: int) -> str:
  # What a probe's result depends on: data, model and the training of its representation, the probe settings.
  trained = [config.backbone, config.shared_backbone, config.backbone_seed if config.shared_backbone else seed]
  if name != "backbone":
    trained.append(config[name])
  return artifacts.fingerprint("probe", name, kind, seed, config.data, config.data_seed, config.model,
                               config.maskembed.depth, trained, config.probes)


def run_probe(config: ml_collections.ConfigDict, ds: mosaic.MosaicDataset, feats: tuple[np.ndarray, np.ndarray],
              kind: str, num_prefix: int, workdir: str, seed: int, *, name: str
              ) -> tuple[dict[str, float], np.ndarray]:
  """Stage 4 (one probe): BCE on frozen tokens, macro scores on the test set; returns (metrics, test probs).

  ``name`` is the representation probed (one of :data:`BACKBONES`); with the config it fingerprints the result.

  The result is saved in ``workdir`` (``test_probs.npz`` under a fingerprint of its settings, and
  ``metrics.json``), so a rerun loads it instead of training the probe again.
  """
  p = config.probes
  metrics_keys = ("macro_precision", "macro_recall", "macro_f1")

  def compute() -> dict[str, np.ndarray]:
    train_x, test_x = feats
    width = train_x.shape[-1]
    probe = locality.PatchProbe(width, ds.num_classes, num_prefix=num_prefix, kind=kind, num_heads=p.num_heads,
                                mlp_dim=4 * width, rngs=nnx.Rngs(seed + 300))
    opt = p.linear if kind == "linear" else p.transformer
    train_stage(probe, probe_loss, {"t": train_x, "y": ds.patch_train.astype(np.float32)}, opt, workdir,
                f"probe {kind}", seed=seed + 300)
    graphdef, state = nnx.split(probe)
    probs = predict_in_batches(lambda t: _probe_batch(graphdef, state, t), test_x)
    metrics = locality.macro_scores(probs, ds.patch_test)
    artifacts.save_json(os.path.join(workdir, "metrics.json"), metrics)
    return {"probs": probs.astype(np.float16), **{k: np.float64(metrics[k]) for k in metrics_keys}}

  saved = artifacts.compute_or_load(os.path.join(workdir, "test_probs.npz"),
                                    _probe_fingerprint(config, name, kind, seed), compute)
  return {k: float(saved[k]) for k in metrics_keys}, saved["probs"]
