"""Pretrained ViT weights: big_vision ``.npz`` and timm ``.safetensors`` checkpoints <-> :class:`xattr.models.vit.ViT`.

Explaining a real image classifier starts from released weights, and two layouts cover most ViTs:

* **big_vision / google-research vision_transformer** ``.npz``: flattened Flax names such as
  ``embedding/kernel`` ``[p, p, C, width]``, ``cls``, ``pos_embedding``,
  ``Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel`` ``[width, heads, head_dim]``,
  ``.../MlpBlock_0/Dense_0/kernel``, ``Transformer/encoder_norm/scale``, ``head/kernel``. The original
  vision_transformer names (``Transformer/posembed_input/pos_embedding`` including the CLS position,
  ``LayerNorm_2``, ``MlpBlock_3``), a ``params/`` prefix and scanned blocks (``Transformer/encoderblock/...``
  with a leading depth axis) are accepted too.
* **timm** (also what the Hugging Face hub serves for timm models) ``.safetensors``: PyTorch names and layouts
  such as ``patch_embed.proj.weight`` ``[width, C, p, p]``, ``cls_token``, ``reg_token``, ``pos_embed``,
  ``blocks.0.attn.qkv.weight`` (fused ``[3 * width, width]``), ``blocks.0.mlp.fc1.weight``, ``norm.weight``,
  ``head.weight``.

Nothing is downloaded: users put the files on disk themselves. Loading infers the architecture from the tensor
shapes (patch size, width, depth, MLP width, classes, registers, image size from the position-embedding grid;
timm's fused qkv hides the head count, so it defaults to the standard one for the width, ``width // 64`` for
unknown widths; pass ``num_heads=`` if yours differs), validates every tensor against the configuration and
raises one error listing each missing, unexpected or mis-shaped key with the expected and received shapes.
Position embeddings are resized bilinearly when the configured grid differs from the checkpoint's. Learned
positions of CLS/register tokens are folded into those tokens (a constant token plus a constant position is one
constant). Supported: pre-LN ViTs with a class token, absolute learned position embeddings and a linear head
(or none, with ``skip_head=True``); not supported (a clear error names the keys): no class token, MAP heads,
pre-logits layers, LayerScale, qk-norm, ``fc_norm``.

The safetensors format is simple enough to read and write with numpy alone (no extra dependency): an 8-byte
little-endian header length, a JSON header mapping each name to ``dtype``, ``shape`` and ``data_offsets``, then
the raw little-endian bytes. F64/F32/F16/BF16 and integer/bool tensors are supported.

Command line: convert to an Orbax checkpoint that :func:`load_checkpoint` restores::

  python -m xattr.models.convert --src weights/ViT-S_16.npz --dst weights/vit_s16
  python -m xattr.models.convert --src weights/model.safetensors --dst weights/vit_s16 --num_heads=6

Example:
  >>> import tempfile, os
  >>> from flax import nnx
  >>> from xattr.models import vit
  >>> model = vit.ViT(vit.config("nano/8", image_size=16, num_channels=1, num_classes=3), rngs=nnx.Rngs(0))
  >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
  >>> save_timm(model, path)
  >>> loaded = load_timm(path, num_heads=2)
  >>> loaded.config == model.config
  True
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import struct
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from xattr.models import vit

__all__ = [
    "read_safetensors", "write_safetensors", "model_params", "set_params", "to_timm", "from_timm",
    "to_big_vision", "from_big_vision", "load_timm", "load_big_vision", "load", "save_timm", "save_big_vision",
    "save_checkpoint", "load_checkpoint", "resize_position_embedding", "config_to_dict", "config_from_dict",
    "init_from_pretrained",
]

Params = dict[str, Any]          # xattr parameter names ("blocks/0/attn/qkv_kernel") -> arrays

# ----------------------------------------------------------------------------------------------------------------
# safetensors

_ST_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}


def _st_code(dtype: np.dtype) -> str:
  dtype = np.dtype(dtype)
  if dtype.byteorder == ">":
    dtype = dtype.newbyteorder("<")
  for code, dt in _ST_DTYPES.items():
    if dtype == dt:
      return code
  raise TypeError(f"cannot write dtype {dtype} to safetensors; supported: "
                  f"{sorted(str(np.dtype(d)) for d in _ST_DTYPES.values())}.")


def read_safetensors(path: str | os.PathLike, *, with_metadata: bool = False
                     ) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], dict[str, str]]:
  """Reads every tensor of a ``.safetensors`` file into numpy arrays (BF16 as ``ml_dtypes.bfloat16``).

  Args:
    path: the file.
    with_metadata: also return the header's ``__metadata__`` (a str -> str dict, empty if absent).

  Example:
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "t.safetensors")
    >>> write_safetensors(p, {"w": np.arange(6, dtype=np.float16).reshape(2, 3)})
    >>> read_safetensors(p)["w"].tolist()
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
  """
  path = os.fspath(path)
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    raw = f.read(8)
    if len(raw) != 8:
      raise ValueError(f"{path} is not a safetensors file: {size} bytes, shorter than the 8-byte header length.")
    (header_len,) = struct.unpack("<Q", raw)
    if header_len > size - 8:
      raise ValueError(f"{path} is not a safetensors file: header length {header_len} exceeds the file size "
                       f"{size}.")
    try:
      header = json.loads(f.read(header_len).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
      raise ValueError(f"{path}: the safetensors header is not valid JSON ({err}).") from err
  if not isinstance(header, dict):
    raise ValueError(f"{path}: the safetensors header must be a JSON object, got {type(header).__name__}.")
  metadata = header.pop("__metadata__", None) or {}
  data_size = size - 8 - header_len
  data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len, shape=(data_size,)) if data_size else \
      np.zeros((0,), np.uint8)
  tensors = {}
  for name, info in header.items():
    code, shape, (begin, end) = info.get("dtype"), info.get("shape"), info.get("data_offsets", (None, None))
    if code not in _ST_DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {code!r}; supported: {sorted(_ST_DTYPES)}.")
    dtype = _ST_DTYPES[code]
    nbytes = math.prod(shape) * dtype.itemsize
    if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= data_size
            and end - begin == nbytes):
      raise ValueError(f"{path}: tensor {name!r} ({code}, shape {shape}) needs {nbytes} bytes, but its "
                       f"data_offsets are {[begin, end]} in a {data_size}-byte buffer.")
    tensors[name] = np.array(data[begin:end].view(dtype).reshape(shape))      # copy: do not keep the file mapped
  del data
  return (tensors, dict(metadata)) if with_metadata else tensors


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any],
                      metadata: Mapping[str, str] | None = None) -> None:
  """Writes numpy/JAX arrays to a ``.safetensors`` file (names sorted, header padded to 8 bytes; atomic)."""
  header: dict[str, Any] = {}
  arrays = []
  offset = 0
  for name in sorted(tensors):
    arr = np.asarray(tensors[name])
    code = _st_code(arr.dtype)
    arr = np.ascontiguousarray(arr.astype(_ST_DTYPES[code], copy=False))
    header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
    arrays.append(arr)
    offset += arr.nbytes
  if metadata:
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
  blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
  blob += b" " * (-len(blob) % 8)
  path = os.fspath(path)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for arr in arrays:
      f.write(arr.tobytes())
  os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------------
# xattr parameters by name

def _path_name(path: tuple[Any, ...]) -> str:
  return "/".join(str(p) for p in path)


def model_params(model: vit.ViT) -> Params:
  """The model's parameters as numpy arrays keyed by name, e.g. ``"blocks/0/attn/qkv_kernel"``."""
  return {_path_name(path): np.asarray(var.get_value()) for path, var in nnx.to_flat_state(nnx.state(model))}


def set_params(model: vit.ViT, params: Mapping[str, Any], *, strict: bool = True) -> None:
  """Sets ``model``'s parameters from ``{name: array}`` (cast to float32), checking names and shapes.

  Args:
    model: the ViT to update in place.
    params: names as in :func:`model_params`.
    strict: every parameter of the model must be given (else only the given ones are set).
  """
  state = nnx.state(model)
  flat = nnx.to_flat_state(state)
  names = {_path_name(path) for path, _ in flat}
  unknown = sorted(set(params) - names)
  missing = sorted(names - set(params)) if strict else []
  if unknown or missing:
    raise KeyError(f"params do not match the model: unknown {unknown[:10]}, missing {missing[:10]}.")
  leaves = []
  for path, var in flat:
    name = _path_name(path)
    if name in params:
      value = np.asarray(params[name], np.float32)
      if value.shape != tuple(var.shape):
        raise ValueError(f"parameter {name!r}: expected shape {tuple(var.shape)}, got {value.shape}.")
      var = var.replace(jnp.asarray(value))
    leaves.append((path, var))
  nnx.update(model, nnx.from_flat_state(leaves))


def _abstract_params(cfg: vit.ViTConfig) -> Params:
  """Parameter shapes of a ViT with config ``cfg`` (no computation)."""
  model = nnx.eval_shape(lambda: vit.ViT(cfg, rngs=nnx.Rngs(0)))
  return {_path_name(path): jax.ShapeDtypeStruct(var.shape, var.dtype)
          for path, var in nnx.to_flat_state(nnx.state(model))}


# ----------------------------------------------------------------------------------------------------------------
# Layouts. Each maps xattr parameters (except cls/registers/pos_embed, handled in _prefix_and_positions) to a
# checkpoint's names and back. The `to_*` functions use only methods shared by numpy and jax arrays, so that
# jax.eval_shape can run them to get the shapes a checkpoint must have.

def _bv_block(i: int) -> str:
  return f"Transformer/encoderblock_{i}/"


def _bv_renames(cfg: vit.ViTConfig) -> list[tuple[str, str]]:
  """(xattr name, big_vision name) of every tensor copied as is (no reshape, split or stack) in both directions."""
  pairs = []
  for i in range(cfg.depth):
    src, dst = f"blocks/{i}/", _bv_block(i)
    att = dst + "MultiHeadDotProductAttention_0/"
    for part in ("scale", "bias"):
      pairs += [(src + f"{ln}/{part}", dst + f"LayerNorm_{j}/{part}") for j, ln in enumerate(("norm1", "norm2"))]
    pairs += [(src + "attn/out_kernel", att + "out/kernel"), (src + "attn/out_bias", att + "out/bias")]
    for j in range(2):
      pairs += [(src + f"mlp/fc{j + 1}/{part}", dst + f"MlpBlock_0/Dense_{j}/{part}") for part in ("kernel", "bias")]
  return pairs + [("norm/scale", "Transformer/encoder_norm/scale"), ("norm/bias", "Transformer/encoder_norm/bias")]


_QKV = ("query", "key", "value")


def to_big_vision(params: Params, cfg: vit.ViTConfig) -> dict[str, Any]:
  """xattr parameters -> big_vision names/layouts (including ``cls`` ``[1, 1, W]`` and ``pos_embedding``
  ``[1, P, W]``; registers have no big_vision name and must be absent)."""
  p, c = params, cfg
  out = {"embedding/kernel": p["patch_embed/kernel"].reshape(c.patch_size, c.patch_size, c.num_channels, c.width),
         "embedding/bias": p["patch_embed/bias"]}
  out.update({bv: p[name] for name, bv in _bv_renames(c)})
  for i in range(c.depth):
    src, att = f"blocks/{i}/", _bv_block(i) + "MultiHeadDotProductAttention_0/"
    for j, name in enumerate(_QKV):
      out[att + f"{name}/kernel"] = p[src + "attn/qkv_kernel"][:, j]
      out[att + f"{name}/bias"] = p[src + "attn/qkv_bias"][j]
  out["head/kernel"] = p["head/kernel"]
  out["head/bias"] = p["head/bias"]
  if "cls" in p:
    out["cls"] = p["cls"][None]
  if "pos_embed" in p:
    out["pos_embedding"] = p["pos_embed"][None]
  return out


def from_big_vision(tensors: Mapping[str, Any], cfg: vit.ViTConfig) -> Params:
  """big_vision names/layouts (normalized, see module doc) -> xattr parameters (except cls/pos_embed)."""
  t, c = tensors, cfg
  out = {"patch_embed/kernel": t["embedding/kernel"].reshape(-1, c.width), "patch_embed/bias": t["embedding/bias"]}
  out.update({name: t[bv] for name, bv in _bv_renames(c)})
  for i in range(c.depth):
    dst, att = f"blocks/{i}/", _bv_block(i) + "MultiHeadDotProductAttention_0/"
    out[dst + "attn/qkv_kernel"] = np.stack([t[att + f"{n}/kernel"] for n in _QKV], axis=1)
    out[dst + "attn/qkv_bias"] = np.stack([t[att + f"{n}/bias"] for n in _QKV], axis=0)
  if "head/kernel" in t:
    out["head/kernel"] = t["head/kernel"]
    out["head/bias"] = t["head/bias"]
  return out


def _timm_renames(cfg: vit.ViTConfig) -> list[tuple[str, str]]:
  """(xattr name, timm name) of every tensor copied as is (norms and biases) in both directions."""
  pairs = []
  for i in range(cfg.depth):
    src, dst = f"blocks/{i}/", f"blocks.{i}."
    for ln in ("norm1", "norm2"):
      pairs += [(src + f"{ln}/scale", dst + f"{ln}.weight"), (src + f"{ln}/bias", dst + f"{ln}.bias")]
    pairs += [(src + "attn/out_bias", dst + "attn.proj.bias")]
    pairs += [(src + f"mlp/fc{j}/bias", dst + f"mlp.fc{j}.bias") for j in (1, 2)]
  return pairs + [("norm/scale", "norm.weight"), ("norm/bias", "norm.bias")]


def to_timm(params: Params, cfg: vit.ViTConfig) -> dict[str, Any]:
  """xattr parameters -> timm names/layouts. ``pos_embed`` gets zero rows for the prefix tokens when there are
  no registers (timm's default ``no_embed_class=False``) and none with registers (timm's register models)."""
  p, c = params, cfg
  w, hd = c.width, c.num_heads * c.head_dim
  kernel = p["patch_embed/kernel"].reshape(c.patch_size, c.patch_size, c.num_channels, w)
  out = {"patch_embed.proj.weight": kernel.transpose(3, 2, 0, 1), "patch_embed.proj.bias": p["patch_embed/bias"]}
  out.update({tm: p[name] for name, tm in _timm_renames(c)})
  for i in range(c.depth):
    src, dst = f"blocks/{i}/", f"blocks.{i}."
    out[dst + "attn.qkv.weight"] = p[src + "attn/qkv_kernel"].reshape(w, 3 * hd).T
    out[dst + "attn.qkv.bias"] = p[src + "attn/qkv_bias"].reshape(3 * hd)
    out[dst + "attn.proj.weight"] = p[src + "attn/out_kernel"].reshape(hd, w).T
    for j in (1, 2):
      out[dst + f"mlp.fc{j}.weight"] = p[src + f"mlp/fc{j}/kernel"].T
  out["head.weight"] = p["head/kernel"].T
  out["head.bias"] = p["head/bias"]
  if "cls" in p:
    out["cls_token"] = p["cls"][None]
  if p.get("registers") is not None:
    out["reg_token"] = p["registers"][None]
  if "pos_embed" in p:
    pos = p["pos_embed"]
    if not c.num_registers:
      pos = np.concatenate([np.zeros((1, w), np.asarray(pos).dtype), np.asarray(pos)], axis=0)
    out["pos_embed"] = pos[None]
  return out


def from_timm(tensors: Mapping[str, Any], cfg: vit.ViTConfig) -> Params:
  """timm names/layouts -> xattr parameters (except cls/registers/pos_embed)."""
  t, c = tensors, cfg
  w, h, d = c.width, c.num_heads, c.head_dim
  out = {"patch_embed/kernel": t["patch_embed.proj.weight"].transpose(2, 3, 1, 0).reshape(-1, w),
         "patch_embed/bias": t["patch_embed.proj.bias"]}
  out.update({name: t[tm] for name, tm in _timm_renames(c)})
  for i in range(c.depth):
    src, dst = f"blocks.{i}.", f"blocks/{i}/"
    out[dst + "attn/qkv_kernel"] = t[src + "attn.qkv.weight"].T.reshape(w, 3, h, d)
    out[dst + "attn/qkv_bias"] = t[src + "attn.qkv.bias"].reshape(3, h, d)
    out[dst + "attn/out_kernel"] = t[src + "attn.proj.weight"].T.reshape(h, d, w)
    for j in (1, 2):
      out[dst + f"mlp/fc{j}/kernel"] = t[src + f"mlp.fc{j}.weight"].T
  if "head.weight" in t:
    out["head/kernel"] = t["head.weight"].T
    out["head/bias"] = t["head.bias"]
  return out


@dataclasses.dataclass(frozen=True)
class _Layout:
  name: str
  to_layout: Callable[[Params, vit.ViTConfig], dict[str, Any]]
  from_layout: Callable[[Mapping[str, Any], vit.ViTConfig], Params]
  cls: str
  registers: str | None
  pos: str
  head: tuple[str, str]


_BIG_VISION = _Layout("big_vision", to_big_vision, from_big_vision, "cls", None, "pos_embedding",
                      ("head/kernel", "head/bias"))
_TIMM = _Layout("timm", to_timm, from_timm, "cls_token", "reg_token", "pos_embed", ("head.weight", "head.bias"))


# ----------------------------------------------------------------------------------------------------------------
# Reading checkpoints

def _normalize_big_vision(tensors: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str], bool]:
  """Canonical big_vision names; returns (tensors, {canonical name: original name}, pos includes CLS)."""
  source: dict[str, str] = {}
  items: dict[str, np.ndarray] = {}
  for name, value in tensors.items():
    key = name[len("params/"):] if name.startswith("params/") else name
    if key.startswith("Transformer/encoderblock/"):                 # scanned blocks: leading depth axis
      rest = key[len("Transformer/encoderblock/"):]
      for i in range(value.shape[0]):
        items[f"Transformer/encoderblock_{i}/{rest}"] = value[i]
        source[f"Transformer/encoderblock_{i}/{rest}"] = f"{name}[{i}]"
      continue
    items[key] = value
    source[key] = name
  pos_has_cls = "Transformer/posembed_input/pos_embedding" in items
  if pos_has_cls:
    items["pos_embedding"] = items.pop("Transformer/posembed_input/pos_embedding")
    source["pos_embedding"] = source.pop("Transformer/posembed_input/pos_embedding")
  # Module indices differ between codebases (LayerNorm_0/1 vs LayerNorm_0/2, MlpBlock_0 vs MlpBlock_3): renumber
  # the modules of each kind within a block in order of their index.
  pattern = re.compile(r"^(Transformer/encoderblock_\d+/)(LayerNorm|MultiHeadDotProductAttention|MlpBlock)_(\d+)/(.*)$")
  indices: dict[tuple[str, str], set[int]] = {}
  for key in items:
    m = pattern.match(key)
    if m:
      indices.setdefault((m[1], m[2]), set()).add(int(m[3]))
  out, out_source = {}, {}
  for key, value in items.items():
    m = pattern.match(key)
    if m:
      rank = sorted(indices[(m[1], m[2])]).index(int(m[3]))
      new = f"{m[1]}{m[2]}_{rank}/{m[4]}"
    else:
      new = key
    out[new], out_source[new] = value, source[key]
  return out, out_source, pos_has_cls


def _is_square(n: int) -> bool:
  return n > 0 and math.isqrt(n) ** 2 == n


def resize_position_embedding(pos: np.ndarray, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> np.ndarray:
  """Bilinear resize of patch position embeddings ``[gh * gw, W]`` between grids (row-major).

  Example:
    >>> resize_position_embedding(np.ones((4, 3)), (2, 2), (3, 3)).shape
    (9, 3)
  """
  pos = np.asarray(pos, np.float32)
  if tuple(old_grid) == tuple(new_grid):
    return pos
  grid = jnp.asarray(pos.reshape(*old_grid, pos.shape[-1]))
  return np.asarray(jax.image.resize(grid, (*new_grid, pos.shape[-1]), method="bilinear")).reshape(-1, pos.shape[-1])


def _prefix_and_positions(tensors: Mapping[str, np.ndarray], layout: _Layout, cfg: vit.ViTConfig,
                          pos_rows_prefix: int, grid: tuple[int, int], source: Mapping[str, str]) -> Params:
  """xattr's cls/registers/pos_embed: prefix-token positions folded into the tokens, patch positions resized."""
  w = cfg.width
  pos = np.asarray(tensors[layout.pos], np.float32).reshape(-1, w)
  cls = np.asarray(tensors[layout.cls], np.float32).reshape(1, w)
  out: Params = {}
  regs = None
  if cfg.num_registers:
    regs = np.asarray(tensors[layout.registers], np.float32).reshape(-1, w)
    if regs.shape[0] != cfg.num_registers:
      raise ValueError(f"{source.get(layout.registers, layout.registers)}: expected {cfg.num_registers} register "
                       f"tokens (config.num_registers), got {regs.shape[0]}.")
  if pos_rows_prefix >= 1:
    cls = cls + pos[:1]
  if pos_rows_prefix > 1:
    regs = regs + pos[1:pos_rows_prefix]
  out["cls"] = cls
  if regs is not None:
    out["registers"] = regs
  out["pos_embed"] = resize_position_embedding(pos[pos_rows_prefix:], grid, cfg.grid)
  return out


def _infer_pos_layout(num_rows: int, candidates: list[int], cfg_patches: int | None, key: str,
                      ) -> tuple[int, tuple[int, int] | None]:
  """(number of prefix rows in the position embedding, checkpoint patch grid or None if it equals the config's)."""
  for k in candidates:
    if cfg_patches is not None and num_rows - k == cfg_patches:
      return k, None
  for k in candidates:
    if _is_square(num_rows - k):
      g = math.isqrt(num_rows - k)
      return k, (g, g)
  raise ValueError(f"{key}: cannot infer the patch grid from {num_rows} position rows (expected a square number "
                   f"of patches plus {sorted(set(candidates))} prefix rows); pass image_size= to match it.")


_TIMM_HEADS = {192: 3, 384: 6, 512: 8, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16}


def _require(tensors: Mapping[str, Any], key: str, what: str) -> np.ndarray:
  if key not in tensors:
    raise KeyError(f"checkpoint has no {key!r} ({what}); found keys such as {sorted(tensors)[:8]}.")
  return tensors[key]


def _infer_config(tensors: Mapping[str, np.ndarray], layout: _Layout, source: Mapping[str, str],
                  pos_has_cls: bool | None, overrides: dict[str, Any]) -> tuple[vit.ViTConfig, int, tuple[int, int]]:
  """Config from the tensor shapes (overrides win); also the position-embedding prefix rows and grid."""
  if layout is _TIMM:
    w, c, p, _ = _require(tensors, "patch_embed.proj.weight", "patch embedding").shape
    depth = len({k.split(".")[1] for k in tensors if re.match(r"^blocks\.\d+\.", k)})
    mlp = _require(tensors, "blocks.0.mlp.fc1.weight", "first MLP").shape[0]
    heads = _TIMM_HEADS.get(w, max(w // 64, 1))
    classes = tensors["head.weight"].shape[0] if "head.weight" in tensors else None
    regs = tensors["reg_token"].reshape(-1, w).shape[0] if "reg_token" in tensors else 0
  else:
    p, _, c, w = _require(tensors, "embedding/kernel", "patch embedding").shape
    depth = len({k.split("/")[1] for k in tensors if re.match(r"^Transformer/encoderblock_\d+/", k)})
    mlp = _require(tensors, _bv_block(0) + "MlpBlock_0/Dense_0/kernel", "first MLP").shape[-1]
    heads = _require(tensors, _bv_block(0) + "MultiHeadDotProductAttention_0/query/kernel",
                     "first attention").shape[1]
    classes = tensors["head/kernel"].shape[-1] if "head/kernel" in tensors else None
    regs = 0
  _require(tensors, layout.cls, "class token; models without one are not supported")
  pos = _require(tensors, layout.pos, "learned position embedding; sincos embeddings are not supported")
  fields = dict(patch_size=int(p), num_channels=int(c), width=int(w), depth=int(depth), num_heads=int(heads),
                mlp_dim=int(mlp), num_registers=int(regs))
  if classes is not None:
    fields["num_classes"] = int(classes)
  fields.update(overrides)
  if "num_classes" not in fields:
    raise ValueError("checkpoint has no classification head: pass num_classes= (the head is then freshly "
                     "initialized, as with skip_head=True).")
  num_rows = int(np.prod(pos.shape[:-1]))
  n_reg = int(fields["num_registers"])
  # timm: no_embed_class models have patch rows only, others rows for CLS (+ registers) too. If both readings give a
  # square grid (only possible for tiny grids), the larger grid wins; image_size= settles it.
  candidates = ([1] if pos_has_cls else [0]) if layout is _BIG_VISION else sorted({0, 1, 1 + n_reg})
  cfg_patches = None
  if "image_size" in fields:
    probe = vit.ViTConfig(**{**dict(num_classes=1, image_size=1), **fields})
    cfg_patches = probe.num_patches
  prefix, grid = _infer_pos_layout(num_rows, candidates, cfg_patches, source.get(layout.pos, layout.pos))
  if "image_size" not in fields:
    fields["image_size"] = grid[0] * int(fields["patch_size"])
  cfg = vit.ViTConfig(**fields)
  return cfg, prefix, grid or cfg.grid


def _check_shapes(tensors: Mapping[str, np.ndarray], layout: _Layout, cfg: vit.ViTConfig, source: Mapping[str, str],
                  skip_head: bool) -> None:
  """Raises one error listing every missing, unexpected or mis-shaped key of the checkpoint."""
  abstract = {k: v for k, v in _abstract_params(cfg).items() if k not in ("cls", "registers", "pos_embed")}
  expected = jax.eval_shape(lambda p: layout.to_layout(p, cfg), abstract)
  handled = {layout.cls, layout.pos} | ({layout.registers} if layout.registers else set())
  if skip_head:
    handled |= set(layout.head)
    expected = {k: v for k, v in expected.items() if k not in layout.head}
  problems = []
  for key, spec in expected.items():
    if key not in tensors:
      problems.append(f"missing {key!r} (expected shape {tuple(spec.shape)})")
    elif tuple(tensors[key].shape) != tuple(spec.shape):
      problems.append(f"{source.get(key, key)!r}: expected shape {tuple(spec.shape)}, got {tuple(tensors[key].shape)}")
  unexpected = sorted(k for k in tensors if k not in expected and k not in handled)
  if unexpected:
    problems.append(f"unexpected (unsupported) keys {[source.get(k, k) for k in unexpected[:10]]}"
                    + (f" and {len(unexpected) - 10} more" if len(unexpected) > 10 else ""))
  if problems:
    summary = (f"width={cfg.width}, depth={cfg.depth}, num_heads={cfg.num_heads}, mlp_dim={cfg.mlp_dim}, "
               f"patch_size={cfg.patch_size}, num_channels={cfg.num_channels}, num_classes={cfg.num_classes}")
    raise ValueError(f"{layout.name} checkpoint does not match a ViT with {summary}:\n  " + "\n  ".join(problems))


def _load(tensors: dict[str, np.ndarray], layout: _Layout, source: dict[str, str], pos_has_cls: bool | None, *,
          rngs: nnx.Rngs | None, skip_head: bool, overrides: dict[str, Any]) -> vit.ViT:
  cfg, prefix_rows, grid = _infer_config(tensors, layout, source, pos_has_cls, overrides)
  if not skip_head and layout.head[0] not in tensors:
    skip_head = True                      # no head in the checkpoint: keep a fresh one (num_classes was given)
  _check_shapes(tensors, layout, cfg, source, skip_head)
  params = layout.from_layout({k: np.asarray(v, np.float32) for k, v in tensors.items()}, cfg)
  params.update(_prefix_and_positions(tensors, layout, cfg, prefix_rows, grid, source))
  # Every other parameter comes from the checkpoint: no random initialization (slow for big models) but the head's.
  model = nnx.eval_shape(lambda: vit.ViT(cfg, rngs=nnx.Rngs(0)))
  if skip_head:
    params = {k: v for k, v in params.items() if not k.startswith("head/")}
    model.head = vit.make_head(cfg, rngs=rngs if rngs is not None else nnx.Rngs(0))
  set_params(model, params, strict=not skip_head)
  return model


def load_big_vision(path: str | os.PathLike, *, rngs: nnx.Rngs | None = None, skip_head: bool = False,
                    **overrides: Any) -> vit.ViT:
  """A :class:`~xattr.models.vit.ViT` from a big_vision / vision_transformer ``.npz`` checkpoint.

  Args:
    path: the ``.npz`` file.
    rngs: initializes the head when it is not loaded.
    skip_head: keep a freshly initialized head (e.g. to fine-tune on ``num_classes=`` new classes).
    **overrides: :class:`~xattr.models.vit.ViTConfig` fields; ``image_size`` other than the checkpoint's resizes
      the position embeddings; ``dtype``, ``removal`` and ``pool`` choose how the model runs.
  """
  with np.load(os.fspath(path)) as npz:
    raw = {k: npz[k] for k in npz.files}
  tensors, source, pos_has_cls = _normalize_big_vision(raw)
  return _load(tensors, _BIG_VISION, source, pos_has_cls, rngs=rngs, skip_head=skip_head, overrides=overrides)


def load_timm(path: str | os.PathLike, *, rngs: nnx.Rngs | None = None, skip_head: bool = False,
              **overrides: Any) -> vit.ViT:
  """A :class:`~xattr.models.vit.ViT` from a timm ``.safetensors`` checkpoint (see :func:`load_big_vision`).

  timm's fused qkv weights hide the number of heads: it defaults to the standard one for the width (Ti 3, S 6,
  B 12, L/H 16, else ``width // 64``); pass ``num_heads=`` for other models.
  """
  tensors = read_safetensors(path)
  return _load(dict(tensors), _TIMM, {k: k for k in tensors}, None, rngs=rngs, skip_head=skip_head,
               overrides=overrides)


def load(path: str | os.PathLike, **kwargs: Any) -> vit.ViT:
  """:func:`load_big_vision` for ``.npz`` files, :func:`load_timm` for ``.safetensors`` files."""
  suffix = os.fspath(path).rsplit(".", 1)[-1].lower()
  if suffix == "npz":
    return load_big_vision(path, **kwargs)
  if suffix == "safetensors":
    return load_timm(path, **kwargs)
  raise ValueError(f"path must end in .npz (big_vision) or .safetensors (timm), got {os.fspath(path)!r}.")


# ----------------------------------------------------------------------------------------------------------------
# Writing checkpoints

def save_timm(model: vit.ViT, path: str | os.PathLike) -> None:
  """Writes ``model`` as a timm-layout ``.safetensors`` file (float32; config in the metadata)."""
  tensors = to_timm(model_params(model), model.config)
  write_safetensors(path, tensors, metadata={"format": "pt", "xattr_config": json.dumps(config_to_dict(model.config))})


def save_big_vision(model: vit.ViT, path: str | os.PathLike) -> None:
  """Writes ``model`` as a big_vision-layout ``.npz`` file (no registers: big_vision has no name for them)."""
  if model.config.num_registers:
    raise ValueError(f"big_vision checkpoints have no register tokens; this model has "
                     f"{model.config.num_registers}. Use save_timm instead.")
  np.savez(os.fspath(path), **to_big_vision(model_params(model), model.config))


def config_to_dict(cfg: vit.ViTConfig) -> dict[str, Any]:
  """JSON-friendly dict of a config (dtype by name)."""
  out = dataclasses.asdict(cfg)
  out["dtype"] = jnp.dtype(cfg.dtype).name
  if isinstance(out["image_size"], tuple):
    out["image_size"] = list(out["image_size"])
  return out


def config_from_dict(d: Mapping[str, Any], **overrides: Any) -> vit.ViTConfig:
  """Inverse of :func:`config_to_dict`."""
  d = {**d, **overrides}
  if isinstance(d.get("dtype"), str):
    d["dtype"] = getattr(jnp, d["dtype"])
  if isinstance(d.get("image_size"), list):
    d["image_size"] = tuple(d["image_size"])
  return vit.ViTConfig(**d)


def save_checkpoint(model: vit.ViT, directory: str | os.PathLike) -> str:
  """Saves ``model`` as ``directory/config.json`` plus an Orbax checkpoint ``directory/params``; returns it."""
  import orbax.checkpoint as ocp               # heavy import, only needed here

  directory = os.path.abspath(os.fspath(directory))
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config_to_dict(model.config), f, indent=2)
  state = {k.replace("/", "."): v for k, v in model_params(model).items()}
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(os.path.join(directory, "params"), state, force=True)
    ckpt.wait_until_finished()
  return directory


def load_checkpoint(directory: str | os.PathLike, **overrides: Any) -> vit.ViT:
  """Restores a model saved by :func:`save_checkpoint` (``overrides`` may change e.g. ``dtype`` or ``removal``)."""
  import orbax.checkpoint as ocp

  directory = os.path.abspath(os.fspath(directory))
  with open(os.path.join(directory, "config.json")) as f:
    cfg = config_from_dict(json.load(f), **overrides)
  abstract = {k.replace("/", "."): v for k, v in _abstract_params(cfg).items()}
  with ocp.StandardCheckpointer() as ckpt:
    state = ckpt.restore(os.path.join(directory, "params"), abstract)
  model = nnx.eval_shape(lambda: vit.ViT(cfg, rngs=nnx.Rngs(0)))
  set_params(model, {k.replace(".", "/"): v for k, v in state.items()})
  return model


def init_from_pretrained(model: vit.ViT, path: str | os.PathLike) -> None:
  """Copies pretrained weights into ``model`` in place: all but the head, which stays fresh for the new classes.

  Args:
    model: the ViT to initialise (its config fixes image size, dtype, removal and head count).
    path: a big_vision ``.npz``, a timm ``.safetensors`` file, or a folder written by
      ``python -m xattr.models.convert``. Position embeddings are resized to the model's grid when needed.

  Raises:
    ValueError: the checkpoint's architecture does not fit ``model`` (the message names both).

  Example:
    >>> import tempfile, os
    >>> src = vit.ViT(vit.config("nano/8", image_size=16, num_channels=1, num_classes=3), rngs=nnx.Rngs(0))
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> save_timm(src, path)
    >>> dst = vit.ViT(vit.config("nano/8", image_size=16, num_channels=1, num_classes=5), rngs=nnx.Rngs(1))
    >>> init_from_pretrained(dst, path)
    >>> bool(np.allclose(model_params(dst)["cls"], model_params(src)["cls"]))
    True
  """
  from absl import logging

  cfg = model.config
  kwargs = dict(image_size=cfg.image_size, dtype=cfg.dtype, removal=cfg.removal, num_heads=cfg.num_heads)
  if os.path.isdir(path):
    pretrained = load_checkpoint(path, **kwargs)
  else:
    pretrained = load(path, skip_head=True, num_classes=cfg.num_classes, **kwargs)
  params = {k: v for k, v in model_params(pretrained).items() if not k.startswith("head/")}
  try:
    set_params(model, params, strict=False)
  except (KeyError, ValueError) as err:
    raise ValueError(f"model.init_from={os.fspath(path)!r} does not fit model.name={cfg.width}-wide, "
                     f"{cfg.depth}-deep config: {err} Set model.name (and overrides) to the checkpoint's "
                     "architecture.") from err
  logging.info("classifier initialised from %s (%d tensors, head left fresh)", path, len(params))


# ----------------------------------------------------------------------------------------------------------------
# Command line

def main(argv: list[str] | None = None) -> str:
  """``python -m xattr.models.convert --src FILE --dst DIR [overrides]``: checkpoint -> Orbax; returns DIR."""
  import argparse

  parser = argparse.ArgumentParser(prog="python -m xattr.models.convert", description=__doc__.split("\n\n")[0])
  parser.add_argument("--src", required=True, help="big_vision .npz or timm .safetensors checkpoint")
  parser.add_argument("--dst", required=True, help="output directory (config.json + Orbax params)")
  parser.add_argument("--num_heads", type=int, help="attention heads (timm checkpoints hide them)")
  parser.add_argument("--image_size", type=int, help="input side; resizes the position embeddings")
  parser.add_argument("--num_classes", type=int, help="classes of a fresh head (with --skip_head)")
  parser.add_argument("--skip_head", action="store_true", help="do not load the head; initialize a fresh one")
  parser.add_argument("--pool", choices=vit.POOLS, help="pooling of the final tokens")
  args = parser.parse_args(argv)
  overrides = {k: getattr(args, k) for k in ("num_heads", "image_size", "num_classes", "pool")
               if getattr(args, k) is not None}
  model = load(args.src, skip_head=args.skip_head, **overrides)
  directory = save_checkpoint(model, args.dst)
  print(f"converted {args.src} -> {directory}\n  config: {config_to_dict(model.config)}\n"
        f"  load with: xattr.models.convert.load_checkpoint({directory!r})")
  return directory


if __name__ == "__main__":
  main()
