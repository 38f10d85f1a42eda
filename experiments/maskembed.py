"""Locality alignment end to end: image-level backbone -> MaskEmbed (and a MIM baseline) -> patch probes -> table.

  python -m experiments.maskembed --config=configs/maskembed/mosaic.py --workdir=runs/maskembed

Stages, per seed (``workdir/seed_<s>/<stage>/`` holds each one's Orbax checkpoints or outputs; finished work is
restored, not redone, so a killed run resumes):
  1. ``backbone``: a masked ViT trained on digit mosaics with IMAGE-level multi-label supervision only (BCE on the
     set of digits present, CLS pooling), the CLIP-like starting point whose patch tokens are never asked to be
     local. Or a converted pretrained ViT (``model.init_from``) fine-tuned the same way. With
     ``shared_backbone`` (the default) it is trained once in ``workdir/backbone`` (like a given CLIP) and the
     seeds vary stages 2-4 only.
  2. ``maskembed``: MaskEmbed alignment of a copy of the backbone (:mod:`xattr.locality`): frozen teacher on
     pixel-masked images, student run once per image, decoder on masked student tokens; AdamW (0.9, 0.95), weight
     decay 0.01, clipping at 1.0, warmup + cosine to lr/10, gradient accumulation (``optax.MultiSteps``), data
     parallel over all devices (``training.train(mesh=...)``: batch split, parameters replicated).
  3. ``mim``: the baseline: a copy of the backbone post-trained with masked patch pixel regression
     (config.mim; one mask per image, no teacher, so a step is cheaper than a MaskEmbed step).
  4. ``probes``: for each representation (backbone before alignment, after MaskEmbed, after MIM; all read at the
     penultimate block + final norm) and each probe (linear, 2-block transformer) on FROZEN tokens: BCE on the
     per-patch multi-hot classes, macro precision/recall/F1 on the test mosaics (saved as JSON per probe).
  5. ``report``: ``report.md`` (mean +- std over seeds, and the per-seed F1 gain of MaskEmbed over the backbone),
     ``metrics.json`` and ``patches.png`` (test mosaics with the true and predicted digits of every patch).

The study lives in :mod:`xattr.maskembed` (:func:`xattr.maskembed.run_pipeline` runs all of the above).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from experiments import cli
from xattr import maskembed


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every stage for every seed (finished work is restored) and returns the metrics."""
  return maskembed.run_pipeline(config, workdir)


def _run_and_report(config: ml_collections.ConfigDict, workdir: str) -> None:
  out = run(config, workdir)
  with open(out["paths"]["report.md"]) as f:
    print(f.read())
  print(f"report: {out['paths']['report.md']}")


if __name__ == "__main__":
  cli.main(_run_and_report, config_example="configs/maskembed/mosaic.py",
           workdir_help="Directory for checkpoints, probe results, the report and the patch-prediction plot.")
