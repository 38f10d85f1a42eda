"""MaskEmbed objective (xattr.locality), mask sampler, probes/metrics and the digit-mosaic benchmark."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.four_devices import compare_with_one_device
from tests.multidevice_locality_check import assert_same, train_few_steps
from xattr import locality
from xattr.data import mosaic
from xattr.models import vit

CFG = vit.config("nano/8", image_size=16, num_channels=1, num_classes=3)


def _images(n=3, seed=0):
  return jnp.asarray(np.random.default_rng(seed).random((n, 16, 16, 1)), jnp.float32)


def test_teacher_target_under_all_ones_mask_is_the_unmasked_output():
  teacher = vit.ViT(CFG, rngs=nnx.Rngs(0))
  x = _images()
  ones = jnp.ones((3, 2, CFG.num_patches), bool)
  targets_fn = nnx.jit(lambda t, im, z, s: locality.teacher_targets(lambda a: t.encode(a, depth=1), im, z,
                                                                     CFG.patch_size, scale=s))
  targets = targets_fn(teacher, x, ones, 2.5)
  expected = 2.5 * nnx.jit(lambda t, im: t.encode(im, depth=1))(teacher, x)
  assert targets.shape == (3, 2, CFG.num_tokens, CFG.width)
  np.testing.assert_allclose(targets[:, 0], expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(targets[:, 1], expected, rtol=1e-6, atol=1e-6)
  # A held-out patch changes the target (the teacher sees zeros there), so the check above is not vacuous.
  partial = jnp.ones((3, 1, CFG.num_patches), bool).at[:, :, 0].set(False)
  changed = targets_fn(teacher, x, partial, 1.0)
  assert float(jnp.abs(changed[:, 0] - expected / 2.5).max()) > 1e-3


def _count_encoder_calls(monkeypatch) -> list[int]:
  calls = []
  original = vit.ViT.encode

  def counting(self, images, mask=None, *, depth=None):
    calls.append(images.shape[0])
    return original(self, images, mask, depth=depth)

  monkeypatch.setattr(vit.ViT, "encode", counting)
  return calls


def test_student_encoder_runs_once_per_image_in_a_training_step(monkeypatch):
  model = locality.MaskEmbed(vit.ViT(CFG, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
  graphdef, params, rest = nnx.split(model, locality.TRAINABLE, ...)
  calls = _count_encoder_calls(monkeypatch)

  def grads(p, x, key):
    return jax.grad(lambda q: nnx.merge(graphdef, q, rest).loss(x, key)[0])(p)

  out = jax.eval_shape(grads, params, _images(4), jax.random.key(0))     # traces the step once, no compile
  assert model.num_masks == 3
  # One student pass over the 4 images and one teacher pass over the 4 x 3 masked copies.
  assert sorted(calls) == [4, 12], calls
  paths = [str(path) for path, _ in nnx.to_flat_state(out)]
  assert any("student" in p for p in paths) and any("decoder" in p for p in paths)
  assert not any("teacher" in p for p in paths)


def test_encoder_reuse_gives_the_same_loss_as_repeating_images(monkeypatch):
  model = locality.MaskEmbed(vit.ViT(CFG, rngs=nnx.Rngs(0)), scale=1.7, rngs=nnx.Rngs(1))
  x, key = _images(4), jax.random.key(3)
  loss = nnx.jit(lambda m, a, k, r: m.loss(a, k, reuse_encoder=r)[0], static_argnums=3)
  calls = _count_encoder_calls(monkeypatch)
  reuse = loss(model, x, key, True)
  assert sorted(calls) == [4, 12], calls
  repeat = loss(model, x, key, False)
  assert sorted(calls[2:]) == [12, 12], calls                      # without reuse: the student sees 3x the rows
  np.testing.assert_allclose(float(reuse), float(repeat), rtol=1e-5)
  assert float(reuse) > 0


@pytest.mark.parametrize("scheme", locality.SCHEMES)
def test_antithetic_masks_are_complements_and_the_last_is_full(scheme):
  z = np.asarray(locality.sample_masks(jax.random.key(1), (3, 4), 64, scheme=scheme))
  assert z.shape == (64, 3, 12) and z.dtype == bool
  np.testing.assert_array_equal(z[:, 1], ~z[:, 0])
  assert z[:, 2].all()
  assert len({row.tobytes() for row in z[:, 0]}) > 10            # masks differ across images
  if scheme == "blockwise":                                        # kept patches form one rectangle
    grid = z[:, 0].reshape(64, 3, 4)
    outer = grid.any(2)[:, :, None] & grid.any(1)[:, None, :]
    np.testing.assert_array_equal(grid, outer)
  assert locality.sample_masks(jax.random.key(1), (3, 4), 5, antithetic=False).shape == (5, 2, 12)
  assert locality.sample_masks(jax.random.key(1), (3, 4), 5, include_full=False).shape == (5, 2, 12)


def test_loss_is_zero_when_student_and_decoder_reproduce_the_teacher():
  p = 4                                                            # 8x8 image, 2x2 grid of 4x4 patches

  def patches(x):
    return x.reshape(-1, 2, p, 2, p).transpose(0, 1, 3, 2, 4).reshape(-1, 4, p * p)

  def teacher(x):                                                  # prefix token = sum of the visible patches
    t = patches(x)
    return jnp.concatenate([t.sum(1, keepdims=True), t], 1)

  def student(x):                                                  # its prefix token is garbage: zeroed anyway
    return jnp.concatenate([jnp.full((x.shape[0], 1, p * p), 7.0), patches(x)], 1)

  def decoder(t):
    return jnp.concatenate([t[:, 1:].sum(1, keepdims=True), t[:, 1:]], 1)

  x = jnp.asarray(np.random.default_rng(0).random((5, 8, 8, 1)), jnp.float32)
  z = locality.sample_masks(jax.random.key(0), (2, 2), 5)
  loss_fn = jax.jit(lambda dec, s: locality.maskembed_loss(student, dec, teacher, x, z, patch_size=p, num_prefix=1,
                                                           scale=s), static_argnums=0)
  loss, metrics = loss_fn(decoder, 1.0)
  assert float(loss) == 0.0 and float(metrics["mse_full"]) == 0.0
  wrong, _ = loss_fn(lambda t: t, 1.0)
  assert float(wrong) > 0.01                                       # a decoder that ignores the prefix is penalised
  scaled, _ = loss_fn(decoder, 2.0)
  assert float(scaled) > 0.01


def test_target_scale_gives_unit_variance_targets():
  teacher = vit.ViT(CFG, rngs=nnx.Rngs(0))
  x = np.asarray(_images(8))
  s = locality.target_scale(teacher, x, depth=1, batch_size=3)
  out = np.asarray(nnx.jit(lambda t, a: t.encode(a, depth=1))(teacher, jnp.asarray(x))) * s
  np.testing.assert_allclose(out.std(), 1.0, rtol=1e-4)


def test_mim_loss_counts_only_held_out_patches():
  x = jnp.asarray(np.random.default_rng(0).random((2, 4, 4, 1)), jnp.float32)
  z = jnp.array([[True, False, True, False], [False, False, True, True]])
  encode = lambda im, m: jnp.zeros((im.shape[0], 5, 4))
  # Predicting 0 everywhere: the loss is the mean square of the held-out patches' pixels only.
  patches = np.asarray(x).reshape(2, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4).reshape(2, 4, 4)
  expected = np.square(patches[~np.asarray(z)]).mean()
  loss = jax.jit(lambda a, m: locality.mim_loss(encode, lambda t: t, a, m, patch_size=2, num_prefix=1))(x, z)
  np.testing.assert_allclose(float(loss),
                             expected, rtol=1e-6)


def test_macro_scores_closed_form():
  labels = np.zeros((1, 4, 3), bool)
  labels[0, 0, 0] = labels[0, 1, 0] = labels[0, 2, 1] = True      # class 2 never occurs: not averaged
  scores = np.zeros((1, 4, 3))
  scores[0, 0, 0] = scores[0, 3, 0] = scores[0, 2, 1] = 0.9        # class 0: tp 1, fp 1, fn 1; class 1 perfect
  out = locality.macro_scores(scores, labels)
  assert out == pytest.approx({"macro_precision": 0.75, "macro_recall": 0.75, "macro_f1": 0.75})
  with pytest.raises(ValueError, match="same shape"):
    locality.macro_scores(scores[:, :2], labels)


def test_patch_probe_kinds_and_errors():
  lin = locality.PatchProbe(8, 3, num_prefix=2, rngs=nnx.Rngs(0))
  assert lin(jnp.ones((2, 6, 8))).shape == (2, 4, 3)
  with pytest.raises(ValueError, match="kind must be"):
    locality.PatchProbe(8, 3, num_prefix=1, kind="mlp", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="scheme must be one of"):
    locality.sample_masks(jax.random.key(0), (2, 2), 3, scheme="grid")
  with pytest.raises(ValueError, match=r"masks must be bool\[batch, num_masks, num_patches\]"):
    locality.maskembed_loss(None, None, None, jnp.ones((2, 4, 4, 1)), jnp.ones((2, 3, 3), bool), patch_size=2,
                            num_prefix=0)
  with pytest.raises(ValueError, match="depth must be an int"):
    locality.MaskEmbed(vit.ViT(CFG, rngs=nnx.Rngs(0)), depth=5, rngs=nnx.Rngs(1))


def test_mosaic_labels():
  ds = mosaic.digit_mosaics(num_train=64, num_test=16, grid=2, tile_size=16, patch_size=8, jitter=0, seed=1)
  assert ds.x_train.shape == (64, 32, 32, 1) and ds.patch_train.shape == (64, 16, 10)
  assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
  np.testing.assert_array_equal(ds.patch_train.any(1), ds.y_train)
  # Without jitter, patches never straddle two cells: at most one digit per patch, the same within a cell.
  assert ds.patch_train.sum(-1).max() == 1
  cells = ds.patch_train.reshape(64, 2, 2, 2, 2, 10).any(axis=(2, 4))       # [N, cell row, cell col, class]
  per_patch = ds.patch_train.reshape(64, 2, 2, 2, 2, 10)
  assert np.all(per_patch <= cells[:, :, None, :, None])
  jittered = mosaic.digit_mosaics(num_train=256, num_test=16, jitter=3, seed=1)
  assert jittered.patch_train.sum(-1).max() >= 2                          # digits now share patches
  empty = mosaic.digit_mosaics(num_train=8, num_test=8, empty_prob=1.0, seed=1)
  assert not empty.patch_train.any() and not empty.y_test.any()
  with pytest.raises(ValueError, match="patch_size"):
    mosaic.digit_mosaics(num_train=4, num_test=4, patch_size=5)


def test_patch_labels_from_segmentation_fraction_and_ignore():
  seg = np.zeros((1, 4, 4), np.int64)
  seg[0, 0, 0] = 1                                                         # 1/4 of patch 0
  seg[0, 2:, 2:] = 2                                                       # all of patch 3
  seg[0, 0, 2] = 255                                                       # void
  out = mosaic.patch_labels_from_segmentation(seg, 2, 3, ignore_index=0)
  assert out[0].astype(int).tolist() == [[0, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1]]
  half = mosaic.patch_labels_from_segmentation(seg, 2, 3, min_fraction=0.5)
  assert half[0].astype(int).tolist() == [[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1]]
  with pytest.raises(ValueError, match="divisible"):
    mosaic.patch_labels_from_segmentation(seg, 3, 3)


def test_tfds_segmentation_path_with_mock_data(tmp_path):
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = mosaic.from_tfds_segmentation("oxford_iiit_pet", data_dir=tmp_path, num_classes=3, image_size=32,
                                       patch_size=8, class_offset=1, max_train=4, max_test=3)
  assert ds.x_train.shape == (4, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
  assert ds.patch_train.shape == (4, 16, 3) and ds.grid == (4, 4) and ds.patch_train.dtype == bool
  assert ds.patch_train.any() and (ds.patch_train.any(1) == ds.y_train).all()
  with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
    mosaic.from_tfds_segmentation("oxford_iiit_pet", data_dir=tmp_path / "nope", num_classes=3)


def test_maskembed_step_on_four_devices_matches_one(tmp_path):
  one, four = compare_with_one_device("multidevice_locality_check.py", tmp_path / "four.npz", train_few_steps)
  assert_same(four, one, "4-device subprocess vs 1-device parent")
  assert np.all(np.diff(one["losses"]) != 0) and np.isfinite(one["losses"]).all()
