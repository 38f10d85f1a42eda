"""Point addition: stratified bases outside the candidates, size-local ground truth, paired gains."""

import numpy as np
import pytest

from xattr.valuation import addition
from xattr.valuation.study import Samples


def test_sample_bases_are_stratified_and_avoid_the_candidates():
  labels = np.arange(60) % 3
  bases = addition.sample_bases(np.random.default_rng(0), labels, exclude=[0, 1, 2, 3], size=12, repeats=5)
  assert bases.shape == (5, 60) and np.all(bases.sum(1) == 12) and not bases[:, :4].any()
  for row in bases:
    assert np.bincount(labels[row], minlength=3).tolist() == [4, 4, 4]
  assert len({row.tobytes() for row in bases}) == 5


def test_choose_ranks_by_the_law_at_each_size():
  # Point 0 is best at small k (large c, steep decay), point 1 at large k (small c, flat).
  c, alpha = np.array([100.0, 1.0, 0.1, 0.2]), np.array([2.0, 0.1, 0.5, 0.5])
  truth = Samples(np.array([2, 3]), np.array([[10.0, 100.0], [10.0, 100.0]]), np.array([[1.0, 0.0], [0.0, 1.0]]),
                  0.0)
  chosen = addition.choose(c, alpha, truth, (10, 100), 1, seed=0, values={"Data Banzhaf": np.array([0, 0, 0, 1.0])})
  assert list(chosen) == ["top by law at k=10", "top by law at k=100", "top by ground truth at k=10",
                          "top by ground truth at k=100", "top by Data Banzhaf", "random"]
  assert chosen["top by law at k=10"].tolist() == [0] and chosen["top by law at k=100"].tolist() == [1]
  assert chosen["top by ground truth at k=10"].tolist() == [2]
  assert chosen["top by ground truth at k=100"].tolist() == [3]
  assert chosen["top by Data Banzhaf"].tolist() == [3]
  np.testing.assert_allclose(addition.local_values(truth, 10), [1.0, 0.0])


def test_target_sizes_and_the_other_end():
  ad = type("A", (), dict(sizes=(), small=100, large=300))
  assert addition.target_sizes(ad) == (100, 300)
  ad.sizes = (20, 60, 200)
  assert addition.target_sizes(ad) == (20, 60, 200)
  assert [addition.other_end((20, 60, 200), k) for k in (20, 60, 200)] == [200, 200, 20]
  ad.sizes = (60, 20)
  with pytest.raises(ValueError, match="at least two increasing"):
    addition.target_sizes(ad)


def test_gains_pair_the_size_matched_ranking_against_the_others():
  sizes = (10, 30, 100)
  names = [addition.law_rule(k) for k in sizes] + [addition.truth_rule(k) for k in sizes] + ["random"]
  chosen = {name: np.array([i]) for i, name in enumerate(names)}
  rng = np.random.default_rng(0)
  base = rng.normal(size=(1, 50))
  # At each size, that size's law rule gains 0.3, the others 0.1; truth rules 0.2; random 0.
  values = {}
  for k in sizes:
    shift = [[0.3 if name == addition.law_rule(k) else 0.1] for name in names[:3]] + [[0.2]] * 3 + [[0.0]]
    values[f"k{k}"] = np.concatenate([base, base + shift + 0.01 * rng.normal(size=(7, 50))])
  result, paired = addition.gains(values, chosen, sizes)
  assert sorted(paired) == ["ground truth vs other end", "law vs other end", "law vs random"]
  assert result[10][addition.law_rule(10)]["mean"] == pytest.approx(0.3, abs=0.01)
  for k in sizes:
    assert paired["law vs other end"][k]["mean"] == pytest.approx(0.2, abs=0.01)
    assert paired["law vs random"][k]["mean"] == pytest.approx(0.3, abs=0.01)
    assert abs(paired["ground truth vs other end"][k]["mean"]) < 0.01 and paired["law vs other end"][k]["se"] > 0
