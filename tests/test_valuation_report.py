"""The valuation study's outputs: the addition verdict, binned curves, figures and the per-point table."""

import csv
import os

import numpy as np

from xattr.valuation import report, scaling
from xattr.valuation.pool import make_pool
from xattr.valuation.study import METHODS, Samples


def test_addition_verdict_needs_a_win_at_both_ends():
  win, tie, loss = {"mean": 0.03, "se": 0.01}, {"mean": 0.01, "se": 0.01}, {"mean": -0.03, "se": 0.01}
  both = report.addition_verdict({"law vs other end": {"100": win, "300": win}}, (100, 300))
  assert "wins at both ends, so the best points to add depend on the dataset size" in both
  # Only the ends count: a loss at a middle size does not change the verdict.
  mixed = report.addition_verdict({"law vs other end": {"100": loss, "200": win, "300": win},
                                   "law vs random": {"100": win, "200": loss, "300": tie}}, (100, 200, 300))
  assert "law vs other end: the size-matched ranking does not win at both ends (k=100: loses, k=300: wins)" in mixed
  assert "law vs random: the size-matched ranking does not win at both ends (k=100: wins, k=300: ties)" in mixed
  assert "**Verdict: yes**" in both and mixed.count("**Verdict: no**") == 2
  assert report.addition_verdict({"law vs random": {"1": win, "2": win}}, (1, 2)).endswith("wins at both ends.")


def test_binned_means_match_a_direct_computation():
  rng = np.random.default_rng(0)
  sizes = rng.integers(10, 100, 400).astype(float)
  deltas = 1.0 / sizes + 0.01 * rng.normal(size=400)
  k, mean, se = report.binned_means(sizes, deltas, num_bins=4)
  edges = np.geomspace(10, 100, 5)
  first = sizes < edges[1]
  np.testing.assert_allclose(mean[0], deltas[first].mean())
  assert np.all(np.diff(k) > 0) and np.all(np.diff(mean) < 0) and np.all(se > 0)


def test_figures_and_points_table(tmp_path):
  budgets = [4, 8]
  acc = {m: {b: dict(nrmse=1.0 / b, pearson=0.5, spearman=0.5) for b in budgets} for m in METHODS}
  aurocs = {m: {b: 0.6 for b in budgets} for m in METHODS}
  paths = [report.plot_accuracy(str(tmp_path / "a.png"), budgets, acc),
           report.plot_mislabeled(str(tmp_path / "m.png"), budgets, aurocs, {"leave-one-out": (0.55, "11 fits")}),
           report.plot_addition(str(tmp_path / "add.png"), {10: {"r": dict(mean=0.1, se=0.01)},
                                                            20: {"r": dict(mean=0.05, se=0.01)}}, (10, 20)),
           report.plot_params(str(tmp_path / "p.png"), scaling.ScalingFit(*np.ones((5, 4))), np.array([0, 1, 0, 1]) > 0,
                              "laws")]
  rng = np.random.default_rng(0)
  truth = Samples(np.array([1, 3]), rng.integers(10, 50, (2, 400)).astype(float), rng.normal(0.01, 0.003, (2, 400)),
                  0.0)
  best = {k: rng.normal(size=6) for k in ("mc", "mle", "amortized", "value_net")}
  best.update({f"{law}_{f}": np.abs(rng.normal(size=6)) for law in ("mle", "amortized")
               for f in ("c", "alpha", "sigma", "beta")})
  fit = scaling.ScalingFit(*np.abs(rng.normal(size=(5, 2))))
  pool = make_pool("toy", rng.normal(size=(6, 2)), np.arange(6) % 2, rng.normal(size=(3, 2)), np.arange(3) % 2, 2,
                   seed=0, label_noise=0.34)
  examples = report.scaling_examples(truth, fit, pool.flipped, best, 2)
  assert sorted(e["point"] for e in examples) == [1, 3]
  paths.append(report.plot_scaling_curves(str(tmp_path / "s.png"), examples, (10, 50)))
  assert all(os.path.getsize(p) > 0 for p in paths)
  table = report.write_points_csv(str(tmp_path / "points.csv"), pool, best, {"loo": np.zeros(6)}, truth, 8)
  with open(table) as f:
    rows = list(csv.reader(f))
  assert rows[1] == report.POINT_COLUMNS and len(rows) == 8
  assert [r[0] for r in rows[2:] if r[-2]] == ["1", "3"] and rows[2][16] == ""      # no TMC values given
