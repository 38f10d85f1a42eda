"""The sharded greedy rollout gives the same selections on 4 (fake CPU) devices as on 1."""

import pytest


@pytest.mark.multidevice
def test_rollout_four_devices_match_one(tmp_path):
  from tests import multidevice_selection_check as check
  from tests.four_devices import compare_with_one_device

  one, four = compare_with_one_device("multidevice_selection_check.py", tmp_path / "four.npz", check.rollouts)
  check.assert_same(one, four, "parent 1 device vs subprocess 4 devices")
  assert (four["dime/cost"] <= check.PER_SAMPLE["cost_budget"]).all()
