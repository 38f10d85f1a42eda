"""Adversarial shortcuts: modify a released image dataset so that models trained on it fail on clean data.

  python -m experiments.shortcuts --config=configs/shortcuts/digits.py --workdir=runs/shortcuts_digits

Resumable from ``workdir`` (:mod:`xattr.shortcuts.study`): build every shortcut (fixed per-class patterns,
class-wise patches and one-pixel shortcuts, class-wise and per-sample error-minimising noise) and apply it with
clipping and a budget check; train every victim (small CNN, MLP, xattr ViT; data-parallel through
``training.train``) on clean and on modified data under each defence (none, augmentation, adversarial
training); explain shortcut-trained victims with Shapley values over patches. Then :mod:`xattr.shortcuts.report`
writes ``report.md`` (the generator x budget x victim x defence table, the targets' verdicts, what the defences
recover, the attribution check), ``summary.json``, ``examples.png`` and ``shortcuts.png``.

Data: ``config.data.name`` is 'digits' (embedded, 32x32), 'mosaic' (single-digit mosaics) or 'tfds:<name>' read
from ``config.data.data_dir`` (nothing is downloaded).
"""

from __future__ import annotations

import os
import time
from typing import Any

import ml_collections

from experiments import cli
from xattr import artifacts
from xattr.shortcuts import report, study


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (resumably) every shortcut and cell and writes the report; returns ``{"paths", "summary", "result"}``."""
  os.makedirs(workdir, exist_ok=True)
  if config.get("compilation_cache", True):
    artifacts.use_compilation_cache(workdir)
  t0 = time.perf_counter()
  result = study.run(config, workdir)
  out = report.write(config, result, workdir, runtime_s=time.perf_counter() - t0)
  return {**out, "result": result}


def _run_and_report(config: ml_collections.ConfigDict, workdir: str) -> None:
  out = run(config, workdir)
  t = out["summary"]["targets"]
  print(f"done in {out['summary']['runtime_s']:.0f} s; report: {out['paths']['report.md']}")
  for victim, ok in t["clean_ok"].items():
    print(f"{victim}: clean {t['clean'][victim]:.3f} (>= 0.95: {ok}); shortcut hits: {t['shortcut_hits'][victim]}")


if __name__ == "__main__":
  cli.main(_run_and_report, config_example="configs/shortcuts/digits.py",
           workdir_help="Directory for shortcuts, victim checkpoints, cell results, figures and report.")
