"""Block-wise resumable sampling: long runs of distributional samples saved block by block.

A valuation job draws hundreds of thousands of marginal contributions. :func:`sample_in_blocks` splits the
samples into blocks of ``block_size``, computes each with :func:`xattr.valuation.samplers.distributional` and
saves it at once (:func:`xattr.artifacts.compute_or_load`: written to a temporary file, then renamed). A killed
run, started again, loads the finished blocks and computes only the missing ones. Each block's fingerprint
covers the caller's fingerprint (the utility and settings), the key, the block's points, sizes and sample ids,
the balance rule and the sampling code (:data:`SAMPLING_MODULES`), so a block is never reused for other
samples. Since every sample's subset is drawn from ``fold_in(key, id)``, the result does not depend on the block
size, the chunk size or the device count.

Example:
  >>> import os, tempfile, jax, numpy as np
  >>> from xattr.valuation import blocks, utility
  >>> rng = np.random.default_rng(0); x = rng.normal(size=(40, 2)).astype(np.float32)
  >>> y = (x[:, 0] > 0).astype(np.int32)
  >>> u = utility.LogisticRegression.create(x[:30], y[:30], x[30:], y[30:], num_classes=2)
  >>> points, sizes = np.repeat(np.arange(3), 4), blocks.even_sizes(12, 5, 20)
  >>> d = tempfile.mkdtemp()
  >>> out = blocks.sample_in_blocks(u, jax.random.key(0), points, sizes, np.arange(12), directory=d,
  ...                               fingerprint="demo", block_size=5, chunk_size=8, progress=False)
  >>> out["neg_ce"].shape, sorted(os.listdir(d))
  ((12,), ['block_000000000.npz', 'block_000000005.npz', 'block_000000010.npz'])
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np
import tqdm

from xattr import artifacts
from xattr.valuation import samplers, utility

__all__ = ["SAMPLING_MODULES", "even_sizes", "block_path", "sample_in_blocks"]

SECONDS = "seconds"
SPACINGS = ("linear", "geometric")
# The code a block's samples are computed by: editing one of these modules recomputes the blocks.
SAMPLING_MODULES = ("xattr.valuation.samplers", "xattr.valuation.utility", "xattr.models.mlp", "xattr.parallel",
                    "xattr._checks")


def even_sizes(num: int, k_min: int, k_max: int, spacing: str = "linear") -> np.ndarray:
  """Sizes spread evenly over [k_min, k_max): the ground truth's stratified stand-in for k ~ U[k_min, k_max)
  (``spacing='linear'``), or spread evenly in log k (``'geometric'``: as many sizes per octave at small k as at
  large k, for curves over a wide range).

  Example:
    >>> even_sizes(4, 10, 30).tolist(), even_sizes(4, 10, 160, "geometric").tolist()
    ([12, 17, 22, 27], [14, 28, 56, 113])
  """
  if num < 1 or not 1 <= k_min < k_max:
    raise ValueError(f"even_sizes needs num >= 1 and 1 <= k_min < k_max, got num={num}, k_min={k_min}, "
                     f"k_max={k_max}.")
  if spacing not in SPACINGS:
    raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}.")
  u = (np.arange(num) + 0.5) / num
  if spacing == "linear":
    return (k_min + np.floor(u * (k_max - k_min))).astype(np.int32)
  return np.clip(np.floor(k_min * (k_max / k_min) ** u), k_min, k_max - 1).astype(np.int32)


def block_path(directory: str | os.PathLike, start: int) -> str:
  """The file of the block that starts at sample ``start``."""
  return os.path.join(os.fspath(directory), f"block_{start:09d}.npz")


def sample_in_blocks(u: utility.Utility, key: jax.Array, points: Any, sizes: Any, ids: Any, *,
                     directory: str | os.PathLike, fingerprint: str, block_size: int, balance: str = "proportional",
                     mesh: jax.sharding.Mesh | None = None, chunk_size: int = 1024, desc: str = "samples",
                     progress: bool = True) -> dict[str, Any]:
  """Distributional samples for (points, sizes, ids), computed and saved block by block (resumable).

  Args:
    u: the utility (see :mod:`xattr.valuation.utility`).
    key: PRNG key; sample i's subset is drawn from ``fold_in(key, ids[i])``.
    points, sizes, ids: int[m] the point each sample values, its subset size and its sample id.
    directory: folder of the block files (``block_<start>.npz``).
    fingerprint: what the samples depend on besides the arguments and the sampling code (the utility: its data
      and settings); see :func:`xattr.artifacts.fingerprint`.
    block_size: samples per saved block (the resume granularity).
    balance, mesh, chunk_size: as in :func:`xattr.valuation.samplers.distributional`.
    desc: label of the progress bar over blocks (shown when there is more than one block).
    progress: progress bars.

  Returns:
    The arrays of :func:`~xattr.valuation.samplers.distributional` for all m samples, and ``'seconds'``: the
    compute time of the blocks summed (kept in each block, so the rate survives a resume).
  """
  points, sizes, ids = np.asarray(points), np.asarray(sizes), np.asarray(ids)
  n = len(points)
  if block_size < 1 or n == 0 or sizes.shape != (n,) or ids.shape != (n,):
    raise ValueError(f"sample_in_blocks needs block_size >= 1 and points, sizes, ids of one non-zero length, got "
                     f"block_size={block_size}, shapes {points.shape}, {sizes.shape}, {ids.shape}.")
  parts = []
  for start in tqdm.trange(0, n, block_size, desc=desc, unit="block", dynamic_ncols=True,
                           disable=not progress or n <= block_size):
    sl = slice(start, min(start + block_size, n))

    def compute(sl=sl):
      t0 = time.perf_counter()
      out = samplers.distributional(u, key, points[sl], sizes[sl], ids=ids[sl], balance=balance, mesh=mesh,
                                    chunk_size=chunk_size, progress=progress)
      return {**out, SECONDS: np.array([time.perf_counter() - t0])}

    fp = artifacts.fingerprint(fingerprint, balance, data=[key, points[sl], sizes[sl], ids[sl]],
                               modules=SAMPLING_MODULES)
    parts.append(artifacts.compute_or_load(block_path(directory, start), fp, compute))
  out: dict[str, Any] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != SECONDS}
  out[SECONDS] = float(sum(p[SECONDS].sum() for p in parts))
  return out
