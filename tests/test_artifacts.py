"""Artifacts: fingerprints change with settings, data and library code; compute-or-load is atomic and resumable."""

import os
import shutil

import ml_collections
import numpy as np
import pytest

import xattr
from xattr import artifacts

PACKAGE = os.path.dirname(os.path.abspath(xattr.__file__))


@pytest.fixture
def package_copy(tmp_path):
  """A copy of the xattr sources whose modules a test may edit."""
  root = tmp_path / "xattr"
  shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
  return root


def test_fingerprint_covers_settings_data_and_library(package_copy):
  base = artifacts.fingerprint({"budget": 32}, data=np.arange(4.0), package_dir=package_copy)
  assert base == artifacts.fingerprint({"budget": 32}, data=np.arange(4.0), package_dir=package_copy)
  assert base != artifacts.fingerprint({"budget": 64}, data=np.arange(4.0), package_dir=package_copy)
  assert base != artifacts.fingerprint({"budget": 32}, data=np.arange(4.0) + 1, package_dir=package_copy)
  assert base != artifacts.fingerprint({"budget": 32}, data=np.arange(4.0, dtype=np.float32),
                                       package_dir=package_copy)
  assert base != artifacts.fingerprint({"budget": 32}, data=np.arange(4.0), library=False)
  # A ConfigDict and the dict it holds are the same settings.
  assert (artifacts.fingerprint(ml_collections.ConfigDict({"a": 1}), library=False)
          == artifacts.fingerprint({"a": 1}, library=False))


def test_changing_a_core_module_invalidates_what_depends_on_it(package_copy, tmp_path):
  fp = lambda **kw: artifacts.fingerprint({"method": "kernel_shap"}, package_dir=package_copy, **kw)
  whole, shapley_only = fp(), fp(modules=["xattr.shapley"])
  path = tmp_path / "truth.npz"
  calls = []
  compute = lambda: calls.append(1) or {"values": np.ones(3)}
  artifacts.compute_or_load(path, whole, compute)
  artifacts.compute_or_load(path, fp(), compute)
  assert len(calls) == 1                                   # unchanged library: reused

  with open(package_copy / "banzhaf.py", "a") as f:       # an unrelated module changes
    f.write("\n# edited\n")
  assert fp(modules=["xattr.shapley"]) == shapley_only      # results that depend only on shapley stay valid
  assert fp() != whole                                      # results that depend on the whole library do not
  with open(package_copy / "shapley.py", "a") as f:       # the core module itself changes
    f.write("\n# edited\n")
  assert fp(modules=["xattr.shapley"]) != shapley_only
  artifacts.compute_or_load(path, fp(), compute)
  assert len(calls) == 2                                    # recomputed, not silently reused


def test_library_hash_names_unknown_modules():
  with pytest.raises(ValueError, match="modules must name xattr modules.*'xattr.nope'"):
    artifacts.library_hash(["xattr.nope"])
  assert artifacts.library_hash(["xattr.valuation"]) != artifacts.library_hash(["xattr.selection"])


def test_compute_or_load_is_atomic_and_rejects_other_fingerprints(tmp_path):
  path = tmp_path / "sub" / "bundle.npz"

  def failing():
    raise KeyboardInterrupt   # a job killed mid-computation

  with pytest.raises(KeyboardInterrupt):
    artifacts.compute_or_load(path, "fp1", failing)
  assert not path.exists()
  out = artifacts.compute_or_load(path, "fp1", lambda: {"a": np.arange(3)})
  assert out["a"].tolist() == [0, 1, 2] and sorted(os.listdir(path.parent)) == ["bundle.npz"]
  assert artifacts.load(path, "fp2") is None
  again = artifacts.compute_or_load(path, "fp2", lambda: {"a": np.arange(2)})
  assert again["a"].tolist() == [0, 1] and artifacts.load(path, "fp1") is None
  with pytest.raises(ValueError, match="reserved name"):
    artifacts.save(path, {artifacts.FINGERPRINT_KEY: np.ones(1)}, "x")


def test_unreadable_bundle_is_recomputed(tmp_path):
  path = tmp_path / "broken.npz"
  path.write_bytes(b"not an npz")
  assert artifacts.compute_or_load(path, "fp", lambda: {"v": np.zeros(1)})["v"].tolist() == [0.0]


def test_stage_resumes_and_json_round_trips(tmp_path):
  s = artifacts.stage(tmp_path, "truth", {"d": 4}, data=np.ones(2))
  assert not s.done() and s.path("chunks") == os.path.join(tmp_path, "truth", "chunks")
  s.run(lambda: {"v": np.ones(2)})
  assert s.done()
  assert s.run(lambda: pytest.fail("a finished stage must not recompute"))["v"].tolist() == [1.0, 1.0]
  assert not artifacts.stage(tmp_path, "truth", {"d": 5}, data=np.ones(2)).done()
  artifacts.save_json(tmp_path / "m.json", {"x": np.float32(1.5), "y": np.arange(2)})
  assert artifacts.load_json(tmp_path / "m.json") == {"x": 1.5, "y": [0, 1]}
  assert artifacts.load_json(tmp_path / "missing.json") is None
