"""The measured input-perturbation changes are the same on 4 (fake CPU) devices as on 1."""

import pytest


@pytest.mark.multidevice
def test_input_study_four_devices_match_one(tmp_path):
  from tests import multidevice_robustness_check as check
  from tests.four_devices import assert_arrays_same, compare_with_one_device

  one, four = compare_with_one_device("multidevice_robustness_check.py", tmp_path / "four.npz", check.measure)
  assert_arrays_same(one, four, "parent 1 device vs subprocess 4 devices", leading=check.NUM_INPUTS)
  assert sorted(four) == sorted(f"{r}/{k}" for r in ("baseline", "conditional") for k in ("gaussian", "pgd"))
