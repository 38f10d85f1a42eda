"""Adversarial shortcuts on scikit-learn's digits at 32x32 (embedded, offline): the README table.

Run (from the repository root; CPU is enough, see the README for the measured runtime):

  python -m experiments.shortcuts --config=configs/shortcuts/digits.py --workdir=runs/shortcuts_digits

Tiny version for tests (about a minute):

  python -m experiments.shortcuts --config=configs/shortcuts/digits.py:smoke --workdir=/tmp/shortcuts_smoke

Override any field, e.g. ``--config.victims='("cnn",)' --config.linf_255='(4.0, 8.0)'`` (the config is locked).
"""

import ml_collections

from configs.shortcuts import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Digits 32x32; ``arg='smoke'`` shrinks everything."""
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'smoke'.")
  config = common.base()
  return common.smoke(config) if arg == "smoke" else config
