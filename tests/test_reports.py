"""The report builder: tables, verdicts, figures linked relative to the report, atomic writes."""

import os

import numpy as np
import pytest

from xattr import reports


def test_fmt_and_table():
  assert reports.fmt(np.float32(0.5)) == "0.5" and reports.fmt(np.int64(7)) == "7"
  assert reports.fmt(None) == "—" and reports.fmt(float("inf")) == "∞" and reports.fmt(1234567.0) == "1.23e+06"
  text = reports.table(["a", "b"], [[1, 2.0], ["x", None]])
  assert text.splitlines() == ["| a | b |", "| --- | --- |", "| 1 | 2 |", "| x | — |"]
  with pytest.raises(ValueError, match=r"rows\[1\] must have 2 cells"):
    reports.table(["a", "b"], [[1, 2], [3]])


def test_verdict_words():
  assert reports.verdict(True, "A wins").startswith("**Verdict: yes** — A wins")
  assert "undecided" in reports.verdict(None, "A wins")


def test_report_with_figure(tmp_path):
  fig, ax = reports.figure()
  ax.plot([0, 1], [1, 0])
  png = reports.save_figure(fig, tmp_path / "figs" / "curve.png")
  assert os.path.getsize(png) > 0
  r = reports.Report("Study").heading("Results").table(["k"], [[1]]).figure(png, "the curve").bullets(["one"])
  path = r.write(tmp_path / "report.md")
  text = open(path).read()
  assert "![the curve](figs/curve.png)" in text and text.startswith("# Study\n\n## Results")
  assert sorted(os.listdir(tmp_path)) == ["figs", "report.md"]          # no temporary files left behind
