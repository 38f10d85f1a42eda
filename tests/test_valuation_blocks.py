"""Block-wise resumable sampling: a resumed run computes only the missing blocks, and blocks never go stale."""

import os

import jax
import numpy as np
import pytest

from xattr.valuation import blocks, samplers, utility

KEY = jax.random.key(3)


@pytest.fixture(scope="module")
def u():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(50, 3)).astype(np.float32)
  y = (x[:, 0] - x[:, 1] + 0.5 * rng.normal(size=50) > 0).astype(np.int32)
  return utility.LogisticRegression.create(x[:40], y[:40], x[40:], y[40:], num_classes=2)


def _work(n=22):
  points = np.arange(n, dtype=np.int32) % 7
  return points, np.asarray(samplers.sample_sizes(jax.random.key(1), n, 8, 30)), np.arange(n)


@pytest.fixture
def counted(monkeypatch):
  """Counts the samples :func:`samplers.distributional` computes."""
  calls = []
  original = samplers.distributional

  def counting(u, key, points, *args, **kwargs):
    calls.append(len(points))
    return original(u, key, points, *args, **kwargs)

  monkeypatch.setattr(samplers, "distributional", counting)
  return calls


def test_resume_after_a_partial_run_computes_only_missing_blocks(u, tmp_path, counted):
  points, sizes, ids = _work()
  kwargs = dict(directory=tmp_path, fingerprint="fp", block_size=8, chunk_size=8, progress=False)
  first = blocks.sample_in_blocks(u, KEY, points, sizes, ids, **kwargs)
  assert counted == [8, 8, 6]
  files = sorted(os.listdir(tmp_path))
  assert files == ["block_000000000.npz", "block_000000008.npz", "block_000000016.npz"]
  os.remove(tmp_path / files[1])                                   # as if killed while computing block 2
  stamps = {f: os.path.getmtime(tmp_path / f) for f in (files[0], files[2])}
  counted.clear()
  again = blocks.sample_in_blocks(u, KEY, points, sizes, ids, **kwargs)
  assert counted == [8]
  assert {f: os.path.getmtime(tmp_path / f) for f in stamps} == stamps
  for k in first:
    if k != "seconds":
      np.testing.assert_array_equal(again[k], first[k], err_msg=k)
  assert first["seconds"] > 0 and again["seconds"] > 0
  counted.clear()
  blocks.sample_in_blocks(u, KEY, points, sizes, ids, **kwargs)   # everything saved: nothing computed
  assert counted == []


def test_blocks_match_one_call_and_are_not_reused_for_other_samples(u, tmp_path, counted):
  points, sizes, ids = _work()
  whole = samplers.distributional(u, KEY, points, sizes, ids=ids, chunk_size=8, progress=False)
  kwargs = dict(directory=tmp_path, fingerprint="fp", block_size=8, chunk_size=8, progress=False)
  out = blocks.sample_in_blocks(u, KEY, points, sizes, ids, **kwargs)
  # Chunks of other sizes refine other solves (the slowest of each chunk get extra Newton steps), which moves
  # converged utilities by float32 round-off only.
  for k in whole:
    np.testing.assert_allclose(out[k], whole[k], rtol=1e-6, atol=2e-7, err_msg=k)
  counted.clear()
  other = blocks.sample_in_blocks(u, jax.random.key(4), points, sizes, ids, **kwargs)     # another key
  assert counted == [8, 8, 6] and not np.array_equal(other["neg_ce"], out["neg_ce"])
  counted.clear()
  blocks.sample_in_blocks(u, KEY, points, sizes, ids, **{**kwargs, "fingerprint": "other utility"})
  assert counted == [8, 8, 6]
  counted.clear()
  resized = blocks.sample_in_blocks(u, KEY, points, sizes, ids, **{**kwargs, "block_size": 11})
  assert counted == [11, 11]
  np.testing.assert_allclose(resized["neg_ce"], out["neg_ce"], rtol=1e-6, atol=2e-7)


def test_even_sizes_and_errors(u, tmp_path):
  sizes = blocks.even_sizes(600, 100, 400)
  assert sizes.min() >= 100 and sizes.max() < 400 and abs(sizes.mean() - 249.5) < 1
  with pytest.raises(ValueError, match="k_min < k_max"):
    blocks.even_sizes(10, 50, 50)
  points, sizes, ids = _work()
  with pytest.raises(ValueError, match="block_size"):
    blocks.sample_in_blocks(u, KEY, points, sizes, ids, directory=tmp_path, fingerprint="fp", block_size=0)
