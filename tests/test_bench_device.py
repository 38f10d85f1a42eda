"""tools/bench/device.py --small runs every part on CPU and prints its table (correctness of the script only:
nothing here is timed or compared with a speed)."""

import math

import pytest

from tools.bench import device

pytestmark = pytest.mark.slow


def test_device_suite_small_runs_every_part(capsys):
  rows = device.main(["--small", "--repeats=1"])
  assert [r.name for r in rows][:len(device.PARTS)] == list(device.PARTS)
  assert all(math.isfinite(r.rate) and r.rate > 0 for r in rows)
  out = capsys.readouterr().out
  assert "of_gemm" in out and all(name in out for name in device.PARTS)


def test_device_suite_rejects_unknown_parts():
  with pytest.raises(SystemExit):
    device.main(["--small", "--parts=gemm,nope"])
