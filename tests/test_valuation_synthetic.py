"""Individualized scaling laws on the synthetic pool: the generator, crossing curves, recovery scores and the
size-aware selection (the ranking made for the target size wins at both ends of a 10x size range)."""

import json
import os

import numpy as np
import pytest

from configs.valuation import synthetic
from experiments import valuation
from xattr.data import scaling_pool
from xattr.valuation import addition, blocks, pool as pool_lib, recovery, scaling, study as study_lib
from xattr.valuation.study import Samples


def test_generator_is_seeded_and_its_groups_live_where_documented():
  a, b = scaling_pool.make(200, 100, seed=3), scaling_pool.make(200, 100, seed=3)
  for x, y in zip(a[:6], b[:6]):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a.x_train, scaling_pool.make(200, 100, seed=4).x_train)
  sub = a.groups_train == 2
  assert sub.sum() == 30 and np.all(a.x_train[sub, :4] == 0) and np.all(a.x_train[~sub, 4:] == 0)
  assert np.bincount(a.y_train).tolist() == [100, 100] and (a.groups_val == 2).sum() == 15
  # Prototypes lie within PROTOTYPE_RADIUS of their class centre along the main rule.
  along = a.x_train[:, :4].sum(1) / 2.0 * (2 * a.y_train - 1)
  np.testing.assert_array_less(np.abs(along[a.groups_train == 0] - 1.2), scaling_pool.PROTOTYPE_RADIUS)
  with pytest.raises(ValueError, match="subgroup_fraction must lie in"):
    scaling_pool.make(100, 10, subgroup_fraction=1.0)
  config = synthetic.get_config("smoke")
  p = pool_lib.load_pool(config)
  assert p.x.shape == (120, 8) and p.group_names == scaling_pool.GROUPS and p.flipped.sum() == 0
  np.testing.assert_array_equal(p.groups, scaling_pool.make(120, 400, seed=0).groups_train)
  config.max_pool = 50
  with pytest.raises(ValueError, match="config.max_pool and config.pca_dims must be unset"):
    pool_lib.load_pool(config)
  assert blocks.even_sizes(4, 20, 200, "geometric").tolist() == [26, 47, 84, 149]     # 20 * 10^((i + 1/2) / 4)


def test_crossings_and_recovery_against_known_laws():
  rng = np.random.default_rng(0)
  k = np.tile(blocks.even_sizes(200, 20, 200, "geometric").astype(float), (3, 1))
  c, alpha = np.array([1.0, 0.02, 0.5]), np.array([1.0, 0.0, 1.0])     # 1/k meets 0.02 at k = 50; 0.5/k never
  truth = Samples(np.arange(3), k, scaling.law(c[:, None], alpha[:, None], k) + 1e-4 * rng.normal(size=k.shape), 0.)
  cross = recovery.crossings(truth, (c, alpha), (20, 200))
  assert cross == dict(pairs=3, law_crossings=2, significant_crossings=2, examples=cross["examples"])
  assert len(cross["examples"]) == 1 and 1 in cross["examples"][0]      # point 1 crosses both; one example
  best = {"mle_c": c, "mle_alpha": alpha, "loglog_c": c * 2, "loglog_alpha": alpha, "amortized_c": c[::-1],
          "amortized_alpha": alpha[::-1], "mc": truth.values}
  rec = recovery.recovery({8: best}, truth, (c, alpha), (20, 200))
  assert rec["clear_points"] == 3
  exact, doubled = rec["methods"]["mle"][8], rec["methods"]["loglog"][8]
  assert exact["alpha_spearman"] == pytest.approx(1.0) and exact["nrmse_kmin"] < 0.01 and exact["nrmse_kmax"] < 0.01
  assert doubled["spearman_kmin"] == pytest.approx(1.0) and doubled["nrmse_kmin"] > 0.5
  assert "alpha_spearman" not in rec["methods"]["mc"][8]


@pytest.fixture(scope="module")
def selection(tmp_path_factory):
  """The synthetic pool valued by MLE laws fitted to 16 samples per point over k in [20, 200)."""
  config = synthetic.get_config("smoke")
  config.synthetic.num_train, config.synthetic.num_val = 300, 1000
  config.sampling.k_min, config.sampling.k_max, config.sampling.samples_per_point = 20, 200, 16
  config.sampling.budgets, config.sampling.chunk_size, config.sampling.block_size = (16,), 1024, 8192
  config.addition.sizes, config.addition.num_added, config.addition.repeats = (20, 200), 10, 48
  study = study_lib.Study.create(config, str(tmp_path_factory.mktemp("synthetic")))
  samples = study_lib.main_samples(study, progress=False)
  fit = scaling.mle_fit(samples.sizes, samples.deltas, grid=(31, 31), levels=1)
  best = {"mle_c": fit.c, "mle_alpha": fit.alpha, "mle": scaling.distributional_value(fit.c, fit.alpha, 20, 200)}
  return study, samples, addition.point_addition(study, best, samples)


def test_the_true_curves_of_prototypes_and_the_subgroup_cross(selection):
  study, samples, _ = selection
  groups = study.pool.groups
  small, large = samples.near(25, ratio=1.3)[0], samples.near(160, ratio=1.3)[0]
  proto, sub = groups == 0, groups == 2
  assert small[proto].mean() > 1.5 * small[sub].mean() and large[sub].mean() > 1.5 * large[proto].mean()


def test_size_matched_ranking_wins_at_both_ends_on_the_synthetic_pool(selection):
  study, _, added = selection
  groups = study.pool.groups
  assert added.sizes == (20, 200) and added.overlap <= 3
  for k in added.sizes:
    paired = added.paired["law vs other end"][k]
    assert paired["mean"] > 2 * paired["se"], (k, paired)
  # The small-size ranking picks prototypes, the large-size one the slow-decaying subgroup.
  small, large = groups[added.chosen["top by law at k=20"]], groups[added.chosen["top by law at k=200"]]
  assert (small == 0).sum() > (large == 0).sum()
  assert (large == 2).sum() >= 5


@pytest.mark.slow
def test_synthetic_driver_smoke(tmp_path):
  out = valuation.run(synthetic.get_config("smoke"), str(tmp_path))
  report = open(out["paths"]["report.md"]).read()
  for text in ("Crossing curves and estimator recovery", "log-log regression: Spearman(alpha, true alpha)",
               "Size-aware selection", "law vs other end", "top by TMC Data Shapley", "| subgroup |",
               "No labels flipped", "selection.png", "crossings.png"):
    assert text in report, text
  for name in ("selection.png", "crossings.png", "addition.png"):
    assert os.path.getsize(os.path.join(str(tmp_path), name)) > 0
  m = json.load(open(out["paths"]["metrics.json"]))
  assert m["addition_sizes"] == [20, 40, 59] and m["crossings"]["pairs"] == 24 * 23 // 2
  assert set(m["recovery"]["methods"]) == set(recovery.LAW_METHODS) and m["groups"]["subgroup"]["points"] == 18
