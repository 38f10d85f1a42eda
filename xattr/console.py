"""Command-line helpers the experiment drivers share (``experiments/cli.py``): ``--help`` text with the config's
fields, a driver's config files, and absl log lines routed through tqdm progress bars.

Example:
  >>> import ml_collections
  >>> config_fields(ml_collections.ConfigDict({"seed": 0, "model": {"depth": 2}}))
  ['config.model.depth = 2', 'config.seed = 0']
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging as std_logging
import pathlib
import sys
from collections.abc import Iterator

import ml_collections
import tqdm
from absl import logging

__all__ = ["REPO", "driver_configs", "config_fields", "load_config", "help_text", "logging_through_progress_bars"]

REPO = pathlib.Path(__file__).resolve().parents[1]


def driver_configs(config_example: str) -> list[str]:
  """The config files of a driver: the files defining ``get_config`` beside its example config (repo-relative).

  Example:
    >>> "configs/dfs/digits.py" in driver_configs("configs/dfs/digits.py")
    True
  """
  folder = REPO / pathlib.Path(config_example).parent
  found = [p for p in sorted(folder.glob("*.py")) if "def get_config" in p.read_text()] if folder.is_dir() else []
  return [str(p.relative_to(REPO)) for p in found]


def config_fields(config: ml_collections.ConfigDict, prefix: str = "config.") -> list[str]:
  """``config.<field> = <default>`` lines, one per leaf field (nested sections flattened).

  Example:
    >>> config_fields(ml_collections.ConfigDict({"a": {"b": (1, 2)}}))
    ['config.a.b = (1, 2)']
  """
  lines = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      lines += config_fields(value, f"{prefix}{key}.")
    else:
      lines.append(f"{prefix}{key} = {value!r}")
  return lines


def load_config(spec: str) -> ml_collections.ConfigDict:
  """``'path.py[:arg]'`` -> that file's ``get_config(arg)`` (``get_config()`` without an arg)."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location(f"_cli_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(*([arg] if arg else []))


def unknown_override(config: ml_collections.ConfigDict, argv: list[str]) -> str | None:
  """One line for the first ``--config.<path>=...`` in argv that names no field of ``config`` (None if all do).

  ml_collections reports such a typo as a 20-frame ``AttributeError`` traceback from inside flag parsing; this
  names the flag and lists the fields that do exist at that level.

  Example:
    >>> cfg = ml_collections.ConfigDict({"train": {"steps": 1, "lr": 0.1}})
    >>> unknown_override(cfg, ["prog", "--config.train.step=5"])
    "--config.train.step=5: the config has no field 'step' in 'config.train'; its fields there are: lr, steps"
    >>> unknown_override(cfg, ["prog", "--config.train.steps", "5"]) is None
    True
  """
  for arg in argv[1:]:
    if not arg.startswith("--config."):
      continue
    path = arg[len("--config."):].split("=", 1)[0].split(".")
    node, where = config, "config"
    for name in path:
      if not isinstance(node, ml_collections.ConfigDict):
        return f"{arg}: {where} is a value ({node!r}), not a section with fields; set --{where}=... instead"
      if name not in node:
        known = ", ".join(sorted(node.keys()))
        return f"{arg}: the config has no field {name!r} in {where!r}; its fields there are: {known}"
      node, where = node[name], f"{where}.{name}"
  return None


def help_text(doc: str | None, config_spec: str, config_example: str, workdir_help: str) -> str:
  """What ``--help`` prints: the driver's docstring, its flags and the config's fields with their defaults."""
  try:
    fields = "\n".join("  --" + line for line in config_fields(load_config(config_spec)))
  except Exception as err:  # noqa: BLE001 - help must print whatever a config does
    fields = f"  (could not load {config_spec}: {type(err).__name__}: {err})"
  configs = "\n".join(f"  {c}" for c in driver_configs(config_example))
  return (f"{(doc or '').strip()}\n\nFlags:\n"
          "  --config=PATH[:ARG]  config file, relative to the current directory or the repository, e.g.\n"
          f"                       {config_example} (':smoke' picks the tiny variant where a config has one)\n"
          f"  --workdir=DIR        {workdir_help}\n"
          "  --plugins=MODULES    Python modules to import first (comma-separated), e.g. ones registering methods\n"
          "  --config.FIELD=VALUE override one config field (the config is locked: a misspelled field fails)\n"
          "  --helpfull           every flag, JAX's and absl's included\n\n"
          f"Configs of this driver:\n{configs}\n\n"
          f"Config fields of {config_spec} (defaults; override with --config.FIELD=VALUE):\n{fields}\n")


class _ProgressBarHandler(std_logging.Handler):
  """Writes absl-formatted log records with ``tqdm.write``: open bars are cleared, the line printed, bars redrawn."""

  def __init__(self, formatter: std_logging.Formatter | None):
    super().__init__()
    self.setFormatter(formatter or std_logging.Formatter())

  def emit(self, record: std_logging.LogRecord) -> None:
    try:
      tqdm.tqdm.write(self.format(record), file=sys.stderr)
    except Exception:  # noqa: BLE001 - logging must never raise
      self.handleError(record)


@contextlib.contextmanager
def logging_through_progress_bars() -> Iterator[None]:
  """Routes absl's console log lines through ``tqdm.write`` (bars and log lines never share a line).

  absl's handler writes straight to stderr, in the middle of a bar's line; tqdm's own ``logging_redirect_tqdm``
  only replaces plain ``StreamHandler`` s, so it would print every absl line twice. Log files (``--log_dir``)
  are left alone.
  """
  absl_handler = logging.get_absl_handler()
  root = std_logging.getLogger()
  python_handler = absl_handler.python_handler
  if absl_handler not in root.handlers or python_handler.stream not in (sys.stderr, sys.__stderr__):
    yield
    return
  handler = _ProgressBarHandler(python_handler.formatter)
  handler.setLevel(absl_handler.level)
  for f in absl_handler.filters:
    handler.addFilter(f)
  root.removeHandler(absl_handler)
  root.addHandler(handler)
  try:
    yield
  finally:
    root.removeHandler(handler)
    root.addHandler(absl_handler)
