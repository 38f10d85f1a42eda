"""ViT Shapley driver, end to end on the smoke config: outputs, identities of the saved values, resumability.

The method's pieces are tested in ``tests/test_vit_shapley_method.py`` (losses, stages, evaluation, report) and
``tests/test_convert.py`` (``init_from_pretrained``)."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from configs.vit_shapley import digits
from experiments import vit_shapley
from xattr.vit_shapley import evaluate
from xattr.models import vit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("vit_shapley"))
  config = digits.get_config("smoke")
  return config, workdir, vit_shapley.run(config, workdir)


def test_outputs(smoke):
  config, workdir, metrics = smoke
  for name in ("report.md", "metrics.json", "values.npz", "curves.png", "heatmaps.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  for stage in ("classifier", "surrogate", "explainer"):
    assert os.listdir(os.path.join(workdir, stage, "checkpoints")), stage
  report = open(os.path.join(workdir, "report.md")).read()
  for method in config.evaluate.baselines:
    assert f"| {method.replace('_', ' ')} |" in report, method
  assert "ViT Shapley explainer" in report and "exact Shapley (reference)" in report
  saved = json.load(open(os.path.join(workdir, "metrics.json")))
  assert set(saved["methods"]) == {"ground_truth", "explainer", *config.evaluate.baselines}
  assert saved["ground_truth"] == "exact" and saved["num_patches"] == 16
  assert 0.0 <= saved["methods"]["explainer"]["insertion_auc"] <= 1.0
  a, x = saved["amortization"], config.explainer       # the training cost from the explainer stage's settings
  assert a["train_evaluations"] > x.num_steps * x.batch_size * (x.num_samples + 1)
  assert "Amortization: the explainer's training cost" in report


def test_saved_values_satisfy_identities(smoke):
  config, workdir, _ = smoke
  with np.load(os.path.join(workdir, "values.npz")) as f:
    v = dict(f)
  gap = v["grand"] - v["null"]
  for name in ("ground_truth", "explainer", "kernel_shap"):        # Shapley estimators are efficient
    np.testing.assert_allclose(v[f"attr__{name}"].sum(1), gap, atol=2e-4, err_msg=name)
  for name in ("ground_truth", "explainer", "random", "rise", "smoothgrad"):
    # Insertion goes from the empty to the full coalition, deletion the other way, whatever the ranking.
    np.testing.assert_allclose(v[f"insertion__{name}"][:, 0], v["null"], atol=1e-5)
    np.testing.assert_allclose(v[f"insertion__{name}"][:, -1], v["grand"], atol=1e-5)
    np.testing.assert_allclose(v[f"deletion__{name}"][:, 0], v["grand"], atol=1e-5)
    np.testing.assert_allclose(v[f"deletion__{name}"][:, -1], v["null"], atol=1e-5)
  # Exact Shapley values explain the game's drops best on average: higher sensitivity-n than random ones.
  assert v["sensitivity__ground_truth"].mean() > v["sensitivity__random"].mean()


def test_rerun_resumes_without_recomputing(smoke):
  config, workdir, first = smoke
  chunk_dir = os.path.join(workdir, "evaluation")
  stamps = {f: os.path.getmtime(os.path.join(chunk_dir, f)) for f in os.listdir(chunk_dir)}
  again = vit_shapley.run(config, workdir)
  assert {f: os.path.getmtime(os.path.join(chunk_dir, f)) for f in os.listdir(chunk_dir)} == stamps
  assert again["methods"] == first["methods"]


def test_bad_settings_are_named():
  with pytest.raises(ValueError, match="ground_truth='exact' needs at most 20 patches"):
    evaluate.ground_truth_method(196, "exact")
  with pytest.raises(ValueError, match="Unknown config argument"):
    digits.get_config("huge")


@pytest.mark.multidevice
def test_vit_four_devices_match_one(tmp_path):
  from tests import multidevice_vit_check as check
  from tests.four_devices import compare_with_one_device

  one, four = compare_with_one_device("multidevice_vit_check.py", tmp_path / "four.npz", check.compute)
  check.assert_same(one, four, "parent 1 device vs subprocess 4 devices")
  assert np.abs(four["kernel/values"]).max() > 0 and np.isfinite(four["explainer/values"]).all()
  # Training moved the parameters (the comparison is not between two untouched initialisations).
  init = {"train/" + jax.tree_util.keystr(p): np.asarray(v) for p, v in
          jax.tree_util.tree_leaves_with_path(nnx.state(vit.ViT(check.CONFIG, rngs=nnx.Rngs(0)), nnx.Param))}
  assert max(np.abs(four[k] - init[k]).max() for k in init) > 1e-4
