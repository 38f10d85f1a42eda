"""Locality alignment end to end: every stage for every seed, then the report (what ``experiments.maskembed`` runs).

``workdir/seed_<s>/<stage>/`` holds each stage's Orbax checkpoints or outputs; finished work is restored, not
redone, so a killed run resumes. With ``shared_backbone`` the backbone is trained once in ``workdir/backbone``
(like a given CLIP) and the seeds vary alignment, MIM and probes only. Outputs: ``report.md``, ``metrics.json``
and ``patches.png``.

Example (seconds on a CPU with the smoke config):
  >>> import tempfile
  >>> from configs.maskembed import mosaic                          # doctest: +SKIP
  >>> out = run_pipeline(mosaic.get_config("smoke"), tempfile.mkdtemp())   # doctest: +SKIP
  >>> sorted(out["paths"])                                         # doctest: +SKIP
  ['patches.png', 'report.md']
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from xattr import artifacts, parallel
from xattr.data import mosaic
from xattr.maskembed import report, stages
from xattr.models import vit

__all__ = ["run_seed", "run_pipeline"]


def run_seed(config: ml_collections.ConfigDict, ds: mosaic.MosaicDataset, cfg: vit.ViTConfig, workdir: str,
             seed: int, mesh, backbone: vit.ViT | None, lap: Callable[[str], None]
             ) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, np.ndarray]]:
  """Stages 1-4 for one seed (stage 1 skipped when ``backbone`` is given); returns the probe scores per
  representation and probe kind, and the last probe kind's test probabilities per representation label."""
  if backbone is None:
    backbone = stages.train_backbone(config, ds, cfg, workdir, seed, mesh)
  lap("backbone_s")
  models: dict[str, nnx.Module] = {"backbone": backbone}
  models["maskembed"] = stages.train_maskembed(config, ds, backbone, workdir, seed, mesh)
  lap("maskembed_s")
  models["mim"] = stages.train_mim(config, ds, backbone, workdir, seed, mesh)
  lap("mim_s")
  depth = stages.alignment_depth(config, backbone)
  results: dict[str, dict[str, dict[str, float]]] = {}
  probs_for_plot: dict[str, np.ndarray] = {}
  for name, model in models.items():
    feats = (stages.features(model, depth, ds.x_train), stages.features(model, depth, ds.x_test))
    results[name] = {}
    for kind in config.probes.kinds:
      results[name][kind], probs = stages.run_probe(config, ds, feats, kind, cfg.num_prefix_tokens,
                                                    os.path.join(workdir, "probes", name, kind), seed, name=name)
      if kind == config.probes.kinds[-1]:
        probs_for_plot[stages.LABELS[name]] = probs
    logging.info("seed %d %s: %s", seed, name, results[name])
  lap("probes_s")
  return results, probs_for_plot


def run_pipeline(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every stage for every seed (finished work is restored), writes the report and returns the metrics.

  Returns:
    the metrics also saved as ``workdir/metrics.json``: ``results`` (seed -> representation -> probe -> macro
    scores), ``f1_gain_maskembed`` (probe -> per-seed gains), ``timings``, ``labels`` and ``paths``.
  """
  start = time.perf_counter()
  timings: dict[str, float] = {}

  def lap(name: str) -> None:
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start - sum(timings.values())

  ds = stages.load_data(config)
  cfg = stages.model_config(config, ds)
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh()
  logging.info("mosaics: train %s, test %s, labels %s; model %s; %d device(s)", ds.x_train.shape, ds.x_test.shape,
               mosaic.describe(ds), cfg, mesh.size)
  lap("data_s")
  shared = None
  if config.shared_backbone:               # one image-level backbone (like a given CLIP); seeds vary the rest
    shared = stages.train_backbone(config, ds, cfg, workdir, config.backbone_seed, mesh)
    lap("backbone_s")
  results, probs_for_plot = {}, {}
  for seed in config.seeds:
    results[seed], probs = run_seed(config, ds, cfg, os.path.join(workdir, f"seed_{seed}"), seed, mesh, shared, lap)
    if seed == config.seeds[0]:
      probs_for_plot = probs
  paths = {"report.md": report.write_report(config, ds, results, workdir, timings),
           "patches.png": report.plot_patches(ds, probs_for_plot, os.path.join(workdir, "patches.png"),
                                              config.report.num_images)}
  lap("report_s")
  gains = {kind: report.f1_gains(results, kind) for kind in config.probes.kinds}
  out = {"results": {str(s): r for s, r in results.items()}, "f1_gain_maskembed": gains, "timings": timings,
         "labels": mosaic.describe(ds), "paths": paths}
  artifacts.save_json(os.path.join(workdir, "metrics.json"), out)
  return out
