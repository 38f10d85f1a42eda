"""Every experiment driver can be imported beside every other one, and runs as a program."""

import pathlib
import subprocess
import sys

import pytest

from experiments import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
DRIVERS = sorted(p.stem for p in (ROOT / "experiments").glob("*.py") if p.stem not in {"__init__", "cli"})


def test_all_drivers_import_in_one_process():
  # absl flags are process-global: one driver defining --config at import time breaks every later import.
  code = "import importlib\n" + "".join(f"importlib.import_module('experiments.{d}')\n" for d in DRIVERS)
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("driver", [d for d in DRIVERS if not d.endswith("_eval")])
def test_driver_without_flags_says_what_is_required(driver):
  result = subprocess.run([sys.executable, "-m", f"experiments.{driver}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode != 0
  assert "--config and --workdir are required" in result.stdout + result.stderr
  assert f"configs/{driver}/" in result.stdout + result.stderr


def _run(args, cwd=ROOT):
  return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def _one_line(message):
  message = str(message).strip()
  assert message.startswith("error: ") and "\n" not in message and "Traceback" not in message, message
  return message


def _main(argv):
  cli.main(lambda config, workdir: None, config_example="configs/vit_shapley/digits.py", workdir_help="Outputs.",
           argv=["prog", *argv])


def test_missing_config_is_one_line_listing_the_configs(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)                  # a new user's directory: repository configs are still found
  with pytest.raises(SystemExit) as exit_info:
    _main(["--config=configs/vit_shapley/digit.py:smoke", "--workdir=w"])
  line = _one_line(exit_info.value.code)
  assert "no config file 'configs/vit_shapley/digit.py'" in line
  assert "configs/vit_shapley/digits.py, configs/vit_shapley/tfds.py" in line


def test_misspelled_config_override_is_one_line_listing_the_fields(tmp_path):
  # ml_collections raised a 20-frame AttributeError traceback from inside absl's flag parsing.
  for override, names in (("--config.progres=1", "'progres' in 'config'; its fields there are: classifier, data"),
                          ("--config.explainer.num_step=3", "'num_step' in 'config.explainer'; its fields")):
    with pytest.raises(SystemExit) as exit_info:
      _main(["--config=configs/vit_shapley/digits.py:smoke", f"--workdir={tmp_path}", override])
    line = _one_line(exit_info.value.code)
    assert line.startswith(f"error: {override}: the config has no field {names}"), line
  with pytest.raises(SystemExit) as exit_info:
    _main(["--config=configs/vit_shapley/digits.py:smoke", f"--workdir={tmp_path}", "--config.seed.x=1"])
  assert "config.seed is a value" in _one_line(exit_info.value.code)


def test_help_lists_the_flags_and_the_config_fields_with_defaults(capsys):
  for argv, fields in ((["--help"], ("--config.evaluate.num_images = 32", "--config.model.name = 'mu/8'")),
                       (["--config", "configs/vit_shapley/digits.py:smoke", "-h"],      # the config given
                        ("--config.evaluate.num_images = 4", "--config.model.name = 'nano/8'"))):
    with pytest.raises(SystemExit) as exit_info:
      _main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in ("--config=PATH", "--workdir=DIR        Outputs.", "configs/vit_shapley/tfds.py", *fields):
      assert text in out, (argv, text)


def test_unwritable_workdir_is_one_line():
  result = _run([sys.executable, "-m", "experiments.dfs", "--config=configs/dfs/digits.py:smoke",
                 "--workdir=/proc/xattr_out"])
  lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
  assert result.returncode != 0 and len(lines) == 1, result.stderr[-3000:]
  assert _one_line(lines[0]).startswith("error: --workdir=/proc/xattr_out: cannot create or write")


def test_console_script_runs_drivers_from_any_directory_with_cwd_relative_configs(tmp_path):
  script = pathlib.Path(sys.executable).parent / "xattr-experiment"
  assert script.exists(), "pip install -e . installs the xattr-experiment console script (pyproject [project.scripts])"
  # A user's config next to them, importing the repository's configs: found relative to the cwd.
  (tmp_path / "mine.py").write_text("from configs.dfs import digits\n\ndef get_config(arg=None):\n"
                                    "  config = digits.get_config('smoke')\n  config.max_features = 3\n"
                                    "  return config\n")
  result = _run([str(script), "dfs", "--config=mine.py", "--help"], cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "--config.max_features = 3" in result.stdout and "Dynamic feature selection" in result.stdout
  with pytest.raises(SystemExit) as exit_info:
    cli.run_from_anywhere(["xattr-experiment", "nope"])
  line = _one_line(exit_info.value.code)
  assert "unknown driver 'nope'" in line and "vit_shapley" in line and "dfs" in line
