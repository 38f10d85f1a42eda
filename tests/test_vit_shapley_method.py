"""xattr.vit_shapley: losses, explainer construction, trainable filter, the optimizer of a stage, the evaluation
(baselines through the method registry) and the report, on tiny models (the driver's end-to-end run is
tests/test_vit_shapley.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs.vit_shapley import digits
from xattr import attributions, games, methods, training, vit_shapley
from xattr.models import vit
from xattr.vit_shapley import evaluate, report

CFG = vit.config("nano/8", image_size=16, num_channels=1, num_classes=3)        # 2x2 patches: 4 players


def _images(n=2, seed=0):
  return jnp.asarray(np.random.default_rng(seed).random((n, 16, 16, 1)), jnp.float32)


def _config():
  config = digits.get_config("smoke")
  config.data.image_size = 16
  return config


def test_model_config_takes_image_shape_and_classes():
  config = digits.get_config("smoke")
  cfg = vit_shapley.model_config(config, (32, 32, 1), 10)
  assert (cfg.num_patches, cfg.num_channels, cfg.num_classes) == (16, 1, 10)
  with pytest.raises(ValueError, match=r"image_shape must be \(H, W, C\).*got \(28, 28, 1\)"):
    vit_shapley.model_config(config, (28, 28, 1), 10)


def _old_make_optimizer(opt, num_steps):
  # The factory the driver had before it used training.optimizer (kept here to show the chain is unchanged).
  warmup = min(int(opt.warmup_steps), max(num_steps - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(0.0, opt.learning_rate, warmup, max(num_steps, warmup + 1),
                                                end_value=opt.learning_rate * opt.final_lr_fraction)
  return optax.chain(optax.clip_by_global_norm(opt.grad_clip),
                     optax.adamw(schedule, b1=0.9, b2=0.999, weight_decay=opt.weight_decay))


@pytest.mark.parametrize("stage", ["classifier", "surrogate", "explainer"])
def test_stage_optimizer_is_the_old_chain(stage):
  opt = digits.get_config(None)[stage]
  old, new = _old_make_optimizer(opt, opt.num_steps), training.optimizer(opt, num_steps=opt.num_steps)
  params = {"w": jnp.linspace(-1.0, 1.0, 5)}
  s_old, s_new = old.init(params), new.init(params)
  for t in range(150):                                 # through the warmup into the decay; grads above the clip
    grads = {"w": jnp.sin(params["w"] * (t + 1)) * 3.0}
    u_old, s_old = old.update(grads, s_old, params)
    u_new, s_new = new.update(grads, s_new, params)
    np.testing.assert_array_equal(u_new["w"], u_old["w"])


def test_losses_are_finite_scalars_and_explainer_outputs_per_patch():
  surrogate = vit.ViT(CFG, rngs=nnx.Rngs(0))
  x = _images()
  probs = jax.nn.softmax(surrogate(x), -1)
  loss = vit_shapley.surrogate_loss(surrogate, x, probs, jax.random.key(0), num_masks=3)
  assert loss.shape == () and np.isfinite(loss)
  explainer = vit_shapley.build_explainer(_config(), surrogate, CFG.num_classes)
  assert explainer(x).shape == (2, CFG.num_patches, CFG.num_classes)
  loss = vit_shapley.explainer_loss(explainer, surrogate, x, jax.random.key(1), num_samples=4)
  assert loss.shape == () and np.isfinite(loss)


def test_surrogate_loss_is_zero_for_a_model_that_ignores_masks():
  # A model whose output does not depend on the held-out patches matches its own full-image probabilities.
  surrogate = vit.ViT(CFG, rngs=nnx.Rngs(0))
  x = _images()
  probs = jax.nn.softmax(surrogate(x, jnp.zeros((2, CFG.num_patches), bool)), -1)   # the null output
  class Constant(nnx.Module):
    num_patches = CFG.num_patches

    def __call__(self, images, mask):
      return surrogate(images, jnp.zeros_like(mask))
  loss = vit_shapley.surrogate_loss(Constant(), x, probs, jax.random.key(0), num_masks=2)
  assert abs(float(loss)) < 1e-6


def test_explainer_trainable_selects_only_explainer_parameters():
  surrogate = vit.ViT(CFG, rngs=nnx.Rngs(0))
  wrapper = vit_shapley.ExplainerTraining(vit_shapley.build_explainer(_config(), surrogate, 3), surrogate, seed=0)
  trained = nnx.to_flat_state(nnx.state(wrapper, vit_shapley.EXPLAINER_TRAINABLE))
  assert trained and all(path[0] == "explainer" for path, _ in trained)
  assert vit_shapley.STAGES == ("classifier", "surrogate", "explainer", "evaluate")


# ---------------------------------------------------------------------------------------------------------------
# Evaluation

def test_every_baseline_is_a_registered_method_with_settings():
  settings = evaluate.baseline_settings(_config().evaluate)
  assert set(settings) == set(evaluate.BASELINES)
  for name, (budget, kwargs) in settings.items():
    methods.settings_for(name, 16, budget, kwargs)          # raises on a setting the method does not take
  with pytest.raises(ValueError, match="unknown methods \\['nope'\\]"):
    evaluate.make_per_image(_config(), None, vit.ViT(CFG, rngs=nnx.Rngs(0)), None, ("nope",))


def _per_image(baselines):
  config = _config()
  config.evaluate.kernel_shap_budgets = (8,)
  config.evaluate.sensitivity_samples = 4
  classifier = vit.ViT(CFG, rngs=nnx.Rngs(0))
  surrogate = vit.ViT(CFG, rngs=nnx.Rngs(1))
  explainer = vit_shapley.build_explainer(config, surrogate, CFG.num_classes)
  fn = evaluate.make_per_image(config, classifier, surrogate, explainer, baselines)
  return config, surrogate, jax.jit(fn)(_images(1)[0], jnp.int32(1), jax.random.key(4))


def test_per_image_values_are_efficient_and_kernel_shap_matches_the_matched_estimator():
  config, surrogate, out = _per_image(("kernel_shap", "random", "attention_rollout", "gradient_x_input"))
  gap = out["grand"] - out["null"]
  for name in ("ground_truth", "explainer", "kernel_shap"):
    np.testing.assert_allclose(out[f"attr/{name}"].sum(), gap, atol=1e-5, err_msg=name)
  # The registry call is the old attributions.kernel_shap_matched(exact_a=True) with the same key.
  key = dict(zip(("random", "rise", "kernel_shap"), jax.random.split(jax.random.key(4), 6)))["kernel_shap"]
  probs = lambda xb, mb: jax.nn.softmax(surrogate(xb, mb), -1)
  game = games.select(games.surrogate(probs, _images(1)[0]), 1)
  want = attributions.kernel_shap_matched(game, CFG.num_patches, key, num_evals=config.evaluate.kernel_shap_evals,
                                          exact_a=True)
  np.testing.assert_allclose(out["attr/kernel_shap"], want, rtol=1e-5, atol=1e-6)
  assert out["insertion/random"].shape == (CFG.num_patches + 1,) and "budget/8" in out


def test_ground_truth_choice_and_sensitivity_sizes():
  assert evaluate.ground_truth_method(16, "auto") == "exact"
  assert evaluate.ground_truth_method(196, "auto") == "kernel_shap"
  with pytest.raises(ValueError, match="must be 'auto', 'exact' or 'kernel_shap', got 'x'"):
    evaluate.ground_truth_method(4, "x")
  assert evaluate.sensitivity_sizes(16, (3, 5)) == (3, 5)


def _results(num_images=3, p=4):
  rng = np.random.default_rng(0)
  truth = rng.normal(size=(num_images, p))
  out = {"attr/ground_truth": truth}
  for name, noise in (("explainer", 0.1), ("kernel_shap", 0.3), ("random", 3.0)):
    out[f"attr/{name}"] = truth + noise * rng.normal(size=truth.shape)
  for name in ("ground_truth", "explainer", "kernel_shap", "random"):
    up = np.sort(rng.random((num_images, p + 1)), axis=1)
    out[f"insertion/{name}"] = up if name != "random" else up * 0.5
    out[f"deletion/{name}"] = up[:, ::-1] if name != "random" else up[:, ::-1] * 2
    out[f"sensitivity/{name}"] = rng.random((num_images, 2))
  out["budget/16"], out["budget/64"] = np.full(num_images, 0.4), np.full(num_images, 0.1)
  return out


def test_summary_budget_and_verdict():
  results = _results()
  table = evaluate.summarize(results, ("kernel_shap", "random"))
  assert set(table) == {"ground_truth", "explainer", "kernel_shap", "random"}
  assert "mae" in table["explainer"] and "mae" not in table["random"]
  assert table["explainer"]["mae"] < table["kernel_shap"]["mae"]
  verdict = evaluate.beats_baselines(table, ("random",))
  assert verdict["insertion"] and verdict["deletion"] and verdict["beaten_by"] == []
  b = evaluate.budget_summary(results, (16, 64), 0.2)
  assert b["kernel_shap_mae"] == [pytest.approx(0.4), pytest.approx(0.1)]
  assert 16 < b["evaluations_to_match"] < 64
  assert evaluate.budget_to_match(results, (16, 64), 0.5) is None
  assert evaluate.budget_to_match(results, (16, 64), 0.01) == float("inf")


def test_report_sentences_and_cells():
  b = dict(budgets=[16, 64], kernel_shap_mae=[0.4, 0.1], explainer_mae=0.2, evaluations_to_match=None)
  assert "already more accurate" in report.budget_sentence(b)
  assert "does not reach" in report.budget_sentence(dict(b, evaluations_to_match=float("inf")))
  assert "**32 model evaluations per image**" in report.budget_sentence(dict(b, evaluations_to_match=32.0))
  assert report.cell({"x": float("nan")}, "x") == "–"


def test_report_and_figures_are_written(tmp_path):
  results = _results()
  baselines = ("kernel_shap", "random")
  table = evaluate.summarize(results, baselines)
  summary = dict(methods=table, explainer_beats_baselines=evaluate.beats_baselines(table, baselines),
                 kernel_shap_budget=evaluate.budget_summary(results, (16, 64), table["explainer"]["mae"]))
  context = dict(num_patches=4, num_images=3, ground_truth="exact", sensitivity_sizes=(1, 2), timings={"a": 1.0},
                 classifier_accuracy=0.9, surrogate_accuracy=0.8, surrogate_masked_accuracy=0.7, mean_abs_truth=0.5)
  ev = evaluate.Evaluation(results, np.zeros((3, 16, 16, 1), np.float32), np.array([0, 1, 2]),
                           np.array([0, 1, 1]), {"a": 1.0})
  paths = report.write_figures(str(tmp_path), ev, baselines, grid=(2, 2), class_names=("a", "b", "c"),
                               num_heatmaps=2, summary=summary, ground_truth="exact")
  assert all((tmp_path / name).stat().st_size > 0 for name in paths)
  text = open(report.write_report(str(tmp_path / "report.md"), _config(), "toy", summary, context)).read()
  assert text.startswith("# ViT Shapley on toy\n\n")
  assert "| **ViT Shapley explainer** |" in text and "| kernel shap |" in text
  assert "![KernelSHAP error vs evaluations](budget.png)" in text and text.endswith("Timings (s): a 1.0\n")
  report.write_values(str(tmp_path / "values.npz"), ev)
  assert "attr__explainer" in np.load(tmp_path / "values.npz").files
