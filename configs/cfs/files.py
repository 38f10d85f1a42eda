"""Contrastive feature selection on your own data: target and background arrays in .npz or CSV files.

Run (from the repository root):

  python -m experiments.cfs --config=configs/cfs/files.py --config.data.target_path=target.csv \
      --config.data.background_path=background.csv --config.data.label_column=label --workdir=runs/cfs_files

``.npz`` files hold an array ``x`` (and optionally labels ``y``); CSV files are numeric tables with an optional
header row, ``label_column`` naming the label column of the target. With labels, a quarter of the target rows is
held out to score a classifier on the selected features (and the supervised STG baseline runs); without labels
the report lists each method's selection. Standardize features with unrelated units beforehand.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs.cfs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """User files; ``arg='nolabels'`` drops the methods and scores that need labels."""
  if arg not in (None, "", "nolabels"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'nolabels'.")
  config = common.base()
  config.dataset = "files"
  config.data = ml_collections.ConfigDict({"target_path": placeholder(str), "background_path": placeholder(str),
                                           "label_column": placeholder(str), "x_key": "x", "label_key": "y"})
  config.budgets = (5, 10, 20)
  if arg == "nolabels":
    config.methods = tuple(m for m in config.methods if m != "stg")
  return config
