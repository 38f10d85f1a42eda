"""One accelerator benchmark suite: the throughput figures that matter on a GPU/TPU, printed as one table.

  tools/bench/device.sh                  # on an accelerator (one command, a few minutes)
  tools/bench/device.sh --small          # tiny shapes on CPU: checks the script runs (the test suite does this)

Rows (each the median of ``--repeats`` timed calls after a compiled warm-up, ``block_until_ready``):
  * ``gemm``: a large matmul in the suite's dtype, the machine's measured roofline for the rest (and, with a known
    device, the fraction of its datasheet peak).
  * ``masked_vit``: ViT-B/16 at 224 (``--small``: a tiny ViT), 32 paired Shapley-kernel masks per image, held-out
    patches removed by attention masking: images/s, image-masks/s, TFLOP/s (matmul FLOPs counted analytically by
    :func:`xattr.models.vit.flops_per_example`) and the fraction of the peak.
  * ``explainer_step``: ViT Shapley explainer training steps of :func:`xattr.training.train` with
    :func:`xattr.vit_shapley.explainer_loss` (surrogate game evaluated per step): (images x masks)/s.
  * ``kernel_shap_mlp`` / ``kernel_shap_vit``: model rows evaluated per second by KernelSHAP vmapped over inputs
    (a 30-feature MLP on the marginal game over 64 background rows; the ViT on its attention-masking game).
  * ``valuation``: marginal contributions/s of a vmapped logistic-regression utility on breast cancer.
  * ``maskembed_step``: MaskEmbed training steps/s of :func:`xattr.training.train` (3 masks per image).
  * ``scaling``: masked ViT on 1 device vs all devices (only where there are several).
Every row ends with ``fraction_of_gemm`` (achieved FLOP/s / the gemm row), so a figure says how far it is from
what this machine's matmul units reach.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tools.bench import timing

# Dense bf16 datasheet peaks (TFLOP/s) by device_kind substring; unknown devices report the measured gemm only.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "TPU v5 lite": 197.0,
                    "TPU v5": 459.0, "TPU v4": 275.0}


@dataclasses.dataclass(frozen=True)
class Shapes:
  """The suite's problem sizes (full on an accelerator, tiny with ``--small``)."""

  vit: str
  image_size: int
  images: int
  masks: int
  explainer_images: int
  kernel_inputs: int
  kernel_samples: int
  valuation_pairs: int
  gemm: int
  dtype: Any
  depth: int = 0          # 0: the size's own depth; the CPU check uses 1 block (compile time)


FULL = Shapes("B/16", 224, 64, 32, 16, 256, 512, 8192, 8192, jnp.bfloat16)
SMALL = Shapes("mu/8", 32, 2, 8, 2, 4, 64, 64, 1024, jnp.float32, depth=1)


@dataclasses.dataclass
class Row:
  name: str
  rate: float
  unit: str
  flops_per_s: float | None = None
  note: str = ""


def peak_tflops() -> float | None:
  """The datasheet dense bf16 peak of device 0, if known."""
  kind = jax.devices()[0].device_kind
  return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in kind), None)


def bench_gemm(s: Shapes, repeats: int) -> Row:
  flops = timing.gemm_flops_per_s(s.gemm, s.dtype, repeats)
  return Row("gemm", flops / 1e12, "TFLOP/s", flops, f"{s.gemm}x{s.gemm} {jnp.dtype(s.dtype).name}")


def _vit(s: Shapes, seed: int = 0):
  from xattr.models import vit
  overrides = {"depth": s.depth} if s.depth else {}
  cfg = vit.config(s.vit, image_size=s.image_size, num_classes=10, num_channels=3, dtype=s.dtype, **overrides)
  return vit, cfg, vit.ViT(cfg, rngs=nnx.Rngs(seed))


def _vit_inputs(s: Shapes, cfg, images: int):
  from xattr import masks as xmasks
  key = jax.random.key(1)
  x = jax.random.normal(key, (images, *cfg.image_hw, cfg.num_channels))
  keys = jax.random.split(jax.random.fold_in(key, 1), images)
  z = jax.vmap(lambda k: xmasks.shapley_kernel(k, cfg.num_patches, s.masks))(keys)
  return x, z


def bench_masked_vit(s: Shapes, repeats: int, devices: list | None = None) -> Row:
  from xattr import parallel
  vit, cfg, model = _vit(s)
  state, apply = vit.functional(model)
  images, z = _vit_inputs(s, cfg, s.images)
  mesh = parallel.make_mesh(devices=devices or jax.devices())
  rows = parallel.data_sharding(mesh)
  images, z = jax.device_put(images, rows), jax.device_put(z, rows)
  state = jax.device_put(state, parallel.replicated(mesh))

  @jax.jit
  def forward(state, images, z):
    n, m, p = z.shape
    return apply(state, jnp.repeat(images, m, axis=0), z.reshape(n * m, p))

  seconds = timing.median_time(lambda: forward(state, images, z), repeats)
  evaluations = s.images * s.masks
  flops = vit.flops_per_example(cfg) * evaluations / seconds
  return Row("masked_vit", s.images / seconds, "images/s", flops,
             f"ViT-{s.vit} at {s.image_size}, {s.masks} masks/image = {evaluations / seconds:,.0f} image-masks/s, "
             f"{len(mesh.devices.flat)} device(s)")


def _train_rate(model: nnx.Module, loss_fn: Callable, data: dict, batch: int, repeats: int,
                trainable: Any = nnx.Param) -> float:
  """Steps/s of :func:`xattr.training.train` (compiled once: the same model, loss and optimizer objects)."""
  from xattr import training
  tx = optax.adamw(1e-4)
  run = lambda steps: training.train(model, loss_fn, data, optimizer=tx, num_steps=steps, batch_size=batch,
                                     progress=False, trainable=trainable, log_every=10 ** 9)
  run(1)                                                       # compile
  steps = max(repeats, 2)
  t0 = time.perf_counter()
  run(steps)
  return steps / (time.perf_counter() - t0)


def bench_explainer_step(s: Shapes, repeats: int) -> Row:
  from xattr.models import heads
  from xattr.vit_shapley import explainer_loss
  vit, cfg, surrogate = _vit(s)
  explainer = heads.ViTExplainer(nnx.clone(surrogate), 10, extra_blocks=1, hidden_sizes=(), rngs=nnx.Rngs(3))

  class Stage(nnx.Module):                     # the explainer trained, the surrogate frozen beside it
    def __init__(self):
      self.explainer, self.surrogate = explainer, surrogate

  def loss_fn(m, b):
    key = jax.random.fold_in(jax.random.key(0), jnp.sum(b["i"]))
    return explainer_loss(m.explainer, m.surrogate, b["x"], key, s.masks), {}

  n = 4 * s.explainer_images
  data = {"x": np.asarray(jax.random.normal(jax.random.key(2), (n, *cfg.image_hw, cfg.num_channels))),
          "i": np.arange(n)}
  steps = _train_rate(Stage(), loss_fn, data, s.explainer_images, repeats,
                      trainable=nnx.All(nnx.Param, nnx.PathContains("explainer")))
  evaluations = steps * s.explainer_images * (s.masks + 2)
  return Row("explainer_step", steps * s.explainer_images * s.masks, "image-masks/s",
             3 * vit.flops_per_example(cfg) * evaluations, f"{steps:.2f} steps/s of {s.explainer_images} images")


def bench_kernel_shap_mlp(s: Shapes, repeats: int) -> Row:
  from xattr import games, shapley
  d, hidden, bg = 30, 64, 64
  k = jax.random.split(jax.random.key(4), 4)
  w1, w2 = jax.random.normal(k[0], (d, hidden)) / np.sqrt(d), jax.random.normal(k[1], (hidden, 2)) / 8
  f = lambda x: jax.nn.softmax(jnp.tanh(x @ w1) @ w2, -1)
  inputs, background = jax.random.normal(k[2], (s.kernel_inputs, d)), jax.random.normal(k[3], (bg, d))
  run = jax.jit(jax.vmap(lambda x: shapley.kernel_shap(games.marginal(f, x, background), d, jax.random.key(0),
                                                       num_samples=s.kernel_samples, batch_size=128)))
  evals = int(np.sum(run(inputs).num_evals))
  seconds = timing.median_time(lambda: run(inputs), repeats)
  rows = evals * bg / seconds
  return Row("kernel_shap_mlp", rows, "model rows/s", rows * 2 * (d * hidden + hidden * 2),
             f"{s.kernel_inputs / seconds:,.1f} inputs/s, {s.kernel_samples} coalitions x {bg} background rows")


def bench_kernel_shap_vit(s: Shapes, repeats: int) -> Row:
  from xattr import shapley
  vit, cfg, model = _vit(s)
  state, apply = vit.functional(model)
  images, _ = _vit_inputs(s, cfg, max(1, s.images // 8))
  p = cfg.num_patches

  def explain(image):
    game = lambda z: jax.nn.softmax(apply(state, jnp.broadcast_to(image, (z.shape[0], *image.shape)), z), -1)
    return shapley.kernel_shap(game, p, jax.random.key(0), num_samples=s.kernel_samples, batch_size=128)

  run = jax.jit(jax.vmap(explain))
  evals = int(np.sum(run(images).num_evals))
  seconds = timing.median_time(lambda: run(images), repeats)
  return Row("kernel_shap_vit", evals / seconds, "model rows/s", vit.flops_per_example(cfg) * evals / seconds,
             f"ViT-{s.vit}, {s.kernel_samples} coalitions per image")


def bench_valuation(s: Shapes, repeats: int) -> Row:
  from xattr.data import embedded
  from xattr.valuation import samplers, utility
  ds = embedded.load("breast_cancer")
  u = utility.LogisticRegression.create(ds.x_train, ds.y_train, ds.x_test, ds.y_test, num_classes=2)
  key = jax.random.key(0)
  sizes = np.asarray(samplers.sample_sizes(key, s.valuation_pairs, 100, 300))
  points = np.arange(s.valuation_pairs) % len(ds.y_train)
  run = lambda: samplers.distributional(u, key, points, sizes, chunk_size=1024, progress=False)
  seconds = timing.median_time(run, repeats)
  return Row("valuation", s.valuation_pairs / seconds, "contributions/s", None,
             f"breast cancer logistic regression, |D| ~ U[100, 300), {s.valuation_pairs} pairs")


def bench_maskembed_step(s: Shapes, repeats: int) -> Row:
  from xattr import locality
  vit, cfg, teacher = _vit(s)
  model = locality.MaskEmbed(teacher, rngs=nnx.Rngs(1))
  n = 4 * s.explainer_images

  def loss_fn(m, b):
    return m.loss(b["x"], jax.random.fold_in(jax.random.key(0), jnp.sum(b["i"])))

  data = {"x": np.asarray(jax.random.normal(jax.random.key(2), (n, *cfg.image_hw, cfg.num_channels))),
          "i": np.arange(n)}
  steps = _train_rate(model, loss_fn, data, s.explainer_images, repeats, trainable=locality.TRAINABLE)
  return Row("maskembed_step", steps, "steps/s", None, f"{s.explainer_images} images x {model.num_masks} masks")


PARTS: dict[str, Callable[[Shapes, int], Row]] = {
    "gemm": bench_gemm, "masked_vit": bench_masked_vit, "explainer_step": bench_explainer_step,
    "kernel_shap_mlp": bench_kernel_shap_mlp, "kernel_shap_vit": bench_kernel_shap_vit,
    "valuation": bench_valuation, "maskembed_step": bench_maskembed_step,
}


def table(rows: list[Row], peak: float | None) -> str:
  """The printed table: one line per row, its rate and how far it is from the gemm roofline and the peak."""
  gemm = next((r.flops_per_s for r in rows if r.name == "gemm"), None)
  lines = [f"{'part':<16} {'rate':>16} {'unit':<16} {'TFLOP/s':>9} {'of_gemm':>8} {'of_peak':>8}  notes"]
  for r in rows:
    tf = f"{r.flops_per_s / 1e12:9.3f}" if r.flops_per_s else f"{'-':>9}"
    of_gemm = f"{r.flops_per_s / gemm:8.1%}" if r.flops_per_s and gemm else f"{'-':>8}"
    of_peak = f"{r.flops_per_s / (peak * 1e12):8.1%}" if r.flops_per_s and peak else f"{'-':>8}"
    lines.append(f"{r.name:<16} {r.rate:16,.2f} {r.unit:<16} {tf} {of_gemm} {of_peak}  {r.note}")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--small", action="store_true", help="tiny shapes (CPU check of the script)")
  parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
  parser.add_argument("--repeats", type=int, default=None, help="timed calls per part (default 10; 2 with --small)")
  args = parser.parse_args(argv)
  shapes = SMALL if args.small else FULL
  repeats = args.repeats or (2 if args.small else 10)
  unknown = sorted(set(args.parts.split(",")) - set(PARTS))
  if unknown:
    parser.error(f"--parts: unknown {unknown}; choose from {list(PARTS)}")
  device = jax.devices()[0]
  print(f"jax {jax.__version__}, {jax.device_count()} x {device.device_kind} ({jax.default_backend()}), "
        f"{'small' if args.small else 'full'} shapes, dtype {jnp.dtype(shapes.dtype).name}", flush=True)
  rows = []
  for name in args.parts.split(","):
    t0 = time.perf_counter()
    rows.append(PARTS[name](shapes, repeats))
    print(f"  {name}: {rows[-1].rate:,.2f} {rows[-1].unit} ({time.perf_counter() - t0:.0f} s)", flush=True)
  if jax.device_count() > 1 and "masked_vit" in args.parts:
    one = bench_masked_vit(shapes, repeats, devices=jax.devices()[:1])
    full = next(r for r in rows if r.name == "masked_vit")
    rows.append(Row("scaling", full.rate / one.rate, f"x ({jax.device_count()} vs 1)", None,
                    f"masked_vit {one.rate:,.1f} images/s on 1 device"))
  peak = peak_tflops() if shapes.dtype == jnp.bfloat16 else None
  print(table(rows, peak), flush=True)
  return rows


if __name__ == "__main__":
  main()
