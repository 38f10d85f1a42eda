"""Runs a check script as N cooperating JAX processes on this machine (loopback only), like N hosts of a slice.

Each process is started as ``python tests/<script> <process_id> <num_processes> <port> <out_dir> [args...]`` with
``XLA_FLAGS=--xla_force_host_platform_device_count=<devices_per_process>``; the script calls
:func:`initialize` first, which joins ``jax.distributed`` on ``127.0.0.1:<port>`` with gloo CPU collectives, so
all processes see one global mesh of ``N * devices_per_process`` CPU devices. :func:`run_processes` waits for all
of them, kills every one of them on a timeout or when one fails (a dead peer would leave the others blocked in a
collective), and reports each process's stderr on failure. Scripts write their results under ``out_dir``
(``process_<i>.npz`` by convention) for the test to compare with a 1-process run.

Example (from a test)::

    outs = run_processes("multiprocess_train_check.py", tmp_path, num_processes=2, devices_per_process=2)
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Finished:
  """One process's outcome: its id, exit code and captured output."""

  process_id: int
  returncode: int | None
  stdout: str
  stderr: str


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return int(s.getsockname()[1])


def initialize(argv: Sequence[str] | None = None) -> tuple[int, int, pathlib.Path, list[str]]:
  """Joins the distributed runtime from a script's argv; returns ``(process_id, num_processes, out_dir, rest)``.

  Call it before any other JAX call in a check script started by :func:`run_processes`.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  process_id, num_processes, port, out_dir, rest = int(argv[0]), int(argv[1]), int(argv[2]), argv[3], argv[4:]
  import jax       # here: the environment (XLA_FLAGS) must be set before JAX starts

  jax.config.update("jax_default_matmul_precision", "highest")        # as tests/conftest.py does
  if num_processes == 1:
    # A reference run: a plain process (a 1-process distributed runtime with gloo collectives only adds ways to
    # stall; the result is the same program on the same devices).
    return process_id, num_processes, pathlib.Path(out_dir), rest
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id,
                             initialization_timeout=60)
  return process_id, num_processes, pathlib.Path(out_dir), rest


def _environment(devices_per_process: int) -> dict[str, str]:
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
  return dict(os.environ, JAX_PLATFORMS="cpu",
              XLA_FLAGS=" ".join([*flags, f"--xla_force_host_platform_device_count={devices_per_process}"]),
              PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])))


def start(script: str, out_dir: os.PathLike, *, num_processes: int = 2, devices_per_process: int = 2,
          args: Sequence[str] = (), port: int | None = None) -> list[subprocess.Popen]:
  """Starts the processes (each in its own session, so a kill reaches its children); see :func:`wait`."""
  port = free_port() if port is None else port
  os.makedirs(out_dir, exist_ok=True)
  env = _environment(devices_per_process)
  return [subprocess.Popen([sys.executable, str(ROOT / "tests" / script), str(i), str(num_processes), str(port),
                            str(out_dir), *map(str, args)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
          for i in range(num_processes)]


def kill_all(procs: Sequence[subprocess.Popen], sig: int = signal.SIGKILL) -> None:
  """Sends ``sig`` to every still-running process group."""
  for p in procs:
    if p.poll() is None:
      try:
        os.killpg(p.pid, sig)
      except ProcessLookupError:
        pass


def wait(procs: Sequence[subprocess.Popen], *, timeout: float = 240) -> list[Finished]:
  """Waits for all processes; on the timeout, or as soon as one exits non-zero, kills the rest. Never raises."""
  deadline = time.monotonic() + timeout
  try:
    while any(p.poll() is None for p in procs):
      if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
        break
      time.sleep(0.1)
  finally:
    kill_all(procs)
  out = []
  for i, p in enumerate(procs):
    stdout, stderr = p.communicate()
    out.append(Finished(i, p.returncode, stdout, stderr))
  return out


def describe(finished: Sequence[Finished]) -> str:
  """Every process's exit code and the tail of its stderr (what an assertion message should show)."""
  return "\n".join(f"--- process {f.process_id}: exit code {f.returncode}\nstdout:\n{f.stdout[-2000:]}\n"
                   f"stderr:\n{f.stderr[-4000:]}" for f in finished)


def run_processes(script: str, out_dir: os.PathLike, *, num_processes: int = 2, devices_per_process: int = 2,
                  args: Sequence[str] = (), timeout: float = 240) -> list[Finished]:
  """Starts ``script`` as ``num_processes`` processes and asserts that all of them exit 0 within ``timeout``."""
  finished = wait(start(script, out_dir, num_processes=num_processes, devices_per_process=devices_per_process,
                        args=args), timeout=timeout)
  assert all(f.returncode == 0 for f in finished), f"{script} failed across processes:\n{describe(finished)}"
  return finished
