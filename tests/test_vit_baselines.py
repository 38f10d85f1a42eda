"""The ViT-internal baselines (GradCAM, attention x gradient, gradient rollout, LRP) against properties that can
fail: the traced forward equals the model, LRP conserves relevance where its rules guarantee it, every map is
equivariant to permuting the patches of a model without position embeddings, and the rollout's one-layer
closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from xattr import attributions, methods
from xattr.jobs.tasks import placeholder_module
from xattr.models import vit

RNG = np.random.default_rng(0)
GRID, PATCH = 3, 4


def make_model(*, pool="cls", registers=0, seed=0, position=True, biases=True, depth=2):
  """A nano ViT on 12x12x1 images (9 patches) with random parameters (biases and LN shifts non-zero).

  Built from shapes and filled from numpy: running the initializers would compile one program per shape.
  """
  cfg = vit.config("nano/4", image_size=GRID * PATCH, num_channels=1, num_classes=3, pool=pool,
                   num_registers=registers, depth=depth)
  model = placeholder_module(lambda: vit.ViT(cfg, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    noise = rng.normal(size=leaf.shape).astype(np.float32)
    if "scale" in jax.tree_util.keystr(path):
      return 1.0 + 0.1 * noise
    fan_in = leaf.shape[0] if leaf.ndim >= 2 else 1
    return noise / np.sqrt(fan_in) if leaf.ndim >= 2 else 0.1 * noise

  nnx.update(model, jax.tree_util.tree_map_with_path(fill, nnx.state(model, nnx.Param)))
  if not position:
    model.pos_embed[...] = jnp.zeros(model.pos_embed.shape)
  if not biases:       # every bias INSIDE the blocks and the head (embeddings keep theirs: they are input tokens)
    params = [model.norm.bias, model.head.bias]
    for block in model.blocks:
      params += [block.attn.qkv_bias, block.attn.out_bias, block.mlp.fc1.bias, block.mlp.fc2.bias,
                 block.norm1.bias, block.norm2.bias]
    for param in params:
      param[...] = jnp.zeros(param.shape)
  return model


IMAGE = jnp.asarray(RNG.uniform(size=(GRID * PATCH, GRID * PATCH, 1)), jnp.float32)


def permute_patches(image, perm):
  """The image whose patch j is the input's patch perm[j] (row-major patches)."""
  blocks = image.reshape(GRID, PATCH, GRID, PATCH, -1).transpose(0, 2, 1, 3, 4).reshape(GRID * GRID, PATCH, PATCH, -1)
  blocks = blocks[perm].reshape(GRID, GRID, PATCH, PATCH, -1).transpose(0, 2, 1, 3, 4)
  return blocks.reshape(image.shape)


VIT_METHODS = {"gradcam": attributions.gradcam, "attention_x_gradient": attributions.attention_x_gradient,
               "gradient_rollout": attributions.gradient_rollout, "lrp": attributions.lrp}


@pytest.mark.parametrize("pool,registers", [("cls", 0), ("mean", 2)])
def test_trace_is_the_model(pool, registers):
  model = make_model(pool=pool, registers=registers)
  trace, conservative, logits, attention = jax.jit(lambda x: (
      attributions.vit_trace(model, x), attributions.vit_trace(model, x, conservative=True), model(x[None])[0],
      model.attention_weights(x[None])[:, 0]))(IMAGE)
  np.testing.assert_allclose(trace.logits, logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(trace.attention, attention, rtol=1e-5, atol=1e-6)
  # The conservative rules change gradients, never values.
  np.testing.assert_allclose(conservative.logits, trace.logits, rtol=1e-6, atol=1e-6)


def test_lrp_conserves_relevance_when_the_blocks_have_no_biases():
  model, biased = make_model(biases=False), make_model()

  @jax.jit
  def run(x):
    relevance = attributions.lrp(model, x, 1, include_prefix=True)
    # Plain gradient x input at the embeddings (no LRP rules), to show that the property can fail.
    grad = jax.grad(lambda off: attributions.vit_trace(model, x, token_offset=off).logits[1])(
        jnp.zeros((3, 1 + GRID * GRID, 32)))
    plain = (attributions.vit_trace(model, x).tokens[0] * grad[0]).sum()
    return (relevance, attributions.lrp(model, x, 1), plain, model(x[None])[0, 1],
            attributions.lrp(biased, x, 1, include_prefix=True).sum(), biased(x[None])[0, 1])

  relevance, patches, plain, logit, biased_sum, biased_logit = run(IMAGE)
  assert relevance.shape == (1 + GRID * GRID,)
  np.testing.assert_allclose(float(relevance.sum()), float(logit), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(patches, relevance[1:], rtol=1e-6)
  assert abs(float(plain - logit)) > 1e-2 * max(1.0, abs(float(logit)))
  # With biases, relevance is absorbed by them: no longer the logit.
  assert abs(float(biased_sum - biased_logit)) > 1e-3


def test_every_vit_map_is_equivariant_to_patch_permutations_without_position_embeddings():
  perm = np.random.default_rng(1).permutation(GRID * GRID)
  permuted = permute_patches(IMAGE, perm)
  model = make_model(position=False)

  def both(x, t):   # the functions and their registrations, vmapped over images and (traced) targets
    problem = methods.Problem(model=model, x=x, target=t, num_players=GRID * GRID)
    return ({name: fn(model, x, t) for name, fn in VIT_METHODS.items()},
            {name: methods.attribute(name, problem, jax.random.key(0)).values for name in VIT_METHODS})

  direct, registered = jax.jit(jax.vmap(both))(jnp.stack([IMAGE, permuted]), jnp.array([1, 1]))
  for name in VIT_METHODS:
    assert methods.get(name).needs == "vit"
    original, moved = direct[name]
    assert original.shape == (GRID * GRID,), name
    assert float(jnp.abs(original).max()) > 0, name
    np.testing.assert_allclose(moved, original[perm], rtol=1e-4, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(registered[name], direct[name], rtol=1e-6, atol=1e-7, err_msg=name)
  # With position embeddings the maps are NOT equivariant (the test above can fail).
  positioned = make_model()
  cam = jax.jit(lambda x: attributions.gradcam(positioned, x, 1))
  a, b = cam(IMAGE), cam(permuted)
  assert not np.allclose(b, a[perm], rtol=1e-3, atol=1e-5)


def test_rollout_of_one_block_is_attention_x_gradient_and_maps_are_nonnegative():
  model, deep = make_model(depth=1, seed=3), make_model()
  rollout, axg, maps, cams = jax.jit(lambda x: (
      attributions.gradient_rollout(model, x, 0), attributions.attention_x_gradient(model, x, 0),
      [VIT_METHODS[n](deep, x, 0) for n in ("gradcam", "attention_x_gradient", "gradient_rollout")],
      [attributions.gradcam(deep, x, t) for t in (0, 1)]))(IMAGE)
  # R = I + A-bar for one block: the CLS row's patch entries are A-bar's.
  np.testing.assert_allclose(rollout, axg, rtol=1e-5, atol=1e-7)
  assert float(axg.max()) > 0
  for m in maps:
    assert float(m.min()) >= 0
  # GradCAM explains the target: other classes get other maps.
  assert not np.allclose(cams[0], cams[1])


def test_clear_errors():
  model = make_model()
  with pytest.raises(ValueError, match=r"target must be an int class index in \[0, 3\), got 3"):
    attributions.gradcam(model, IMAGE, 3)
  with pytest.raises(ValueError, match=r"layer must be an int in \[-3, 3\) or None, got 5"):
    attributions.gradcam(model, IMAGE, 0, layer=5)
  with pytest.raises(ValueError, match="needs problem.model"):
    methods.attribute("lrp", methods.Problem(x=IMAGE, target=0), jax.random.key(0))
