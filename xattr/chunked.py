"""Resumable chunked map on the host: long per-example computations that survive being killed.

:func:`map_chunks` applies a jitted function to fixed-size chunks of its inputs and writes each finished chunk
to disk (write to a temporary file, then rename, so a kill never leaves a half-written chunk). Run again with
the same ``tag`` it loads the finished chunks and computes only the rest (chunks are
:mod:`xattr.artifacts` bundles). The last chunk is padded (repeating its
last row) so the function compiles once.

Example:
  >>> import os, tempfile, numpy as np
  >>> from xattr import chunked
  >>> fn = lambda batch: {"double": 2 * batch["x"]}
  >>> folder = tempfile.mkdtemp()
  >>> out = chunked.map_chunks(fn, {"x": np.arange(5.0)}, chunk_size=2, directory=folder, tag="v1",
  ...                          progress=False)
  >>> out["double"].tolist()
  [0.0, 2.0, 4.0, 6.0, 8.0]
  >>> sorted(os.listdir(folder))
  ['chunk_000000_000002.npz', 'chunk_000002_000004.npz', 'chunk_000004_000005.npz']
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import tqdm
from absl import logging

from xattr import _checks, artifacts

__all__ = ["map_chunks"]


def _leading(inputs: Any) -> int:
  leaves = jax.tree.leaves(inputs)
  if not leaves:
    raise ValueError("inputs must be a non-empty pytree of arrays sharing their leading axis.")
  n = int(np.shape(leaves[0])[0])
  if any(int(np.shape(leaf)[0]) != n for leaf in leaves):
    raise ValueError(f"inputs must share their leading axis; got shapes {[np.shape(leaf) for leaf in leaves]}.")
  return n


def _as_dict(out: Any) -> dict[str, Any]:
  if hasattr(out, "_asdict"):
    return dict(out._asdict())
  if isinstance(out, Mapping):
    return dict(out)
  raise TypeError(f"fn must return a dict or NamedTuple of arrays, got {type(out).__name__}.")


def map_chunks(fn: Callable[[Any], Any], inputs: Any, *, chunk_size: int, directory: str | os.PathLike | None = None,
               tag: str = "", desc: str = "chunks", progress: bool = True) -> dict[str, np.ndarray]:
  """``fn(chunk) -> dict/NamedTuple of [chunk, ...] arrays`` over ``inputs`` chunk by chunk, resumably.

  Args:
    fn: called on the same pytree as ``inputs`` with ``chunk_size`` rows (jit it yourself).
    inputs: pytree of arrays sharing the leading (example) axis.
    chunk_size: rows per call; every call gets exactly this many (the last chunk is padded).
    directory: where finished chunks go (``chunk_<start>_<end>.npz``); None keeps nothing.
    tag: a fingerprint of everything the results depend on (see :func:`xattr.artifacts.fingerprint`); saved
      chunks with another tag are recomputed.
    desc: progress-bar label.
    progress: show a tqdm bar.

  Returns:
    dict name -> numpy array stacked over all rows.
  """
  n = _leading(inputs)
  chunk_size = _checks.positive_int("chunk_size", chunk_size)
  if directory is not None:
    os.makedirs(directory, exist_ok=True)
  parts, reused = [], 0
  with tqdm.tqdm(total=n, desc=desc, unit="input", dynamic_ncols=True, disable=not progress) as bar:
    for start in range(0, n, chunk_size):
      end = min(start + chunk_size, n)
      path = os.path.join(directory, f"chunk_{start:06d}_{end:06d}.npz") if directory is not None else None
      chunk = artifacts.load(path, tag) if path else None
      if chunk is None:
        idx = np.minimum(np.arange(start, start + chunk_size), end - 1)
        out = _as_dict(fn(jax.tree.map(lambda a: a[idx], inputs)))
        chunk = {k: np.asarray(v)[:end - start] for k, v in out.items()}
        if path:
          artifacts.save(path, chunk, tag)
      else:
        reused += 1
      parts.append(chunk)
      bar.update(end - start)
  if reused:
    logging.info("%s: reused %d saved chunk(s) from %s", desc, reused, directory)
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
