"""ViT Shapley on a TFDS image dataset at 224x224 with 16x16 patches (196 players), e.g. ImageNette.

Prepare the dataset once where there is network access (xattr never downloads), then:

  python -m experiments.vit_shapley --config=configs/vit_shapley/tfds.py:imagenette \
      --config.data.data_dir=/data/tfds --workdir=runs/vit_shapley_imagenette

``arg`` picks the dataset: 'imagenette' (default), 'cifar10' or 'oxford_iiit_pet'. Start from pretrained weights
converted with ``python -m xattr.models.convert`` by pointing ``--config.model.init_from`` at the converted
checkpoint. With 196 players the evaluation's ground truth is KernelSHAP run to convergence. Meant for a GPU/TPU;
``arg`` may end in ',smoke' for a CPU check on a few images (e.g. with ``tfds.testing.mock_data``).
"""

import ml_collections

from configs.vit_shapley.base import base_config, stage

DATASETS = {   # name -> (TFDS name, train split, test split)
    "imagenette": ("imagenette/320px-v2", "train", "validation"),
    "cifar10": ("cifar10", "train", "test"),
    "oxford_iiit_pet": ("oxford_iiit_pet", "train", "test"),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parts = [p for p in (arg or "imagenette").split(",") if p]
  name, smoke = parts[0], "smoke" in parts[1:]
  if name not in DATASETS or any(p != "smoke" for p in parts[1:]):
    raise ValueError(f"Unknown config argument {arg!r}; use one of {sorted(DATASETS)}, optionally ',smoke'.")
  config = base_config()
  config.data.name, config.data.train_split, config.data.test_split = DATASETS[name]
  config.data.image_size = 224
  config.model.name = "Ti/16"
  config.model.dtype = "bfloat16"
  config.classifier = stage(5000, 128, 3e-4, warmup_steps=500, eval_every=1000)
  config.surrogate = stage(5000, 64, 1e-4, warmup_steps=500, eval_every=1000)
  config.surrogate.num_masks = 4
  config.explainer = stage(5000, 32, 1e-4, warmup_steps=500, eval_every=1000)
  config.explainer.update(num_samples=32, extra_blocks=1, head_hidden_sizes=(512,), num_validation=256)
  config.evaluate.num_images = 256
  config.evaluate.ground_truth = "kernel_shap"
  config.evaluate.rise_masks = 2000
  config.evaluate.kernel_shap_evals = 2000
  config.evaluate.kernel_shap_budgets = (500, 1000, 2000, 4000, 8000)
  if smoke:
    config.data.image_size = 32
    config.data.max_train, config.data.max_test = 16, 8
    config.model.name = "nano/8"
    config.model.dtype = "float32"
    config.classifier = stage(4, 8, 1e-3, warmup_steps=1)
    config.surrogate = stage(4, 8, 1e-3, warmup_steps=1)
    config.surrogate.num_masks = 2
    config.explainer = stage(4, 4, 1e-3, warmup_steps=1)
    config.explainer.update(num_samples=4, extra_blocks=1, head_hidden_sizes=(16,), num_validation=4)
    config.evaluate.update(num_images=2, chunk_size=2, rise_masks=16, kernel_shap_evals=16, kernel_shap_budgets=(8, 16), ig_steps=2,
                           smoothgrad_samples=2, sensitivity_samples=4, num_heatmaps=1,
                           kernel_shap_max_samples=512, kernel_shap_threshold=0.05)
  return config
