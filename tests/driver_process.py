"""A driver run as the documented command (``python -m experiments.<name> --config=... --workdir=...``) in its own
process, for the end-to-end tests: started at once so that a module's quick tests run while it works, finished
with a bounded wait, and always killed if a test leaves it running.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def launch(driver: str, config: str, workdir: str, *, fast_compile: bool = False) -> subprocess.Popen:
  """Starts ``python -m experiments.<driver> --config=<config> --workdir=<workdir>`` on the CPU.

  ``fast_compile`` switches off XLA's backend optimizations, for runs dominated by compiling many small programs
  rather than by running them.
  """
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  if fast_compile:
    env["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
  return subprocess.Popen([sys.executable, "-m", f"experiments.{driver}", f"--config={config}",
                           f"--workdir={workdir}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen) -> None:
  """Kills ``proc`` if it still runs and reaps it (fixture teardown)."""
  if proc.poll() is None:
    proc.kill()
    proc.communicate()


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
  """Waits for ``proc`` (killed after ``timeout`` s), asserts it succeeded, and returns its stdout."""
  try:
    stdout, stderr = proc.communicate(timeout=timeout)
  finally:
    stop(proc)
  assert proc.returncode == 0, f"stdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-5000:]}"
  return stdout
