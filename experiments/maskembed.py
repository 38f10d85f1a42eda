"""Locality alignment end to end: image-level backbone -> MaskEmbed (and a MIM baseline) -> patch probes -> table.

  python -m experiments.maskembed --config=configs/maskembed/mosaic.py --workdir=runs/maskembed

Stages, per seed (``workdir/seed_<s>/<stage>/`` holds each one's Orbax checkpoints or outputs; finished work is
restored, not redone, so a killed run resumes):
  1. ``backbone``: a masked ViT trained on digit mosaics with IMAGE-level multi-label supervision only (BCE on the
     set of digits present, CLS pooling), the CLIP-like starting point whose patch tokens are never asked to be
     local. Or a converted pretrained ViT (``model.init_from``) fine-tuned the same way. With
     ``shared_backbone`` (the default) it is trained once in ``workdir/backbone`` (like a given CLIP) and the
     seeds vary stages 2-4 only.
  2. ``maskembed``: MaskEmbed alignment of a copy of the backbone (:mod:`xattr.locality`): frozen teacher on
     pixel-masked images, student run once per image, decoder on masked student tokens; AdamW (0.9, 0.95), weight
     decay 0.01, clipping at 1.0, warmup + cosine to lr/10, gradient accumulation (``optax.MultiSteps``), data
     parallel over all devices (``training.train(mesh=...)``: batch split, parameters replicated).
  3. ``mim``: the baseline: a copy of the backbone post-trained with masked patch pixel regression
     (config.mim; one mask per image, no teacher, so a step is cheaper than a MaskEmbed step).
  4. ``probes``: for each representation (backbone before alignment, after MaskEmbed, after MIM; all read at the
     penultimate block + final norm) and each probe (linear, 2-block transformer) on FROZEN tokens: BCE on the
     per-patch multi-hot classes, macro precision/recall/F1 on the test mosaics (saved as JSON per probe).
  5. ``report``: ``report.md`` (mean +- std over seeds, and the per-seed F1 gain of MaskEmbed over the backbone),
     ``metrics.json`` and ``patches.png`` (test mosaics with the true and predicted digits of every patch).
"""

from __future__ import annotations

import functools
import json
import os
import time
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
from xattr import locality, parallel, training
from xattr.data import mosaic
from xattr.models import vit

BACKBONES = ("backbone", "maskembed", "mim")
LABELS = {"backbone": "image-level backbone (before)", "maskembed": "MaskEmbed (after)",
          "mim": "MIM baseline (pixel regression)"}


# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------

def make_optimizer(opt: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Clipping + AdamW(b1, b2, weight decay), warmup + cosine to ``lr * final_lr_fraction``; ``accumulate`` > 1
  averages that many micro-batch gradients per update (``optax.MultiSteps``; the schedule counts updates)."""
  return _optimizer(int(opt.num_steps), int(opt.warmup_steps), float(opt.learning_rate),
                    float(opt.final_lr_fraction), float(opt.grad_clip), float(opt.b1), float(opt.b2),
                    float(opt.weight_decay), int(opt.get("accumulate", 1)))


@functools.lru_cache(maxsize=32)
def _optimizer(updates: int, warmup: int, lr: float, final_fraction: float, clip: float, b1: float, b2: float,
               weight_decay: float, accumulate: int) -> optax.GradientTransformation:
  # Cached: the same settings give the same object, so training.train reuses its compiled step (probes).
  warmup = min(warmup, max(updates - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(updates, warmup + 1),
                                                end_value=lr * final_fraction)
  tx = optax.chain(optax.clip_by_global_norm(clip), optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay))
  return optax.MultiSteps(tx, every_k_schedule=accumulate) if accumulate > 1 else tx


def _train(model: nnx.Module, loss_fn, data: dict[str, np.ndarray], opt: ml_collections.ConfigDict, workdir: str,
           desc: str, *, seed: int, eval_fn=None, trainable: Any = nnx.Param,
           mesh: jax.sharding.Mesh | str | None = "auto") -> training.TrainResult:
  """``training.train`` with ``opt.num_steps`` optimizer updates of ``opt.accumulate`` micro-batches each, data-
  parallel over ``mesh``."""
  k = int(opt.get("accumulate", 1))
  return training.train(model, loss_fn, data, optimizer=make_optimizer(opt), num_steps=opt.num_steps * k,
                        batch_size=opt.batch_size, seed=seed, workdir=workdir,
                        checkpoint_every=opt.checkpoint_every * k, eval_fn=eval_fn, eval_every=None,
                        log_every=min(opt.log_every * k, opt.num_steps * k), desc=desc, trainable=trainable,
                        mesh=mesh)


def masked_model_loss(m: locality.MaskEmbed | locality.MIM,
                      batch: dict[str, jax.Array]) -> tuple[jax.Array, dict]:
  """``loss_fn(model, batch)`` for :func:`training.train` on a :class:`locality.MaskEmbed` or :class:`locality.MIM`;
  the masks come from the model's RNG stream (the same masks for any device count)."""
  return m.loss(batch["x"], m.rngs.masks())


def load_data(config: ml_collections.ConfigDict) -> mosaic.MosaicDataset:
  d = config.data
  if d.name == "mosaic":
    return mosaic.digit_mosaics(num_train=d.num_train, num_test=d.num_test, grid=d.grid, tile_size=d.tile_size,
                                patch_size=d.patch_size, jitter=d.jitter, empty_prob=d.empty_prob, noise=d.noise,
                                seed=config.data_seed)
  return mosaic.from_tfds_segmentation(d.name, data_dir=d.data_dir, num_classes=d.num_classes,
                                       image_size=d.image_size, patch_size=d.patch_size, max_train=d.num_train,
                                       max_test=d.num_test, ignore_index=d.ignore_index)


def model_config(config: ml_collections.ConfigDict, ds: mosaic.MosaicDataset) -> vit.ViTConfig:
  overrides = dict(config.model.overrides.to_dict()) if config.model.get("overrides") else {}
  name = config.model.name
  if int(name.partition("/")[2]) != ds.patch_size:
    raise ValueError(f"model.name={name!r} has patch size {name.partition('/')[2]}, but the labels are on a "
                     f"{ds.patch_size}-pixel patch grid (data.patch_size).")
  return vit.config(name, image_size=ds.x_train.shape[1:3], num_channels=ds.x_train.shape[-1],
                    num_classes=ds.num_classes, dtype=jnp.dtype(config.model.dtype), pool="cls", **overrides)


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


# ---------------------------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------------------------

def train_backbone(config, ds, cfg: vit.ViTConfig, workdir: str, seed: int, mesh) -> vit.ViT:
  """Stage 1: image-level multi-label supervision (BCE on the classes present), CLS pooling."""
  model = vit.ViT(cfg, rngs=nnx.Rngs(seed))
  if config.model.init_from:
    from experiments.vit_shapley import init_from_pretrained
    init_from_pretrained(model, config.model.init_from)

  def loss_fn(m, batch):
    logits = m(batch["x"])
    loss = optax.sigmoid_binary_cross_entropy(logits, batch["y"]).mean()
    return loss, {"accuracy": jnp.mean((logits > 0) == (batch["y"] > 0.5))}

  def eval_fn(m, step):
    graphdef, state = nnx.split(m)
    logits = predict_in_batches(lambda x: nnx.merge(graphdef, state)(x), ds.x_test)
    return {"test_image_f1": locality.macro_scores((logits > 0)[:, None], ds.y_test[:, None])["macro_f1"]}

  _train(model, loss_fn, {"x": ds.x_train, "y": ds.y_train.astype(np.float32)}, config.backbone,
         os.path.join(workdir, "backbone"), "backbone", seed=seed, eval_fn=eval_fn, mesh=mesh)
  return model


def train_maskembed(config, ds, backbone: vit.ViT, workdir: str, seed: int, mesh) -> locality.MaskEmbed:
  """Stage 2: MaskEmbed alignment of a copy of the backbone (the backbone itself stays the frozen teacher)."""
  a = config.maskembed
  depth = backbone.config.depth - 1 if a.depth is None else a.depth
  scale = locality.target_scale(backbone, ds.x_train[:a.scale_examples], depth=depth)
  model = locality.MaskEmbed(backbone, depth=depth, decoder_depth=a.decoder_depth, scheme=a.scheme,
                             antithetic=a.antithetic, include_full=a.include_full, scale=scale, seed=seed + 100,
                             rngs=nnx.Rngs(seed + 101))
  val_x, val_key = ds.x_test[:a.num_validation], jax.random.key(seed + 102)
  val_loss = nnx.jit(lambda m, x, k: m.loss(x, k)[1])

  def eval_fn(m, step):
    return {f"val_{k}": float(v) for k, v in val_loss(m, val_x, val_key).items()}

  _train(model, masked_model_loss, {"x": ds.x_train}, a, os.path.join(workdir, "maskembed"), "maskembed",
         seed=seed + 100, eval_fn=eval_fn if a.num_validation else None, trainable=locality.TRAINABLE, mesh=mesh)
  return model


def train_mim(config, ds, backbone: vit.ViT, workdir: str, seed: int, mesh) -> locality.MIM:
  """Stage 3: the MIM baseline (masked patch pixel regression) from the same backbone, same budget."""
  a = config.mim
  depth = backbone.config.depth - 1 if a.depth is None else a.depth
  model = locality.MIM(backbone, depth=depth, decoder_depth=a.decoder_depth, seed=seed + 200,
                       rngs=nnx.Rngs(seed + 201))
  _train(model, masked_model_loss, {"x": ds.x_train}, a, os.path.join(workdir, "mim"), "mim",
         seed=seed + 200, trainable=locality.TRAINABLE, mesh=mesh)
  return model


def probe_loss(m: locality.PatchProbe, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict]:
  """Per-patch, per-class BCE (module level: every probe of one kind shares one compiled step)."""
  return optax.sigmoid_binary_cross_entropy(m(batch["t"]), batch["y"]).mean(), {}


def run_probe(config, ds, features: tuple[np.ndarray, np.ndarray], kind: str, num_prefix: int, workdir: str,
              seed: int) -> tuple[dict[str, float], np.ndarray]:
  """Stage 4 (one probe): BCE on frozen tokens, macro scores on the test set; returns (metrics, test probs)."""
  out_json, out_npz = os.path.join(workdir, "metrics.json"), os.path.join(workdir, "test_probs.npz")
  if os.path.exists(out_json) and os.path.exists(out_npz):
    with open(out_json) as f, np.load(out_npz) as z:
      return json.load(f), z["probs"]
  p = config.probes
  train_x, test_x = features
  width = train_x.shape[-1]
  probe = locality.PatchProbe(width, ds.num_classes, num_prefix=num_prefix, kind=kind,
                              num_heads=config.probes.num_heads, mlp_dim=4 * width, rngs=nnx.Rngs(seed + 300))

  opt = p.linear if kind == "linear" else p.transformer
  _train(probe, probe_loss, {"t": train_x, "y": ds.patch_train.astype(np.float32)}, opt, workdir, f"probe {kind}",
         seed=seed + 300)
  graphdef, state = nnx.split(probe)
  probs = predict_in_batches(lambda t: _probe_batch(graphdef, state, t), test_x)
  metrics = locality.macro_scores(probs, ds.patch_test)
  np.savez_compressed(out_npz, probs=probs.astype(np.float16))
  with open(out_json, "w") as f:
    json.dump(metrics, f, indent=2)
  return metrics, probs


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------

def _mean_std(values: list[float]) -> str:
  v = np.asarray(values)
  return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def write_report(config, ds, results: dict, workdir: str, timings: dict[str, float]) -> str:
  """``report.md``: mean +- std over seeds of macro F1/recall per representation and probe, and F1 gains."""
  seeds = sorted(results)
  lines = ["# Locality alignment (MaskEmbed) on digit mosaics", "",
           f"Data: {len(ds.x_train)} train / {len(ds.x_test)} test mosaics of {config.data.grid}x{config.data.grid} "
           f"digits, {ds.x_train.shape[1]}x{ds.x_train.shape[2]} pixels, {ds.grid[0]}x{ds.grid[1]} patches of "
           f"{ds.patch_size} px; per-patch multi-hot labels ({mosaic.describe(ds)}). Backbone: ViT "
           f"{config.model.name} (overrides {dict(config.model.overrides.to_dict())}), trained with image-level "
           f"labels only; tokens read at the penultimate block + final norm, probes on frozen tokens. "
           f"{'One shared backbone (seed ' + str(config.backbone_seed) + '); ' if config.shared_backbone else ''}"
           f"Seeds (alignment, MIM, probes): {seeds}. Macro scores over the 10 classes on the test patches "
           f"(threshold 0.5).", "",
           "| representation | probe | macro F1 | macro recall | macro precision |", "|---|---|---|---|---|"]
  for name in BACKBONES:
    for kind in config.probes.kinds:
      cell = [results[s][name][kind] for s in seeds]
      lines.append(f"| {LABELS[name]} | {kind} | {_mean_std([c['macro_f1'] for c in cell])} | "
                   f"{_mean_std([c['macro_recall'] for c in cell])} | "
                   f"{_mean_std([c['macro_precision'] for c in cell])} |")
  lines += ["", "Macro-F1 gain over the image-level backbone, per seed:", "",
            "| probe | MaskEmbed - backbone | MIM - backbone | MaskEmbed wins (seeds) |", "|---|---|---|---|"]
  for kind in config.probes.kinds:
    gain = [results[s]["maskembed"][kind]["macro_f1"] - results[s]["backbone"][kind]["macro_f1"] for s in seeds]
    mim = [results[s]["mim"][kind]["macro_f1"] - results[s]["backbone"][kind]["macro_f1"] for s in seeds]
    lines.append(f"| {kind} | {_mean_std(gain)} ({', '.join(f'{g:+.3f}' for g in gain)}) | {_mean_std(mim)} | "
                 f"{sum(g > 0 for g in gain)}/{len(seeds)} |")
  lines += ["", "Timings (s): " + ", ".join(f"{k}={v:.0f}" for k, v in timings.items()), "",
            "![patch predictions](patches.png)", ""]
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  return path


def plot_patches(ds, probs: dict[str, np.ndarray], path: str, num_images: int, threshold: float = 0.5) -> str:
  """Test mosaics with, in every patch, the true digit set and each representation's predicted set."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  gh, gw = ds.grid
  p = ds.patch_size
  columns = {"ground truth": ds.patch_test[:num_images], **{k: v[:num_images] > threshold for k, v in probs.items()}}
  fig, axes = plt.subplots(num_images, len(columns), figsize=(2.6 * len(columns), 2.6 * num_images), squeeze=False)
  for i in range(num_images):
    for j, (title, sets) in enumerate(columns.items()):
      ax = axes[i, j]
      ax.imshow(ds.x_test[i, ..., 0] if ds.x_test.shape[-1] == 1 else ds.x_test[i], cmap="gray", vmin=0, vmax=1)
      for k in range(gh * gw):
        r, c = divmod(k, gw)
        truth = set(np.flatnonzero(ds.patch_test[i, k]).tolist())
        pred = set(np.flatnonzero(sets[i, k]).tolist())
        text = "".join(ds.class_names[x] for x in sorted(pred)) or "·"
        color = "lime" if pred == truth else "red"
        ax.text(c * p + p / 2, r * p + p / 2, text, color=color, ha="center", va="center", fontsize=7,
                fontweight="bold")
      ax.set_xticks(np.arange(0, gw * p + 1, p) - 0.5, labels=[])
      ax.set_yticks(np.arange(0, gh * p + 1, p) - 0.5, labels=[])
      ax.grid(color="yellow", linewidth=0.4, alpha=0.5)
      ax.tick_params(length=0)
      if i == 0:
        ax.set_title(title, fontsize=8)
  fig.suptitle("Per-patch digit sets (green: exact, red: wrong); transformer probe on frozen tokens", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


# ---------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------

def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every stage for every seed (finished work is restored) and returns the metrics."""
  start = time.perf_counter()
  timings: dict[str, float] = {}

  def lap(name: str) -> None:
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start - sum(timings.values())

  ds = load_data(config)
  cfg = model_config(config, ds)
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh()
  logging.info("mosaics: train %s, test %s, labels %s; model %s; %d device(s)", ds.x_train.shape, ds.x_test.shape,
               mosaic.describe(ds), cfg, mesh.size)
  lap("data_s")
  results: dict[int, dict[str, dict[str, dict[str, float]]]] = {}
  probs_for_plot: dict[str, np.ndarray] = {}
  shared = None
  if config.shared_backbone:               # one image-level backbone (like a given CLIP); seeds vary the rest
    shared = train_backbone(config, ds, cfg, workdir, config.backbone_seed, mesh)
    lap("backbone_s")
  for seed in config.seeds:
    wd = os.path.join(workdir, f"seed_{seed}")
    backbone = shared if shared is not None else train_backbone(config, ds, cfg, wd, seed, mesh)
    lap("backbone_s")
    models: dict[str, nnx.Module] = {"backbone": backbone}
    models["maskembed"] = train_maskembed(config, ds, backbone, wd, seed, mesh)
    lap("maskembed_s")
    models["mim"] = train_mim(config, ds, backbone, wd, seed, mesh)
    lap("mim_s")
    depth = backbone.config.depth - 1 if config.maskembed.depth is None else config.maskembed.depth
    results[seed] = {}
    for name, model in models.items():
      feats = (features(model, depth, ds.x_train), features(model, depth, ds.x_test))
      results[seed][name] = {}
      for kind in config.probes.kinds:
        metrics, probs = run_probe(config, ds, feats, kind, cfg.num_prefix_tokens,
                                   os.path.join(wd, "probes", name, kind), seed)
        results[seed][name][kind] = metrics
        if seed == config.seeds[0] and kind == config.probes.kinds[-1]:
          probs_for_plot[LABELS[name]] = probs
      logging.info("seed %d %s: %s", seed, name, results[seed][name])
    lap("probes_s")
  report = write_report(config, ds, results, workdir, timings)
  plot_patches(ds, probs_for_plot, os.path.join(workdir, "patches.png"), config.report.num_images)
  lap("report_s")
  gains = {kind: [results[s]["maskembed"][kind]["macro_f1"] - results[s]["backbone"][kind]["macro_f1"]
                  for s in config.seeds] for kind in config.probes.kinds}
  out = {"results": {str(s): r for s, r in results.items()}, "f1_gain_maskembed": gains, "timings": timings,
         "labels": mosaic.describe(ds), "paths": {"report.md": report,
                                                   "patches.png": os.path.join(workdir, "patches.png")}}
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump(out, f, indent=2, default=float)
  return out


def _run_and_report(config: ml_collections.ConfigDict, workdir: str) -> None:
  out = run(config, workdir)
  print(open(out["paths"]["report.md"]).read())
  print(f"report: {out['paths']['report.md']}")


if __name__ == "__main__":
  cli.main(_run_and_report, config_example="configs/maskembed/mosaic.py",
           workdir_help="Directory for checkpoints, probe results, the report and the patch-prediction plot.")
