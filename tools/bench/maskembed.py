"""MaskEmbed training-step throughput: the student encoder run once per image vs once per (image, mask).

MaskEmbed uses 3 masks per image (a uniform-cardinality mask, its complement and the all-ones mask). The student
sees the FULL image whatever the mask (the mask is applied to its output tokens), so its forward and backward
passes can be shared by the three masks: one student pass per image instead of three. The teacher (forward only,
on three pixel-masked copies) and the small decoder still run per mask. This benchmark times one full jitted
optimizer step (loss, gradients of student + decoder, AdamW update) both ways on the same model, images and masks,
checks the two losses agree, and prints images/s and their ratio. Timings are the median of ``--repeats`` steps,
interleaved so both variants see the same machine load, after compilation and warm-up (``block_until_ready``).

Run:
  python -m tools.bench.maskembed                                      # tiny ViT for a busy 2-core CPU
  python -m tools.bench.maskembed --size=Ti/16 --image_size=224 --images=8 --repeats=3
  python -m tools.bench.maskembed --size=B/16 --image_size=224 --images=64 --dtype=bfloat16   # GPU
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax import nnx

from tools.bench import timing
from xattr import locality, training
from xattr.models import vit

FLAGS = flags.FLAGS
flags.DEFINE_string("size", "mu/8", "ViT size name '<size>/<patch>' (see xattr.models.vit.VARIANTS).")
flags.DEFINE_integer("depth", 0, "Override the number of blocks (0: the size's default).")
flags.DEFINE_integer("image_size", 32, "Input side.")
flags.DEFINE_integer("channels", 1, "Input channels.")
flags.DEFINE_integer("images", 64, "Images per step (each with 3 masks).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype of the matmuls.")
flags.DEFINE_integer("repeats", 10, "Timed steps per variant (median reported).")
flags.DEFINE_integer("seed", 0, "Seed for weights, images and masks.")


def make_step(model: locality.MaskEmbed, reuse: bool):
  """One jitted optimizer step of MaskEmbed (student + decoder trained, teacher frozen)."""
  graphdef, params, rest = nnx.split(model, locality.TRAINABLE, ...)
  tx = training.optimizer({"learning_rate": 1e-4, "b1": 0.9, "b2": 0.95, "weight_decay": 0.01})   # plain AdamW

  @jax.jit
  def step(params, opt_state, images, key):
    def objective(p):
      return nnx.merge(graphdef, p, rest).loss(images, key, reuse_encoder=reuse)[0]
    loss, grads = jax.value_and_grad(objective)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step, params, tx.init(params)


def main(argv):
  del argv
  overrides = {"depth": FLAGS.depth} if FLAGS.depth else {}
  cfg = vit.config(FLAGS.size, image_size=FLAGS.image_size, num_channels=FLAGS.channels, num_classes=10,
                   dtype=getattr(jnp, FLAGS.dtype), **overrides)
  teacher = vit.ViT(cfg, rngs=nnx.Rngs(FLAGS.seed))
  model = locality.MaskEmbed(teacher, rngs=nnx.Rngs(FLAGS.seed + 1))
  images = jnp.asarray(np.random.default_rng(FLAGS.seed).random((FLAGS.images, *cfg.image_hw, cfg.num_channels)),
                       jnp.float32)
  key = jax.random.key(FLAGS.seed)
  print(f"ViT-{FLAGS.size} depth {cfg.depth} at {FLAGS.image_size} ({cfg.num_tokens} tokens), {FLAGS.images} images "
        f"x {model.num_masks} masks per step, dtype {FLAGS.dtype}, backend {jax.default_backend()} "
        f"({jax.devices()[0].device_kind})")
  variants = {}
  for name, reuse in (("reuse", True), ("no_reuse", False)):
    step, params, opt_state = make_step(model, reuse)
    start = time.perf_counter()
    params, opt_state, loss = jax.block_until_ready(step(params, opt_state, images, key))
    print(f"{name}: compiled + first step in {time.perf_counter() - start:.1f}s, loss {float(loss):.6f}")
    variants[name] = [step, params, opt_state, float(loss), []]
  a, b = variants["reuse"][3], variants["no_reuse"][3]
  assert np.isclose(a, b, rtol=1e-3), f"the two variants disagree: loss {a} vs {b}"
  for _ in range(FLAGS.repeats):
    for v in variants.values():
      start = time.perf_counter()
      v[1], v[2], loss = jax.block_until_ready(v[0](v[1], v[2], images, key))
      v[4].append(time.perf_counter() - start)
  rates, gemm = {}, timing.gemm_flops_per_s(dtype=getattr(jnp, FLAGS.dtype))
  for name, v in variants.items():
    seconds = statistics.median(v[4])
    rates[name] = FLAGS.images / seconds
    print(f"{name}: {seconds * 1e3:.1f} ms/step, {rates[name]:.1f} images/s "
          f"({rates[name] * model.num_masks:.1f} image-masks/s)")
    print(timing.roofline(f"{name} step (XLA cost analysis; a loop body counts once)",
                          timing.compiled_flops(v[0], v[1], v[2], images, key), seconds, gemm))
  print(f"speedup_encoder_reuse={rates['reuse'] / rates['no_reuse']:.2f}x")


if __name__ == "__main__":
  app.run(main)
