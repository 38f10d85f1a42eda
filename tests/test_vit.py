"""Masked ViT: attention masking equals dropping tokens, the removal variants, precision, shapes and errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from xattr import games, masks
from xattr.models import vit

IMAGE, PATCH, CHANNELS, CLASSES = 16, 4, 2, 5          # 4x4 grid -> 16 patches


def _random_param(path, shape, rng):
  """Random values of a sensible scale for one parameter (LayerNorm scales near 1, kernels ~ 1/sqrt(fan-in))."""
  name = [getattr(k, "key", getattr(k, "name", None)) for k in path if getattr(k, "name", None) != "value"][-1]
  noise = rng.normal(size=shape).astype(np.float32)
  if name == "scale":
    return 1.0 + 0.3 * noise
  if name == "kernel" or name == "qkv_kernel":
    return noise / np.sqrt(shape[0])
  if name == "out_kernel":
    return noise / np.sqrt(shape[0] * shape[1])
  return 0.3 * noise                                   # biases, CLS/register tokens, position embeddings


def random_module(factory, seed=0):
  """``factory(rngs)``'s module with all parameters random, so nothing is trivial (LayerNorm scales, biases).

  Filled from numpy (eager NNX initialization compiles every op separately, which is slow on CPU).
  """
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: factory(nnx.Rngs(0))))
  rng = np.random.default_rng(seed)
  state = jax.tree_util.tree_map_with_path(lambda p, a: jnp.asarray(_random_param(p, a.shape, rng)), abstract)
  return nnx.merge(graphdef, state)


def make_model(seed=0, **overrides):
  cfg = vit.config("nano/4", image_size=IMAGE, num_channels=CHANNELS, num_classes=CLASSES, **overrides)
  return random_module(lambda rngs: vit.ViT(cfg, rngs=rngs), seed)


@functools.partial(jax.jit, static_argnames=("graphdef", "method", "depth"))
def _call(graphdef, state, *args, method, depth=None):
  module = nnx.merge(graphdef, state)
  kwargs = {} if depth is None else {"depth": depth}
  return getattr(module, method)(*args, **kwargs)


def _all_outputs(module, images, mask):
  return {"logits": module(images, mask), "tokens": module.encode(images, mask), "embed": module.embed(images, mask),
          "attention": module.attention_weights(images, mask)}


def outputs(model, images, mask=None):
  """Logits, final tokens, input tokens and attention weights from one compiled program per model structure."""
  graphdef, state = nnx.split(model)
  return _outputs(graphdef, state, images, mask)


@functools.partial(jax.jit, static_argnames="graphdef")
def _outputs(graphdef, state, images, mask):
  return _all_outputs(nnx.merge(graphdef, state), images, mask)


def jitted(module, method="__call__"):
  """``module.method`` under ``jit``; modules of the same structure share compiled code across tests (the graphdef
  is a static argument), and eager NNX ops, which would each compile separately, are avoided."""
  graphdef, state = nnx.split(module)
  return lambda *args, depth=None: _call(graphdef, state, *args, method=method, depth=depth)


def inputs(batch=4, seed=1):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(batch, IMAGE, IMAGE, CHANNELS)).astype(np.float32)
  mask = rng.random((batch, (IMAGE // PATCH) ** 2)) < 0.5
  mask[0], mask[1] = False, True                       # an empty and a full coalition
  return jnp.asarray(images), jnp.asarray(mask)


def perturb_held_out(images, mask, seed=2):
  """Replaces every pixel of every held-out patch by noise."""
  pixel_mask = masks.upsample_patches(mask, (IMAGE // PATCH, IMAGE // PATCH), PATCH)[..., None]
  noise = 10 * np.random.default_rng(seed).normal(size=images.shape).astype(np.float32)
  return jnp.where(pixel_mask, images, noise)


def numpy_params(model):
  return {"/".join(map(str, path)): np.asarray(var.get_value(), np.float64)
          for path, var in nnx.to_flat_state(nnx.state(model))}


def drop_tokens_reference(model, images, mask):
  """Plain numpy (float64), per example: embed, keep only the prefix and visible patch tokens, run the blocks
  without any mask, final norm, pool, head. Returns the logits and each example's final kept-token states."""
  prm, c = numpy_params(model), model.config
  n, g = c.num_prefix_tokens, IMAGE // PATCH

  def ln(x, name):
    mu = x.mean(-1, keepdims=True)
    normed = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-6)
    return normed * prm[name + "/scale"] + prm[name + "/bias"]

  logits, states = [], []
  for image, keep in zip(np.asarray(images, np.float64), np.asarray(mask)):
    patches = np.stack([image[i * PATCH:(i + 1) * PATCH, j * PATCH:(j + 1) * PATCH].reshape(-1)
                        for i in range(g) for j in range(g)])
    emb = patches @ prm["patch_embed/kernel"] + prm["patch_embed/bias"] + prm["pos_embed"]
    prefix = [prm["cls"]] + ([prm["registers"]] if c.num_registers else [])
    x = np.concatenate(prefix + [emb[keep]])
    for b in range(c.depth):
      blk = lambda name: prm[f"blocks/{b}/{name}"]
      q, k, v = np.einsum("tw,wkhd->kthd", ln(x, f"blocks/{b}/norm1"), blk("attn/qkv_kernel")) + \
          blk("attn/qkv_bias")[:, None]
      att = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(c.head_dim)
      att = np.exp(att - att.max(-1, keepdims=True))
      att /= att.sum(-1, keepdims=True)
      x = x + np.einsum("hqk,khd,hdw->qw", att, v, blk("attn/out_kernel")) + blk("attn/out_bias")
      h = ln(x, f"blocks/{b}/norm2") @ blk("mlp/fc1/kernel") + blk("mlp/fc1/bias")
      x = x + (0.5 * h * (1 + erf(h / np.sqrt(2)))) @ blk("mlp/fc2/kernel") + blk("mlp/fc2/bias")
    x = ln(x, "norm")
    pooled = x[0] if c.pool == "cls" else (x[n:].mean(0) if len(x) > n else np.zeros(c.width))
    logits.append(pooled @ prm["head/kernel"] + prm["head/bias"])
    states.append(x)
  return np.stack(logits), states


def test_config_names_and_overrides():
  c = vit.config("S/16", num_classes=10)
  assert (c.width, c.depth, c.num_heads, c.mlp_dim, c.patch_size, c.grid) == (384, 12, 6, 1536, 16, (14, 14))
  assert (vit.config("Ti/16").width, vit.config("B/16").width, vit.config("L/16").depth) == (192, 768, 24)
  mu = vit.config("mu/8", image_size=32, num_channels=1, num_classes=10, num_registers=2, depth=3)
  assert (mu.width, mu.depth, mu.num_heads, mu.num_patches, mu.num_prefix_tokens) == (64, 3, 2, 16, 3)
  assert vit.config("nano/8", image_size=(16, 24)).grid == (2, 3)
  with pytest.raises(ValueError, match="name must look like"):
    vit.config("XXL/16")
  with pytest.raises(ValueError, match="name must look like"):
    vit.config("S16")
  with pytest.raises(TypeError, match="unknown ViTConfig field"):
    vit.config("S/16", heads=3)
  with pytest.raises(ValueError, match="divisible by patch_size 16"):
    vit.config("S/16", image_size=100)
  with pytest.raises(ValueError, match="removal must be one of"):
    vit.config("S/16", removal="blur")
  with pytest.raises(ValueError, match="divisible by num_heads"):
    vit.config("S/16", num_heads=5)
  with pytest.raises(ValueError, match="dtype must be one of"):
    vit.config("S/16", dtype=jnp.int32)


@pytest.mark.parametrize("overrides", [dict(), dict(removal="zero_input"), dict(removal="zero_embedding"),
                                       dict(num_registers=1, pool="mean")])
def test_all_ones_mask_equals_no_mask(overrides):
  model = make_model(**overrides)
  images, _ = inputs()
  full = jnp.ones((images.shape[0], model.num_patches), bool)
  with_mask, without = outputs(model, images, full), outputs(model, images)
  for name in with_mask:
    np.testing.assert_allclose(with_mask[name], without[name], atol=1e-6, err_msg=name)


@pytest.mark.parametrize("overrides", [dict(), dict(removal="zero_input"), dict(removal="zero_embedding"),
                                       dict(num_registers=1, pool="mean")])
def test_held_out_pixels_do_not_change_the_output(overrides):
  model = make_model(**overrides)
  images, mask = inputs()
  before = outputs(model, images, mask)["logits"]
  np.testing.assert_allclose(outputs(model, perturb_held_out(images, mask), mask)["logits"], before, atol=1e-5)
  # ...while a kept pixel does change it (the model is not trivially constant).
  assert float(jnp.abs(outputs(model, images + 1.0, mask)["logits"] - before)[1:].max()) > 1e-2


@pytest.mark.parametrize("overrides", [dict(), dict(num_registers=1, pool="mean")])
def test_attention_masking_equals_dropping_tokens(overrides):
  model = make_model(**overrides)
  images, mask = inputs()
  reference, kept_states = drop_tokens_reference(model, images, mask)
  masked, unmasked = outputs(model, images, mask), outputs(model, images)
  np.testing.assert_allclose(masked["logits"], reference, atol=1e-5)
  n = model.num_prefix_tokens
  for i, states in enumerate(kept_states):
    keep = np.concatenate([np.arange(n), n + np.flatnonzero(np.asarray(mask[i]))])
    np.testing.assert_allclose(masked["tokens"][i, keep], states, atol=1e-5)
  # Row 0 keeps no patch: no NaN, and the output is the image-independent "empty coalition" value.
  assert bool(jnp.all(jnp.isfinite(masked["logits"])))
  np.testing.assert_allclose(masked["logits"][0], outputs(model, images[::-1], mask)["logits"][0], atol=1e-5)
  # Masking matters: the masked output differs from the unmasked one except on the all-kept row 1.
  diff = jnp.abs(masked["logits"] - unmasked["logits"]).max(-1)
  assert float(diff[1]) < 1e-6 and float(diff[0]) > 1e-3


@pytest.mark.parametrize("overrides", [dict(), dict(num_registers=1, pool="mean")])
def test_complement_pair_equals_two_masked_calls(overrides):
  model = make_model(**overrides)
  images, mask = inputs()                              # includes an empty and a full coalition
  pair = jax.jit(vit.pair_model_fn(model))(images, mask)
  assert pair.shape == (4, 2, CLASSES)
  np.testing.assert_allclose(pair[:, 0], outputs(model, images, mask)["logits"], atol=1e-5)
  np.testing.assert_allclose(pair[:, 1], outputs(model, images, ~mask)["logits"], atol=1e-5)
  with pytest.raises(ValueError, match="complement_pair needs removal='attention'"):
    make_model(removal="zero_input").complement_pair(images, mask)


@pytest.mark.parametrize("removal", vit.REMOVALS)
def test_gradients_are_finite_with_masks(removal):
  model = make_model(removal=removal)
  images, mask = inputs()                              # row 0 keeps no patch, row 1 all
  state, apply = vit.functional(model)
  loss = lambda s, x: jax.nn.log_softmax(apply(s, x, mask)).sum()
  g_params, g_images = jax.jit(jax.grad(loss, argnums=(0, 1)))(state, images)
  for g in jax.tree.leaves(g_params) + [g_images]:
    assert bool(jnp.all(jnp.isfinite(g)))
  assert float(jnp.abs(g_images[1:]).max()) > 0
  pixel_mask = masks.upsample_patches(mask, model.grid, PATCH)[..., None]
  assert float(jnp.abs(jnp.where(pixel_mask, 0.0, g_images)).max()) == 0.0     # held-out pixels: no gradient


def test_bfloat16_compute_is_close_to_float32():
  model32, model16 = make_model(), make_model(dtype=jnp.bfloat16)
  images, mask = inputs()
  out32, out16 = outputs(model32, images, mask)["logits"], outputs(model16, images, mask)["logits"]
  assert out16.dtype == jnp.float32 and model16.blocks[0].attn.qkv_kernel[...].dtype == jnp.float32
  scale = float(jnp.abs(out32).max())
  np.testing.assert_allclose(out16, out32, atol=0.05 * scale)
  assert float(jnp.abs(out16 - out32).max()) > 0                   # bf16 really ran
  # Held-out tokens are removed exactly in bf16 too.
  np.testing.assert_allclose(outputs(model16, perturb_held_out(images, mask), mask)["logits"], out16, atol=1e-5)


def test_zero_input_equals_zeroing_the_pixels():
  model = make_model(removal="zero_input")
  images, mask = inputs()
  zeroed = images * masks.upsample_patches(mask, model.grid, PATCH)[..., None]
  got = outputs(model, images, mask)["logits"]
  np.testing.assert_allclose(got, outputs(model, zeroed)["logits"], atol=1e-5)
  attention = outputs(make_model(), images, mask)["logits"]       # same parameters (same seed)
  assert float(jnp.abs(attention - got)[0].max()) > 1e-3


def test_zero_embedding_keeps_only_the_position_embedding():
  model = make_model(removal="zero_embedding")
  images, mask = inputs()
  n = model.num_prefix_tokens
  tokens = outputs(model, images, mask)["embed"][:, n:]
  pos = jnp.broadcast_to(model.pos_embed[...], tokens.shape)
  np.testing.assert_allclose(jnp.where(mask[..., None], 0.0, tokens), jnp.where(mask[..., None], 0.0, pos))
  np.testing.assert_allclose(tokens[1], outputs(model, images)["embed"][1, n:], atol=1e-6)
  zero_input = outputs(make_model(removal="zero_input"), images, mask)["embed"]
  assert float(jnp.abs(zero_input[:, n:] - tokens).max()) > 1e-3


def test_patch_order_matches_xattr_masks():
  model = make_model()
  images = jnp.arange(IMAGE * IMAGE * CHANNELS, dtype=jnp.float32).reshape(1, IMAGE, IMAGE, CHANNELS)
  groups = masks.patch_groups(IMAGE, PATCH)                      # bool[patches, pixels], row-major
  flat = np.asarray(images).reshape(IMAGE * IMAGE, CHANNELS)
  patches = np.asarray(model.patchify(images)[0])
  for j in range(model.num_patches):
    np.testing.assert_array_equal(patches[j], flat[groups[j]].reshape(-1))


def test_encode_depth_and_attention_weights():
  model = make_model(num_registers=1, pool="mean")
  c = model.config
  images, mask = inputs()
  out = outputs(model, images, mask)
  assert out["tokens"].shape == (4, c.num_tokens, c.width)
  encode = jitted(model, "encode")
  np.testing.assert_allclose(encode(images, mask, depth=0), jitted(model.norm)(out["embed"]), atol=1e-6)
  key_mask = jnp.concatenate([jnp.ones((4, 2), bool), mask], 1)
  one = jitted(model.blocks[0])(out["embed"], key_mask)
  np.testing.assert_allclose(encode(images, mask, depth=1), jitted(model.norm)(one), atol=1e-5)
  with pytest.raises(ValueError, match="depth must be an int in"):
    model.encode(images, depth=3)
  # Attention weights: rows sum to 1, held-out key columns are exactly 0, the rest positive.
  w = out["attention"]
  assert w.shape == (c.depth, 4, c.num_heads, c.num_tokens, c.num_tokens) and w.dtype == jnp.float32
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  visible = key_mask[None, :, None, None, :]
  assert float(jnp.where(visible, 0.0, w).max()) == 0.0 and float(jnp.where(visible, w, 1.0).min()) > 0.0


def test_jit_vmap_and_the_surrogate_game():
  model = make_model()
  f = vit.masked_model_fn(model, postprocess="softmax")
  images, mask = inputs()
  expected = jax.nn.softmax(outputs(model, images, mask)["logits"])
  stacked_images, stacked_masks = jnp.stack([images, images[::-1]]), jnp.stack([mask, mask[::-1]])
  vmapped = jax.jit(jax.vmap(f))(stacked_images, stacked_masks)
  np.testing.assert_allclose(vmapped[0], expected, atol=1e-5)
  np.testing.assert_allclose(vmapped[1], expected[::-1], atol=1e-5)
  game = jax.jit(games.surrogate(f, images[2]))                  # the same (x, mask) -> output contract
  np.testing.assert_allclose(game(mask)[2], expected[2], atol=1e-5)


def test_block_key_mask_and_errors():
  block = random_module(lambda rngs: vit.Block(8, 2, 16, rngs=rngs))
  f = jitted(block)
  tokens = jax.random.normal(jax.random.key(0), (2, 5, 8))
  key_mask = jnp.array([[True, True, False, True, False], [True] * 5])
  keep = jnp.array([0, 1, 3])
  np.testing.assert_allclose(f(tokens, key_mask)[0, keep], f(tokens[:1, keep])[0], atol=1e-5)
  with pytest.raises(TypeError, match="key_mask must have dtype bool"):
    block(tokens, key_mask.astype(jnp.float32))
  with pytest.raises(ValueError, match=r"key_mask must have shape \(batch, num_tokens\) = \(2, 5\)"):
    block(tokens, key_mask[:, :4])
  with pytest.raises(ValueError, match="tokens must be float"):
    block(tokens[..., :4])


def test_input_errors_name_the_argument():
  model = make_model()
  images, mask = inputs()
  with pytest.raises(ValueError, match=r"mask must have shape \(batch, num_patches\) = \(4, 16\)"):
    model(images, mask[:, :15])
  with pytest.raises(TypeError, match="mask must have dtype bool"):
    model(images, mask.astype(jnp.int32))
  with pytest.raises(ValueError, match="images must be 16x16"):
    model(images[:, :12, :12])
  with pytest.raises(ValueError, match="must have 2 channels"):
    model(images[..., :1])
  with pytest.raises(ValueError, match=r"images must be float\[batch, height, width, channels\]"):
    model(images[0])
  with pytest.raises(TypeError, match="floating dtype"):
    model(images.astype(jnp.int32))
  with pytest.raises(TypeError, match="config must be a ViTConfig"):
    vit.ViT({"width": 8}, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="postprocess must be"):
    vit.masked_model_fn(model, postprocess="argmax")


def test_flops_count():
  c = vit.config("nano/4", image_size=16, num_classes=3)
  t, w, m = 17, 32, 128
  per_block = 2 * t * w * 3 * w + 4 * t * t * w + 2 * t * w * w + 4 * t * w * m
  assert vit.flops_per_example(c) == 2 * 16 * 48 * w + 2 * per_block + 2 * w * 3


def test_exact_gelu_equals_jax_erf_gelu():
  """The erfc form the ViT's MLP uses gives the same values as jax.nn.gelu(approximate=False)."""
  x = jax.random.normal(jax.random.key(1), (1_000_000,)) * 4.0
  np.testing.assert_allclose(vit.exact_gelu(x), jax.nn.gelu(x, approximate=False), rtol=1e-6, atol=1e-7)
