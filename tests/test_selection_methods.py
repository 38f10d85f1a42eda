"""Masked predictors, GDFS and DIME building blocks, baselines and scoring."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from xattr import masks
from xattr.selection import baselines, dime, evaluation, gdfs, predictor, rollout



# --- masked predictor -------------------------------------------------------------------------------------------

def test_masked_mlp_groups_and_float_masks():
  rng = np.random.default_rng(1)
  groups = masks.patch_groups(4, 2)                                   # 4 players over 16 pixels
  net = predictor.MaskedMLP(16, 3, (8,), groups=groups, rngs=nnx.Rngs(0))
  assert net.num_players == 4 and net.num_features == 16
  x = jnp.asarray(rng.normal(size=(5, 16)), jnp.float32)
  m = jnp.asarray(rng.random((5, 4)) < 0.5)
  np.testing.assert_array_equal(np.asarray(net.feature_mask(m)), np.asarray(masks.expand_groups(m, groups)))
  # A 0/1 float mask is the same as the bool one; the output only depends on the kept features.
  np.testing.assert_allclose(np.asarray(net(x, m)), np.asarray(net(x, m.astype(jnp.float32))), rtol=1e-6)
  x2 = jnp.where(masks.expand_groups(m, groups), x, 7.0)
  np.testing.assert_allclose(np.asarray(net(x, m)), np.asarray(net(x2, m)), rtol=1e-5, atol=1e-6)
  params, apply = predictor.masked_fn(net)
  np.testing.assert_allclose(np.asarray(jax.jit(apply)(params, x, m)), np.asarray(net(x, m)), rtol=1e-6)
  # Same architecture, same apply function (compiled code is shared between snapshots).
  assert predictor.masked_fn(predictor.MaskedMLP(16, 3, (8,), groups=groups, rngs=nnx.Rngs(5))).apply is apply


def test_masked_mlp_prior_information_and_errors():
  net = predictor.MaskedMLP(4, 2, (8,), prior_features=3, rngs=nnx.Rngs(0))
  params, apply = predictor.masked_fn(net)
  inputs = {"x": jnp.ones((2, 4)), "prior": jnp.ones((2, 3))}
  other = {"x": inputs["x"], "prior": -inputs["prior"]}
  out, out_other = jax.jit(lambda p: (apply(p, inputs, jnp.zeros((2, 4), bool)),
                                      apply(p, other, jnp.zeros((2, 4), bool))))(params)
  # The prior is seen even with nothing selected.
  assert out.shape == (2, 2) and not np.allclose(out, out_other)
  with pytest.raises(ValueError, match="prior_features=3"):
    net(jnp.ones((2, 4)), jnp.zeros((2, 4), bool))
  with pytest.raises(ValueError, match=r"groups must be a \[num_players, num_features=4\]"):
    predictor.MaskedMLP(4, 2, groups=np.ones((2, 5)), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"train_data must be a mapping with keys 'x' and 'y'.*got \['x'\]"):
    predictor.pretrain(jax.random.key(0), net, {"x": np.ones((4, 4))}, num_steps=1, batch_size=2)
  with pytest.raises(ValueError, match=r"train_data\['y'\] must hold integer class labels, got dtype float64"):
    predictor.pretrain(jax.random.key(0), net, {"x": np.ones((4, 4)), "y": np.ones(4)}, num_steps=1, batch_size=2)
  with pytest.raises(ValueError, match=r"expects x \[..., 4\] and mask \[..., 4\]"):
    predictor.MaskedMLP(4, 2, (8,), rngs=nnx.Rngs(0))(jnp.ones((2, 4)), jnp.ones((2, 3), bool))


# --- GDFS -------------------------------------------------------------------------------------------------------

def test_hard_select_is_argmax_with_exclusion():
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(size=(200, 7)), jnp.float32)
  mask = jnp.asarray(rng.random((200, 7)) < 0.5).at[:, 6].set(False)   # at least one player available
  noise = jax.random.gumbel(jax.random.key(0), (200, 7))
  for n in (None, noise):
    choice = np.asarray(gdfs.hard_select(logits, mask, n))
    assert not np.asarray(mask)[np.arange(200), choice].any()
    base = np.asarray(logits) / gdfs.GAMMA + (0 if n is None else np.asarray(n))
    np.testing.assert_array_equal(choice, np.where(np.asarray(mask), -np.inf, base).argmax(1))
  # The argmax of the logits is selected already in every row: the next best is chosen.
  top = jnp.argmax(logits, 1)
  choice = gdfs.hard_select(logits, jax.nn.one_hot(top, 7))
  second = np.argsort(np.asarray(logits), 1)[:, -2]
  np.testing.assert_array_equal(np.asarray(choice), second)


def test_concrete_sample():
  rng = np.random.default_rng(3)
  logits = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
  soft, perturbed = gdfs.concrete(jax.random.key(1), logits, 1e-3)
  np.testing.assert_allclose(np.asarray(soft.sum(-1)), 1.0, rtol=1e-5)
  # At low temperature the relaxed sample is the one-hot Gumbel-max sample.
  np.testing.assert_allclose(np.asarray(soft), np.asarray(jax.nn.one_hot(perturbed.argmax(-1), 5)), atol=1e-3)
  warm, _ = gdfs.concrete(jax.random.key(1), logits, 10.0)
  assert float(warm.max()) < 0.9 and float(warm.min()) > 0.01


def _toy_nets(d=5, classes=3):
  """A masked predictor and a selector as plain (params, apply) pairs: tanh MLPs on [x * m, m]."""
  rng = np.random.default_rng(4)
  w = lambda *shape: jnp.asarray(rng.normal(size=shape) / np.sqrt(shape[0]), jnp.float32)
  apply = lambda p, x, m: jnp.tanh(jnp.concatenate([x * m, m.astype(x.dtype)], -1) @ p["w1"]) @ p["w2"]
  pred = predictor.MaskedFn({"w1": w(2 * d, 8), "w2": w(8, classes)}, apply)
  sel = predictor.MaskedFn({"w1": w(2 * d, 8), "w2": w(8, d)}, apply)
  x = jnp.asarray(rng.normal(size=(16, d)), jnp.float32)
  y = jnp.asarray(rng.integers(0, classes, 16))
  return pred, sel, x, y


def test_gdfs_loss_reaches_the_policy_through_the_relaxation():
  pred, pol, x, y = _toy_nets()
  params = {"predictor": pred.params, "policy": pol.params}
  f = lambda p: gdfs.loss(pred.apply, pol.apply, p, x, y, jax.random.key(0), num_players=5, num_steps=3,
                          temperature=0.5)
  (value, aux), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(params)
  norm = lambda t: float(sum(jnp.abs(leaf).sum() for leaf in jax.tree.leaves(t)))
  assert norm(grads["policy"]) > 0 and norm(grads["predictor"]) > 0
  assert np.isfinite(float(value)) and set(aux) == {"loss_first", "loss_last"}


# --- DIME -------------------------------------------------------------------------------------------------------

def test_dime_targets_are_stop_gradient_loss_drops():
  rng = np.random.default_rng(5)
  pred, val, x, y = _toy_nets()
  params = {"predictor": pred.params, "value": val.params}
  mask = jnp.asarray(rng.random((16, 5)) < 0.3).at[:, 4].set(False)    # every row can still select a player

  def step(p):
    return dime.transition(pred.apply, val.apply, p, x, y, mask, pred.apply(p["predictor"], x, mask),
                           jax.random.key(0), epsilon=0.3)

  @jax.jit
  def everything(p):
    target_loss = lambda q: jnp.sum(predictor.cross_entropy(pred.apply(q["predictor"], x, mask), y))
    t = step(p)
    after_mask = mask | jax.nn.one_hot(t.action, 5, dtype=bool)
    drop = (predictor.cross_entropy(pred.apply(p["predictor"], x, mask), y)
            - predictor.cross_entropy(pred.apply(p["predictor"], x, after_mask), y))
    return (t, drop, jax.grad(lambda q: step(q).value_loss)(p), jax.grad(lambda q: step(q).pred_loss)(p),
            jax.grad(target_loss)(p))

  t, drop, g_value_loss, g_pred_loss, g_target = everything(params)
  # target = loss before - loss after the chosen player, per sample.
  np.testing.assert_allclose(np.asarray(t.target), np.asarray(drop), rtol=1e-5, atol=1e-6)
  assert not np.asarray(mask)[np.arange(16), np.asarray(t.action)].any()
  # The value regression does not move the predictor (targets and entropy are under stop_gradient) ...
  leaves = lambda t: [np.asarray(leaf) for leaf in jax.tree.leaves(t)]
  assert all((leaf == 0).all() for leaf in leaves(g_value_loss["predictor"]))
  assert any((leaf != 0).any() for leaf in leaves(g_value_loss["value"]))
  # ... while the predictor loss does.
  assert any((leaf != 0).any() for leaf in leaves(g_pred_loss["predictor"]))
  # Without the stop_gradient the target would carry predictor gradients: the check above can fail.
  assert any((leaf != 0).any() for leaf in leaves(g_target["predictor"]))


def test_dime_actions_exclude_selected_and_follow_cost():
  rng = np.random.default_rng(6)
  cmi = jnp.asarray(rng.random((500, 6)), jnp.float32)
  mask = jnp.asarray(rng.random((500, 6)) < 0.5).at[:, 5].set(False)
  costs = jnp.asarray([1.0, 2.0, 0.5, 4.0, 1.0, 3.0])
  greedy = np.asarray(dime.select_action(jax.random.key(0), cmi, mask, 0.0, costs))
  np.testing.assert_array_equal(greedy, np.where(np.asarray(mask), -np.inf, np.asarray(cmi / costs)).argmax(1))
  explore = np.asarray(dime.select_action(jax.random.key(1), cmi, mask, 1.0))
  assert not np.asarray(mask)[np.arange(500), explore].any()
  # Uniform over the available players: each of the always-available player 5's share is ~1 / (#available).
  share = np.mean(explore[np.asarray(mask).sum(1) == 5] == 5)
  assert abs(share - 1.0) < 1e-9
  rows = np.asarray(mask).sum(1) == 3
  assert abs(np.mean(explore[rows] == 5) - 1 / 3) < 0.12


def test_cmi_scalings():
  rng = np.random.default_rng(7)
  raw = jnp.asarray(rng.normal(size=(4, 3)) * 3, jnp.float32)
  logits = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  bounded = dime.cmi_estimate(raw, logits, "bounded")
  assert (np.asarray(bounded) <= np.asarray(dime.entropy(logits))[:, None] + 1e-6).all()
  assert (np.asarray(dime.cmi_estimate(raw, logits, "positive")) > 0).all()
  np.testing.assert_array_equal(np.asarray(dime.cmi_estimate(raw, logits, "raw")), np.asarray(raw))
  with pytest.raises(ValueError, match="scaling must be one of"):
    dime.cmi_estimate(raw, logits, "clipped")


def test_dime_loss_runs_with_costs_and_prior():
  net = lambda out: predictor.MaskedMLP(4, out, (8,), prior_features=2, rngs=nnx.Rngs(out))
  pred, val = predictor.masked_fn(net(3)), predictor.masked_fn(net(4))
  inputs = {"x": jnp.ones((8, 4)), "prior": jnp.ones((8, 2))}
  total, aux = jax.jit(lambda p: dime.loss(pred.apply, val.apply, p, inputs, jnp.zeros(8, jnp.int32),
                                           jax.random.key(0), num_players=4, num_steps=4, epsilon=0.5,
                                           costs=jnp.asarray([1.0, 2.0, 3.0, 4.0])))(
      {"predictor": pred.params, "value": val.params})
  assert np.isfinite(float(total)) and float(aux["value_loss"]) >= 0


# --- baselines --------------------------------------------------------------------------------------------------

def test_random_and_static_scores_give_their_orders():
  scores = baselines.random_scores(jax.random.key(0), 50, 6)
  predict = lambda p, x, m: jnp.zeros((x.shape[0], 2))
  out = baselines.fixed_rollout(predict, None, jnp.ones((50, 6)), scores, num_players=6, num_steps=6)
  order = np.asarray(out.order)
  perms = np.asarray(masks.permutations(jax.random.key(0), 6, 50))
  np.testing.assert_array_equal(order, perms)
  assert len({tuple(r) for r in order.tolist()}) > 40
  ranked = baselines.fixed_rollout(predict, None, jnp.ones((3, 6)), baselines.ranking_scores(np.array([4, 1]), 6),
                                   num_players=6, num_steps=4)
  np.testing.assert_array_equal(np.asarray(ranked.order)[:, :2], [[4, 1]] * 3)
  assert len(set(np.asarray(ranked.order)[0].tolist())) == 4          # unranked players follow, never repeats


def test_static_greedy_ranking_matches_brute_force():
  rng = np.random.default_rng(8)
  d, n = 5, 64
  w = jnp.asarray(rng.normal(size=(d, 3)), jnp.float32)
  predict = lambda p, x, m: (x * m) @ w
  x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 3, n))
  ranking = np.asarray(baselines.static_greedy_ranking(predict, None, x, y, num_players=d, num_steps=d))
  selected = np.zeros(d, bool)
  for t in range(d):
    losses = []
    for j in range(d):
      m = selected.copy()
      m[j] = True
      losses.append(np.inf if selected[j] else float(predictor.cross_entropy(predict(None, x, jnp.asarray(m)[None]
                                                                                      .repeat(n, 0)), y).mean()))
    assert ranking[t] == int(np.argmin(losses))
    selected[ranking[t]] = True


def test_cae_selects_the_informative_feature():
  rng = np.random.default_rng(9)
  x = rng.normal(size=(256, 4)).astype(np.float32)
  y = (x[:, 2] > 0).astype(np.int32)
  net = predictor.MaskedMLP(4, 2, (8,), rngs=nnx.Rngs(0))
  chosen = baselines.train_cae(jax.random.key(0), net, {"x": x, "y": y}, num_selected=1, num_steps=300,
                               batch_size=32, learning_rate=1e-2, progress=False)
  assert chosen.tolist() == [2]
  assert sorted(baselines.cae_selection(np.zeros((3, 5))).tolist()) == [0, 1, 2]     # k distinct players


# --- scoring ----------------------------------------------------------------------------------------------------

def test_scores_and_curves():
  rng = np.random.default_rng(10)
  logits = rng.normal(size=(100, 3, 2))
  y = rng.integers(0, 2, 100)
  curve = evaluation.budget_curve(logits, y, "auroc")
  from sklearn.metrics import roc_auc_score
  p1 = np.exp(logits[:, 1, 1]) / np.exp(logits[:, 1]).sum(-1)
  assert curve[1] == pytest.approx(roc_auc_score(y, p1))
  assert evaluation.score(np.eye(3)[[0, 1, 2, 0]], np.array([0, 1, 2, 1]), "accuracy") == 0.75
  with pytest.raises(ValueError, match="metric must be one of"):
    evaluation.score(logits[:, 0], y, "f1")


def test_rollout_scores_and_stopping_points():
  """Curves of a real rollout: cost follows the per-player costs of the selections; stopped steps cost nothing."""
  x = jnp.array([[0.1, 0.7, 0.3], [0.9, 0.2, 0.5]])
  predict = lambda p, x, m: jnp.stack([(x * m).sum(-1), 0.5 * jnp.ones(len(x))], -1)
  score = lambda p, x, m, logits: x
  costs = np.array([1.0, 2.0, 4.0])
  out = baselines.fixed_rollout(predict, None, x, x, num_players=3, num_steps=2)
  r = evaluation.rollout_scores(out, np.array([0, 0]), costs, "accuracy")
  np.testing.assert_array_equal(r["order"], [[1, 2], [0, 2]])
  np.testing.assert_allclose(r["cost"], [0.0, 1.5, 5.5])
  assert r["curve"].tolist() == r["accuracy"].tolist() == [0.0, 1.0, 1.0]
  np.testing.assert_allclose(evaluation.step_costs(np.array([[2, -1]]), costs), [[0.0, 4.0, 4.0]])
  stopped = rollout.greedy(predict, score, None, x, num_players=3, num_steps=3, costs=jnp.asarray(costs),
                           confidence=0.0)
  cost, metric = evaluation.stopping_point(stopped, np.array([0, 0]), "accuracy")
  assert cost == pytest.approx(float(np.mean(np.asarray(stopped.cost)))) and 0.0 <= metric <= 1.0
