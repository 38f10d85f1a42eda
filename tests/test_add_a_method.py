"""README's "Add a method" example works as written: registration, direct use, noisy labels, and a driver run."""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _blocks() -> list[tuple[str, str]]:
  text = (ROOT / "README.md").read_text()
  section = text.split("## Add a method", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"```(python|bash)\n(.*?)```", section, flags=re.S)


def _env(tmp_path) -> dict[str, str]:
  return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}


@pytest.fixture
def plugin(tmp_path):
  blocks = _blocks()
  assert [kind for kind, _ in blocks] == ["python", "python", "bash"], blocks
  (tmp_path / "my_methods.py").write_text(blocks[0][1])
  return tmp_path, blocks


def test_register_and_use_as_written(plugin):
  tmp_path, blocks = plugin
  result = subprocess.run([sys.executable, "-c", blocks[1][1]], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert lines[0] == "[1. 2. 3.]"                              # the additive game's weights, as the README says
  assert lines[1] == "(8, 3, 1) 64"


@pytest.mark.slow
def test_attribution_job_runs_the_plugin_method(plugin):
  tmp_path, blocks = plugin
  command = blocks[2][1].replace("\\\n", " ")
  args = shlex.split(command)
  assert args[:3] == ["python", "-m", "experiments.attribute"]
  # Same command, shrunk to the smoke variant of the config and a temporary workdir.
  args = [sys.executable] + args[1:]
  args = [a.replace("breast_cancer.py", "breast_cancer.py:smoke") if a.startswith("--config=") else a for a in args]
  args = [f"--workdir={tmp_path / 'run'}" if a.startswith("--workdir=") else a for a in args]
  result = subprocess.run(args, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
  from xattr import outputs
  store = outputs.open(tmp_path / "run" / "attributions")
  assert store.complete and store.metadata["config"]["method"] == "weighted_banzhaf"
