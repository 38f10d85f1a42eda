"""Masked ViT forward throughput: xattr (JAX) vs the same model in PyTorch, same weights, same masks, one process.

The workload is the inner loop of ViT Shapley (surrogate evaluation, FastSHAP explainer training, KernelSHAP
ground truth): every image is evaluated under many patch masks, here 32 paired Shapley-kernel masks per image,
with held-out patches removed by -inf attention logits on their key columns in every layer. Both sides repeat
each image once per mask, build the additive mask bias once per forward pass and run the same ViT (pre-LN,
exact GELU, eps 1e-6) with the same float32 weights; the outputs are compared before timing. PyTorch runs
eagerly under ``torch.inference_mode`` with ``scaled_dot_product_attention`` and ``F.linear`` (what timm does);
xattr runs one ``jax.jit`` program. Throughput is (images x masks) per second at steady state (compilation and
warm-up excluded, ``block_until_ready``), the median of ``--repeats`` timed steps, interleaved so both sides see the same machine load. xattr is timed twice:
the plain masked forward (the same algorithm as the PyTorch side) and :meth:`ViT.complement_pair`, which exploits
the pairing of the masks (each mask's complement is also evaluated) to run both coalitions of a pair in one packed
sequence with exactly the same outputs. Achieved TFLOP/s counts the
matmul FLOPs analytically (:func:`xattr.models.vit.flops_per_example`); on a GPU it is also reported as a fraction
of ``--peak_tflops`` (default: H100 SXM dense bf16, 989 TFLOP/s).

Run (PyTorch is optional, from the `bench` extra):
  python -m tools.bench.masked_vit                                  # ViT-S/16, 224, 32 masks, 2 images, float32
  python -m tools.bench.masked_vit --images=1 --repeats=3           # smaller, for a busy 2-core CPU
  python -m tools.bench.masked_vit --images=128 --dtype=bfloat16 --torch_dtype=bfloat16   # GPU
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from tools.bench import timing
from xattr import masks as xmasks
from xattr import xla_cpu
from xattr.models import vit

FLAGS = flags.FLAGS
flags.DEFINE_string("size", "S/16", "ViT size name (see xattr.models.vit.VARIANTS), '<size>/<patch>'.")
flags.DEFINE_integer("image_size", 224, "Input side.")
flags.DEFINE_integer("num_classes", 1000, "Head outputs.")
flags.DEFINE_integer("images", 2, "Images per step.")
flags.DEFINE_integer("masks", 32, "Masks per image (paired Shapley-kernel samples).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "xattr compute dtype.")
flags.DEFINE_enum("torch_dtype", "float32", ["float32", "bfloat16"], "PyTorch dtype (weights and activations).")
flags.DEFINE_integer("repeats", 5, "Timed steps (median reported).")
flags.DEFINE_bool("torch", True, "Also run the PyTorch model, if torch is installed.")
flags.DEFINE_float("peak_tflops", 989.0, "Accelerator peak for the compute dtype (H100 SXM dense bf16: 989).")
flags.DEFINE_integer("seed", 0, "Seed for weights, images and masks.")
flags.DEFINE_bool("tune_xla_cpu", True, "Turn XLA:CPU's YNN matmul fusion off first (xattr.xla_cpu.tune; +30-35% "
                  "on these GEMMs with jaxlib 0.10-0.12). --notune_xla_cpu measures the jaxlib default.")
flags.DEFINE_integer("chunk", 0, "xattr: run the rows in sequential chunks of this many images (lax.map), 0 = all "
                     "at once. Smaller working sets can be faster on CPU caches.")


def make_inputs(cfg: vit.ViTConfig, num_images: int, num_masks: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Images float32[N, H, W, C] and masks bool[N, M, P] (paired Shapley-kernel samples per image)."""
  key = jax.random.key(seed)
  images = np.asarray(jax.random.normal(key, (num_images, *cfg.image_hw, cfg.num_channels)))
  keys = jax.random.split(jax.random.fold_in(key, 1), num_images)
  masks = np.asarray(jax.vmap(lambda k: xmasks.shapley_kernel(k, cfg.num_patches, num_masks))(keys))
  return images, masks


def _chunked(fn, images, masks, chunk: int):
  """``fn(images, masks)`` over groups of ``chunk`` images in sequence (lax.map), or all at once for 0."""
  n = images.shape[0]
  if not chunk or chunk >= n:
    return fn(images, masks)
  if n % chunk:
    raise ValueError(f"--images ({n}) must be a multiple of --chunk ({chunk}).")
  out = jax.lax.map(lambda a: fn(*a), (images.reshape(n // chunk, chunk, *images.shape[1:]),
                                       masks.reshape(n // chunk, chunk, *masks.shape[1:])))
  return out.reshape(-1, *out.shape[2:])


def xattr_step(model: vit.ViT, chunk: int = 0):
  """jit((state, images[N...], masks[N, M, P]) -> logits[N * M, K]); each image repeated once per mask."""
  state, apply = vit.functional(model)

  def rows(state, images, masks):
    n, m, p = masks.shape
    return apply(state, jnp.repeat(images, m, axis=0), masks.reshape(n * m, p))

  step = jax.jit(lambda state, images, masks: _chunked(lambda i, z: rows(state, i, z), images, masks, chunk))
  return lambda images, masks: step(state, images, masks)


def xattr_pair_step(model: vit.ViT, chunk: int = 0):
  """The same evaluations with :meth:`~xattr.models.vit.ViT.complement_pair`: masks come in complementary pairs
  (rows 2i, 2i + 1), so each pair runs as one packed sequence; output rows in the same order."""
  graphdef, state = nnx.split(model)

  def rows(state, images, masks):
    n, m, p = masks.shape
    first = masks[:, ::2].reshape(n * m // 2, p)
    out = nnx.merge(graphdef, state).complement_pair(jnp.repeat(images, m // 2, axis=0), first)
    return out.reshape(n * m, -1)

  step = jax.jit(lambda state, images, masks: _chunked(lambda i, z: rows(state, i, z), images, masks, chunk))
  return lambda images, masks: step(state, images, masks)


def torch_model(params: dict[str, np.ndarray], cfg: vit.ViTConfig, dtype: str):
  """The same ViT in PyTorch (eager), weights copied from xattr's parameters; forward(images, masks) -> logits."""
  import torch
  import torch.nn.functional as F

  tdtype = getattr(torch, dtype)
  w, h, d, p = cfg.width, cfg.num_heads, cfg.head_dim, cfg.patch_size
  gh, gw = cfg.grid
  t = lambda name, transpose=False: torch.from_numpy(np.ascontiguousarray(
      params[name].T if transpose else params[name])).to(tdtype)
  blocks = []
  for i in range(cfg.depth):
    b = f"blocks/{i}/"
    blocks.append(dict(
        ln1=(t(b + "norm1/scale"), t(b + "norm1/bias")), ln2=(t(b + "norm2/scale"), t(b + "norm2/bias")),
        qkv_w=torch.from_numpy(params[b + "attn/qkv_kernel"].reshape(w, 3 * w).T.copy()).to(tdtype),
        qkv_b=torch.from_numpy(params[b + "attn/qkv_bias"].reshape(3 * w)).to(tdtype),
        out_w=torch.from_numpy(params[b + "attn/out_kernel"].reshape(w, w).T.copy()).to(tdtype),
        out_b=t(b + "attn/out_bias"),
        fc1_w=t(b + "mlp/fc1/kernel", True), fc1_b=t(b + "mlp/fc1/bias"),
        fc2_w=t(b + "mlp/fc2/kernel", True), fc2_b=t(b + "mlp/fc2/bias")))
  embed_w, embed_b = t("patch_embed/kernel", True), t("patch_embed/bias")
  prefix = t("cls") if cfg.num_registers == 0 else torch.cat([t("cls"), t("registers")])
  pos, norm, head = t("pos_embed"), (t("norm/scale"), t("norm/bias")), (t("head/kernel", True), t("head/bias"))

  def forward(images, masks):
    bsz = images.shape[0]
    patches = images.reshape(bsz, gh, p, gw, p, -1).permute(0, 1, 3, 2, 4, 5).reshape(bsz, gh * gw, -1)
    x = F.linear(patches, embed_w, embed_b) + pos
    x = torch.cat([prefix.expand(bsz, -1, -1), x], dim=1)
    keys = torch.cat([torch.ones(bsz, prefix.shape[0], dtype=torch.bool), masks], dim=1)
    bias = torch.zeros(keys.shape, dtype=tdtype).masked_fill(~keys, float("-inf"))[:, None, None, :]
    tokens = x.shape[1]
    for blk in blocks:
      y = F.layer_norm(x, (w,), *blk["ln1"], eps=1e-6)
      q, k, v = F.linear(y, blk["qkv_w"], blk["qkv_b"]).reshape(bsz, tokens, 3, h, d).permute(2, 0, 3, 1, 4)
      y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
      x = x + F.linear(y.transpose(1, 2).reshape(bsz, tokens, w), blk["out_w"], blk["out_b"])
      y = F.layer_norm(x, (w,), *blk["ln2"], eps=1e-6)
      x = x + F.linear(F.gelu(F.linear(y, blk["fc1_w"], blk["fc1_b"])), blk["fc2_w"], blk["fc2_b"])
    return F.linear(F.layer_norm(x[:, 0], (w,), *norm, eps=1e-6), *head)

  def run(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    n, m, pp = masks.shape
    with torch.inference_mode():
      x = torch.from_numpy(images).to(tdtype).repeat_interleave(m, dim=0)
      out = forward(x, torch.from_numpy(masks.reshape(n * m, pp)))
      return out.float().numpy()

  return run


def timed(calls: dict[str, tuple], repeats: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
  """Median seconds per call of each ``name: (fn, *args)`` after one warm-up call (compilation). The calls are
  interleaved (a, b, a, b, ...) so that both sides see the same machine load, which matters on a shared CPU."""
  outputs = {name: np.asarray(jax.block_until_ready(fn(*args))) for name, (fn, *args) in calls.items()}
  times: dict[str, list[float]] = {name: [] for name in calls}
  for _ in range(repeats):
    for name, (fn, *args) in calls.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name].append(time.perf_counter() - start)
  return outputs, {name: statistics.median(t) for name, t in times.items()}


def main(argv):
  del argv
  if FLAGS.tune_xla_cpu:
    xla_cpu.tune()                    # before the first computation starts the backend
  dtype = getattr(jnp, FLAGS.dtype)
  cfg = vit.config(FLAGS.size, image_size=FLAGS.image_size, num_classes=FLAGS.num_classes, dtype=dtype)
  model = vit.ViT(cfg, rngs=nnx.Rngs(FLAGS.seed))
  images, masks = make_inputs(cfg, FLAGS.images, FLAGS.masks, FLAGS.seed)
  rows = FLAGS.images * FLAGS.masks
  backend = jax.default_backend()
  print(f"ViT-{FLAGS.size} at {FLAGS.image_size} ({cfg.num_patches} patches, {cfg.num_tokens} tokens), "
        f"{FLAGS.images} images x {FLAGS.masks} masks per step, xattr dtype {FLAGS.dtype}, backend {backend} "
        f"({jax.devices()[0].device_kind}); XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")

  if not np.array_equal(masks[:, 1::2], ~masks[:, ::2]):
    raise AssertionError("the Shapley-kernel sampler must emit complementary pairs in adjacent rows")
  jimages, jmasks = jnp.asarray(images), jnp.asarray(masks)
  calls = {"xattr": (xattr_step(model, FLAGS.chunk), jimages, jmasks),
           "xattr_pairs": (xattr_pair_step(model, FLAGS.chunk), jimages, jmasks)}
  torch = None
  if FLAGS.torch:
    try:
      import torch
    except ImportError:
      print("torch is not installed: no PyTorch comparison (pip install -e '.[bench]').")
  if torch is not None:
    params = {"/".join(map(str, path)): np.asarray(var.get_value())
              for path, var in nnx.to_flat_state(nnx.state(model))}
    calls["torch"] = (torch_model(params, cfg, FLAGS.torch_dtype), images, masks)
  outputs, seconds = timed(calls, FLAGS.repeats)

  tflops = vit.flops_per_example(cfg) * rows / seconds["xattr"] / 1e12
  print(f"xattr: {seconds['xattr'] * 1e3:.1f} ms/step, {rows / seconds['xattr']:.1f} images*masks/s, "
        f"{tflops:.3f} TFLOP/s")
  if backend == "gpu":
    print(f"fraction_of_peak={tflops / FLAGS.peak_tflops:.3f} (peak {FLAGS.peak_tflops} TFLOP/s)")
  print(timing.roofline("xattr masked forward", vit.flops_per_example(cfg) * rows, seconds["xattr"],
                        timing.gemm_flops_per_s(dtype=dtype)))
  pair_tflops = vit.flops_per_example(cfg, cfg.num_tokens + cfg.num_prefix_tokens) * rows / 2 / \
      seconds["xattr_pairs"] / 1e12
  pair_diff = float(np.abs(outputs["xattr_pairs"] - outputs["xattr"]).max())
  print(f"xattr complement_pair (2 masks per packed sequence): {seconds['xattr_pairs'] * 1e3:.1f} ms/step, "
        f"{rows / seconds['xattr_pairs']:.1f} images*masks/s, {pair_tflops:.3f} TFLOP/s executed; "
        f"max |logit difference| to the masked forward {pair_diff:.2e}")
  if backend == "gpu":
    print(f"fraction_of_peak_pairs={pair_tflops / FLAGS.peak_tflops:.3f}")
  if torch is None:
    return
  diff = float(np.abs(outputs["torch"] - outputs["xattr"]).max())
  scale = float(np.abs(outputs["torch"]).max())
  print(f"torch {torch.__version__} ({torch.get_num_threads()} threads, eager, {FLAGS.torch_dtype}): "
        f"{seconds['torch'] * 1e3:.1f} ms/step, {rows / seconds['torch']:.1f} images*masks/s; "
        f"max |logit difference| {diff:.2e} (logit scale {scale:.2f})")
  tol = 1e-3 if FLAGS.dtype == FLAGS.torch_dtype == "float32" else 0.1
  if diff > tol * max(scale, 1.0):
    raise SystemExit(f"outputs disagree: max difference {diff:.3e} > {tol} x scale")
  print(f"speedup_vs_torch={seconds['torch'] / seconds['xattr']:.2f}x (same algorithm: one masked sequence per mask)")
  print(f"speedup_vs_torch_pairs={seconds['torch'] / seconds['xattr_pairs']:.2f}x (xattr packs complementary pairs)")

if __name__ == "__main__":
  app.run(main)
