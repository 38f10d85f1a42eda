"""Every experiment driver can be imported beside every other one, and runs as a program."""

import pathlib
import subprocess
import sys

import pytest

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
