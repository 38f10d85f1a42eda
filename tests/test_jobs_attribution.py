"""xattr.jobs.attribution: method checks, store layout from the per-example function, the resumable chunk loop and
the store fingerprint (settings, model, data and library code; not locations)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.attribute.base import base_config
from xattr import artifacts, data, games, jobs, methods, outputs, parallel


def toy_task(n=5, d=3, k=2):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, d)).astype(np.float32)
  w = jnp.asarray(rng.normal(size=(d, k)), jnp.float32)
  logits = lambda xb: xb @ w
  probs = lambda xb: jax.nn.softmax(logits(xb), -1)
  source = data.from_arrays("toy", x, np.arange(n) % k, feature_names=["a", "b", "c"])
  return jobs.Task(source, d, probs, lambda xi: games.baseline(probs, xi, jnp.zeros_like(xi)), logits, None, None,
                   "model-hash", "a linear toy model")


def toy_config(**overrides):
  config = base_config()
  config.update(chunk_size=2, progress=False, **overrides)
  config.report.curve_steps = None
  config.banzhaf_msr.update(num_samples=16, batch_size=8)
  return config


def test_check_method_and_settings():
  jobs.check_method(toy_config(method="banzhaf_msr"))
  assert jobs.attribution.method_settings(toy_config(method="banzhaf_msr")) == {"batch_size": 8, "num_samples": 16}
  assert jobs.attribution.method_settings(toy_config(method="leave_one_out")) == {}
  assert "banzhaf_msr" in jobs.method_names() and "attention_rollout" not in jobs.method_names()
  jobs.check_method(toy_config(method="banzhaf"))                      # banzhaf.estimate, registered
  with pytest.raises(ValueError, match=r"config.method must be one of .*banzhaf_msr.*got 'banzhaf_exakt'"):
    jobs.check_method(toy_config(method="banzhaf_exakt"))
  with pytest.raises(ValueError, match="target='predicted'"):
    jobs.check_method(toy_config(method="gradient_x_input"))
  with pytest.raises(ValueError, match="config.target must be"):
    jobs.check_method(toy_config(target="every"))


def test_output_specs_follow_the_method():
  task = toy_task()
  specs = lambda config: jobs.output_specs(jobs.make_explain_one(config, task), jobs.attribution.row_spec(task))
  s = specs(toy_config(method="banzhaf_msr"))
  assert s["values"] == outputs.ArraySpec((3, 2), "float32") and s["std"] == s["values"]
  assert s["num_evals"] == outputs.ArraySpec((), "int32") and s["insertion"] == outputs.ArraySpec((4,), "float32")
  assert set(s) == {"values", "std", "num_evals", "probs", "prediction", "label", "target", "insertion", "deletion"}
  s = specs(toy_config(method="leave_one_out", target="predicted"))
  assert s["values"].shape == (3,) and "std" not in s and "num_evals" not in s
  config = toy_config(method="integrated_gradients", target="predicted")
  config.report.curves = False
  assert set(specs(config)) == {"values", "probs", "prediction", "label", "target"}


def test_explain_store_equals_the_registry_call_per_example(tmp_path):
  task, config = toy_task(), toy_config(method="banzhaf_msr")
  fingerprint, metadata = jobs.job_identity(config, task)
  explain_one, specs = jobs.explain_function(config, task, fingerprint)
  open_store = lambda: jobs.open_store(str(tmp_path / "s"), specs, 5, chunk_size=2, fingerprint=fingerprint,
                                       metadata=metadata)
  seen = []
  done = jobs.explain_store(open_store(), task.source, explain_one, mesh=parallel.make_mesh(), progress=False,
                            on_chunk=seen.append)
  assert seen == [0, 1, 2] and done["computed_chunks"] == 3
  reader = outputs.open(tmp_path / "s")
  x, y = task.source.read_all()
  root = jax.random.fold_in(jax.random.key(config.seed), 1)
  for i in range(5):
    est = methods.attribute("banzhaf_msr", methods.Problem(game=task.game_fn(jnp.asarray(x[i])), num_players=3),
                            jax.random.fold_in(root, i), num_samples=16, batch_size=8)
    np.testing.assert_allclose(reader["values"][i], est.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reader["std"][i], est.std, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(reader["label"][:], y)
  assert jobs.explain_store(open_store(), task.source, explain_one, mesh=parallel.make_mesh(),
                            progress=False)["computed_chunks"] == 0


def test_fingerprint_covers_settings_model_data_and_library(monkeypatch):
  task, config = toy_task(), toy_config()
  fp = jobs.job_identity(config, task)[0]
  moved = toy_config()
  moved.model.workdir, moved.data.data_dir, moved.output = "/elsewhere/model", "/elsewhere/tfds", "/elsewhere/out"
  assert jobs.job_identity(moved, task)[0] == fp                       # locations are not part of the job
  assert jobs.job_identity(toy_config(seed=1), task)[0] != fp
  other_model = jobs.Task(**{**vars(task), "model_hash": "retrained"})
  assert jobs.job_identity(config, other_model)[0] != fp
  other_data = jobs.Task(**{**vars(task), "source": toy_task(n=6).source.head(5)})
  assert jobs.job_identity(config, other_data)[0] != fp
  monkeypatch.setattr(artifacts, "library_hash", lambda *args, **kwargs: "changed-core-code")
  assert jobs.job_identity(config, task)[0] != fp                      # results of older core code are refused


def test_rerun_of_a_finished_job_says_so_and_keeps_the_original_throughput(tmp_path):
  task, config = toy_task(), toy_config(method="leave_one_out")
  fingerprint, metadata = jobs.job_identity(config, task)
  explain_one, specs = jobs.explain_function(config, task, fingerprint)
  run = lambda: jobs.explain_store(jobs.open_store(str(tmp_path / "s"), specs, 5, chunk_size=2,
                                                   fingerprint=fingerprint, metadata=metadata),
                                   task.source, explain_one, mesh=parallel.make_mesh(), progress=False)
  first, again = run(), run()
  assert first["computed_chunks"] == 3 and not first["nothing_left"] and first["attributions_per_s"] > 0
  assert again["computed_chunks"] == 0 and again["nothing_left"]
  assert again["attributions_per_s"] == pytest.approx(first["attributions_per_s"], rel=1e-6)   # not NaN
  line = jobs.report.throughput_line(again)
  assert line.startswith("Nothing was left to compute in this run") and "nan" not in line
  assert f"{first['attributions_per_s']:.2f} attributions/s" in line
  assert jobs.report.throughput_line(first).startswith("Throughput of this run: ")
  assert "does not record" in jobs.report.throughput_line(dict(again, attributions_per_s=float("nan")))


def test_vit_methods_are_in_the_job_and_refuse_a_model_that_is_not_a_vit():
  for name in ("gradcam", "lrp", "attention_x_gradient", "gradient_rollout", "vanilla_gradients"):
    assert name in jobs.method_names()
  with pytest.raises(ValueError, match="config.method='lrp' reads a ViT's internals.*not a ViT"):
    jobs.make_explain_one(toy_config(method="lrp", target="predicted"), toy_task())


def test_vit_method_in_the_job_reads_the_tasks_vit():
  from flax import nnx

  from xattr import attributions
  from xattr.models import vit

  cfg = vit.config("nano/8", image_size=16, num_channels=1, num_classes=3)
  model = jobs.placeholder_module(lambda: vit.ViT(cfg, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  nnx.update(model, jax.tree.map(lambda a: (0.2 * rng.normal(size=a.shape) + (a.ndim == 1)).astype(a.dtype),
                                 nnx.state(model, nnx.Param)))
  x = rng.uniform(size=(2, 16, 16, 1)).astype(np.float32)
  logits = vit.masked_model_fn(model)
  full = lambda xb: logits(xb, None)
  probs = lambda xb: jax.nn.softmax(full(xb), -1)
  task = jobs.Task(data.from_arrays("img", x, np.array([0, 1])), 4, probs,
                   lambda xi: games.surrogate(vit.masked_model_fn(model, postprocess="softmax"), xi), full, 8, None,
                   "h", "a nano ViT", (2, 2), model)
  config = toy_config(method="gradcam", target="predicted")
  config.report.curves = False
  explain_one = jax.jit(jobs.make_explain_one(config, task))
  direct = jax.jit(lambda xi, t: attributions.gradcam(model, xi, t))
  for i in range(2):
    out = explain_one({"x": jnp.asarray(x[i]), "index": jnp.uint32(i), "label": jnp.int32(0)}, jax.random.key(0))
    np.testing.assert_allclose(out["values"], direct(jnp.asarray(x[i]), out["prediction"]), rtol=1e-5, atol=1e-7)
