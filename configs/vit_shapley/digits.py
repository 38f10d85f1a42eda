"""ViT Shapley on scikit-learn's digits upsampled to 32x32 (8x8 patches: 16 players, exact Shapley possible).

Run (from the repository root; CPU is enough):

  python -m experiments.vit_shapley --config=configs/vit_shapley/digits.py --workdir=runs/vit_shapley

Tiny version for tests (well under a minute):

  python -m experiments.vit_shapley --config=configs/vit_shapley/digits.py:smoke --workdir=/tmp/vit_shapley_smoke

Override any field, e.g. ``--config.explainer.num_steps=3000`` (a misspelled field fails: the config is locked).
"""

import ml_collections

from configs.vit_shapley.base import base_config, stage


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Default config; ``arg='smoke'`` shrinks every budget."""
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'smoke'.")
  config = base_config()
  if arg == "smoke":
    config.model.name = "nano/8"
    config.classifier = stage(40, 32, 1e-3, warmup_steps=5, eval_every=20)
    config.surrogate = stage(20, 16, 5e-4, warmup_steps=5)
    config.surrogate.num_masks = 2
    num_samples = 8
    config.explainer = stage(20, 8, 2e-4, warmup_steps=5)
    config.explainer.update(num_samples=num_samples, extra_blocks=1, head_hidden_sizes=(32,), num_validation=8)
    config.evaluate.num_images = 4
    config.evaluate.chunk_size = 4
    config.evaluate.rise_masks = 32
    config.evaluate.kernel_shap_evals = 32
    config.evaluate.kernel_shap_budgets = (16, 64)
    config.evaluate.ig_steps = 4
    config.evaluate.smoothgrad_samples = 4
    config.evaluate.sensitivity_samples = 8
    config.evaluate.num_heatmaps = 2
  return config
