"""The batch attribution job: resumable after a real SIGKILL, exact, refusing other jobs' stores, with a report."""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.attribute import breast_cancer
from configs.attribute import digits as digits_config
from experiments import attribute
from tests.four_devices import ROOT, compare_with_one_device
from xattr import amortize, attributions, jobs, outputs
from xattr.models import vit

pytestmark = pytest.mark.slow


def smoke(model_dir, **overrides):
  config = breast_cancer.get_config("smoke")
  config.model.workdir = str(model_dir)
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config


def stored(path) -> dict[str, np.ndarray]:
  reader = outputs.open(path)
  return {name: np.asarray(reader[name]) for name in reader.keys()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted smoke run (it also trains the shared smoke MLP)."""
  root = tmp_path_factory.mktemp("attribute")
  model_dir = root / "model"
  out = attribute.run(smoke(model_dir), str(root / "reference"))
  return dict(root=root, model_dir=model_dir, out=out, arrays=stored(out["paths"]["store"]))


# The first run pauses 30 s after each written chunk (on_chunk), so the test can kill it between chunks.
PAUSED_RUN = """
import sys, time
from configs.attribute import breast_cancer
from experiments import attribute
config = breast_cancer.get_config("smoke")
config.model.workdir = sys.argv[2]
attribute.run(config, sys.argv[1], on_chunk=lambda chunk: time.sleep(30))
"""


def _command(workdir, model_dir):
  return [sys.executable, "-m", "experiments.attribute", "--config=configs/attribute/breast_cancer.py:smoke",
          f"--workdir={workdir}", f"--config.model.workdir={model_dir}"]


def test_sigkill_then_same_command_resumes_exactly(reference, tmp_path):
  workdir = tmp_path / "killed"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, "-c", PAUSED_RUN, str(workdir), str(reference["model_dir"])], cwd=ROOT,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  markers = str(workdir / "attributions" / "done" / "*.json")
  deadline = time.monotonic() + 120
  while not glob.glob(markers) and proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.1)
  os.kill(proc.pid, signal.SIGKILL)         # mid-run: the job sleeps 30 s after each chunk, 3 chunks to do
  _, stderr = proc.communicate()
  assert proc.returncode == -signal.SIGKILL, stderr[-3000:]
  killed = outputs.open(workdir / "attributions")
  done_at_kill = killed.done_chunks()
  assert done_at_kill == [0], f"expected exactly the first chunk finished at the kill, got {done_at_kill}"
  assert not killed.complete and not os.path.exists(workdir / "report.md")

  result = subprocess.run(_command(workdir, reference["model_dir"]), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  computed = int(re.search(r"\((\d+) chunks computed now", result.stdout).group(1))
  assert computed == 2                      # only the missing chunks, the finished one untouched
  resumed = outputs.open(workdir / "attributions")
  assert resumed.complete and resumed.verify() == []
  assert resumed.fingerprint == outputs.open(reference["out"]["paths"]["store"]).fingerprint
  arrays = stored(workdir / "attributions")
  assert set(arrays) == set(reference["arrays"])
  for name, value in reference["arrays"].items():
    np.testing.assert_array_equal(arrays[name], value, err_msg=name)    # bitwise: same keys, same rows


def test_report_and_stored_identities(reference):
  out, a = reference["out"], reference["arrays"]
  assert a["values"].shape == (12, 30, 2) and a["std"].shape == (12, 30, 2) and out["num_examples"] == 12
  # Two classes whose probabilities sum to 1: the class-1 values are minus the class-0 values (efficiency too).
  np.testing.assert_allclose(a["values"][..., 0], -a["values"][..., 1], atol=2e-6)
  np.testing.assert_array_equal(a["prediction"], a["probs"].argmax(1))
  target_prob = a["probs"][np.arange(12), a["target"]]
  # Curves start/end at the full input: inserting every feature or deleting none gives p(target | x).
  np.testing.assert_allclose(a["insertion"][:, -1], target_prob, atol=1e-6)
  np.testing.assert_allclose(a["deletion"][:, 0], target_prob, atol=1e-6)
  np.testing.assert_allclose(a["insertion"][:, 0], a["deletion"][:, -1], atol=1e-6)
  report = open(out["paths"]["report"]).read()
  for text in ("# Attributions: kernel_shap on breast_cancer", "insertion AUC", "deletion AUC", "beeswarm.png",
               "curves.png", "fingerprint"):
    assert text in report
  for key in ("beeswarm", "bar", "curves"):
    assert os.path.getsize(out["paths"][key]) > 1000
  summary = out["summary"]
  fractions = np.linspace(0, 1, a["insertion"].shape[1])
  assert summary["insertion_auc"] == pytest.approx(np.trapezoid(a["insertion"], fractions, axis=1).mean(), rel=1e-5)
  assert summary["accuracy"] == pytest.approx(np.mean(a["prediction"] == a["label"]))


def test_other_job_refused_and_nothing_lost(reference):
  path = reference["out"]["paths"]["store"]
  config = smoke(reference["model_dir"], seed=1, output=path)
  with pytest.raises(outputs.StoreMismatchError, match=r"different job.*seed: 0 -> 1.*overwrite"):
    attribute.run(config, str(reference["root"] / "other"))
  assert outputs.open(path).complete
  np.testing.assert_array_equal(stored(path)["values"], reference["arrays"]["values"])


def test_disk_error_is_clear_and_resumable(reference, tmp_path, monkeypatch):
  write = outputs.Store.write_chunk
  calls = []

  def failing(self, chunk, arrays):
    calls.append(chunk)
    if len(calls) == 2:
      raise OSError(28, "No space left on device")
    write(self, chunk, arrays)

  monkeypatch.setattr(outputs.Store, "write_chunk", failing)
  with pytest.raises(OSError, match=r"chunk 1 .*No space left.*1 chunk\(s\) finished before are intact.*rerun"):
    attribute.run(smoke(reference["model_dir"]), str(tmp_path))
  assert outputs.open(tmp_path / "attributions").done_chunks() == [0]
  monkeypatch.setattr(outputs.Store, "write_chunk", write)
  out = attribute.run(smoke(reference["model_dir"]), str(tmp_path))
  assert out["computed_chunks"] == 2
  np.testing.assert_array_equal(stored(tmp_path / "attributions")["values"], reference["arrays"]["values"])


def test_leave_one_out_matches_the_deletion_curve(reference, tmp_path):
  config = smoke(reference["model_dir"], method="leave_one_out", target="predicted", chunk_size=6,
                 **{"data.max_examples": 6, "report.curve_steps": None})
  a = stored(attribute.run(config, str(tmp_path))["paths"]["store"])
  assert a["values"].shape == (6, 30) and "std" not in a
  # LOO_i = v(1) - v(1 - e_i), and the deletion curve's second point removes the top player: v(1) - max_i LOO_i.
  np.testing.assert_allclose(a["deletion"][:, 1], a["deletion"][:, 0] - a["values"].max(1), atol=1e-6)


def test_the_default_method_is_the_library_estimate(reference, tmp_path):
  """The full config's method, ``shapley`` (shapley.estimate: odd_kernel_shap at a fixed budget), run by the job:
  efficient on the game its curves run through, with a finite std and the configured evaluations."""
  assert breast_cancer.get_config().method == "shapley"
  config = smoke(reference["model_dir"], method="shapley", target="predicted",
                 **{"data.max_examples": 4, "report.curve_steps": None})
  out = attribute.run(config, str(tmp_path))
  a = stored(out["paths"]["store"])
  assert a["values"].shape == (4, 30) and np.all(np.isfinite(a["std"])) and np.all(a["std"] > 0)
  assert a["num_evals"].tolist() == [258] * 4           # config.shapley.num_samples=256, plus grand and null
  np.testing.assert_allclose(a["values"].sum(1), a["insertion"][:, -1] - a["insertion"][:, 0], atol=1e-5)
  assert "# Attributions: shapley on breast_cancer" in open(out["paths"]["report"]).read()


def test_gradient_method_equals_the_library_call(reference, tmp_path):
  config = smoke(reference["model_dir"], method="integrated_gradients", target="predicted",
                 **{"data.max_examples": 4, "report.curves": False})
  a = stored(attribute.run(config, str(tmp_path))["paths"]["store"])
  task = jobs.build_task(config, str(tmp_path))
  x, _ = task.source.read(0, 4)
  expected = jax.vmap(lambda xi, t: attributions.integrated_gradients(task.logit_fn, xi, t, num_steps=4))(
      jnp.asarray(x), jnp.asarray(a["target"]))
  np.testing.assert_allclose(a["values"], expected, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="target='predicted'"):
    attribute.run(smoke(reference["model_dir"], method="smoothgrad"), str(tmp_path / "x"))


def test_amortized_explainer_method(reference, tmp_path):
  """A FastSHAP explainer saved with xattr.amortize.save is loaded with xattr.amortize.load and run per chunk."""
  spec = {"kind": "mlp_explainer", "num_features": 30, "hidden_sizes": [8], "num_classes": 2}
  path = amortize.save(tmp_path / "explainer", amortize.build_module(spec), spec)
  config = smoke(reference["model_dir"], method="explainer", explainer_path=path, **{"data.max_examples": 8})
  a = stored(attribute.run(config, str(tmp_path / "run"))["paths"]["store"])
  x, _ = jobs.build_task(config, str(tmp_path)).source.read(0, 8)
  # The job runs the explainer on sharded chunks, this call on all 8 rows at once: float32 matmuls of another
  # batch shape round differently (seen: 4e-7 on values of order 0.1), so the tolerance is float32's, not 0.
  np.testing.assert_allclose(a["values"], amortize.load(path)(x), rtol=1e-5, atol=1e-6)
  assert a["values"].shape == (8, 30, 2) and np.abs(a["values"]).max() > 0
  wrong = dict(spec, num_features=12)
  path = amortize.save(tmp_path / "wrong", amortize.build_module(wrong), wrong)
  with pytest.raises(ValueError, match=r"checkpoint/model mismatch.*\(12, 2\)"):
    attribute.run(smoke(reference["model_dir"], method="explainer", explainer_path=path), str(tmp_path / "bad"))


def test_bad_inputs_have_clear_errors(reference, tmp_path):
  mismatch = tmp_path / "mismatch_config.py"
  mismatch.write_text("from configs.explain_tabular.breast_cancer import get_config as base\n"
                      "def get_config(arg=None):\n  c = base('smoke'); c.model.hidden_sizes = (32,); return c\n")
  with pytest.raises(ValueError, match=r"checkpoint/model mismatch.*32.*16"):
    attribute.run(smoke(reference["model_dir"], **{"model.config": str(mismatch)}), str(tmp_path / "a"))
  config = digits_config.get_config("smoke")
  config.model.workdir = str(tmp_path / "no_such_workdir")
  with pytest.raises(FileNotFoundError, match="python -m experiments.vit_shapley"):
    attribute.run(config, str(tmp_path / "b"))
  config = digits_config.get_config("smoke")
  config.model.update(kind="vit", path=str(tmp_path))        # any folder: the data check comes first here
  config.data.update(name="cifar10", image_size=32, data_dir=str(tmp_path / "missing_tfds"))
  config.removal = "attention"
  with pytest.raises(FileNotFoundError, match=r"(?s)data_dir.*Prepare it once.*never downloads"):
    jobs.tasks.image_source(config, None)
  (tmp_path / "foreign").mkdir()
  (tmp_path / "foreign" / "notes.txt").write_text("keep me")
  with pytest.raises(outputs.StoreMismatchError, match="not an xattr output store"):
    attribute.run(smoke(reference["model_dir"], output=str(tmp_path / "foreign"), overwrite=True), str(tmp_path))
  assert (tmp_path / "foreign" / "notes.txt").read_text() == "keep me"


def test_four_devices_match_one(reference, tmp_path):
  os.symlink(reference["model_dir"], tmp_path / "model")
  from tests import multidevice_attribute_check as check

  one, four = compare_with_one_device(
      "multidevice_attribute_check.py", tmp_path / "four.npz",
      lambda mesh: check.run_on(mesh, str(tmp_path / "one"), str(reference["model_dir"])))
  assert set(one) == set(four) and one["values"].shape == (12, 30, 2)
  assert str(one["fingerprint"]) == str(four["fingerprint"])
  for name in one:
    if one[name].dtype.kind == "f":
      np.testing.assert_allclose(four[name], one[name], rtol=1e-5, atol=1e-6, err_msg=name)
    else:
      np.testing.assert_array_equal(four[name], one[name], err_msg=name)


NANO_VIT_SHAPLEY = """
from configs.vit_shapley.base import stage
from configs.vit_shapley.digits import get_config as digits


def get_config(arg=None):
  c = digits("smoke")
  c.classifier = stage(1, 8, 1e-3, warmup_steps=0)
  c.surrogate = stage(1, 8, 1e-3, warmup_steps=0)
  c.explainer = stage(1, 4, 1e-3, warmup_steps=0)
  c.explainer.update(num_samples=4, extra_blocks=1, head_hidden_sizes=(16,), num_validation=4)
  return c
"""


def nano_vit_shapley_workdir(config_path, workdir):
  """A vit_shapley workdir as experiments.vit_shapley lays it out (one training.train checkpoint per stage, same
  module structures), made in one cheap step per stage: the loss only touches the parameters, so no ViT forward
  or backward pass is compiled (three real stages cost about a minute of compilation on 2 shared cores)."""
  from flax import nnx

  from xattr import training, vit_shapley

  vs = jobs.load_config_file(str(config_path))
  cfg = vit.config(vs.model.name, image_size=vs.data.image_size, num_channels=1, num_classes=10)

  def stage(module, opt, name, trainable=nnx.Param):
    touch = lambda m, b: (sum(jnp.sum(p) for p in jax.tree.leaves(nnx.state(m, trainable))) * 1e-3, {})
    training.train(module, touch, {"x": np.zeros((opt.batch_size, 1), np.float32)},
                   optimizer=training.optimizer(opt, num_steps=opt.num_steps), num_steps=opt.num_steps,
                   batch_size=opt.batch_size, workdir=os.path.join(workdir, name), progress=False,
                   trainable=trainable)

  rng = np.random.default_rng(0)

  def random_module(make):
    # Random values from numpy: eager initializers would compile one program per parameter shape (~10 s).
    graphdef, state = nnx.split(jobs.placeholder_module(make))
    fill = lambda a: a if a.dtype.kind not in "f" else (0.1 * rng.normal(size=a.shape) + (a.ndim == 1)).astype(a.dtype)
    return nnx.merge(graphdef, jax.tree.map(lambda a: fill(np.asarray(a)) if isinstance(a, np.ndarray) else a, state))

  classifier = random_module(lambda: vit.ViT(cfg, rngs=nnx.Rngs(0)))
  stage(classifier, vs.classifier, "classifier")
  surrogate = vit_shapley.WithMaskRngs(nnx.clone(classifier), seed=vs.seed + 1)
  stage(surrogate, vs.surrogate, "surrogate")
  explainer = random_module(lambda: vit_shapley.ExplainerTraining(
      vit_shapley.build_explainer(vs, vit.ViT(cfg, rngs=nnx.Rngs(0)), 10), vit.ViT(cfg, rngs=nnx.Rngs(0)), 0))
  explainer.surrogate = nnx.clone(surrogate.model)
  nnx.update(explainer.explainer.backbone, nnx.state(surrogate.model))
  explainer.rngs = nnx.Rngs(masks=vs.seed + 4)
  stage(explainer, vs.explainer, "explainer", vit_shapley.EXPLAINER_TRAINABLE)


def test_vit_shapley_explainer_with_overlays(tmp_path):
  (tmp_path / "nano.py").write_text(NANO_VIT_SHAPLEY)
  workdir = str(tmp_path / "vit_shapley")
  nano_vit_shapley_workdir(tmp_path / "nano.py", workdir)
  config = digits_config.get_config("smoke")
  config.model.update(config=str(tmp_path / "nano.py"), workdir=workdir)
  config.data.max_examples = 4
  out = attribute.run(config, str(tmp_path / "attribute"))
  a = stored(out["paths"]["store"])
  assert a["values"].shape == (4, 16) and a["insertion"].shape == (4, 17)
  # The explainer's values are efficiently normalized on the surrogate game the curves run through:
  # sum_i phi_i = v(all patches) - v(no patch) = insertion[-1] - insertion[0].
  np.testing.assert_allclose(a["values"].sum(1), a["insertion"][:, -1] - a["insertion"][:, 0], atol=1e-5)
  assert a["label"].tolist() == [int(c) for c in outputs.open(out["paths"]["store"])["label"][:4]]
  assert a["prediction"].tolist() == a["probs"].argmax(1).tolist()
  assert "overlays.png" in open(out["paths"]["report"]).read() and os.path.getsize(out["paths"]["overlays"]) > 1000
