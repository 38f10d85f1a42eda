"""xattr.jobs.report: statistics streamed over a store equal those of the whole arrays; the report's sections."""

import os

import numpy as np
import pytest

from configs.attribute.base import base_config
from xattr import data, jobs, outputs


def _store(path, n=5, d=3, k=2):
  rng = np.random.default_rng(0)
  specs = {"values": outputs.ArraySpec((d, k), "float32"), "std": outputs.ArraySpec((d, k), "float32"),
           "num_evals": outputs.ArraySpec((), "int32"), "probs": outputs.ArraySpec((k,), "float32"),
           "prediction": outputs.ArraySpec((), "int32"), "label": outputs.ArraySpec((), "int32"),
           "target": outputs.ArraySpec((), "int32"), "insertion": outputs.ArraySpec((d + 1,), "float32"),
           "deletion": outputs.ArraySpec((d + 1,), "float32")}
  arrays = {name: rng.uniform(size=(n, *s.shape)).astype(s.dtype) if s.dtype == "float32" else
            rng.integers(0, k, size=n).astype(s.dtype) for name, s in specs.items()}
  meta = {"method": "kernel_shap", "split": "test", "model": "toy", "seed": 0, "versions": {}, "grid": None,
          "feature_names": ["a", "b", "c"]}
  store = outputs.create(path, specs, num_examples=n, chunk_size=2, fingerprint="f", metadata=meta)
  for c in range(store.num_chunks):
    start, end = store.chunk_rows(c)
    store.write_chunk(c, {name: a[start:end] for name, a in arrays.items()})
  return arrays


def test_summary_streams_to_the_whole_array_statistics(tmp_path):
  a = _store(str(tmp_path / "s"))
  summary, kept = jobs.summarize(outputs.open(tmp_path / "s"), keep=3)
  target_values = jobs.report.target_rows(a["values"], a["target"])
  np.testing.assert_allclose(summary["mean_abs_per_player"], np.abs(target_values).mean(0), rtol=1e-6)
  assert summary["accuracy"] == pytest.approx(np.mean(a["prediction"] == a["label"]))
  assert summary["mean_num_evals"] == pytest.approx(a["num_evals"].mean())
  aucs = np.trapezoid(a["insertion"].astype(np.float64), np.linspace(0, 1, 4), axis=1)
  assert summary["insertion_auc"] == pytest.approx(aucs.mean())
  assert summary["insertion_auc_sem"] == pytest.approx(aucs.std(ddof=1) / np.sqrt(5))
  np.testing.assert_allclose(kept["values"], target_values[:3], rtol=1e-6)


def test_report_sections_and_figures(tmp_path):
  a = _store(str(tmp_path / "s"))
  source = data.from_arrays("toy", np.random.default_rng(1).normal(size=(5, 3)), a["label"],
                            feature_names=["a", "b", "c"])
  summary, paths = jobs.write_report(base_config(), str(tmp_path), outputs.open(tmp_path / "s"), source,
                                     {"attributions_per_s": 2.0, "attribute_s": 2.5})
  text = open(paths["report"]).read()
  for part in ("# Attributions: kernel_shap on toy (test split)", "## Summary statistics", "insertion AUC",
               "mean game evaluations per example", "Top players", "![beeswarm summary](beeswarm.png)",
               "![insertion and deletion curves](curves.png)", "2.00 attributions/s"):
    assert part in text, part
  for key in ("beeswarm", "bar", "curves", "summary"):
    assert os.path.getsize(paths[key]) > 100, key
