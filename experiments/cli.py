"""The one command-line entry point every experiment driver shares.

Drivers are also imported as libraries (tests, notebooks, other drivers), and several of them live in one
process. absl flags are process-global, so a driver that defined ``--config`` at import time would make the
second import fail with ``DuplicateFlagError``. Flags are therefore defined here, and only when a driver is run
as a program.

Example (the last lines of a driver)::

  def _report(config, workdir):
    out = run(config, workdir)
    print(f"report: {out['paths']['report.md']}")

  if __name__ == "__main__":
    cli.main(_report, config_example="configs/dfs/digits.py", workdir_help="Directory for checkpoints and the report.")
"""

from __future__ import annotations

import logging as std_logging
from collections.abc import Callable

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags


def _quiet_orbax() -> None:
  """Orbax logs every checkpoint step at INFO; keep its warnings, drop the chatter."""
  logging.get_absl_logger().addFilter(
      lambda record: record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname)


def main(run_and_report: Callable[[ml_collections.ConfigDict, str], object], *, config_example: str,
         workdir_help: str) -> None:
  """Defines ``--config`` and ``--workdir``, parses argv and calls ``run_and_report(config, workdir)``.

  Args:
    run_and_report: the driver's work; receives the locked config and the work directory.
    config_example: one of the driver's configs, shown in ``--help`` and usage errors.
    workdir_help: what the driver writes into the work directory.
  """
  config_flag = config_flags.DEFINE_config_file("config", None, f"Path to a config file, e.g. {config_example}.",
                                                lock_config=True)
  workdir_flag = flags.DEFINE_string("workdir", None, workdir_help)

  def _main(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if config_flag.value is None or workdir_flag.value is None:
      raise app.UsageError("--config and --workdir are required, e.g. "
                           f"--config={config_example} --workdir=runs/example")
    _quiet_orbax()
    logging.info("config:\n%s", config_flag.value)
    run_and_report(config_flag.value, workdir_flag.value)

  jax.config.config_with_absl()
  app.run(_main)
