"""Checkpoint converters: small random checkpoints written here in the big_vision and timm layouts, loaded into
xattr's ViT and checked against an independent plain-numpy ViT forward pass (float64)."""

import json
import math
import struct

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from scipy.special import erf

from xattr.models import convert, vit

WIDTH, DEPTH, HEADS, MLP, PATCH, CHANNELS, CLASSES, IMAGE = 16, 2, 2, 24, 4, 3, 5, 8     # 2x2 grid
HEAD_DIM = WIDTH // HEADS


# ---------------------------------------------------------------------------------------------------------------
# An independent reference: logical parameters and a numpy forward pass that drops held-out tokens.

def random_params(seed=0, num_registers=0, prefix_positions=True):
  """Logical parameters (float32 values, kept as float64): attention kernels [W, H, D], patch kernel [p, p, C, W]."""
  rng = np.random.default_rng(seed)
  r = lambda *shape, scale=0.3: (scale * rng.normal(size=shape)).astype(np.float32).astype(np.float64)
  prm = {"patch_w": r(PATCH, PATCH, CHANNELS, WIDTH, scale=0.2), "patch_b": r(WIDTH), "cls": r(WIDTH),
         "regs": r(num_registers, WIDTH), "pos": r(4, WIDTH),
         "pos_prefix": r(1 + num_registers, WIDTH) if prefix_positions else None,
         "norm_s": 1 + r(WIDTH), "norm_b": r(WIDTH), "head_w": r(WIDTH, CLASSES), "head_b": r(CLASSES), "blocks": []}
  for _ in range(DEPTH):
    prm["blocks"].append({
        "ln1_s": 1 + r(WIDTH), "ln1_b": r(WIDTH), "ln2_s": 1 + r(WIDTH), "ln2_b": r(WIDTH),
        "wq": r(WIDTH, HEADS, HEAD_DIM), "wk": r(WIDTH, HEADS, HEAD_DIM), "wv": r(WIDTH, HEADS, HEAD_DIM),
        "bq": r(HEADS, HEAD_DIM), "bk": r(HEADS, HEAD_DIM), "bv": r(HEADS, HEAD_DIM),
        "wo": r(HEADS, HEAD_DIM, WIDTH), "bo": r(WIDTH),
        "w1": r(WIDTH, MLP), "b1": r(MLP), "w2": r(MLP, WIDTH, scale=0.2), "b2": r(WIDTH)})
  return prm


def layer_norm(x, s, b):
  mu = x.mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-6) * s + b


def numpy_vit(prm, image, keep=None):
  """Logits of one image [H, W, C], keeping only the patches in ``keep`` (row-major indices; None = all)."""
  grid = IMAGE // PATCH
  patches = [image[i * PATCH:(i + 1) * PATCH, j * PATCH:(j + 1) * PATCH] for i in range(grid) for j in range(grid)]
  tokens = np.stack([np.einsum("ijc,ijcw->w", p, prm["patch_w"]) for p in patches]) + prm["patch_b"] + prm["pos"]
  prefix = np.concatenate([prm["cls"][None], prm["regs"]])
  if prm["pos_prefix"] is not None:
    prefix = prefix + prm["pos_prefix"]
  keep = np.arange(len(patches)) if keep is None else np.asarray(keep, int)
  x = np.concatenate([prefix, tokens[keep]])
  for blk in prm["blocks"]:
    h = layer_norm(x, blk["ln1_s"], blk["ln1_b"])
    q, k, v = (np.einsum("tw,whd->thd", h, blk[f"w{n}"]) + blk[f"b{n}"] for n in "qkv")
    logits = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(HEAD_DIM)
    att = np.exp(logits - logits.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    x = x + np.einsum("qhd,hdw->qw", np.einsum("hqk,khd->qhd", att, v), blk["wo"]) + blk["bo"]
    h = layer_norm(x, blk["ln2_s"], blk["ln2_b"]) @ blk["w1"] + blk["b1"]
    x = x + (0.5 * h * (1 + erf(h / math.sqrt(2)))) @ blk["w2"] + blk["b2"]
  return layer_norm(x, prm["norm_s"], prm["norm_b"])[0] @ prm["head_w"] + prm["head_b"]


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint writers in each layout, written from the logical parameters independently of xattr's converters.

def big_vision_tensors(prm, variant="big_vision"):
  """variant: 'big_vision' (pos_embedding without CLS), 'original' (vision_transformer names, CLS position,
  params/ prefix) or 'scan' (blocks stacked along a leading axis)."""
  t = {"embedding/kernel": prm["patch_w"], "embedding/bias": prm["patch_b"], "cls": prm["cls"][None, None],
       "Transformer/encoder_norm/scale": prm["norm_s"], "Transformer/encoder_norm/bias": prm["norm_b"],
       "head/kernel": prm["head_w"], "head/bias": prm["head_b"]}
  ln2, mlp, att = ("LayerNorm_2", "MlpBlock_3", "MultiHeadDotProductAttention_1") if variant == "original" else \
      ("LayerNorm_1", "MlpBlock_0", "MultiHeadDotProductAttention_0")
  blocks = []
  for blk in prm["blocks"]:
    b = {"LayerNorm_0/scale": blk["ln1_s"], "LayerNorm_0/bias": blk["ln1_b"], f"{ln2}/scale": blk["ln2_s"],
         f"{ln2}/bias": blk["ln2_b"], f"{att}/out/kernel": blk["wo"], f"{att}/out/bias": blk["bo"],
         f"{mlp}/Dense_0/kernel": blk["w1"], f"{mlp}/Dense_0/bias": blk["b1"],
         f"{mlp}/Dense_1/kernel": blk["w2"], f"{mlp}/Dense_1/bias": blk["b2"]}
    for n, name in zip("qkv", ("query", "key", "value")):
      b[f"{att}/{name}/kernel"], b[f"{att}/{name}/bias"] = blk[f"w{n}"], blk[f"b{n}"]
    blocks.append(b)
  if variant == "scan":
    t.update({f"Transformer/encoderblock/{k}": np.stack([b[k] for b in blocks]) for k in blocks[0]})
  else:
    t.update({f"Transformer/encoderblock_{i}/{k}": v for i, b in enumerate(blocks) for k, v in b.items()})
  if variant == "original":
    t["Transformer/posembed_input/pos_embedding"] = np.concatenate([prm["pos_prefix"], prm["pos"]])[None]
    t = {f"params/{k}": v for k, v in t.items()}
  else:
    assert prm["pos_prefix"] is None
    t["pos_embedding"] = prm["pos"][None]
  return {k: v.astype(np.float32) for k, v in t.items()}


def timm_tensors(prm, dtype=np.float32):
  t = {"patch_embed.proj.weight": prm["patch_w"].transpose(3, 2, 0, 1), "patch_embed.proj.bias": prm["patch_b"],
       "cls_token": prm["cls"][None, None], "norm.weight": prm["norm_s"], "norm.bias": prm["norm_b"],
       "head.weight": prm["head_w"].T, "head.bias": prm["head_b"]}
  pos = prm["pos"] if prm["pos_prefix"] is None else np.concatenate([prm["pos_prefix"], prm["pos"]])
  t["pos_embed"] = pos[None]
  if len(prm["regs"]):
    t["reg_token"] = prm["regs"][None]
  for i, blk in enumerate(prm["blocks"]):
    fused = np.concatenate([blk[f"w{n}"].reshape(WIDTH, WIDTH).T for n in "qkv"])        # [3W (q|k|v, h, d), W]
    t.update({f"blocks.{i}.norm1.weight": blk["ln1_s"], f"blocks.{i}.norm1.bias": blk["ln1_b"],
              f"blocks.{i}.attn.qkv.weight": fused,
              f"blocks.{i}.attn.qkv.bias": np.concatenate([blk[f"b{n}"].reshape(-1) for n in "qkv"]),
              f"blocks.{i}.attn.proj.weight": blk["wo"].reshape(WIDTH, WIDTH).T,
              f"blocks.{i}.attn.proj.bias": blk["bo"],
              f"blocks.{i}.norm2.weight": blk["ln2_s"], f"blocks.{i}.norm2.bias": blk["ln2_b"],
              f"blocks.{i}.mlp.fc1.weight": blk["w1"].T, f"blocks.{i}.mlp.fc1.bias": blk["b1"],
              f"blocks.{i}.mlp.fc2.weight": blk["w2"].T, f"blocks.{i}.mlp.fc2.bias": blk["b2"]})
  return {k: np.asarray(v).astype(dtype) for k, v in t.items()}


def round_params(prm, dtype):
  """The logical parameters as stored in a checkpoint of ``dtype`` (for the reference of a bf16 checkpoint)."""
  cast = lambda v: None if v is None else np.asarray(v).astype(dtype).astype(np.float64)
  out = {k: cast(v) for k, v in prm.items() if k != "blocks"}
  out["blocks"] = [{k: cast(v) for k, v in blk.items()} for blk in prm["blocks"]]
  return out


def images_and_masks(seed=1):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(3, IMAGE, IMAGE, CHANNELS)).astype(np.float32)
  mask = np.array([[True, False, True, True], [False, False, False, False], [True, True, True, True]])
  return images, mask


def check_against_reference(model, prm, atol=1e-4):
  images, mask = images_and_masks()
  f = jax.jit(vit.masked_model_fn(model))
  got = np.asarray(f(jnp.asarray(images), jnp.asarray(mask)))
  want = np.stack([numpy_vit(prm, images[i].astype(np.float64), np.flatnonzero(mask[i])) for i in range(3)])
  np.testing.assert_allclose(got, want, atol=atol, rtol=1e-4)
  assert np.abs(want[0] - want[2]).max() > 1e-2                      # masking changes the reference output


# ---------------------------------------------------------------------------------------------------------------
# safetensors

def test_safetensors_reader_reads_a_hand_built_file(tmp_path):
  a = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
  b = np.array([1.5, -2.0, 65504.0], np.float16)
  c = np.array([[1.0, -0.5], [3.0, 1e30]], np.float32).astype(ml_dtypes.bfloat16)
  d = np.array([-3, 7], np.int64)
  header = {"__metadata__": {"format": "pt"}}
  blobs, offset = [], 0
  for name, arr, code in (("b", b, "F16"), ("a", a, "F32"), ("c.bf16", c, "BF16"), ("d", d, "I64")):
    raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
    blobs.append(raw)
    offset += len(raw)
  text = json.dumps(header).encode()
  path = tmp_path / "hand.safetensors"
  path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
  tensors, meta = convert.read_safetensors(path, with_metadata=True)
  assert meta == {"format": "pt"} and sorted(tensors) == ["a", "b", "c.bf16", "d"]
  np.testing.assert_array_equal(tensors["a"], a)
  np.testing.assert_array_equal(tensors["b"], b)
  assert tensors["c.bf16"].dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(tensors["c.bf16"].astype(np.float32), c.astype(np.float32))
  np.testing.assert_array_equal(tensors["d"], d)


def test_safetensors_writer_round_trip_and_errors(tmp_path):
  rng = np.random.default_rng(0)
  tensors = {"x": rng.normal(size=(3, 5)).astype(np.float32), "y": rng.normal(size=(7,)).astype(np.float16),
             "z": rng.normal(size=(2, 2, 2)).astype(ml_dtypes.bfloat16), "e": np.zeros((0, 4), np.float32)}
  path = tmp_path / "w.safetensors"
  convert.write_safetensors(path, tensors, metadata={"k": "v"})
  raw = path.read_bytes()
  (n,) = struct.unpack("<Q", raw[:8])
  assert n % 8 == 0 and json.loads(raw[8:8 + n])["x"] == {"dtype": "F32", "shape": [3, 5], "data_offsets": [0, 60]}
  back, meta = convert.read_safetensors(path, with_metadata=True)
  assert meta == {"k": "v"}
  for k, v in tensors.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape
    np.testing.assert_array_equal(back[k], v)
  (tmp_path / "short.safetensors").write_bytes(raw[:-4])
  with pytest.raises(ValueError, match="tensor 'z' .* needs 16 bytes"):
    convert.read_safetensors(tmp_path / "short.safetensors")
  (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", 10 ** 9) + b"{}")
  with pytest.raises(ValueError, match="header length 1000000000 exceeds the file size"):
    convert.read_safetensors(tmp_path / "bad.safetensors")
  with pytest.raises(TypeError, match="cannot write dtype complex64"):
    convert.write_safetensors(path, {"c": np.zeros(2, np.complex64)})


# ---------------------------------------------------------------------------------------------------------------
# Loading

@pytest.mark.parametrize("variant", ["big_vision", "original", "scan"])
def test_big_vision_checkpoint_matches_numpy_reference(tmp_path, variant):
  prm = random_params(seed=3, prefix_positions=variant == "original")
  path = tmp_path / "vit.npz"
  np.savez(path, **big_vision_tensors(prm, variant))
  model = convert.load_big_vision(path)
  c = model.config
  assert (c.width, c.depth, c.num_heads, c.mlp_dim, c.patch_size, c.num_channels, c.num_classes, c.image_size) == \
      (WIDTH, DEPTH, HEADS, MLP, PATCH, CHANNELS, CLASSES, IMAGE)
  check_against_reference(model, prm)


@pytest.mark.parametrize("num_registers,prefix_positions,dtype", [
    (0, True, np.float32),            # timm default: pos_embed rows for CLS + patches
    (2, False, np.float32),           # register model with no_embed_class=True: patch rows only
    (2, True, ml_dtypes.bfloat16),    # registers with positions, stored in bf16
])
def test_timm_checkpoint_matches_numpy_reference(tmp_path, num_registers, prefix_positions, dtype):
  prm = random_params(seed=4, num_registers=num_registers, prefix_positions=prefix_positions)
  path = tmp_path / "model.safetensors"
  convert.write_safetensors(path, timm_tensors(prm, dtype))
  model = convert.load_timm(path, num_heads=HEADS)
  assert model.config.num_registers == num_registers and model.config.image_size == IMAGE
  check_against_reference(model, round_params(prm, dtype))


def test_round_trips_are_exact(tmp_path):
  prm = random_params(seed=5, num_registers=1, prefix_positions=False)
  convert.write_safetensors(tmp_path / "a.safetensors", timm_tensors(prm))
  model = convert.load_timm(tmp_path / "a.safetensors", num_heads=HEADS)
  convert.save_timm(model, tmp_path / "b.safetensors")
  again = convert.load(tmp_path / "b.safetensors", num_heads=HEADS)
  assert again.config == model.config
  original = convert.model_params(model)
  for name, value in convert.model_params(again).items():
    np.testing.assert_array_equal(value, original[name], err_msg=name)
  # big_vision (no registers), through the .npz writer.
  prm = random_params(seed=6, prefix_positions=False)
  np.savez(tmp_path / "c.npz", **big_vision_tensors(prm))
  model = convert.load(tmp_path / "c.npz")
  convert.save_big_vision(model, tmp_path / "d.npz")
  with np.load(tmp_path / "c.npz") as c, np.load(tmp_path / "d.npz") as d:
    assert sorted(c.files) == sorted(d.files)
    for k in c.files:
      np.testing.assert_array_equal(c[k], d[k], err_msg=k)


def test_errors_name_the_key_and_both_shapes(tmp_path):
  good = timm_tensors(random_params(seed=7))
  path = tmp_path / "m.safetensors"

  def load_with(**changes):
    tensors = {k: v for k, v in {**good, **changes}.items() if v is not None}
    convert.write_safetensors(path, tensors)
    return convert.load_timm(path, num_heads=HEADS)

  with pytest.raises(ValueError, match=r"missing 'blocks.1.mlp.fc2.bias' \(expected shape \(16,\)\)"):
    load_with(**{"blocks.1.mlp.fc2.bias": None})
  with pytest.raises(ValueError, match=r"'blocks.0.attn.proj.weight': expected shape \(16, 16\), got \(16, 8\)"):
    load_with(**{"blocks.0.attn.proj.weight": np.zeros((16, 8), np.float32)})
  with pytest.raises(ValueError, match=r"unexpected \(unsupported\) keys \['fc_norm.weight'\]"):
    load_with(**{"fc_norm.weight": np.ones(16, np.float32)})
  with pytest.raises(KeyError, match="no 'cls_token' \\(class token"):
    load_with(cls_token=None)
  with pytest.raises(ValueError, match="cannot infer the patch grid from 7 position rows"):
    load_with(pos_embed=np.zeros((1, 7, 16), np.float32))
  with pytest.raises(ValueError, match="divisible by num_heads"):
    convert.write_safetensors(path, good)
    convert.load_timm(path, num_heads=3)
  with pytest.raises(ValueError, match="no classification head: pass num_classes="):
    load_with(**{"head.weight": None, "head.bias": None})
  with pytest.raises(ValueError, match="must end in .npz"):
    convert.load(tmp_path / "m.pt")
  with pytest.raises(ValueError, match=r"'Transformer/encoderblock_1/MlpBlock_0/Dense_0/kernel': expected shape "
                                       r"\(16, 24\), got \(16, 20\)"):
    tensors = big_vision_tensors(random_params(seed=7, prefix_positions=False))
    tensors["Transformer/encoderblock_1/MlpBlock_0/Dense_0/kernel"] = np.zeros((16, 20), np.float32)
    np.savez(tmp_path / "bad.npz", **tensors)
    convert.load_big_vision(tmp_path / "bad.npz")


def test_new_head_and_resized_positions(tmp_path):
  prm = random_params(seed=8)
  path = tmp_path / "m.safetensors"
  convert.write_safetensors(path, timm_tensors(prm))
  base = convert.load_timm(path, num_heads=HEADS)
  fresh = convert.load_timm(path, num_heads=HEADS, skip_head=True, num_classes=7)
  assert fresh.head.kernel.shape == (WIDTH, 7)
  base_params, fresh_params = convert.model_params(base), convert.model_params(fresh)
  for name, value in fresh_params.items():
    if not name.startswith("head/"):
      np.testing.assert_array_equal(value, base_params[name], err_msg=name)
  # A 12x12 input: the 2x2 position grid is resized bilinearly to 3x3; the CLS position stays folded into CLS.
  big = convert.load_timm(path, num_heads=HEADS, image_size=12)
  assert big.grid == (3, 3) and big.pos_embed.shape == (9, WIDTH)
  np.testing.assert_allclose(big.pos_embed[...], convert.resize_position_embedding(prm["pos"], (2, 2), (3, 3)),
                             atol=1e-6)
  np.testing.assert_allclose(big.cls[...][0], prm["cls"] + prm["pos_prefix"][0], atol=1e-6)
  # Bilinear resizing keeps a constant embedding constant and the four corners' mean at the centre.
  const = convert.resize_position_embedding(np.full((4, 2), 3.0), (2, 2), (3, 3))
  np.testing.assert_allclose(const, 3.0)
  corners = np.arange(4.0)[:, None]
  np.testing.assert_allclose(convert.resize_position_embedding(corners, (2, 2), (3, 3))[4], 1.5)


def test_cli_converts_to_orbax(tmp_path):
  prm = random_params(seed=9, prefix_positions=False)
  np.savez(tmp_path / "vit.npz", **big_vision_tensors(prm))
  directory = convert.main(["--src", str(tmp_path / "vit.npz"), "--dst", str(tmp_path / "out")])
  restored = convert.load_checkpoint(directory)
  check_against_reference(restored, prm)
  bf16 = convert.load_checkpoint(directory, dtype=jnp.bfloat16)
  assert bf16.config.dtype == jnp.bfloat16 and bf16.blocks[0].attn.qkv_kernel[...].dtype == jnp.float32


# ---------------------------------------------------------------------------------------------------------------
# Initialising a model for new classes from pretrained weights (moved here from the ViT Shapley driver's tests).

def test_init_from_pretrained(tmp_path):
  from flax import nnx

  source = vit.ViT(vit.config("nano/8", image_size=32, num_channels=1, num_classes=5), rngs=nnx.Rngs(1))
  convert.save_timm(source, tmp_path / "model.safetensors")
  convert.save_checkpoint(source, tmp_path / "converted")
  for path in (tmp_path / "model.safetensors", tmp_path / "converted"):
    model = vit.ViT(vit.config("nano/8", image_size=32, num_channels=1, num_classes=10), rngs=nnx.Rngs(0))
    convert.init_from_pretrained(model, str(path))
    got, want = convert.model_params(model), convert.model_params(source)
    for name, value in want.items():
      if not name.startswith("head/"):
        np.testing.assert_allclose(got[name], value, atol=1e-6, err_msg=name)
    assert got["head/kernel"].shape == (32, 10)                       # a fresh head for the new classes
  wrong = vit.ViT(vit.config("mu/8", image_size=32, num_channels=1, num_classes=10), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="does not fit"):
    convert.init_from_pretrained(wrong, str(tmp_path / "model.safetensors"))
