"""experiments.cli and xattr.console: log lines go through the progress bars, config paths resolve, fields are
listed."""

import os
import subprocess
import sys

import ml_collections
import pytest

from experiments import cli
from xattr import console


_SCRIPT = """
import sys, tqdm
from absl import app, logging
from xattr import console

def work():
  bar = tqdm.tqdm(total=10, desc="bar", mininterval=0, file=sys.stderr)
  bar.update(3)
  logging.info("a log line")
  bar.update(3)
  bar.close()

def main(argv):
  if argv[1:] == ["redirect"]:
    with console.logging_through_progress_bars():
      work()
    assert logging.get_absl_handler() in logging_module.getLogger().handlers     # restored afterwards
  else:
    work()

import logging as logging_module
app.run(main)
"""


def _visible_log_line(mode):
  result = subprocess.run([sys.executable, "-c", _SCRIPT, mode], cwd=cli.REPO, capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  (line,) = [part for part in result.stderr.split("\n") if "a log line" in part]
  return line.split("\r")[-1]          # what stays visible on that terminal line


def test_log_lines_never_share_a_line_with_a_progress_bar():
  assert "%|" in _visible_log_line("plain")           # absl writes into the bar's line: the defect
  visible = _visible_log_line("redirect")
  assert "%|" not in visible and visible.rstrip().endswith("a log line") and visible.startswith("I")


def test_resolve_config_and_check_workdir(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert cli.resolve_config("configs/dfs/digits.py:smoke", "configs/dfs/digits.py") == \
      os.path.join(cli.REPO, "configs/dfs/digits.py") + ":smoke"
  (tmp_path / "mine.py").write_text("")
  assert cli.resolve_config("mine.py", "configs/dfs/digits.py") == "mine.py"
  with pytest.raises(FileNotFoundError, match=r"no config file 'x.py' .*configs/dfs/oracle.py"):
    cli.resolve_config("x.py", "configs/dfs/digits.py")
  cli.check_workdir(str(tmp_path / "a" / "b"))
  assert (tmp_path / "a" / "b").is_dir()
  (tmp_path / "file").write_text("")
  with pytest.raises(OSError, match="--workdir=.*file/sub: cannot create or write this folder"):
    cli.check_workdir(str(tmp_path / "file" / "sub"))
  assert console.config_fields(ml_collections.ConfigDict({"a": {"b": (1, 2)}})) == ["config.a.b = (1, 2)"]
