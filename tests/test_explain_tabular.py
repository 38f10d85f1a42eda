"""End-to-end smoke run of the main driver: files, report, efficiency of the saved values, resumability."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from configs.explain_tabular import breast_cancer
from experiments import explain_tabular
from xattr import plots

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("explain_tabular"))
  config = breast_cancer.get_config("smoke")
  return config, workdir, explain_tabular.run(config, workdir)


def test_outputs_and_report(smoke):
  config, workdir, out = smoke
  for name in ("values.npz", "exact_comparison.npz", "summary.png", "bar.png", "report.md", "metrics.json"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    assert out["paths"][name] == os.path.join(workdir, name)
  assert out["accuracy"] > 0.85
  report = open(out["paths"]["report.md"]).read()
  assert f"Test accuracy: {out['accuracy']:.4f}" in report
  for text in ("mean absolute error", "relative L2 error", "correlation", "within 2 reported std",
               "summary.png", "bar.png", "mean num_evals"):
    assert text in report, text
  m = out["metrics"]
  assert m["exact_correlation"] > 0.9 and m["exact_relative_l2"] < 0.5
  assert os.listdir(os.path.join(workdir, "explanations"))          # per-chunk results
  assert os.listdir(os.path.join(workdir, "checkpoints"))


def test_values_are_efficient(smoke):
  config, workdir, out = smoke
  saved = np.load(out["paths"]["values.npz"])
  n, d, k = saved["values"].shape
  assert (n, d, k) == (config.explain.num_inputs, 30, 2)
  assert saved["std"].shape == (n, d, k) and saved["num_evals"].shape == (n,) and saved["converged"].shape == (n,)
  assert list(saved["feature_names"])[:2] == ["mean radius", "mean texture"]
  # Recompute v(1) and v(0) from the model: values sum to p(x) - mean_background p.
  model_fn = out["model_fn"]
  grand = np.asarray(model_fn(jnp.asarray(saved["x"])))
  null = np.asarray(model_fn(jnp.asarray(saved["background"]))).mean(0)
  np.testing.assert_allclose(grand, saved["predictions"], atol=1e-6)
  np.testing.assert_allclose(saved["values"].sum(1), grand - null, atol=1e-5)
  # Two classes: the class-0 game is 1 minus the class-1 game.
  np.testing.assert_allclose(saved["values"][..., 0], -saved["values"][..., 1], atol=1e-5)


def test_killed_explanation_resumes(smoke):
  config, workdir, out = smoke
  first = dict(np.load(out["paths"]["values.npz"]))
  chunks = sorted(os.listdir(os.path.join(workdir, "explanations")))
  os.remove(os.path.join(workdir, "explanations", chunks[-1]))       # as if killed during the last chunk
  stamp = {c: os.path.getmtime(os.path.join(workdir, "explanations", c)) for c in chunks[:-1]}
  again = explain_tabular.run(config, workdir)
  for c, t in stamp.items():                                         # earlier chunks were not redone
    assert os.path.getmtime(os.path.join(workdir, "explanations", c)) == t
  second = np.load(again["paths"]["values.npz"])
  for key in ("values", "std", "num_evals", "converged", "predictions"):
    np.testing.assert_array_equal(first[key], second[key])


def test_config():
  config = breast_cancer.get_config()
  assert config.model.hidden_sizes == (64, 64) and config.explain.num_samples is None
  assert len(config.exact.players) == 12
  assert "python -m experiments.explain_tabular" in breast_cancer.__doc__
  with pytest.raises(ValueError, match="smoke"):
    breast_cancer.get_config("tiny")


def test_plots_validate(tmp_path):
  with pytest.raises(ValueError, match="feature_names"):
    plots.bar_plot(np.ones((3, 2)), ["a"], str(tmp_path / "b.png"))
  with pytest.raises(ValueError, match="one output"):
    plots.summary_plot(np.ones((3, 2, 2)), np.ones((3, 2)), ["a", "b"], str(tmp_path / "s.png"))
  values = np.array([[0.1, -2.0], [0.2, 1.0]])
  np.testing.assert_array_equal(plots.feature_order(values), [1, 0])
