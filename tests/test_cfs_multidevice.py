"""Contrastive feature selection gives the same selection on 4 (fake CPU) devices as on 1."""

import numpy as np
import pytest


@pytest.mark.multidevice
def test_cfs_four_devices_match_one(tmp_path):
  from tests import multidevice_cfs_check as check
  from tests.four_devices import compare_with_one_device

  one, four = compare_with_one_device("multidevice_cfs_check.py", tmp_path / "four.npz", check.selections)
  check.assert_same(one, four, "parent 1 device vs subprocess 4 devices")
  assert np.isin(four["indices"], check.DATA.salient).mean() >= 0.5          # a real selection, not noise
