"""xattr.xla_cpu: the XLA_FLAGS edit, and that the installed jaxlib accepts the flag (an unknown flag is fatal)."""

import os
import subprocess
import sys

from xattr import xla_cpu


def test_tune_adds_the_flag_once_and_keeps_user_settings():
  env = {}
  assert xla_cpu.tune(env) and env["XLA_FLAGS"] == xla_cpu.YNN_FUSION_OFF
  assert not xla_cpu.tune(env) and env["XLA_FLAGS"] == xla_cpu.YNN_FUSION_OFF
  user = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}
  assert not xla_cpu.tune(user) and user["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=dot"


def test_installed_jaxlib_accepts_the_flag_and_computes_the_same_matmul():
  code = ("import jax, jax.numpy as jnp, numpy as np\n"
          "a = jax.random.normal(jax.random.key(0), (300, 40)); b = jax.random.normal(jax.random.key(1), (40, 70))\n"
          "np.testing.assert_allclose(jax.jit(jnp.matmul)(a, b), np.asarray(a, np.float64) @ np.asarray(b),"
          " rtol=1e-4, atol=1e-4)\nprint('ok')\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  xla_cpu.tune(env)
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
