"""The one command-line entry point every experiment driver shares.

Drivers are also imported as libraries (tests, notebooks, other drivers), and several of them live in one
process. absl flags are process-global, so a driver that defined ``--config`` at import time would make the
second import fail with ``DuplicateFlagError``. Flags are therefore defined here, and only when a driver is run
as a program.

What a user gets from every driver:

* ``--help``: the driver's docstring, its flags (``--config``, ``--workdir``, ``--plugins``) and the fields of its
  config with their defaults (of ``--config`` when given, else of the driver's example config);
* a missing config file, or a work directory that cannot be created or written, is one line naming it (with the
  driver's configs listed), not a traceback;
* log lines are printed through the progress bars (``tqdm.write``), so a bar and a log line never share a line;
* runnable from any directory: ``xattr-experiment <driver> --config=... --workdir=...`` (installed with the
  package, see :func:`run_from_anywhere`); config paths are taken relative to the current directory, then to
  the repository.

Example (the last lines of a driver)::

  def _report(config, workdir):
    out = run(config, workdir)
    print(f"report: {out['paths']['report.md']}")

  if __name__ == "__main__":
    cli.main(_report, config_example="configs/dfs/digits.py", workdir_help="Directory for checkpoints and the report.")
"""

from __future__ import annotations

import importlib
import logging as std_logging
import os
import runpy
import sys
import tempfile
from collections.abc import Callable

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from xattr.console import REPO, driver_configs, help_text, load_config, logging_through_progress_bars, unknown_override

__all__ = ["main", "run_from_anywhere", "drivers", "resolve_config", "check_workdir", "REPO"]
_HELP = ("--help", "-h", "--helpshort", "-?")


def _quiet_orbax() -> None:
  """Orbax logs every checkpoint step at INFO; keep its warnings, drop the chatter."""
  logging.get_absl_logger().addFilter(
      lambda record: record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname)


def resolve_config(spec: str, config_example: str) -> str:
  """``--config``'s value with the file found relative to the cwd, else to the repository (made absolute).

  Raises:
    FileNotFoundError: one line naming the file and listing the driver's configs.
  """
  path, sep, arg = spec.partition(":")
  if os.path.isfile(path):
    return spec
  if not os.path.isabs(path) and (REPO / path).is_file():
    return str(REPO / path) + sep + arg
  listed = ", ".join(driver_configs(config_example)) or config_example
  raise FileNotFoundError(f"--config: no config file {path!r} (looked in {os.getcwd()} and {REPO}); the configs of "
                          f"this driver are: {listed}")


def check_workdir(workdir: str) -> None:
  """Creates ``workdir`` if needed and checks it is writable.

  Raises:
    OSError: one line naming the folder and the reason.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as err:
    raise OSError(f"--workdir={workdir}: cannot create or write this folder ({err.strerror or err}); choose "
                  "another work directory.") from None


def _flag_value(argv: list[str], name: str) -> tuple[int, str] | None:
  """(position, value) of ``--name=value`` or ``--name value`` in argv."""
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith(f"--{name}="):
      return i, arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return i, argv[i + 1]
  return None


def _fail(message: str) -> None:
  raise SystemExit(f"error: {message}")


def _resolve_config_flag(argv: list[str], config_example: str) -> tuple[int, str] | None:
  """Rewrites ``--config`` in argv (in place) to the resolved file; (position, value as given) or None."""
  found = _flag_value(argv, "config")
  if found is not None:
    try:
      resolved = resolve_config(found[1], config_example)
    except FileNotFoundError as err:
      _fail(str(err))
    argv[found[0]] = f"--config={resolved}"
    if argv[found[0] + 1:found[0] + 2] == [found[1]]:
      del argv[found[0] + 1]
  return found


def _check_overrides(config_spec: str, argv: list[str]) -> None:
  """One line, before absl parses the flags, for a ``--config.<field>`` the config does not have."""
  try:
    typo = unknown_override(load_config(config_spec), argv)
  except Exception:  # noqa: BLE001 - a config that fails to load is reported by the flag parser itself
    typo = None
  if typo:
    _fail(typo)


def main(run_and_report: Callable[[ml_collections.ConfigDict, str], object], *, config_example: str,
         workdir_help: str, argv: list[str] | None = None) -> None:
  """Defines ``--config``, ``--workdir`` and ``--plugins``, parses argv and calls ``run_and_report(config, workdir)``.

  ``--plugins=my_methods`` imports the user's modules before the run, so methods they register with
  :func:`xattr.methods.register` can be named in the config (``--config.method=my_method``).

  Args:
    run_and_report: the driver's work; receives the locked config and the work directory.
    config_example: one of the driver's configs, shown in ``--help`` and usage errors.
    workdir_help: what the driver writes into the work directory.
    argv: the command line (default ``sys.argv``).
  """
  argv = list(sys.argv if argv is None else argv)
  found = _resolve_config_flag(argv, config_example)
  if any(a in _HELP for a in argv[1:]):
    spec = argv[found[0]].split("=", 1)[1] if found else str(REPO / config_example)
    print(help_text(sys.modules["__main__"].__doc__, spec, config_example, workdir_help))
    sys.exit(0)
  if found is not None:
    _check_overrides(argv[found[0]].split("=", 1)[1], argv)
  config_flag = config_flags.DEFINE_config_file("config", None, f"Path to a config file, e.g. {config_example}.",
                                                lock_config=True)
  workdir_flag = flags.DEFINE_string("workdir", None, workdir_help)
  plugins_flag = flags.DEFINE_list("plugins", [], "Python modules to import first, e.g. ones that register "
                                   "attribution methods with xattr.methods.register (comma-separated).")

  def _main(args: list[str]) -> None:
    if len(args) > 1:
      raise app.UsageError(f"Unexpected arguments: {args[1:]}")
    if config_flag.value is None or workdir_flag.value is None:
      raise app.UsageError("--config and --workdir are required, e.g. "
                           f"--config={config_example} --workdir=runs/example")
    try:
      config = config_flag.value
      config.keys()                    # a config that failed to load raises here (ml_collections defers it)
    except OSError as err:
      _fail(f"--config: {err}")
    try:
      check_workdir(workdir_flag.value)
    except OSError as err:
      _fail(str(err))
    _quiet_orbax()
    for name in plugins_flag.value:
      try:
        importlib.import_module(name)
      except ImportError as err:
        raise app.UsageError(f"--plugins: cannot import module {name!r} ({err}).") from err
    logging.info("config:\n%s", config)
    with logging_through_progress_bars():
      run_and_report(config, workdir_flag.value)

  jax.config.config_with_absl()
  app.run(_main, argv=argv)


def drivers() -> list[str]:
  """The drivers ``xattr-experiment`` runs: the modules of ``experiments/`` that call :func:`main`.

  Example:
    >>> {"dfs", "vit_shapley", "attribute"} <= set(drivers())
    True
  """
  return sorted(p.stem for p in (REPO / "experiments").glob("*.py")
                if p.stem not in ("__init__", "cli") and "cli.main(" in p.read_text())


def run_from_anywhere(argv: list[str] | None = None) -> None:
  """The ``xattr-experiment`` console script: ``xattr-experiment <driver> --config=... --workdir=...``.

  Runs ``experiments/<driver>.py`` as a program from any directory (the package installs ``experiments`` and
  ``configs``); ``--config`` paths are relative to the current directory, or to the repository.
  """
  argv = list(sys.argv if argv is None else argv)
  names = drivers()
  if len(argv) < 2 or argv[1] in _HELP or argv[1] not in names:
    got = f"unknown driver {argv[1]!r}; " if len(argv) > 1 and argv[1] not in _HELP else ""
    _fail(f"{got}usage: xattr-experiment <driver> --config=PATH --workdir=DIR (or <driver> --help); drivers: "
          f"{', '.join(names)}")
  sys.argv = [f"xattr-experiment {argv[1]}", *argv[2:]]
  runpy.run_module(f"experiments.{argv[1]}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  run_from_anywhere()
