"""Attribution metrics against closed forms on additive games, brute force over orderings, and numpy/scipy."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from tests.conftest import table_game
from xattr import evaluation, masks

KEY = jax.random.key(0)


def additive_game(w, null=0.3):
  w = jnp.asarray(w, jnp.float32)
  return lambda m: null + m.astype(jnp.float32) @ w


def reference_curves(w, attribution, null, sizes):
  """Insertion/deletion values of an additive game for the given prefix sizes (numpy, stable tie-break)."""
  order = np.argsort(-np.asarray(attribution), kind="stable")
  gained = np.concatenate([[0.0], np.cumsum(np.asarray(w)[order])])[sizes]
  return null + gained, null + np.sum(w) - gained


@pytest.mark.parametrize("num_steps", [None, 3])
def test_curves_on_additive_game_match_closed_form(num_steps):
  rng = np.random.default_rng(0)
  w, attribution = rng.normal(size=7), rng.normal(size=7)
  sizes = np.arange(8) if num_steps is None else np.array([0, 2, 5, 7])
  ins_ref, del_ref = reference_curves(w, attribution, 0.3, sizes)
  ins = evaluation.insertion_curve(additive_game(w), attribution, num_steps=num_steps)
  dele = evaluation.deletion_curve(additive_game(w), attribution, num_steps=num_steps)
  np.testing.assert_allclose(ins.fractions, sizes / 7, atol=1e-7)
  np.testing.assert_allclose(ins.values, ins_ref, atol=1e-5)
  np.testing.assert_allclose(dele.values, del_ref, atol=1e-5)
  np.testing.assert_allclose(evaluation.insertion_auc(additive_game(w), attribution, num_steps=num_steps),
                             np.trapezoid(ins_ref, sizes / 7), atol=1e-5)
  np.testing.assert_allclose(evaluation.deletion_auc(additive_game(w), attribution, num_steps=num_steps),
                             np.trapezoid(del_ref, sizes / 7), atol=1e-5)
  both = evaluation.insertion_deletion_auc(additive_game(w), attribution, num_steps=num_steps, batch_size=3)
  np.testing.assert_allclose(both, [np.trapezoid(ins_ref, sizes / 7), np.trapezoid(del_ref, sizes / 7)], atol=1e-5)
  ins2, del2 = evaluation.insertion_deletion_curves(additive_game(w), attribution, num_steps=num_steps)
  np.testing.assert_allclose(ins2.values, ins_ref, atol=1e-5)
  np.testing.assert_allclose(del2.values, del_ref, atol=1e-5)


def test_vector_game_curves_are_per_output():
  rng = np.random.default_rng(1)
  w = rng.normal(size=(5, 2))
  attribution = rng.normal(size=5)
  vector = lambda m: 0.3 + m.astype(jnp.float32) @ jnp.asarray(w, jnp.float32)
  curve = evaluation.insertion_curve(vector, attribution)
  assert curve.values.shape == (6, 2)
  for k in range(2):
    np.testing.assert_allclose(curve.values[:, k], reference_curves(w[:, k], attribution, 0.3, np.arange(6))[0],
                               atol=1e-5)


def test_true_ranking_is_optimal_among_all_orderings():
  # On an additive game, inserting in descending w maximises every prefix sum, so no ordering beats it.
  d = 5
  w = jnp.array([0.4, -0.7, 1.3, 0.1, -0.2])
  orders = np.array(list(itertools.permutations(range(d))))
  # attribution = -position: player orders[j][0] ranks first.
  attributions = -np.argsort(orders, axis=1).astype(np.float32)
  ins = jax.vmap(lambda a: evaluation.insertion_auc(additive_game(w), a))(attributions)
  dele = jax.vmap(lambda a: evaluation.deletion_auc(additive_game(w), a))(attributions)
  best_ins = evaluation.insertion_auc(additive_game(w), w)
  best_del = evaluation.deletion_auc(additive_game(w), w)
  assert float(best_ins) >= float(ins.max()) - 1e-6 and float(best_del) <= float(dele.min()) + 1e-6
  np.testing.assert_allclose([ins.max(), dele.min()], [best_ins, best_del], atol=1e-6)
  # Only the true ordering attains them (w has distinct values).
  assert int(np.sum(np.asarray(ins) > float(best_ins) - 1e-6)) == 1
  assert int(np.sum(np.asarray(dele) < float(best_del) + 1e-6)) == 1


def test_ties_go_to_the_lower_index():
  assert evaluation.ranking(jnp.array([1.0, 2.0, 1.0, 2.0, -0.0, 0.0])).tolist() == [1, 3, 0, 2, 4, 5]
  z = evaluation.curve_masks(jnp.zeros(3))
  assert z.astype(int).tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]
  z = evaluation.curve_masks(jnp.zeros(3), deletion=True)
  assert z.astype(int).tolist() == [[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0]]


def test_all_prefixes_in_one_game_call():
  calls = []

  def game(m):
    calls.append(m.shape)
    return m.sum(1).astype(jnp.float32)

  evaluation.insertion_deletion_auc(game, jnp.arange(6.0))
  assert calls == [(14, 6)]
  calls.clear()
  ins, dele = evaluation.insertion_deletion_auc(game, jnp.arange(6.0), batch_size=4)
  assert calls == [(4, 6), (2, 6)]                # 14 rows: lax.map traces one chunk of 4 (x3), then the rest
  # v = |z|: both curves are the diagonal / anti-diagonal, area 1/2 times d.
  np.testing.assert_allclose([ins, dele], [3.0, 3.0], atol=1e-6)


def test_sensitivity_n_of_exact_shapley_on_additive_game_is_one():
  w = np.random.default_rng(2).normal(size=8)
  phi = w                                         # the exact Shapley values of an additive game
  corr = evaluation.sensitivity_n(additive_game(w), phi, KEY, sizes=[1, 2, 4, 7], num_samples=32)
  np.testing.assert_allclose(corr, 1.0, atol=1e-5)


@pytest.mark.parametrize("outputs", [None, 2])
def test_sensitivity_n_matches_numpy_correlation(outputs):
  rng = np.random.default_rng(3)
  d, m = 6, 40
  shape = (d,) if outputs is None else (d, outputs)          # attribution columns match the game's outputs
  values = rng.normal(size=(2 ** d, *shape[1:]))
  inner = table_game(values)
  seen = []

  def game(z):
    seen.append(np.asarray(z))
    return inner(z)

  attribution = rng.normal(size=shape)
  corr = evaluation.sensitivity_n(game, attribution, KEY, sizes=[2, 3], num_samples=m)
  kept = seen[0][1:]
  assert seen[0][0].all() and kept.shape == (2 * m, d)
  removed = ~kept
  np.testing.assert_array_equal(removed.sum(1), [2] * m + [3] * m)
  drop = (values[-1] - values[(kept * 2 ** np.arange(d)).sum(1)]).reshape(2 * m, -1)
  attr_sum = (removed @ attribution).reshape(2 * m, -1)
  want = [[np.corrcoef(attr_sum[i * m:(i + 1) * m, k], drop[i * m:(i + 1) * m, k])[0, 1]
           for k in range(drop.shape[1])] for i in range(2)]
  assert corr.shape == (2, *shape[1:])
  np.testing.assert_allclose(corr, np.reshape(want, corr.shape), atol=1e-5)
  if outputs is None:
    # Same key, same subsets; a different key, different subsets.
    np.testing.assert_array_equal(evaluation.sensitivity_n(inner, attribution, KEY, sizes=[2, 3], num_samples=m),
                                  corr)
    assert not np.allclose(evaluation.sensitivity_n(inner, attribution, jax.random.key(9), sizes=[2, 3],
                                                    num_samples=m), corr)


def numpy_top_k(x, k):
  return set(np.argsort(-x, kind="stable")[:k].tolist())


def test_error_metrics_match_numpy_and_scipy():
  rng = np.random.default_rng(5)
  ref = rng.normal(size=(4, 9, 2))
  est = ref + 0.5 * rng.normal(size=ref.shape)
  est[0, :3, 0] = est[0, 3, 0]                    # ties, for Spearman's average ranks
  est[1, 2, 1] = 0.0
  ref[1, 2, 1] = 0.0                              # a shared zero agrees in sign
  per = evaluation.error_metrics(est, ref, top_k=3, reduce=False)
  assert per.mae.shape == (4, 2)
  for b, k in itertools.product(range(4), range(2)):
    e, r = est[b, :, k], ref[b, :, k]
    np.testing.assert_allclose(per.mae[b, k], np.abs(e - r).mean(), rtol=1e-5)
    np.testing.assert_allclose(per.rmse[b, k], np.sqrt(((e - r) ** 2).mean()), rtol=1e-5)
    np.testing.assert_allclose(per.relative[b, k], np.linalg.norm(e - r) / np.linalg.norm(r), rtol=1e-5)
    np.testing.assert_allclose(per.correlation[b, k], np.corrcoef(e, r)[0, 1], rtol=1e-5)
    np.testing.assert_allclose(per.spearman[b, k], scipy.stats.spearmanr(e, r).statistic, rtol=1e-5)
    np.testing.assert_allclose(per.sign_agreement[b, k], np.mean(np.sign(e) == np.sign(r)), rtol=1e-6)
    np.testing.assert_allclose(per.top_k_overlap[b, k], len(numpy_top_k(e, 3) & numpy_top_k(r, 3)) / 3, rtol=1e-6)
  mean = evaluation.error_metrics(est, ref, top_k=3)
  for name in evaluation.ErrorMetrics._fields:
    np.testing.assert_allclose(getattr(mean, name), np.mean(getattr(per, name)), rtol=1e-5)


def test_error_metrics_identities():
  ref = jnp.array([[3.0, -1.0, 2.0, 0.5], [1.0, 1.0, 1.0, 1.0]])
  same = evaluation.error_metrics(ref, ref, top_k=2, reduce=False)
  np.testing.assert_allclose(same.mae, 0.0)
  np.testing.assert_allclose(same.sign_agreement, 1.0)
  np.testing.assert_allclose(same.top_k_overlap, 1.0)
  np.testing.assert_allclose(same.correlation[0], 1.0, atol=1e-6)
  assert np.isnan(same.correlation[1]) and np.isnan(same.spearman[1])      # a constant reference
  # The average skips undefined cases instead of turning the whole summary into NaN.
  np.testing.assert_allclose(evaluation.error_metrics(ref, ref, top_k=2).correlation, 1.0, atol=1e-6)
  flipped = evaluation.error_metrics(-ref, ref, top_k=2, reduce=False)
  np.testing.assert_allclose([flipped.correlation[0], flipped.sign_agreement[0], flipped.relative[0]],
                             [-1.0, 0.0, 2.0], atol=1e-6)
  # A single float[d] is one example; default top_k = d // 4.
  one = evaluation.error_metrics(jnp.arange(8.0), jnp.arange(8.0)[::-1], reduce=False)
  assert one.mae.shape == (1,) and float(one.top_k_overlap[0]) == 0.0


def test_aggregate_to_players_sums_patches():
  rng = np.random.default_rng(6)
  pix = rng.normal(size=(6, 4, 3)).astype(np.float32)
  got = evaluation.aggregate_to_players(pix, 2)
  want = [pix[r:r + 2, c:c + 2].sum() for r in range(0, 6, 2) for c in range(0, 4, 2)]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  groups = masks.patch_groups((6, 4), 2)
  np.testing.assert_allclose(evaluation.aggregate_to_players(pix, groups), want, rtol=1e-5)
  np.testing.assert_allclose(evaluation.aggregate_to_players(pix[..., 0], groups),
                             evaluation.aggregate_to_players(pix[..., 0], 2), rtol=1e-5)
  # A group matrix over every feature (here: channels as players).
  by_channel = np.repeat(np.eye(3, dtype=bool)[:, None], 24, axis=1).reshape(3, 72)
  np.testing.assert_allclose(evaluation.aggregate_to_players(pix, by_channel), pix.sum((0, 1)), rtol=1e-5)


def test_jit_and_vmap_over_inputs():
  w = jnp.array([0.5, -1.0, 2.0, 0.1])
  f = lambda xb: jnp.tanh(xb @ w)
  xs, attrs = np.random.default_rng(7).normal(size=(2, 3, 4)).astype(np.float32)

  def run(x, a):
    v = lambda m: f(jnp.where(m, x, 0.0))
    ins, dele = evaluation.insertion_deletion_auc(v, a, num_steps=2)
    sens = evaluation.sensitivity_n(v, a, KEY, sizes=[1, 2], num_samples=8)
    return ins, dele, sens

  batched = jax.jit(jax.vmap(run))(xs, attrs)
  single = jax.jit(run)
  for i in range(3):
    for got, want in zip(batched, single(xs[i], attrs[i])):
      np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)


def test_bad_arguments_raise_clear_errors():
  v = additive_game(np.ones(4))
  with pytest.raises(ValueError, match=r"attribution must be float\[num_players\].*games.select.*got shape \(4, 2\)"):
    evaluation.insertion_curve(v, jnp.ones((4, 2)))
  with pytest.raises(ValueError, match="num_steps must be <= num_players = 4.*got 5"):
    evaluation.deletion_auc(v, jnp.ones(4), num_steps=5)
  with pytest.raises(FloatingPointError, match="attribution contains 1 non-finite"):
    evaluation.insertion_auc(v, jnp.array([1.0, jnp.nan, 0.0, 0.0]))
  with pytest.raises(FloatingPointError, match="game values contains 2 non-finite"):
    evaluation.insertion_auc(lambda m: jnp.where(m.sum(1) > 2, jnp.nan, 1.0), jnp.ones(4))
  with pytest.raises(ValueError, match=r"game must map .* returned shape \(5, 1, 1\)"):
    evaluation.insertion_curve(lambda m: jnp.zeros((m.shape[0], 1, 1)), jnp.ones(4))
  with pytest.raises(ValueError, match=r"sizes must be .* \[1, 3\], got \[1, 4\]"):
    evaluation.sensitivity_n(v, jnp.ones(4), KEY, sizes=[1, 4], num_samples=8)
  with pytest.raises(ValueError, match="num_samples must be >= 2"):
    evaluation.sensitivity_n(v, jnp.ones(4), KEY, sizes=[1], num_samples=1)
  with pytest.raises(ValueError, match="one column per game output"):
    evaluation.sensitivity_n(v, jnp.ones((4, 2)), KEY, sizes=[1], num_samples=8)
  with pytest.raises(ValueError, match=r"same non-empty shape.*got \(2, 4\) and \(2, 5\)"):
    evaluation.error_metrics(jnp.ones((2, 4)), jnp.ones((2, 5)))
  with pytest.raises(ValueError, match="top_k must be <= num_players = 4, got 5"):
    evaluation.error_metrics(jnp.ones((2, 4)), jnp.ones((2, 4)), top_k=5)
  with pytest.raises(ValueError, match=r"height and width \(6, 4\) must be divisible by the patch size 4"):
    evaluation.aggregate_to_players(jnp.ones((6, 4, 3)), 4)
  with pytest.raises(ValueError, match="has 10 feature columns, which matches neither"):
    evaluation.aggregate_to_players(jnp.ones((6, 4, 3)), np.ones((2, 10), bool))
