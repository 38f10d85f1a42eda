"""XLA:CPU settings that make xattr's transformer workloads faster, applied through ``XLA_FLAGS`` before JAX starts.

jaxlib 0.10-0.12 route XLA:CPU matmuls through the experimental YNN fusion by default. On the ViT's thin GEMMs
(12,608 x 384 rows times 384 x 1,536, ViT-S/16 with 64 masked rows) it runs at 127 GFLOP/s on the project's
2-core AVX-512 CPU, and at 174 GFLOP/s with the fusion off; the whole masked ViT-S/16 forward goes from 13.8 to
18.6 images x masks / s (``tools/bench/masked_vit.py``). XLA reads ``XLA_FLAGS`` once, when the first
computation starts the backend, so call :func:`tune` first thing in a program (the benchmarks do); it never
overrides a value the user set.

Example:
  >>> env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  >>> tune(env)
  True
  >>> env["XLA_FLAGS"]
  '--xla_force_host_platform_device_count=4 --xla_cpu_experimental_ynn_fusion_type='
  >>> tune(env)           # already set: left alone
  False
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

__all__ = ["YNN_FUSION_OFF", "tune"]

YNN_FUSION_OFF = "--xla_cpu_experimental_ynn_fusion_type="
"""The flag :func:`tune` adds: no YNN fusion, so XLA:CPU's own dot emitter runs the matmuls."""


def tune(env: MutableMapping[str, str] | None = None) -> bool:
  """Adds :data:`YNN_FUSION_OFF` to ``env['XLA_FLAGS']`` unless it already names the YNN fusion setting.

  Args:
    env: the environment to edit (default ``os.environ``); effective only before JAX's first computation.

  Returns:
    True if the flag was added.
  """
  env = os.environ if env is None else env
  flags = env.get("XLA_FLAGS", "")
  if "xla_cpu_experimental_ynn_fusion_type" in flags:
    return False
  env["XLA_FLAGS"] = f"{flags} {YNN_FUSION_OFF}".strip()
  return True
