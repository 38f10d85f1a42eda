"""xattr.maskembed: the study's stage settings and optimizer, probe results saved and reused, the report and the
patch plot (the driver's end-to-end run is tests/test_maskembed_driver.py)."""

import os

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.maskembed import mosaic as mosaic_config
from xattr import maskembed, training
from xattr.data import mosaic
from xattr.maskembed import report, stages


def _old_optimizer(opt):
  # The factory the driver had before it used training.optimizer (kept here to show the chain is unchanged).
  updates, warmup = int(opt.num_steps), min(int(opt.warmup_steps), max(int(opt.num_steps) - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(0.0, opt.learning_rate, warmup, max(updates, warmup + 1),
                                                end_value=opt.learning_rate * opt.final_lr_fraction)
  tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip),
                   optax.adamw(schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay))
  return optax.MultiSteps(tx, every_k_schedule=opt.accumulate) if opt.accumulate > 1 else tx


@pytest.mark.parametrize("section", ["backbone", "maskembed", "mim", "probes.linear"])
def test_stage_optimizer_is_the_old_chain(section):
  config = mosaic_config.get_config("smoke")
  opt = config.probes.linear if section == "probes.linear" else config[section]
  old, new = _old_optimizer(opt), training.optimizer(opt)
  params = {"w": jnp.linspace(-1.0, 1.0, 5)}
  s_old, s_new = old.init(params), new.init(params)
  for t in range(12):
    grads = {"w": jnp.cos(params["w"] * (t + 1)) * 3.0}
    u_old, s_old = old.update(grads, s_old, params)
    u_new, s_new = new.update(grads, s_new, params)
    np.testing.assert_array_equal(u_new["w"], u_old["w"])


def test_loop_settings_count_micro_batches():
  opt = mosaic_config.get_config("smoke").maskembed          # 4 updates of 2 micro-batches
  assert stages.loop_settings(opt) == dict(num_steps=8, batch_size=16, checkpoint_every=8, log_every=8)


def _tiny_mosaics():
  return mosaic.digit_mosaics(num_train=16, num_test=4, grid=2, tile_size=8, patch_size=8, seed=0)


def test_model_config_checks_the_patch_grid():
  config = mosaic_config.get_config("smoke")
  ds = _tiny_mosaics()
  assert stages.model_config(config, ds).patch_size == 8
  config.model.name = "mu/4"
  with pytest.raises(ValueError, match="patch size 4, but the labels are on a 8-pixel patch grid"):
    stages.model_config(config, ds)


def test_probe_result_is_saved_and_reused(tmp_path, monkeypatch):
  config = mosaic_config.get_config("smoke")
  config.probes.linear.update(num_steps=2, batch_size=8, checkpoint_every=2, log_every=2)
  ds = _tiny_mosaics()
  rng = np.random.default_rng(0)
  feats = (rng.random((16, 5, 8)).astype(np.float32), rng.random((4, 5, 8)).astype(np.float32))
  first, probs = stages.run_probe(config, ds, feats, "linear", 1, str(tmp_path), 0, name="backbone")
  assert probs.shape == ds.patch_test.shape and set(first) == {"macro_precision", "macro_recall", "macro_f1"}
  stamp = os.path.getmtime(tmp_path / "metrics.json")
  monkeypatch.setattr(stages, "train_stage", lambda *a, **k: pytest.fail("the saved probe was retrained"))
  again, probs_again = stages.run_probe(config, ds, feats, "linear", 1, str(tmp_path), 0, name="backbone")
  assert again == first and os.path.getmtime(tmp_path / "metrics.json") == stamp
  np.testing.assert_array_equal(probs_again, probs)


def _results(seeds=(0, 1)):
  scores = lambda f: {"macro_f1": f, "macro_recall": f / 2, "macro_precision": f / 3}
  return {s: {name: {"linear": scores(0.5 + 0.1 * i + 0.01 * s)} for i, name in enumerate(maskembed.BACKBONES)}
          for s in seeds}


def test_report_rows_gains_and_plot(tmp_path):
  config = mosaic_config.get_config("smoke")
  config.probes.kinds = ("linear",)
  ds = _tiny_mosaics()
  results = _results()
  assert report.f1_gains(results, "linear") == pytest.approx([0.1, 0.1])
  text = open(report.write_report(config, ds, results, str(tmp_path), {"data_s": 1.0})).read()
  for label in maskembed.LABELS.values():
    assert f"| {label} | linear |" in text, label
  assert "| linear | 0.100 ± 0.000 (+0.100, +0.100) | 0.200 ± 0.000 | 2/2 |" in text
  assert "![patch predictions](patches.png)" in text
  probs = {maskembed.LABELS["backbone"]: np.full(ds.patch_test.shape, 0.9, np.float16)}
  path = report.plot_patches(ds, probs, str(tmp_path / "patches.png"), num_images=1)
  assert os.path.getsize(path) > 0
