"""The greedy rollout kernel: no repeats, exact budgets and costs, stopping rules, argmax of a known value function."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from xattr import parallel
from xattr.selection import oracle, rollout

P, C, B = 10, 3, 64
RNG = np.random.default_rng(0)
W_SCORE = jnp.asarray(RNG.normal(size=(P, P)), jnp.float32)
W_PRED = jnp.asarray(RNG.normal(size=(P, C)), jnp.float32)
X = jnp.asarray(RNG.normal(size=(B, P)), jnp.float32)


def predict(params, x, mask):
  return (x * mask) @ W_PRED


def score(params, x, mask, logits):
  """Scores that depend on the input and on what is already selected (so the order is truly dynamic)."""
  return jnp.tanh(x @ W_SCORE + (x * mask) @ W_SCORE.T)


# Every rule present, with values that never trigger unless a test sets them: the tests below then share one
# compiled rollout per (predict, score) pair instead of compiling one per combination of rules.
NEUTRAL = dict(costs=jnp.ones(P), initial_mask=jnp.zeros((B, P), bool), budget=P, cost_budget=3e38,
               penalty=-3e38, confidence=2.0)


def run(predict_fn=predict, score_fn=score, **rules):
  rules = {k: jnp.broadcast_to(jnp.asarray(v), jnp.shape(NEUTRAL[k]) if k in ("costs", "initial_mask") else (B,))
           for k, v in {**NEUTRAL, **rules}.items()}
  return rollout.greedy(predict_fn, score_fn, None, X, num_players=P, num_steps=P, **rules)


def _check_consistent(out, initial=None):
  order, masks_ = np.asarray(out.order), np.asarray(out.masks)
  start = np.zeros_like(masks_) if initial is None else np.asarray(initial)
  for i in range(order.shape[0]):
    chosen = order[i][order[i] >= 0]
    assert len(set(chosen.tolist())) == len(chosen), f"row {i} repeats a player: {order[i]}"
    assert not start[i, chosen].any(), f"row {i} re-selected an initially known player"
    expected = start[i].copy()
    expected[chosen] = True
    np.testing.assert_array_equal(masks_[i], expected)
    # Once stopped, a row stays stopped.
    stopped = np.flatnonzero(order[i] < 0)
    if stopped.size:
      assert (order[i, stopped[0]:] == -1).all()
  np.testing.assert_array_equal(np.asarray(out.num_selected), masks_.sum(1))


def test_never_selects_twice():
  rng = np.random.default_rng(1)
  out = run()
  _check_consistent(out)
  assert (np.asarray(out.num_selected) == P).all()
  # Dynamic: rows follow different orders.
  assert len({tuple(r) for r in np.asarray(out.order)[:, :3].tolist()}) > 10
  initial = jnp.asarray(rng.random((B, P)) < 0.3)
  out = run(initial_mask=initial)
  _check_consistent(out, initial)
  np.testing.assert_array_equal(np.asarray(out.num_selected), P)


def test_never_selects_twice_with_infinite_or_nan_scores():
  bad = lambda p, x, m, logits: jnp.where(jnp.arange(P) % 2 == 0, -jnp.inf, jnp.nan) * jnp.ones_like(x)
  out = rollout.greedy(predict, bad, None, X[:4], num_players=P, num_steps=P)
  _check_consistent(out)
  assert (np.asarray(out.num_selected) == P).all()


def test_fixed_budget_is_exact_per_sample():
  rng = np.random.default_rng(2)
  budget = rng.integers(0, P + 1, size=B)
  out = run(budget=budget)
  _check_consistent(out)
  np.testing.assert_array_equal(np.asarray(out.num_selected), budget)
  scalar = run(budget=3)
  np.testing.assert_array_equal(np.asarray(scalar.num_selected), 3)
  # A budget only truncates the unconstrained order.
  free = run()
  np.testing.assert_array_equal(np.asarray(scalar.order)[:, :3], np.asarray(free.order)[:, :3])
  # A smaller scan (num_steps) is another way to cap the number of selections.
  short = rollout.greedy(predict, score, None, X, num_players=P, num_steps=3)
  np.testing.assert_array_equal(np.asarray(short.order), np.asarray(free.order)[:, :3])


def test_cost_budget_is_respected_and_greedy_is_maximal():
  rng = np.random.default_rng(3)
  costs = np.array([1, 2, 3, 1, 5, 2, 4, 1, 3, 2], np.float32)
  cost_budget = rng.integers(0, 12, size=B).astype(np.float32)
  out = run(costs=costs, cost_budget=cost_budget)
  _check_consistent(out)
  masks_, spent = np.asarray(out.masks), np.asarray(out.cost)
  np.testing.assert_array_equal(spent, (masks_ * costs).sum(1))          # integer costs: exact in float32
  assert (spent <= cost_budget).all()
  # Stopped only because nothing else fits.
  remaining = cost_budget - spent
  for i in range(B):
    unselected = costs[~masks_[i]]
    assert unselected.size == 0 or unselected.min() > remaining[i], (i, remaining[i], unselected)
  # Each choice is the best-scoring affordable player at that moment.
  order = np.asarray(out.order)
  for t in range(3):
    mask = np.zeros((B, P), bool)
    for s in range(t):
      rows = order[:, s] >= 0
      mask[rows, order[rows, s]] = True
    scores = np.asarray(score(None, X, jnp.asarray(mask), None))
    afford = ~mask & ((mask * costs).sum(1, keepdims=True) + costs <= cost_budget[:, None])
    best = np.where(afford.any(1), np.where(afford, scores, -np.inf).argmax(1), -1)
    np.testing.assert_array_equal(order[:, t], best)


def test_penalty_stops_below_lambda():
  rng = np.random.default_rng(4)
  # Static scores: the selected set is exactly the players scoring >= lambda.
  values = jnp.asarray(rng.permutation(P) / P, jnp.float32)
  static = lambda p, x, m, logits: jnp.broadcast_to(values, m.shape)
  lam = jnp.asarray(rng.random(B), jnp.float32)
  out = run(score_fn=static, penalty=lam)
  _check_consistent(out)
  np.testing.assert_array_equal(np.asarray(out.masks), np.asarray(values)[None] >= np.asarray(lam)[:, None])


def test_confidence_stops_at_threshold():
  rng = np.random.default_rng(5)
  # The prediction's confidence grows with the number of selected players: p_max = sigmoid(count), 2 classes.
  counting = lambda p, x, m: jnp.stack([m.sum(-1).astype(jnp.float32), jnp.zeros(m.shape[0])], -1)
  threshold = jnp.asarray(rng.uniform(0.55, 0.9995, B), jnp.float32)
  out = run(predict_fn=counting, confidence=threshold)
  _check_consistent(out)
  conf = jax.nn.sigmoid(jnp.arange(P + 1.0))                         # confidence after n selections
  expected = np.array([int(np.argmax(np.asarray(conf) >= t)) for t in np.asarray(threshold)])
  np.testing.assert_array_equal(np.asarray(out.num_selected), expected)
  # The final prediction meets the threshold; the one before did not.
  final_conf = np.asarray(jax.nn.softmax(out.logits).max(-1))
  assert (final_conf >= np.asarray(threshold)).all()
  assert len(set(expected.tolist())) > 3


def test_step_logits_are_predictions_after_each_step():
  rng = np.random.default_rng(6)
  out = run(budget=rng.integers(0, 5, B))
  order = np.asarray(out.order)
  mask = np.zeros((B, P), bool)
  for t in range(P + 1):
    np.testing.assert_allclose(np.asarray(out.step_logits[:, t]), np.asarray(X * mask) @ np.asarray(W_PRED),
                               rtol=1e-5, atol=1e-5)
    if t < P:
      rows = order[:, t] >= 0
      mask[rows, order[rows, t]] = True
  np.testing.assert_allclose(np.asarray(out.logits), np.asarray(out.step_logits[:, -1]), rtol=1e-6)


def test_picks_the_argmax_of_the_exact_cmi_on_the_oracle():
  """With the oracle's exact CMI as the value function, every step picks its argmax: the closed-form order."""
  spec = oracle.Spec()
  d = spec.num_features
  x, _ = oracle.sample(jax.random.key(3), spec, 256)
  bayes = lambda p, x, m: oracle.bayes_logits(x, m, spec)
  exact = lambda p, x, m, logits: oracle.cmi(x, m, spec)
  out = rollout.greedy(bayes, exact, None, jnp.asarray(x), num_players=d, num_steps=d)
  _check_consistent(out)
  order = np.asarray(out.order)
  reference = oracle.closed_form_order(x, spec)
  np.testing.assert_array_equal(order[:, :reference.shape[1]], reference)
  # Every step (also after the closed form ends, among ties) takes a maximal CMI.
  mask = np.zeros_like(order, bool)
  cmi = jax.jit(lambda x, m: oracle.cmi(x, m, spec))
  for t in range(d):
    c = np.asarray(cmi(jnp.asarray(x), jnp.asarray(mask)))
    chosen = c[np.arange(len(x)), order[:, t]]
    best = np.where(mask, -np.inf, c).max(1)
    np.testing.assert_allclose(chosen, best, atol=1e-6)
    mask[np.arange(len(x)), order[:, t]] = True


def test_value_network_rollout_takes_its_argmax():
  """Any network as score_fn, its weights passed as params: each choice is the network's argmax at that moment."""
  rng = np.random.default_rng(7)
  weights = {"w1": rng.normal(size=(2 * P, 16)).astype(np.float32), "w2": rng.normal(size=(16, P)).astype(np.float32)}
  net = lambda w, x, m: jnp.tanh(jnp.concatenate([x * m, m.astype(x.dtype)], -1) @ w["w1"]) @ w["w2"]
  out = rollout.greedy(predict, lambda w, x, m, logits: net(w, x, m), weights, X, num_players=P, num_steps=P)
  order = np.asarray(out.order)
  mask = np.zeros((B, P), bool)
  x = np.asarray(X)
  for t in range(P):
    values = np.tanh(np.concatenate([x * mask, mask], -1) @ weights["w1"]) @ weights["w2"]
    np.testing.assert_array_equal(order[:, t], np.where(mask, -np.inf, values).argmax(1))
    mask[np.arange(B), order[:, t]] = True


def test_usable_inside_jit_and_sharded_equals_unsharded():
  rng = np.random.default_rng(8)
  @jax.jit
  def user_code(x):
    return rollout.greedy(predict, score, None, x, num_players=P, num_steps=3).order.sum()

  plain = rollout.greedy(predict, score, None, X, num_players=P, num_steps=3, budget=2)
  assert int(user_code(X)) == int(np.asarray(
      rollout.greedy(predict, score, None, X, num_players=P, num_steps=3).order).sum())
  # vmap over a stopping-rule value: a whole sweep in one program.
  values = jnp.asarray(rng.permutation(P) / P, jnp.float32)
  static = lambda p, x, m, logits: jnp.broadcast_to(values, m.shape)
  lams = jnp.array([0.05, 0.35, 0.75])
  swept = jax.vmap(lambda lam: rollout.greedy(predict, static, None, X, num_players=P, num_steps=P,
                                              penalty=lam).num_selected)(lams)
  expected = (np.asarray(values)[None] >= np.asarray(lams)[:, None]).sum(1)
  np.testing.assert_array_equal(np.asarray(swept), np.repeat(expected[:, None], B, axis=1))
  sharded = rollout.greedy_sharded(predict, score, None, X[:13], num_players=P, num_steps=3, budget=2,
                                   mesh=parallel.make_mesh(1))
  for a, b in zip(sharded, plain):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[:13])


def test_pytree_inputs():
  inputs = {"a": X, "b": X[:, :2]}
  pred = lambda p, x, m: (x["a"] * m) @ W_PRED + x["b"].sum(-1, keepdims=True)
  out = rollout.greedy(pred, lambda p, x, m, l: score(p, x["a"], m, l), None, inputs, num_players=P, num_steps=2)
  assert out.order.shape == (B, 2) and out.step_logits.shape == (B, 3, C)


def test_errors():
  kw = dict(num_players=P, num_steps=3)
  with pytest.raises(ValueError, match=r"num_steps must be <= num_players=10 \(a player is selected at most once\), "
                     r"got 11"):
    rollout.greedy(predict, score, None, X, num_players=P, num_steps=11)
  with pytest.raises(ValueError, match=r"costs must be float\[num_players=10\], got shape \(3,\)"):
    rollout.greedy(predict, score, None, X, costs=jnp.ones(3), **kw)
  with pytest.raises(ValueError, match="costs must be positive"):
    rollout.greedy(predict, score, None, X, costs=jnp.zeros(P), **kw)
  with pytest.raises(ValueError, match=r"budget must be a scalar or one value per input \(shape \(64,\)\), got"):
    rollout.greedy(predict, score, None, X, budget=jnp.ones(5), **kw)
  with pytest.raises(ValueError, match="confidence must be >= 0"):
    rollout.greedy(predict, score, None, X, confidence=-0.1, **kw)
  with pytest.raises(TypeError, match="initial_mask must have dtype bool"):
    rollout.greedy(predict, score, None, X, initial_mask=jnp.zeros((B, P)), **kw)
  with pytest.raises(ValueError, match="inputs leaves must share"):
    rollout.greedy(predict, score, None, {"a": X, "b": X[:3]}, **kw)
  with pytest.raises(ValueError, match="penalty must hold finite numbers"):
    rollout.greedy(predict, score, None, X, penalty=jnp.nan, **kw)
