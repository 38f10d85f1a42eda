"""Timing shared by the benchmarks: compiled work measured after a warm-up call, median of repeats."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def median_time(fn: Callable[[], Any], repeats: int) -> float:
  """Median wall seconds of ``fn()`` over ``repeats`` calls, after one untimed warm-up call (compilation).

  ``fn``'s result is waited for (``jax.block_until_ready``), so asynchronous dispatch is not mistaken for speed.
  """
  jax.block_until_ready(fn())
  times = []
  for _ in range(max(int(repeats), 1)):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def gemm_flops_per_s(n: int = 2048, dtype: Any = None, repeats: int = 3) -> float:
  """This machine's measured matmul throughput (FLOP/s) on an ``n x n`` product: the roofline CPU figures quote.

  Measured in the same process as the benchmark it accompanies, so both see the same load and core count.
  """
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), dtype or jnp.float32)
  mm = jax.jit(lambda x: x @ x)
  return 2.0 * n ** 3 / median_time(lambda: mm(a), repeats)


def compiled_flops(fn: Callable[..., Any], *args: Any) -> float | None:
  """FLOPs of one call of the jitted ``fn(*args)`` by XLA's cost analysis (None where the backend gives none).

  XLA counts the body of a ``while``/``scan`` loop once, not once per trip: for programs with loops this is a
  lower bound (say so where it is printed).
  """
  cost = fn.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = (cost or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def roofline(name: str, flops: float | None, seconds: float, gemm: float) -> str:
  """One line: the achieved FLOP/s of ``flops`` in ``seconds`` as a fraction of the measured ``gemm`` FLOP/s."""
  if not flops:
    return f"roofline {name}: FLOPs not available"
  rate = flops / seconds
  return (f"roofline {name}: {rate / 1e9:.2f} GFLOP/s = fraction_of_gemm={rate / gemm:.3f} of this machine's "
          f"measured matmul ({gemm / 1e9:.1f} GFLOP/s)")
