"""The locality-alignment study: an image-level ViT backbone, MaskEmbed alignment and a MIM baseline, patch probes.

The objective itself (:class:`xattr.locality.MaskEmbed`, :class:`xattr.locality.MIM`, probes, scores) lives in
:mod:`xattr.locality`; this package runs the study: :mod:`~xattr.maskembed.stages` (data, models, the training
stages, probes), :mod:`~xattr.maskembed.report` (``report.md``, ``patches.png``) and
:mod:`~xattr.maskembed.pipeline` (:func:`run_pipeline`, what ``python -m experiments.maskembed`` runs).

Example:
  >>> from xattr import maskembed
  >>> maskembed.BACKBONES
  ('backbone', 'maskembed', 'mim')
"""

from xattr.maskembed import pipeline, report, stages
from xattr.maskembed.pipeline import run_pipeline, run_seed
from xattr.maskembed.stages import (BACKBONES, LABELS, features, load_data, masked_model_loss, model_config,
                                    probe_loss, run_probe, train_backbone, train_maskembed, train_mim)

__all__ = ["BACKBONES", "LABELS", "features", "load_data", "masked_model_loss", "model_config", "pipeline",
           "probe_loss", "report", "run_pipeline", "run_probe", "run_seed", "stages", "train_backbone",
           "train_maskembed", "train_mim"]
