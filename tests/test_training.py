"""The shared training loop: it learns, and a killed run resumes to bitwise the same parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from xattr import data, models, parallel, training


def _cross_entropy(model, batch):
  logits = model(batch["x"])
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
  return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}


@pytest.fixture(scope="module")
def cancer():
  ds = data.load_embedded("breast_cancer", seed=0)
  return ds, {"x": ds.x_train, "y": ds.y_train}


def _mlp(ds, seed=0):
  return models.MLP(ds.num_features, (16,), ds.num_classes, rngs=nnx.Rngs(seed))


def test_learns_breast_cancer(cancer):
  ds, train_data = cancer
  model = _mlp(ds)
  evals = []

  def eval_fn(m, step):
    acc = float(jnp.mean(jnp.argmax(m(ds.x_test), -1) == ds.y_test))
    evals.append(acc)
    return {"test_accuracy": acc}

  result = training.train(model, _cross_entropy, train_data, optimizer=optax.adam(1e-2), num_steps=150,
                          batch_size=32, eval_fn=eval_fn, eval_every=50, log_every=25, progress=False)
  losses = [h["train_loss"] for h in result.history if "train_loss" in h]
  assert losses[-1] < 0.5 * losses[0]
  assert len(evals) == 3 and evals[-1] > 0.9
  # The caller's module holds the trained parameters.
  assert float(jnp.mean(jnp.argmax(model(ds.x_test), -1) == ds.y_test)) == evals[-1]
  assert int(result.state.step) == 150 and result.resumed_from is None and not result.stopped_early


def test_batch_order_is_a_seeded_shuffle():
  key = np.array([3, 4], np.uint32)
  epoch0 = np.concatenate([training.batch_indices(key, t, 20, 6) for t in range(3)])
  assert len(set(epoch0.tolist())) == 18                       # no repeats within an epoch; last 2 dropped
  again = np.concatenate([training.batch_indices(key, t, 20, 6) for t in range(3)])
  np.testing.assert_array_equal(epoch0, again)
  assert not np.array_equal(training.batch_indices(key, 0, 20, 6), training.batch_indices(key, 3, 20, 6))


class _Dropout(nnx.Module):
  """Exercises non-parameter state (an nnx.Rngs stream with typed keys) through checkpoint and resume."""

  def __init__(self, d, k, rngs):
    self.dense = nnx.Linear(d, k, rngs=rngs)
    self.dropout = nnx.Dropout(0.2, rngs=rngs)

  def __call__(self, x):
    return self.dense(self.dropout(x))


@pytest.mark.parametrize("make", ["mlp", "dropout"])
def test_killed_run_resumes_bitwise(cancer, tmp_path, make):
  ds, train_data = cancer
  build = (lambda: _mlp(ds)) if make == "mlp" else (lambda: _Dropout(ds.num_features, 2, nnx.Rngs(0, dropout=1)))
  kwargs = dict(optimizer=optax.adam(1e-2), num_steps=40, batch_size=32, seed=5, progress=False)
  straight = training.train(build(), _cross_entropy, train_data, **kwargs)

  workdir = str(tmp_path / make)
  killed = training.train(build(), _cross_entropy, train_data, workdir=workdir, checkpoint_every=10,
                          stop_at=27, **kwargs)
  assert killed.stopped_early and int(killed.state.step) == 27
  # A fresh process would rebuild the model from scratch (different init seed here on purpose): the
  # checkpoint must overwrite everything, including the data order and dropout RNG.
  fresh = (_mlp(ds, seed=9) if make == "mlp" else _Dropout(ds.num_features, 2, nnx.Rngs(9, dropout=9)))
  resumed = training.train(fresh, _cross_entropy, train_data, workdir=workdir, checkpoint_every=10, **kwargs)
  assert resumed.resumed_from == 20 and int(resumed.state.step) == 40
  for a, b in zip(jax.tree.leaves(straight.state.params), jax.tree.leaves(resumed.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               straight.state.opt_state, resumed.state.opt_state)

  # Running again with everything done restores the final checkpoint and takes no step.
  again = training.train(_mlp(ds, seed=3) if make == "mlp" else _Dropout(ds.num_features, 2, nnx.Rngs(3)),
                         _cross_entropy, train_data, workdir=workdir, **kwargs)
  assert again.resumed_from == 40 and again.history == []
  for a, b in zip(jax.tree.leaves(straight.state.params), jax.tree.leaves(again.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_arguments(cancer):
  ds, train_data = cancer
  with pytest.raises(ValueError, match="batch_size"):
    training.train(_mlp(ds), _cross_entropy, train_data, optimizer=optax.sgd(0.1), num_steps=1,
                   batch_size=10_000, progress=False)
  with pytest.raises(ValueError, match="leading axis"):
    training.train(_mlp(ds), _cross_entropy, {"x": ds.x_train, "y": ds.y_train[:3]}, optimizer=optax.sgd(0.1),
                   num_steps=1, batch_size=2, progress=False)


def test_mesh_argument(cancer):
  ds, train_data = cancer
  runs = {}
  for name, mesh in (("none", None), ("one-device mesh", parallel.make_mesh(1)), ("auto", "auto")):
    model = _mlp(ds)
    training.train(model, _cross_entropy, train_data, optimizer=optax.adam(1e-2), num_steps=5, batch_size=8,
                   progress=False, mesh=mesh)
    runs[name] = nnx.state(model, nnx.Param)
  for name in ("one-device mesh", "auto"):
    jax.tree.map(np.testing.assert_array_equal, runs[name], runs["none"])
  with pytest.raises(ValueError, match="mesh must be a jax.sharding.Mesh, 'auto' or None, got 'all'"):
    training.train(_mlp(ds), _cross_entropy, train_data, optimizer=optax.sgd(0.1), num_steps=1, batch_size=8,
                   progress=False, mesh="all")
  with pytest.raises(ValueError, match="axis_name must be one of the mesh's axes"):
    training.train(_mlp(ds), _cross_entropy, train_data, optimizer=optax.sgd(0.1), num_steps=1, batch_size=8,
                   progress=False, mesh=parallel.make_mesh(1, axis_name="batch"))


class _StudentTeacher(nnx.Module):
  """A student regressing onto a teacher that must stay frozen."""

  def __init__(self):
    self.teacher = nnx.Linear(3, 1, rngs=nnx.Rngs(1))
    self.student = nnx.Linear(3, 1, rngs=nnx.Rngs(2))


def test_trainable_filter_freezes_the_rest(tmp_path):
  model = _StudentTeacher()
  teacher_before = np.asarray(model.teacher.kernel[...]).copy()
  x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)

  def loss_fn(m, batch):
    # Gradient also flows into the teacher's output here: only the filter keeps it frozen.
    loss = jnp.mean((m.student(batch["x"]) - m.teacher(batch["x"])) ** 2)
    return loss, {}

  trainable = nnx.All(nnx.Param, nnx.PathContains("student"))
  # Weight decay would move any optimized parameter even with a zero gradient.
  training.train(model, loss_fn, {"x": x}, optimizer=optax.adamw(0.05, weight_decay=0.1), num_steps=300,
                 batch_size=32, progress=False, trainable=trainable, workdir=tmp_path)
  np.testing.assert_array_equal(np.asarray(model.teacher.kernel[...]), teacher_before)
  np.testing.assert_allclose(model.student.kernel[...], model.teacher.kernel[...], atol=0.05)
  # The frozen teacher is checkpointed with the rest and restored by a resumed (already finished) run.
  again = _StudentTeacher()
  result = training.train(again, loss_fn, {"x": x}, optimizer=optax.adamw(0.05, weight_decay=0.1), num_steps=300,
                          batch_size=32, progress=False, trainable=trainable, workdir=tmp_path)
  assert result.resumed_from == 300
  np.testing.assert_array_equal(np.asarray(again.student.kernel[...]), np.asarray(model.student.kernel[...]))


def test_restore_loads_a_checkpoint_without_training(cancer, tmp_path):
  ds, train_data = cancer
  tx = training.optimizer({"learning_rate": 1e-2, "schedule": "cosine"}, num_steps=20)
  trained = _mlp(ds)
  training.train(trained, _cross_entropy, train_data, optimizer=tx, num_steps=20, batch_size=32,
                 workdir=tmp_path, progress=False)
  fresh = _mlp(ds, seed=7)
  assert training.restore(fresh, tmp_path, optimizer=tx, min_step=20) == 20
  for a, b in zip(jax.tree.leaves(nnx.state(trained, nnx.Param)), jax.tree.leaves(nnx.state(fresh, nnx.Param))):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(FileNotFoundError, match="holds no finished training run: latest checkpoint step 20, "
                                              "expected >= 30"):
    training.restore(_mlp(ds), tmp_path, optimizer=tx, min_step=30)
  with pytest.raises(FileNotFoundError, match="latest checkpoint step None"):
    training.restore(_mlp(ds), tmp_path / "empty", optimizer=tx)
  wider = models.MLP(ds.num_features, (8,), ds.num_classes, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError):
    training.restore(wider, tmp_path, optimizer=tx)


def test_optimizer_factory_matches_the_hand_built_chains():
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.array([3.0, -4.0, 12.0])}
  section = {"learning_rate": 1e-2, "warmup_steps": 2, "final_lr_fraction": 0.1, "grad_clip": 1.0,
             "weight_decay": 1e-4}
  schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 10, end_value=1e-3)
  by_hand = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4))
  ours = training.optimizer(section, num_steps=10)
  state_a, state_b = by_hand.init(params), ours.init(params)
  for _ in range(4):
    up_a, state_a = by_hand.update(grads, state_a, params)
    up_b, state_b = ours.update(grads, state_b, params)
    np.testing.assert_allclose(up_a["w"], up_b["w"], rtol=1e-6)
  assert ours is training.optimizer(section, num_steps=10)       # cached: train() reuses its compiled step
  cosine = training.optimizer({"learning_rate": 0.1, "weight_decay": 0.0}, num_steps=5, schedule="cosine")
  direct = optax.adamw(optax.cosine_decay_schedule(0.1, 5), weight_decay=0.0)
  np.testing.assert_allclose(cosine.update(grads, cosine.init(params), params)[0]["w"],
                             direct.update(grads, direct.init(params), params)[0]["w"], rtol=1e-6)
  with pytest.raises(ValueError, match="must set learning_rate"):
    training.optimizer({"weight_decay": 0.1})
  with pytest.raises(ValueError, match="schedule 'cosine' needs num_steps"):
    training.optimizer({"learning_rate": 0.1, "schedule": "cosine"})
  with pytest.raises(ValueError, match="schedule must be 'constant', 'cosine' or 'warmup_cosine', got 'step'"):
    training.optimizer({"learning_rate": 0.1, "schedule": "step"}, num_steps=3)
