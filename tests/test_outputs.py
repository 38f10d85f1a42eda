"""The attribution output store: chunk writes in any order, lazy reads, resume/refuse/overwrite, no lost rows."""

import json
import os

import numpy as np
import pytest

from xattr import outputs

SPECS = {"values": outputs.ArraySpec((3, 2), "float32"), "prediction": outputs.ArraySpec((), "int32")}


def _chunk(store, c):
  start, end = store.chunk_rows(c)
  rows = np.arange(start, end)
  return {"values": rows[:, None, None] + np.arange(6.0).reshape(1, 3, 2) / 10, "prediction": rows % 3}


def _make(path, fingerprint="job", **kw):
  kw = {"num_examples": 7, "chunk_size": 3, "metadata": {"config": {"seed": 0, "method": "ks"}}, **kw}
  return outputs.create_or_resume(path, SPECS, fingerprint=fingerprint, **kw)


def test_chunks_in_any_order_read_back_lazily(tmp_path):
  store = _make(tmp_path / "s")
  assert store.num_chunks == 3 and store.missing_chunks() == [0, 1, 2]
  for c in (2, 0, 1):
    store.write_chunk(c, _chunk(store, c))
  reader = outputs.open(tmp_path / "s")
  assert reader.complete and reader.verify() == []
  values = reader["values"]
  assert values.shape == (7, 3, 2) and values.dtype == np.float32 and len(values) == 7
  expected = np.arange(7)[:, None, None] + np.arange(6.0).reshape(1, 3, 2) / 10
  np.testing.assert_allclose(values[2:5], expected[2:5], rtol=0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(values), expected, rtol=0, atol=1e-6)
  assert reader["prediction"][6] == 0 and reader["prediction"][:].tolist() == (np.arange(7) % 3).tolist()
  starts = [s for s, _ in values.chunks()]
  assert starts == [0, 3, 6] and reader.metadata["config"]["seed"] == 0
  with pytest.raises(KeyError, match="holds"):
    reader["std"]


def test_resume_keeps_finished_chunks_and_markers_define_completion(tmp_path):
  store = _make(tmp_path / "s")
  store.write_chunk(1, _chunk(store, 1))
  # Chunk 0 written but "killed" before its marker: it must count as missing and be recomputed.
  store._writer("values")[0:3].write(np.zeros((3, 3, 2), np.float32)).result()
  again = _make(tmp_path / "s")
  assert again.missing_chunks() == [0, 2] and again.done_chunks() == [1]
  reader = outputs.open(tmp_path / "s")
  assert not reader.complete
  with pytest.warns(outputs.UnfinishedRowsWarning):
    assert np.isnan(reader["values"][6]).all()      # never written: NaN fill, not a plausible number


def test_other_job_is_refused_unless_overwrite(tmp_path):
  store = _make(tmp_path / "s")
  store.write_chunk(0, _chunk(store, 0))
  other = {"config": {"seed": 1, "method": "ks"}}
  with pytest.raises(outputs.StoreMismatchError, match=r"different job.*seed: 0 -> 1.*overwrite"):
    _make(tmp_path / "s", fingerprint="other", metadata=other)
  with pytest.raises(outputs.StoreMismatchError, match="chunk_size"):
    _make(tmp_path / "s", chunk_size=2)            # same fingerprint, other layout
  assert outputs.open(tmp_path / "s").done_chunks() == [0]     # refusing deleted nothing
  fresh = _make(tmp_path / "s", fingerprint="other", metadata=other, overwrite=True)
  assert fresh.missing_chunks() == [0, 1, 2] and outputs.open(tmp_path / "s").metadata == other


def test_foreign_folder_is_never_touched(tmp_path):
  folder = tmp_path / "mine"
  folder.mkdir()
  (folder / "thesis.tex").write_text("precious")
  with pytest.raises(outputs.StoreMismatchError, match="not an xattr output store"):
    _make(folder, overwrite=True)
  assert (folder / "thesis.tex").read_text() == "precious"
  with pytest.raises(FileNotFoundError, match="No xattr output store"):
    outputs.open(folder)


def test_bad_chunks_are_rejected_and_corruption_detected(tmp_path):
  store = _make(tmp_path / "s")
  with pytest.raises(ValueError, match=r"shape \(1, 3, 2\)"):
    store.write_chunk(2, {"values": np.zeros((3, 3, 2)), "prediction": np.zeros(3)})
  with pytest.raises(ValueError, match="exactly"):
    store.write_chunk(0, {"values": np.zeros((3, 3, 2))})
  with pytest.raises(ValueError, match="chunk must lie"):
    store.write_chunk(3, _chunk(store, 0))
  store.write_chunk(0, _chunk(store, 0))
  store._writer("prediction")[0:1].write(np.array([9], np.int32)).result()   # bit rot after the marker
  assert outputs.open(tmp_path / "s").verify() == [0]
  with open(tmp_path / "s" / "done" / "00000000.json") as f:
    assert json.load(f)["rows"] == [0, 3]
  assert not any(name.endswith(".tmp") or ".tmp." in name for name in os.listdir(tmp_path / "s" / "done"))


def test_unfinished_rows_read_as_impossible_values_and_warn(tmp_path):
  store = _make(tmp_path / "s")
  store.write_chunk(0, _chunk(store, 0))
  reader = outputs.open(tmp_path / "s")
  with pytest.warns(outputs.UnfinishedRowsWarning, match=r"unfinished chunk\(s\) \[1, 2\] \(rows 3-5"):
    predictions = reader["prediction"][:]
  # Class 0 is a real prediction (row 0); unfinished rows are -1 and NaN, never a class or a value.
  assert predictions.tolist() == [0, 1, 2, -1, -1, -1, -1]
  with pytest.warns(outputs.UnfinishedRowsWarning):
    assert np.isnan(reader["values"][5]).all()
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert reader["prediction"][0:3].tolist() == [0, 1, 2]       # finished rows: no warning
  with pytest.raises(ValueError, match=r"unfinished chunk\(s\) \[2\]"):
    outputs.open(tmp_path / "s", unfinished="raise")["prediction"][6]
  assert outputs.open(tmp_path / "s", unfinished="ignore")["prediction"][-1] == -1
  with pytest.raises(ValueError, match="unfinished must be one of"):
    outputs.open(tmp_path / "s", unfinished="skip")
